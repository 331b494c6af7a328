"""Every terminal table and summary: the plain results the other modules return, rendered for a person (rich)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bertctl.attention import STATISTICS
from bertctl.problems import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from bertctl.recipe import METRICS
from bertctl.truncation import head_tail_split

if TYPE_CHECKING:
    from rich.console import Console

    from bertctl.attention import AttentionReport, PositionAnalysis
    from bertctl.pretraining import FillMaskResult
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
    _print_long_texts(console, report)
    if report.problem_type == REGRESSION.name:
        stats = Table(f"{report.labels[0]} (regression)", *[s.name for s in report.splits], box=None)
        for name in ("mean", "std", "min", "max"):
            stats.add_row(name, *[f"{s.label_stats[name]:.4g}" if s.label_stats else "" for s in report.splits])
        console.print(stats)
    else:
        multi = report.problem_type == MULTI_LABEL.name
        labels = Table("label (rows with it)" if multi else "label", *[s.name for s in report.splits], box=None)
        for label in report.labels:
            labels.add_row(label, *[f"{s.label_counts.get(label, 0)} ({s.label_counts.get(label, 0) / max(1, s.examples):.1%})" for s in report.splits])
        console.print(labels)
        if multi:
            most = max((k for s in report.splits for k in s.labels_per_row), default=0)
            per_row = Table("labels per row", *[s.name for s in report.splits], box=None)
            for k in range(most + 1):
                per_row.add_row(str(k), *[str(s.labels_per_row.get(k, 0)) for s in report.splits])
            console.print(per_row)
    for split, missing in report.labels_missing.items():
        console.print(f"[yellow]labels absent from {split}[/yellow]: {', '.join(missing)}")
    for pair, n in report.duplicates.items():
        a, b = pair.split("~")
        if n:
            console.print(f"[yellow]{n} examples of {a} also in {b}[/yellow] (identical token ids)")
        else:
            console.print(f"no examples of {a} repeat in {b}")


def _print_long_texts(console: "Console", report: "TokenizeReport") -> None:
    """What each way of fitting a long text into max_length drops: truncation cuts the same number of tokens from
    different places; --chunks cuts none and runs more windows instead."""
    from rich.table import Table


    if not any(s.over_max_length for s in report.splits):
        console.print(f"no text is longer than max_length {report.max_length}: truncation drops nothing")
        return
    n = report.max_length
    if report.is_pair:
        table = Table(f"split (pairs; over {n} tokens)", "texts", "tokens dropped (longest-first, from the end)", box=None)
        for s in report.splits:
            table.add_row(s.name, f"{s.over_max_length} ({s.over_max_length / max(1, s.examples):.1%})", f"{s.tokens_dropped:,}")
        console.print(table)
        return
    head, tail = head_tail_split(n)
    chosen = {name: " (recipe)" if name == report.truncation else "" for name in ("head", "tail", "head+tail")}
    table = Table(
        f"split (over {n} tokens)", "texts", f"head{chosen['head']} drops the end", f"tail{chosen['tail']} drops the start",
        f"head+tail{chosen['head+tail']} drops the middle", f"--chunks (stride {report.stride}) drops", box=None,
    )
    for s in report.splits:
        dropped = f"{s.tokens_dropped:,}"
        table.add_row(
            s.name, f"{s.over_max_length} ({s.over_max_length / max(1, s.examples):.1%})", dropped, dropped, dropped,
            f"0 ({s.chunk_windows:,} windows)" if s.over_max_length else "0",
        )
    console.print(table)
    console.print(f"head+tail keeps the first {head} and the last {tail} WordPieces of a long text (Sun et al. 2019); model.truncation picks the strategy")


def print_train_summary(result) -> None:
    """What a person wants after training: the score, the time, where it went, what to run next."""
    import os

    m = result.metrics
    if os.environ.get("RANK", "0") != "0":  # the global rank: on a second machine, LOCAL_RANK 0 saved nothing
        return
    best = f"{m['metric_for_best']} {m['best_value']:.4f} at step {m['best_step']} (epoch {m['best_epoch']:.2f})" if m["best_value"] is not None else "no validation split"
    # a pair model refuses a single text: the hint must be a command that runs
    example = '"first text" --pair "second text"' if _is_pair_run(result.run_dir) else '"some text"'
    if (teacher := m.get("distill", {}).get("teacher_validation", {}).get(m["metric_for_best"])) is not None:
        best += f"; teacher {m['metric_for_best']} {teacher:.4f}"
    print(
        f"\ndone: best {best}\n"
        f"      {m['global_steps']} steps in {m['wall_time_s']:.0f} s ({m['train_samples_per_s']:.1f} samples/s, {m['num_processes']} x {m['device']})\n"
        f"      saved to {result.run_dir}\n"
        f"next: bertctl eval {result.run_dir}\n"
        f"      bertctl predict --model {result.run_dir} {example}",
        flush=True,
    )


def _is_pair_run(run_dir) -> bool:
    """Whether a run was trained on sentence pairs (its recipe.toml names data.text_pair)."""
    import tomllib
    from pathlib import Path

    try:
        saved = tomllib.loads((Path(run_dir) / "recipe.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(saved.get("data", {}).get("text_pair"))


def _shorten(text: str, width: int) -> str:
    from rich.markup import escape

    flat = " ".join(text.split())
    # user text is data, not rich markup: "[/]" or "[bold]" in a headline must print as typed
    return escape(flat if len(flat) <= width else flat[: width - 1] + "…")


def _plain(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


def print_eval_report(console: "Console", result) -> None:
    """`bertctl eval`: overall metrics with their gate status, per-class rows, the confusion matrix."""
    from rich.table import Table


    m = result.metrics
    console.print(f"[bold]{_plain(result.run_dir)}[/bold] on {_plain(result.source)}: {result.examples} examples, max_length {result.max_length}, {result.seconds:.1f} s")
    for note in result.notes:
        console.print(f"[yellow]note[/yellow]: {_plain(note)}")
    checks = {c.metric: c for c in result.checks if not getattr(c, "slice", None) and c.kind in ("min", "max")}
    intervals = result.intervals
    compared = result.overall is not None and result.overall.baseline is not None
    columns = ["metric", "value", *(["baseline", "difference [95% CI]"] if compared else []), "gate"]
    overall = Table(*columns, box=None, title="overall (95% bootstrap CIs)" if intervals else "overall", title_justify="left")
    for name, value in m.overall.items():
        check = checks.get(name)
        if check is None:
            gate = ""
        else:
            sign = ">=" if check.kind == "min" else "<="
            gate = f"[green]ok[/green] ({sign} {check.threshold:g})" if check.passed else f"[red]FAIL[/red] ({sign} {check.threshold:g}, off by {-check.margin:.4f})"
        arrow = "" if METRICS[name] else " (lower is better)"
        cells = [name + arrow, f"{value:.4f}" + (f" [{intervals[name][0]:.4f}, {intervals[name][1]:.4f}]" if name in intervals else "")]
        if compared:
            o = result.overall
            ci = o.difference_intervals.get(name)
            cells += [f"{o.baseline[name]:.4f}", f"{o.differences[name]:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")]
        overall.add_row(*cells, gate)
    console.print(overall)
    if compared and result.overall.paired is not None:
        p = result.overall.paired
        console.print(f"{p.metric}: {len(p.fixed)} texts fixed, {len(p.broken)} broken against {_plain(result.baseline)}; McNemar exact p = {p.p_value:.4g}")
    if result.changes:
        changes = Table("", "row", "text", "reference", "new", "baseline", box=None, title="changes", title_justify="left")
        for c in result.changes:
            changes.add_row("[green]fixed[/green]" if c.fixed else "[red]broken[/red]", str(c.row), _shorten(c.text, 60), _plain(c.reference), _plain(c.new), _plain(c.baseline))
        console.print(changes)
    if result.slices:
        names = result.slice_columns()
        table = Table(_plain(result.slice_by), "texts", *names, box=None, title=f"slices by {_plain(result.slice_by)}" + (" (with the difference from the baseline)" if compared else ""), title_justify="left")
        for s in result.slices:
            sm = s.measured
            table.add_row(_plain(s.value), str(sm.examples), *[
                f"{sm.values[n]:.4f}" + (f" [{sm.intervals[n][0]:.4f}, {sm.intervals[n][1]:.4f}]" if n in sm.intervals else "") + (f" ({sm.differences[n]:+.4f})" if sm.baseline is not None else "")
                for n in names
            ])
        console.print(table)
    others = [c for c in result.checks if c not in checks.values()]
    for check in others:
        console.print(("[green]ok[/green]   " if check.passed else "[red]FAIL[/red] ") + _plain(check.describe()))
    multi = m.problem_type == MULTI_LABEL.name
    if m.per_class:
        extra = ("threshold", "tp", "fp", "fn") if multi else ()
        per_class = Table("label", "precision", "recall", "f1", "support", *extra, box=None, title="per label" if multi else "per class", title_justify="left")
        for j, (label, row) in enumerate(m.per_class.items()):
            cells = [_plain(label), f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"])]
            if multi:
                (_, fp), (fn, tp) = m.confusion_matrix[j]
                cells += [f"{row['threshold']:.3f}", str(tp), str(fp), str(fn)]
            per_class.add_row(*cells)
        console.print(per_class)
    if m.confusion_matrix is not None and not multi:
        matrix = Table("true \\ predicted", *[_plain(label) for label in m.labels], box=None, title="confusion matrix (rows: true label)", title_justify="left")
        for i, (label, row) in enumerate(zip(m.labels, m.confusion_matrix)):
            matrix.add_row(_plain(label), *[f"[bold]{c}[/bold]" if i == j else str(c) for j, c in enumerate(row)])
        console.print(matrix)
    if result.behaviour:
        _print_checks(console, result)
    if result.report_path:
        console.print(f"wrote {_plain(result.report_path)}" + (f" and {_plain(result.plot_path)}" if result.plot_path else ""))
    gates = len(result.checks) + len(result.behaviour)
    if gates:
        status = "[green]passed[/green]" if result.passed else "[red]failed[/red]"
        console.print(f"gate {status}: {gates - len(result.failed)} of {gates} gates met" + (" (behavioural tests included)" if result.behaviour else ""))


def _print_checks(console: "Console", result) -> None:
    """--checks: one row per behavioural test, then the first failing examples of each."""
    from rich.table import Table

    table = Table("test", "kind", "failed", "fail rate", "max", "result", box=None, title=f"behavioural tests ({_plain(result.checks_file)})", title_justify="left")
    for b in result.behaviour:
        verdict = "[green]ok[/green]" if b.passed else ("[red]FAIL[/red] (nothing tested)" if not b.tested else "[red]FAIL[/red]")
        table.add_row(_plain(b.name), _plain(b.title), f"{b.failures} / {b.tested}" + (f" ({b.skipped} skipped)" if b.skipped else ""), f"{100 * b.fail_rate:.1f}%", f"{100 * b.max_fail_rate:g}%", verdict)
    console.print(table)
    for b in result.behaviour:
        for e in b.examples[:2]:
            if e.changed is None:
                shown = _shorten(e.text, 60)
            else:
                # from a little before the first changed character: a suffix or a typo deep in a text still shows
                start = next((i for i, (x, y) in enumerate(zip(e.text, e.changed)) if x != y), min(len(e.text), len(e.changed)))
                start = max(0, start - 20)
                cut = "…" if start else ""
                shown = f"{cut}{_shorten(e.text[start:], 50)} -> {cut}{_shorten(e.changed[start:], 60)}"
            console.print(f"  {_plain(b.name)}: {shown}: expected {_plain(e.expected)}, got {_plain(e.got)}")


def print_predictions(console: "Console", predictions: list, top_k: int = 1, start: int = 1) -> None:
    """`bertctl predict`: one row per input, in input order, numbered from `start`; the text shortened to fit."""
    from rich.table import Table

    has_pairs = any(p.pair is not None for p in predictions)
    width = 40 if has_pairs else 60
    table = Table(box=None)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("text")
    if has_pairs:
        table.add_column("pair")
    problem = predictions[0].problem if predictions else SINGLE_LABEL
    single = problem == SINGLE_LABEL
    if problem == REGRESSION:
        table.add_column("value", justify="right", no_wrap=True)
    elif problem == MULTI_LABEL:
        table.add_column("labels (each at or above its threshold, with its probability)")
    else:
        table.add_column("label", no_wrap=True)
        table.add_column("score", justify="right", no_wrap=True)
    if top_k > 1 and single:
        table.add_column("next most likely")
    columns = len(table.columns)
    for i, p in enumerate(predictions, start=start):
        cells = [str(i), _shorten(p.text, width)] + ([_shorten(p.pair or "", width)] if has_pairs else [])
        if p.error is not None:
            cells += ["[yellow](empty)[/yellow]"]
        elif problem == REGRESSION:
            cells += [f"{p.value:.4g}"]
        elif problem == MULTI_LABEL:
            cells += [", ".join(f"{_plain(label)} {p.scores[label]:.3f}" for label in p.labels) or "[dim](none)[/dim]"]
        else:
            cells += [_plain(p.label), f"{p.score:.3f}"] + ([", ".join(f"{_plain(label)} {score:.3f}" for label, score in p.top_k[1:])] if top_k > 1 else [])
        table.add_row(*(cells + [""] * (columns - len(cells))))
    console.print(table)


def print_fill_mask(console, result: FillMaskResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    for n, prediction in enumerate(result.masks, 1):
        table = Table("rank", "token", "probability", box=None, title=f"{escape('[MASK]')} {n} of {len(result.masks)} (token {prediction.position})", title_justify="left")
        for rank, candidate in enumerate(prediction.candidates, 1):
            table.add_row(str(rank), escape(candidate["token"]), f"{candidate['probability']:.4f}")
        console.print(table)
    console.print(f"top-1 fill: {escape(result.filled)}")


def print_attention_report(console: "Console", report: AttentionReport) -> None:
    """Texts, tokens and paths are escaped: rich would read "[b]" in them as markup (and raise on "[/b]")."""
    import numpy as np
    from rich.markup import escape
    from rich.table import Table

    if report.text_maps is not None:
        console.print(f"[bold]{escape(report.model)}[/bold]: {len(report.text_maps.tokens)} tokens: {escape(' '.join(report.text_maps.tokens))}")
    if report.stats is not None:
        means = report.stats.means()
        table = Table("layer", "head", *[f"{label}" for label in STATISTICS.values()], box=None, title=f"head statistics over {escape(report.stats_source)}")
        layers, heads = report.stats.shape
        for lay in report.shown_layers or range(layers):
            for h in report.shown_heads or range(heads):
                table.add_row(str(lay), str(h), *[("-" if means[n][lay, h] != means[n][lay, h] else f"{means[n][lay, h]:.2f}") for n in STATISTICS])
        console.print(table)
        highlights = []
        for name, label in STATISTICS.items():
            values = means[name]
            if not np.isfinite(values).any():
                continue
            pick = np.nanargmin(values) if name == "entropy" else np.nanargmax(values)
            lay, h = np.unravel_index(pick, values.shape)
            what = "most focused (lowest entropy)" if name == "entropy" else f"most on {label}"
            highlights.append(f"{what}: layer {lay} head {h} ({values[lay, h]:.2f})")
        console.print(escape("; ".join(highlights)))
    if report.positions is not None:
        print_position_analysis(console, report.positions)
    console.print(f"wrote {escape(str(report.out_dir / 'index.html'))} ({sum(len(v) for v in report.images.values())} PNGs)")


def print_position_analysis(console: "Console", p: PositionAnalysis) -> None:
    import numpy as np

    at = ", ".join(f"{d}: {s:.3f}" for d, s in p.similarity_at.items())
    console.print(f"position embeddings: {p.positions} positions x {p.dim} dims")
    equal = "near-equal" if p.norm_cv < 0.1 else "unequal"
    console.print(f"  norms: mean {p.norm_mean:.3f}, std {p.norm_std:.3f}, coefficient of variation {p.norm_cv:.3f} ({equal}; sinusoidal: 0)")
    console.print(f"  largest norm: position {p.largest_norm_position} ({p.norms[p.largest_norm_position]:.3f}); median {float(np.median(p.norms)):.3f}")
    falls = "falls with distance" if p.distance_spearman < -0.5 else ("weakly falls with distance" if p.distance_spearman < -0.1 else "does not fall with distance")
    console.print(f"  similarity vs distance |i-j|: Spearman rho {p.distance_spearman:.3f} (similarity {falls}; sinusoidal: strongly negative)")
    console.print(f"  mean cosine similarity at distance {at}")


def print_pretrain_summary(result) -> None:
    import os

    if os.environ.get("RANK", "0") != "0":  # the global rank: on a second machine, LOCAL_RANK 0 saved nothing
        return
    m = result.metrics
    b, a = m["heldout"]["before"], m["heldout"]["after"]
    print(
        f"\ndone: held-out MLM loss {b['mlm_loss']:.4f} -> {a['mlm_loss']:.4f}, masked-token accuracy {b['mlm_accuracy']:.4f} -> {a['mlm_accuracy']:.4f}"
        f" ({m['heldout_examples']} texts, same masks)\n"
        + (f"      held-out NSP accuracy {b['nsp_accuracy']:.4f} -> {a['nsp_accuracy']:.4f} ({b['nsp_pairs']} sentence pairs)\n" if "nsp_accuracy" in b else "")
        + f"      {m['global_steps']} steps in {m['wall_time_s']:.0f} s ({m['train_samples_per_s']:.1f} samples/s, {m['num_processes']} x {m['device']})\n"
        f"      saved to {result.run_dir}\n"
        f"next: set [model] name = \"{result.run_dir.resolve()}\" in a recipe and bertctl train it\n"
        f'      bertctl fill-mask --model {result.run_dir} "some text with [MASK]"',
        flush=True,
    )


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def print_sweep_summary(console: "Console", summary, next_steps: bool = True) -> None:
    """The trials table (params, metric, state, time, peak RSS), the best trial, and what the sweep dir holds."""
    from rich.table import Table

    table = Table("trial", "state", *summary.keys, summary.metric, "time", "peak RSS", box=None)
    # the star is the study's best, so every worker of a shared study prints the same table
    best = summary.study_best if summary.study_best is not None else (summary.best["trial"] if summary.best else None)
    for t in summary.trials:
        value = "-" if t["value"] is None else f"{t['value']:.4f}"
        retry = f" (retry of {t['retry_of']})" if t.get("retry_of") is not None else ""
        params = ["-" if key not in t["params"] else _param(t["params"][key]) for key in summary.keys]
        seconds = "-" if t["seconds"] is None else f"{t['seconds']:.0f} s"
        memory = "-" if t.get("peak_rss_mib") is None else f"{t['peak_rss_mib'] / 1024:.2f} GiB"
        table.add_row(f"{t['number']}{' *' if t['number'] == best else ''}", t["state"].lower() + retry, *params, value, seconds, memory)
    console.print(table)
    counts = {}
    for t in summary.trials:
        counts[t["state"].lower()] = counts.get(t["state"].lower(), 0) + 1
    console.print(f"\nstudy {summary.study_name!r} in {summary.storage}: {', '.join(f'{n} {s}' for s, n in counts.items()) or 'no trials'}; {summary.metric} ({summary.direction})")
    if summary.best:
        console.print(f"best: trial {summary.best['trial']}, {summary.metric} {summary.best[summary.metric]:.4f}, kept in {summary.output / 'best'}")
    console.print(f"sweep dir {summary.output}: {_size(summary.size_bytes)}")
    for path in summary.plots:
        console.print(f"wrote {path}")
    for note in summary.notes:
        console.print(note)
    if next_steps and summary.best:
        console.print(f"next: bertctl eval {summary.output / 'best'}\n      bertctl sweep --show {summary.output}")


def _param(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
