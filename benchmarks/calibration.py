"""Temperature scaling (`train.calibrate`) measured on a trained run: ECE and log loss before and after, cross-fitted.

    python benchmarks/calibration.py --run-dir runs/agnews
    python benchmarks/calibration.py --run-dir runs/goemotions

The run's validation split goes through bertctl's inference path (the saved model, as `bertctl eval` scores it).
`train.calibrate` fits its temperature on that split and folds it into the head; scoring on the split it was fitted
on flatters it, so this script also cross-fits: the temperature fitted on one half scores the other half, and the
two halves' metrics are averaged. Prints one table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args()

    from bertctl import evaluation, inference

    classifier = inference.load_for_inference(args.run_dir, device="cpu")
    problem = classifier.problem
    data, recipe = evaluation._recipe_split(args.run_dir, classifier, "validation")
    logits = inference.encoded_logits(classifier, data.encoded).astype(np.float64)
    refs = np.asarray(data.references)
    names = [n for n in ("ece", "log_loss") if n in problem.metrics]

    def scored(z, rows):
        return problem.score(refs[rows], problem.scores(z[rows]), classifier.labels, classifier.thresholds).overall

    everything = np.arange(len(refs))
    halves = (everything[::2], everything[1::2])
    rows = {"uncalibrated": scored(logits, everything)}
    temperature = problem.fit_temperature(logits, refs)
    rows["fitted on the whole split, scored on it"] = scored(logits / temperature, everything)
    cross = []
    for fit, held in (halves, halves[::-1]):
        t = problem.fit_temperature(logits[fit], refs[fit])
        cross.append(scored(logits / t, held))
    rows["cross-fitted (fit on one half, score the other)"] = {n: float(np.mean([c[n] for c in cross])) for n in names}
    print(f"# {command_line()}")
    print(f"# {args.run_dir}: {problem.title}, {len(refs)} validation examples ({data.source}); temperature {np.round(temperature, 3).tolist()}\n")
    print("| model | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, metrics in rows.items():
        print(f"| {label} | " + " | ".join(f"{metrics[n]:.4f}" for n in names) + " |")


if __name__ == "__main__":
    main()
