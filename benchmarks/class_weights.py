"""Skewed classes: `train.class_weights = "balanced"` against no weights, on AG News with one class cut to 5%.

    python benchmarks/class_weights.py                 # Sci/Tech cut to 5% of its train rows; 2 trainings
    python benchmarks/class_weights.py --minority Business --share 0.05 --seeds 42 7
    python benchmarks/class_weights.py --quick         # smoke run: 400 train rows, 1 epoch

The train split is recipes/data/agnews/train.csv with the minority class's rows cut (seeded) to `--share` of
them, so that class is ~1.3% of training examples at 5%; the dev split is recipes/data/agnews/dev.csv as it is
(250 rows per class), so recall on the minority class is measured on as many examples as on the others. Both runs
use recipes/agnews.toml otherwise unchanged; each trains in its own process, best checkpoint by accuracy, and is
scored by `bertctl eval` on the dev split.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import AGNEWS, AGNEWS_RECIPE, command_line, emit_result, load_average, machine_summary, run_worker, table  # noqa: E402


def skewed_train(path: Path, minority: str, share: float, seed: int, limit: int | None) -> tuple[Path, dict[str, int]]:
    with open(AGNEWS / "train.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rng = random.Random(seed)
    keep = [r for r in rows if r["label"] != minority]
    cut = [r for r in rows if r["label"] == minority]
    rng.shuffle(cut)
    rows = keep + cut[: max(1, round(share * len(cut)))]
    rng.shuffle(rows)
    rows = rows[:limit] if limit else rows
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    return path, counts


def worker(train_csv: str, weights: str, seed: int, epochs: int) -> dict:
    from bertctl.evaluation import evaluate_run
    from bertctl.recipe import load_recipe
    from bertctl.training import train

    overrides = [f"data.train={train_csv}", f"data.validation={AGNEWS / 'dev.csv'}", "~data.validation_fraction", "~data.test", f"train.class_weights={weights}", f"train.seed={seed}"]
    overrides += [f"train.epochs={epochs}"] if epochs else []
    recipe = load_recipe(AGNEWS_RECIPE, overrides)
    run_dir = tempfile.mkdtemp(prefix=f"bench-weights-{weights}-")
    result = train(recipe, output_dir=run_dir, overwrite=True, progress=False)
    evaluated = evaluate_run(run_dir, split="validation")
    return {"weights": weights, "seed": seed, "overall": evaluated.metrics.overall, "per_class": evaluated.metrics.per_class, "train_s": result.metrics["wall_time_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minority", default="Sci/Tech")
    parser.add_argument("--share", type=float, default=0.05, help="share of the minority class's train rows kept")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        train_csv, weights, seed, epochs = args.worker
        emit_result(worker(train_csv, weights, int(seed), int(epochs)))
        return
    print(f"# {command_line()}\n# {json.dumps(machine_summary())}  load before: {load_average()}")
    folder = Path(tempfile.mkdtemp(prefix="bench-skewed-"))
    rows = []
    for seed in args.seeds:
        path, counts = skewed_train(folder / f"train-{seed}.csv", args.minority, args.share, seed, 400 if args.quick else None)
        print(f"seed {seed}: train rows per class {counts}")
        for weights in ("none", "balanced"):
            r = run_worker(Path(__file__), ["--worker", str(path), weights, str(seed), "1" if args.quick else "0"], timeout=7200)
            minority = r["per_class"][args.minority]
            rows.append([weights, seed, minority["recall"], minority["precision"], minority["f1"], r["overall"]["f1_macro"], r["overall"]["accuracy"], r["train_s"]])
            print("BENCH_JSON " + json.dumps(r, default=str))
    print(f"\n## {args.minority} cut to {args.share:.0%} of its train rows; dev: recipes/data/agnews/dev.csv (250 per class)")
    print(table(["class_weights", "seed", f"{args.minority} recall", "precision", "f1", "f1_macro", "accuracy", "train s"], rows))
    print(f"# load after: {load_average()}")


if __name__ == "__main__":
    main()
