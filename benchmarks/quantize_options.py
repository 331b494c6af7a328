"""Which int8 export pays on this CPU: the quantization options and onnxruntime session settings, each timed on one
pinned core, with its accuracy, against the fp32 export; and how close fp32 runs to this core's matmul peak.

    python benchmarks/quantize_options.py --run-dir runs/agnews            # ~5 min on a quiet 2-core machine
    python benchmarks/quantize_options.py --run-dir runs/agnews --texts 300 --rounds 1    # a quick look

export_vs_pipeline.py runs it as its section 4. Every variant starts from the same TorchScript export of the run
(the graph `bertctl export` makes) and is timed the same way, in one process pinned to one CPU (--cpu, default the
last one this process may use) with onnxruntime's intra-op threads = 1: the AG News dev texts tokenized once (the
run's tokenizer and max_length), sorted by length, batches of 32, `session.run` only, best of --rounds after a
warm-up. Accuracy is on the same texts; "same labels" is against fp32.

Variants (dynamic quantization quantizes weights ahead and activations per batch; static calibrates activation
ranges on --calibration training texts, QDQ format):
  fp32                      the stock forward, onnxruntime's BERT fusions (Attention, SkipLayerNormalization, Gelu)
  int8 s8 per-tensor        quantize_dynamic(QInt8), then the fusions, on the stock forward
  fp32 / int8, [CLS]-only last layer   the forward bertctl.fastpath runs, traced: = `bertctl export [--quantize int8]`
  int8 s8 per-channel       the same with per_channel=True
  int8 u8 weights           the same with QUInt8 weights
  fuse, then int8           the fusions first, then quantize_dynamic (QAttention; DefaultTensorType FLOAT)
  static QDQ s8 per-channel quantize_static of the MatMuls, MinMax calibration on training texts, then the fusions
Session settings, on the fastest int8 variant and on fp32: graph optimisation level (basic / extended / all), the CPU
memory arena off, and, where the machine has 2+ CPUs, 2 intra-op threads (not pinned: for scale, not the target).

FLOP utilisation: the matmul FLOPs the encoder does for these batches (each batch at its padded length: per layer
2*s*(4*h^2 + 2*h*f) for the projections and the feed-forward, plus 4*s^2*h for the attention scores and mix) over
the fp32 run's time, against this core's measured fp32 matmul peak (torch.mm of 1024x1024 matrices, 1 thread,
best of 20). int8 variants are reported in the same fp32-equivalent GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import AGNEWS, command_line, cpu_flags, cpu_model, load_average, table  # noqa: E402

BATCH = 32


def pin_to(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    os.environ["OMP_NUM_THREADS"] = "1"


def matmul_peak_gflops() -> float:
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(20))
    return 2 * 1024**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def batches(run_dir: Path, n: int):
    """Length-sorted, padded int64 batches of the dev texts, their labels (ids), and the encoder FLOPs they cost."""
    import numpy as np
    import pandas as pd
    from transformers import AutoConfig, AutoTokenizer

    from bertctl.inference import read_run_settings

    config = AutoConfig.from_pretrained(run_dir)
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    max_length = read_run_settings(run_dir).max_length or 512
    dev = pd.read_csv(AGNEWS / "dev.csv").head(n)
    label_ids = {name: i for i, name in config.id2label.items()}
    labels = np.array([label_ids[name] for name in dev["label"]])
    encoded = tokenizer(list(dev["text"]), truncation=True, max_length=max_length)
    order = sorted(range(len(dev)), key=lambda i: len(encoded["input_ids"][i]))
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    out, flops = [], 0.0
    for start in range(0, len(order), BATCH):
        rows = order[start : start + BATCH]
        s = max(len(encoded["input_ids"][i]) for i in rows)
        feed = {}
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            pad = tokenizer.pad_token_id if name == "input_ids" else 0
            feed[name] = np.array([encoded[name][i] + [pad] * (s - len(encoded[name][i])) for i in rows], dtype=np.int64)
        out.append((rows, feed))
        flops += len(rows) * layers * (2 * s * (4 * h * h + 2 * h * f) + 4 * s * s * h)
    return out, labels, flops, config


class TrainTexts:
    """onnxruntime's CalibrationDataReader over tokenized training texts (static quantization)."""

    def __init__(self, run_dir: Path, n: int):
        import pandas as pd
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(run_dir)
        texts = list(pd.read_csv(AGNEWS / "train.csv")["text"].sample(n, random_state=0))
        self.feeds = iter([{k: v.astype("int64") for k, v in tokenizer(texts[i : i + 16], padding=True, truncation=True, max_length=128, return_tensors="np").items()}
                           for i in range(0, n, 16)])

    def get_next(self):
        return next(self.feeds, None)


