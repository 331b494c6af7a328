"""Terminal rendering of the plain results the other modules return (tables, summaries)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from bertctl.tokenization import InputRow, TokenizeReport


def print_input_rows(console: "Console", rows: list["InputRow"]) -> None:
    from rich.table import Table

    table = Table("pos", "token", "id", "segment", "mask", "word", box=None)
    for row in rows:
        table.add_row(str(row.position), row.token, str(row.id), str(row.segment), str(row.attention), "" if row.word is None else str(row.word))
    console.print(table)
    pieces = " ".join(row.token for row in rows)
    console.print(f"\n{pieces}\n{len(rows)} tokens; segment 0 = [CLS] A [SEP], segment 1 = B [SEP]")


def print_tokenize_report(console: "Console", report: "TokenizeReport") -> None:
    from rich.table import Table

    cached = f"from cache {report.cache_dir}" if report.from_cache else ("cached in " + report.cache_dir if report.cache_dir else "not cached")
    console.print(f"[bold]{report.recipe}[/bold]: model {report.model}, max_length {report.max_length} ({cached})")
    table = Table("split", "examples", "tokens p50", "p90", "p99", "max", "truncated", "[UNK]", "empty dropped", box=None)
    for s in report.splits:
        table.add_row(
            s.name, str(s.examples), str(s.length_p50), str(s.length_p90), str(s.length_p99), str(s.length_max),
            f"{s.truncated_share:.1%}", f"{s.unk_share:.2%}", str(s.empty_dropped),
        )
    console.print(table)
    labels = Table("label", *[s.name for s in report.splits], box=None)
    for label in report.labels:
        labels.add_row(label, *[str(s.label_counts.get(label, 0)) for s in report.splits])
    console.print(labels)
    for split, missing in report.labels_missing.items():
        console.print(f"[yellow]labels absent from {split}[/yellow]: {', '.join(missing)}")
    for pair, n in report.duplicates.items():
        a, b = pair.split("~")
        if n:
            console.print(f"[yellow]{n} examples of {a} also in {b}[/yellow] (identical token ids)")
        else:
            console.print(f"no examples of {a} repeat in {b}")


def print_train_summary(result) -> None:
    """What a person wants after training: the score, the time, where it went, what to run next."""
    import os

    m = result.metrics
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return
    best = f"{m['metric_for_best']} {m['best_value']:.4f} at step {m['best_step']} (epoch {m['best_epoch']:.2f})" if m["best_value"] is not None else "no validation split"
    print(
        f"\ndone: best {best}\n"
        f"      {m['global_steps']} steps in {m['wall_time_s']:.0f} s ({m['train_samples_per_s']:.1f} samples/s, {m['num_processes']} x {m['device']})\n"
        f"      saved to {result.run_dir}\n"
        f"next: bertctl eval {result.run_dir}\n"
        f'      bertctl predict --model {result.run_dir} "some text"',
        flush=True,
    )
