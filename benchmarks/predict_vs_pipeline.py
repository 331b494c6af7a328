"""Batch prediction throughput: `transformers.pipeline("text-classification")` against bertctl's prediction path.

    python benchmarks/predict_vs_pipeline.py                      # needs a trained run: runs/agnews (bertctl train recipes/agnews.toml)
    python benchmarks/predict_vs_pipeline.py --run-dir runs/latest
    python benchmarks/predict_vs_pipeline.py --quick              # trains a tiny run first (1 epoch, 300 rows) into a temp dir
    python benchmarks/predict_vs_pipeline.py --device cuda --modes fp32 --export-dir runs/agnews/onnx \
        --onnx-provider CUDAExecutionProvider                     # on a GPU: pipeline(device=0), torch on cuda, the export on ORT CUDA

Modes, all on the 1,000 AG News dev texts (--quick: the first 300), in one process, interleaved round by round
(best round reported), after one warm-up call each:
  pipeline   pipeline("text-classification", model=RUN_DIR, batch_size=32), called with truncation=True and
             max_length = the run's model.max_length, so it sees exactly the tokens bertctl sees
  fp32       bertctl.inference: load_for_inference(RUN_DIR) + predict_texts (texts sorted by length, batches of
             64 padded to their own longest text, last layer computing [CLS] only); the path of
             `bertctl predict --file`
  int8       the same with quantize="int8" (`--quantize int8`: dynamic int8 Linear layers)
  stock      fp32/int8 with fast_path=False (`--no-fast-path`): the stock transformers forward, to show what
             length-sorted batching alone brings and what the [CLS]-only last layer adds
  onnx       (with --export-dir) a `bertctl export` dir through bertctl's own path (load_for_inference +
             predict_texts) on onnxruntime; --onnx-provider CUDAExecutionProvider swaps the session bertctl made
             (CPUExecutionProvider, the only one bertctl.inference.onnx asks for) for one on that provider
--device cuda puts the pipeline (device=0) and the torch modes on the first GPU (int8 stays on the CPU, as
`--quantize int8` does); --modes picks which bertctl modes run (the pipeline always does: it is the reference).
texts/s counts tokenization, forward passes and turning logits into labels; model loading (imports already
done) is reported apart; process start-up is what cold_start.sh measures.
"same labels" is the share of texts whose label equals the pipeline's; accuracy is against the gold labels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import AGNEWS, REPO, train_tiny_run, command_line, load_average, machine_summary, table  # noqa: E402

QUICK_TEXTS = 300
MODES = {  # --modes name -> (mode name in the table, quantize, fast_path)
    "fp32": ("fp32", None, True),
    "int8": ("int8", "int8", True),
    "fp32-stock": ("fp32 stock", None, False),
    "int8-stock": ("int8 stock", "int8", False),
}


def use_onnx_provider(classifier, provider: str) -> None:
    """Run an export's classifier (bertctl.inference.onnx.load_export) on another onnxruntime execution provider: bertctl
    asks for CPUExecutionProvider only, so the benchmark makes the session itself, with the same graph and options."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider not in available:
        raise SystemExit(f"onnxruntime {ort.__version__} has no {provider} (it has: {', '.join(available)})")
    model = classifier.model
    options = ort.SessionOptions()
    options.log_severity_level = 3
    model.session = ort.InferenceSession(str(classifier.run_dir / "model.onnx"), options, providers=[provider, "CPUExecutionProvider"])
    if model.session.get_providers()[0] != provider:
        raise SystemExit(f"onnxruntime did not put the graph on {provider} (providers: {model.session.get_providers()})")
    model.input_names = [i.name for i in model.session.get_inputs()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/agnews", help="a finished bertctl run (default runs/agnews)")
    parser.add_argument("--quick", action="store_true", help=f"train a tiny run into a temp dir and use the first {QUICK_TEXTS} dev texts")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per mode (best kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPUs this process may use)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the pipeline and bertctl's torch modes run")
    parser.add_argument("--modes", default="fp32,int8,fp32-stock,int8-stock", help=f"bertctl modes, comma-separated, of: {', '.join(MODES)}")
    parser.add_argument("--export-dir", default=None, help="also time this `bertctl export` dir (mode onnx)")
    parser.add_argument("--onnx-provider", default="CPUExecutionProvider", help="onnxruntime execution provider for --export-dir")
    parser.add_argument("--limit", type=int, default=None, help=f"the first N dev texts (default all 1,000; --quick {QUICK_TEXTS})")
    args = parser.parse_args()
    wanted = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in MODES]
    if unknown:
        raise SystemExit(f"--modes: unknown {', '.join(unknown)} (choose from {', '.join(MODES)})")

    import pandas as pd

    dev = pd.read_csv(AGNEWS / "dev.csv")
    if args.limit or args.quick:
        dev = dev.head(args.limit or QUICK_TEXTS)
    texts, gold = dev["text"].astype(str).tolist(), dev["label"].astype(str).tolist()

    run_dir = train_tiny_run("bench-predict-run-") if args.quick else (REPO / args.run_dir if not Path(args.run_dir).is_absolute() else Path(args.run_dir))
    if not (run_dir / "config.json").is_file():
        raise SystemExit(f"{run_dir} is not a trained run: train one with `bertctl train recipes/agnews.toml`, pass --run-dir, or use --quick")

    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from bertctl import inference

    hf_logging.set_verbosity_error()
    loads = {}
    classifiers = {}
    for mode, quantize, fast_path in (MODES[m] for m in wanted):
        start = time.perf_counter()
        device = "cpu" if quantize else args.device  # int8 (torch's dynamic quantization) runs on the CPU only
        classifiers[mode] = inference.load_for_inference(str(run_dir), quantize=quantize, threads=args.threads, fast_path=fast_path, device=device)
        loads[mode] = time.perf_counter() - start
    if args.export_dir:
        start = time.perf_counter()
        classifiers["onnx"] = inference.load_for_inference(args.export_dir, threads=args.threads)
        if args.onnx_provider != "CPUExecutionProvider":
            use_onnx_provider(classifiers["onnx"], args.onnx_provider)
        loads["onnx"] = time.perf_counter() - start
    if not classifiers:
        raise SystemExit("nothing to compare with the pipeline: give --modes or --export-dir")
    max_length = next(iter(classifiers.values())).max_length
    start = time.perf_counter()
    pipe = pipeline("text-classification", model=str(run_dir), batch_size=32, device=0 if args.device == "cuda" else "cpu")
    loads["pipeline"] = time.perf_counter() - start

    def run_pipeline(batch):
        return [out["label"] for out in pipe(batch, truncation=True, max_length=max_length)]

    def run_bertctl(classifier):
        def call(batch):
            return [p.label for p in inference.predict_texts(classifier, batch).predictions]

        return call

    modes = {"pipeline": run_pipeline, **{mode: run_bertctl(classifier) for mode, classifier in classifiers.items()}}
    machine = machine_summary()
    print(f"# {command_line()}")
    print(f"# {machine['cpu']}, {machine['cpus']} CPUs, {torch.get_num_threads()} torch threads, torch {machine['torch']}, "
          f"transformers {machine['transformers']}; load average {machine['load_average']}")
    if args.device == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(0)
        print(f"# GPU: {machine['gpu']}; pipeline(device=0), bertctl torch modes on cuda")
    if args.export_dir:
        print(f"# export {args.export_dir} on {args.onnx_provider}")
    print(f"# run dir {run_dir}; {len(texts)} dev texts; max_length {max_length}", flush=True)

    for call in modes.values():
        call(texts[:64])  # warm-up: thread pools, allocator, lazy imports
    timings: dict[str, list[float]] = {m: [] for m in modes}
    labels: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for mode, call in modes.items():
            start = time.perf_counter()
            labels[mode] = call(texts)
            timings[mode].append(time.perf_counter() - start)

    reference = labels["pipeline"]
    summary = {}
    for mode in modes:
        best = min(timings[mode])
        summary[mode] = {
            "texts_per_s": len(texts) / best,
            "best_s": best,
            "all_s": timings[mode],
            "same_labels_as_pipeline": sum(a == b for a, b in zip(labels[mode], reference)) / len(texts),
            "accuracy": sum(a == b for a, b in zip(labels[mode], gold)) / len(texts),
            "load_s": loads.get(mode),
        }
    for mode in modes:
        summary[mode]["speedup_vs_pipeline"] = summary[mode]["texts_per_s"] / summary["pipeline"]["texts_per_s"]

    names = {"pipeline": "transformers pipeline (batch 32)", "fp32": "bertctl predict (fp32)", "int8": "bertctl predict --quantize int8",
             "fp32 stock": "bertctl predict --no-fast-path", "int8 stock": "bertctl predict --quantize int8 --no-fast-path",
             "onnx": f"bertctl predict on the export ({args.onnx_provider})"}
    rows = [
        [names[m], s["texts_per_s"], f"{s['speedup_vs_pipeline']:.2f}x", f"{100 * s['same_labels_as_pipeline']:.1f}%", f"{s['accuracy']:.4f}", s["load_s"]]
        for m, s in summary.items()
    ]
    print()
    print(table(["mode", "texts/s", "vs pipeline", "same labels", "accuracy", "model load s"], rows))
    print(f"\nbest of {args.rounds} rounds; load average at end {load_average()}")
    if args.quick:
        import shutil

        shutil.rmtree(run_dir.parent, ignore_errors=True)
    print(json.dumps({"benchmark": "predict_vs_pipeline", "command": command_line(), "machine": machine, "run_dir": str(run_dir),
                      "device": args.device, "export_dir": args.export_dir, "onnx_provider": args.onnx_provider if args.export_dir else None,
                      "texts": len(texts), "max_length": max_length, "threads": torch.get_num_threads(), "modes": summary}, default=str))


if __name__ == "__main__":
    main()