def build_variants(run_dir: Path, work: Path, calibration: int) -> dict[str, Path]:
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bertctl.export import _optimize, _torch_export

    from bertctl.fastpath import use_fast_path

    logging.getLogger().setLevel(logging.ERROR)
    # the stock forward (eager attention, as onnxruntime's Attention fusion wants it) for the options below
    model = AutoModelForSequenceClassification.from_pretrained(run_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    raw = work / "raw.onnx"
    _torch_export(model, tokenizer, raw, "torchscript", 17)
    config = model.config
    made = {"fp32": work / "fp32.onnx"}
    _optimize(raw, made["fp32"], config)
    # what `bertctl export` traces: the last layer for [CLS] only (bertctl.fastpath), fp32 and int8
    cls_model = AutoModelForSequenceClassification.from_pretrained(run_dir, attn_implementation="eager").eval()
    use_fast_path(cls_model, fused_qkv=False, cheap_dropout=False)
    cls_raw = work / "cls-raw.onnx"
    _torch_export(cls_model, tokenizer, cls_raw, "torchscript", 17)
    made["fp32, [CLS]-only last layer (bertctl export)"] = work / "cls-fp32.onnx"
    _optimize(cls_raw, made["fp32, [CLS]-only last layer (bertctl export)"], config)
    cls_quantized = work / "cls.q.onnx"
    quantize_dynamic(str(cls_raw), str(cls_quantized), weight_type=QuantType.QInt8)
    made["int8 s8 per-tensor, [CLS]-only last layer (bertctl export --quantize int8)"] = work / "cls-int8.onnx"
    _optimize(cls_quantized, made["int8 s8 per-tensor, [CLS]-only last layer (bertctl export --quantize int8)"], config)

    def dynamic(name: str, **options) -> None:
        quantized = work / f"{name}.q.onnx"
        quantize_dynamic(str(raw), str(quantized), **options)
        made[name] = work / f"{name}.onnx"
        _optimize(quantized, made[name], config)

    dynamic("int8 s8 per-tensor", weight_type=QuantType.QInt8)  # bertctl export --quantize int8 on the stock graph
    dynamic("int8 s8 per-channel", weight_type=QuantType.QInt8, per_channel=True)
    dynamic("int8 u8 weights", weight_type=QuantType.QUInt8)
    made["fuse, then int8"] = work / "fused-q.onnx"
    quantize_dynamic(str(made["fp32"]), str(made["fuse, then int8"]), weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": 1})  # onnx FLOAT
    static = work / "static.q.onnx"
    # only the matrix products: quantizing every op (the mask arithmetic, whose calibrated range is a constant 0)
    # gave a zero scale and accuracy 0.26
    quantize_static(str(raw), str(static), TrainTexts(run_dir, calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    op_types_to_quantize=["MatMul", "Gemm"])
    made["static QDQ s8 per-channel"] = work / "static.onnx"
    _optimize(static, made["static QDQ s8 per-channel"], config)
    return made


def session(path: Path, level: str = "all", arena: bool = True, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    options.enable_cpu_mem_arena = arena
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(sess, data, labels, rounds: int) -> dict:
    import numpy as np

    names = {i.name for i in sess.get_inputs()}
    feeds = [(rows, {k: v for k, v in feed.items() if k in names}) for rows, feed in data]
    for _, feed in feeds[:3]:
        sess.run(None, feed)
    best, predicted = float("inf"), np.zeros(len(labels), dtype=int)
    for _ in range(rounds):
        start = time.perf_counter()
        for rows, feed in feeds:
            predicted[rows] = sess.run(None, feed)[0].argmax(-1)
        best = min(best, time.perf_counter() - start)
    return {"seconds": best, "texts_per_s": len(labels) / best, "accuracy": float((predicted == labels).mean()), "predicted": predicted}


def run(run_dir: Path, texts: int, rounds: int, calibration: int, cpu: int | None) -> dict:
    """Every variant and session setting; returns the rows and the peak (export_vs_pipeline.py prints them too)."""
    available = sorted(os.sched_getaffinity(0))
    cpu = available[-1] if cpu is None else cpu
    pin_to(cpu)
    peak = matmul_peak_gflops()
    data, labels, flops, _ = batches(run_dir, texts)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bertctl-quant-") as tmp:
        variants = build_variants(run_dir, Path(tmp), calibration)
        for name, path in variants.items():
            results[name] = measure(session(path), data, labels, rounds) | {"size_mb": path.stat().st_size / 2**20}
            print(f"#   {name}: {results[name]['texts_per_s']:.1f} texts/s, accuracy {results[name]['accuracy']:.4f}; load average {load_average()}", flush=True)
        fastest = max((n for n in results if n != "fp32"), key=lambda n: results[n]["texts_per_s"])
        for base in ("fp32", fastest):
            for label, kwargs in (("level basic", {"level": "basic"}), ("level extended", {"level": "extended"}), ("memory arena off", {"arena": False})):
                name = f"{base}, {label}"
                results[name] = measure(session(variants[base], **kwargs), data, labels, rounds) | {"size_mb": variants[base].stat().st_size / 2**20}
                print(f"#   {name}: {results[name]['texts_per_s']:.1f} texts/s; load average {load_average()}", flush=True)
        if len(available) >= 2:
            os.sched_setaffinity(0, set(available))
            for base in ("fp32", fastest):
                name = f"{base}, 2 threads (unpinned)"
                results[name] = measure(session(variants[base], threads=2), data, labels, rounds) | {"size_mb": variants[base].stat().st_size / 2**20}
            pin_to(cpu)
    fp32 = results["fp32"]
    rows = []
    for name, r in results.items():
        r["same_labels_as_fp32"] = float((r["predicted"] == fp32["predicted"]).mean())
        gflops = flops / r["seconds"] / 1e9
        rows.append([name, r["texts_per_s"], r["texts_per_s"] / fp32["texts_per_s"], r["accuracy"], 100 * (r["accuracy"] - fp32["accuracy"]), 100 * r["same_labels_as_fp32"], gflops, 100 * gflops / peak, r["size_mb"]])
    for r in results.values():
        del r["predicted"]
    return {"cpu": cpu, "peak_gflops": peak, "flops_per_text": flops / len(labels), "texts": len(labels), "fastest_int8": fastest, "results": results, "rows": rows}


def print_report(found: dict) -> None:
    print(table(["variant", "texts/s", "vs fp32", "accuracy", "points vs fp32", "same labels %", "GFLOP/s", "% of peak", "MB"], found["rows"]))
    fp32 = found["results"]["fp32"]
    print(f"fp32 matmul peak of CPU {found['cpu']} (torch.mm 1024^3, 1 thread): {found['peak_gflops']:.1f} GFLOP/s; the encoder does "
          f"{found['flops_per_text'] / 1e9:.2f} GFLOP per text at these padded lengths, so fp32 runs at "
          f"{100 * found['flops_per_text'] * fp32['texts_per_s'] / 1e9 / found['peak_gflops']:.0f}% of peak; fastest int8: {found['fastest_int8']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/agnews", help="a finished bertctl run (default runs/agnews)")
    parser.add_argument("--texts", type=int, default=1000, help="dev texts timed (default all 1,000)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant, best kept")
    parser.add_argument("--calibration", type=int, default=256, help="training texts that calibrate static quantization")
    parser.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default: the last one this process may use)")
    args = parser.parse_args()
    run_dir = Path(args.run_dir).resolve()
    if not (run_dir / "config.json").is_file():
        raise SystemExit(f"{run_dir} is not a trained run: train one with `bertctl train recipes/agnews.toml`, or pass --run-dir")
    print(f"# {command_line()}")
    print(f"# {cpu_model()}; {', '.join(sorted(f for f in cpu_flags() if f.startswith(('avx512_vnni', 'avx_vnni', 'amx', 'avx2'))))}; load average {load_average()}", flush=True)
    found = run(run_dir, args.texts, args.rounds, args.calibration, args.cpu)
    print()
    print_report(found)
    print(f"# load average at end {load_average()}{'  [contended: above the CPU count]' if os.getloadavg()[0] > (os.cpu_count() or 1) else ''}")
    print(json.dumps({"benchmark": "quantize_options", "command": command_line(), **{k: v for k, v in found.items() if k != "rows"}}, default=str))


if __name__ == "__main__":
    main()
