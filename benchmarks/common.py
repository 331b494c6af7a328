"""Helpers shared by the benchmark scripts: machine description, peak memory, matmul peak, tables, workers.

Benchmarks run each contender in its own subprocess (`run_worker`), so imports, allocator state and peak
memory of one never leak into another.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AGNEWS = REPO / "recipes" / "data" / "agnews"
AGNEWS_RECIPE = REPO / "recipes" / "agnews.toml"
AGNEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
RESULT_PREFIX = "BENCH_RESULT "


def command_line() -> str:
    """The command that reproduces this run, as it would be typed from the repo root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    return " ".join(["python", str(script), *map(shlex.quote, sys.argv[1:])])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_summary() -> dict[str, Any]:
    import torch
    import transformers

    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "simd": "avx512" if "avx512f" in flags else ("avx2" if "avx2" in flags else "other"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_average": load_average(),
    }


def gpu_name() -> str | None:
    """The first CUDA device's name, or None without one (torch imported late: the parent scripts stay light)."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def maxrss_mib(maxrss: int) -> float:
    """getrusage's / wait4's ru_maxrss in MiB: bytes on macOS, KiB on Linux."""
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark (VmHWM), in MiB. VmHWM, because exec resets it, while
    getrusage's RUSAGE_SELF keeps the peak of the forked copy of the parent from before exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return maxrss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def matmul_peak_gflops(threads: int | None = None, sizes: tuple[int, ...] = (1024, 1536, 2048), seconds: float = 1.0) -> dict[str, Any]:
    """fp32 square-matmul GFLOP/s with `threads` torch threads: best of several timed rounds per size."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    results = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a.mm(b)  # warm-up: first call pays for thread-pool start and page faults
        flops = 2 * n**3
        reps = max(1, int(seconds * 100e9 / flops))  # about `seconds` per round at 100 GFLOP/s
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(reps):
                a.mm(b)
            best = min(best, (time.perf_counter() - start) / reps)
        results[n] = flops / best / 1e9
    return {"threads": torch.get_num_threads(), "by_size": results, "peak": max(results.values())}


def run_worker(script: Path, args: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run `script --worker ...` in a fresh interpreter; returns its BENCH_RESULT JSON plus wall time."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=full_env, cwd=REPO, timeout=timeout)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"worker {' '.join(args)} failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["process_wall_s"] = wall
    return result


def emit_result(result: dict[str, Any]) -> None:
    """A worker's answer to its parent: one prefixed JSON line on stdout."""
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[h for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for k, row in enumerate(cells):
        out.append("| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |")
        if k == 0:
            out.append("|" + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|")
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def train_tiny_run(prefix: str) -> Path:
    """--quick: a 1-epoch, 300-row AG News run in a temp dir, to measure prediction paths on."""
    import tempfile

    from bertctl.recipe import load_recipe
    from bertctl.training import train

    recipe = load_recipe(AGNEWS_RECIPE, ["train.epochs=1", "data.limit.train=300", "data.limit.validation=100"])
    out = Path(tempfile.mkdtemp(prefix=prefix)) / "run"
    print(f"# --quick: training a tiny run into {out} (1 epoch, 300 rows) ...", flush=True)
    train(recipe, output_dir=out, progress=False)
    return out
