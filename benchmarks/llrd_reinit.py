"""Layer-wise lr decay and re-initialised top layers against plain fine-tuning, on any recipe, over seeds.

    python benchmarks/llrd_reinit.py recipes/agnews.toml --seeds 1 2 3
    python benchmarks/llrd_reinit.py recipes/stsb.toml train.epochs=3 --seeds 1 2 3 --llrd 0.9 --reinit 2
    python benchmarks/llrd_reinit.py recipes/agnews.toml data.limit.train=200 train.epochs=1 --seeds 1   # smoke run

Variants: baseline; llrd (train.layerwise_lr_decay, Sun et al. 2019); reinit (train.reinit_layers, Zhang et al.
2021); both. Each training is `bertctl train` in its own process (`--output-dir` under --out); the table shows the
recipe's train.metric_for_best on validation (its best checkpoint, mean and spread over the seeds) and the training
time (metrics.json's wall_time_s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("overrides", nargs="*", help="recipe overrides for every variant, e.g. train.epochs=3")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--llrd", type=float, default=0.9, help="train.layerwise_lr_decay of the llrd variants")
    parser.add_argument("--reinit", type=int, default=2, help="train.reinit_layers of the reinit variants")
    parser.add_argument("--out", type=Path, default=None, help="where the run dirs go (default: a temp dir, removed)")
    args = parser.parse_args()

    variants = {
        "baseline": [],
        f"llrd {args.llrd}": [f"train.layerwise_lr_decay={args.llrd}"],
        f"reinit {args.reinit}": [f"train.reinit_layers={args.reinit}"],
        "both": [f"train.layerwise_lr_decay={args.llrd}", f"train.reinit_layers={args.reinit}"],
    }
    tmp = None if args.out else tempfile.TemporaryDirectory()
    out = args.out or Path(tmp.name)
    rows, metric = [], None
    for name, extra in variants.items():
        values, seconds = [], []
        for seed in args.seeds:
            run = out / f"{name.replace(' ', '-')}-seed{seed}"
            cmd = [sys.executable, "-m", "bertctl", "train", str(args.recipe), *args.overrides, *extra, f"train.seed={seed}", "--output-dir", str(run), "--overwrite"]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ}, check=False)
            if done.returncode != 0:
                sys.exit(f"{name}, seed {seed} failed:\n{done.stderr[-3000:]}")
            metrics = json.loads((run / "metrics.json").read_text())
            metric = metrics["metric_for_best"]
            values.append(metrics["best_value"])
            seconds.append(metrics["wall_time_s"])
            print(f"{name:<12} seed {seed}: {metric} {metrics['best_value']:.4f}  {metrics['wall_time_s']:.0f} s", flush=True)
        rows.append((name, values, seconds))
    print(f"\n{'variant':<12} {'validation ' + metric:>24} {'min':>8} {'max':>8} {'train s':>9}   ({len(args.seeds)} seeds: {' '.join(map(str, args.seeds))})")
    for name, values, seconds in rows:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{name:<12} {statistics.mean(values):>15.4f} ± {spread:.4f} {min(values):>8.4f} {max(values):>8.4f} {statistics.mean(seconds):>9.1f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
