"""How often `bertctl eval --max-drop` fails by chance, and how often it catches a real drop: simulated predictions.

    python benchmarks/eval_gate_simulation.py                         # 500 simulations per setting, 2,000 texts
    python benchmarks/eval_gate_simulation.py --simulations 1000 --disagree 0.03 0.06 0.10

Each simulation draws 2,000 texts a baseline gets right with probability 0.90, and a new model that differs from
the baseline on a share `--disagree` of the texts (two fine-tuned models rarely disagree on more than a few
percent). "As good": the differing texts are half fixed, half broken, so both models have the same true accuracy.
"A true 2-point drop": 1 point more of the texts broken and 1 point fewer fixed. Each simulation runs the gate as
`bertctl eval` does (bertctl.evaluation.measure: 1,000 paired bootstrap resamples, then DropCheck) and records,
for each `--max-drop` allowance, whether the gate failed. The table gives the false-failure rate (equal models)
and the power (the true drop), with the simulation's own 95% margin of error. Nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bertctl.evaluation import DropCheck, measure  # noqa: E402
from bertctl.problems import SINGLE_LABEL  # noqa: E402


def simulate(rng, n: int, accuracy: float, disagree: float, drop: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(references, baseline probabilities, new probabilities) for two classes: a text is right when its
    reference's probability is the larger one."""
    refs = rng.integers(0, 2, n)
    base_right = rng.random(n) < accuracy
    broken_share, fixed_share = (disagree + drop) / 2, (disagree - drop) / 2  # of all texts
    u = rng.random(n)
    new_right = np.where(base_right, u >= broken_share / accuracy, u < fixed_share / (1 - accuracy))

    def probs(right: np.ndarray) -> np.ndarray:
        confidence = 0.6 + 0.35 * rng.random(n)
        p_ref = np.where(right, confidence, 1 - confidence)
        out = np.empty((n, 2))
        out[np.arange(n), refs] = p_ref
        out[np.arange(n), 1 - refs] = 1 - p_ref
        return out

    return refs, probs(base_right), probs(new_right)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=500)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--accuracy", type=float, default=0.90)
    parser.add_argument("--disagree", type=float, nargs="+", default=[0.04, 0.08])
    parser.add_argument("--drop", type=float, default=0.02, help="the true drop whose detection is the power")
    parser.add_argument("--allowances", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 2.5], help="--max-drop values (points)")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    print(f"# python benchmarks/eval_gate_simulation.py --simulations {args.simulations} --texts {args.texts} --disagree {' '.join(map(str, args.disagree))}")
    print(f"# {args.texts} texts, baseline accuracy {args.accuracy}, {args.resamples} paired bootstrap resamples per eval, {args.simulations} simulations per cell")
    print(f"{'disagree':>8} {'--max-drop':>10} {'false failures (as good)':>26} {f'power (true {100 * args.drop:g}-pt drop)':>26}")
    rows = []
    for disagree in args.disagree:
        failed = {"equal": np.zeros(len(args.allowances)), "drop": np.zeros(len(args.allowances))}
        for sim in range(args.simulations):
            for case, drop in (("equal", 0.0), ("drop", args.drop)):
                refs, base, new = simulate(rng, args.texts, args.accuracy, disagree, drop)
                measured = measure(SINGLE_LABEL, refs, new, ["accuracy"], resamples=args.resamples, seed=sim, labels=["a", "b"], baseline_scores=base)
                low, high = measured.difference_intervals["accuracy"]
                for k, allowance in enumerate(args.allowances):
                    failed[case][k] += not DropCheck("accuracy", allowance, measured.differences["accuracy"], low, high, True).passed
        for k, allowance in enumerate(args.allowances):
            rate, power = failed["equal"][k] / args.simulations, failed["drop"][k] / args.simulations
            error = lambda p: 1.96 * math.sqrt(max(p * (1 - p), 1e-9) / args.simulations)  # noqa: E731
            rows.append({"disagree": disagree, "max_drop": allowance, "false_failure_rate": rate, "power": power})
            print(f"{disagree:>8.0%} {allowance:>10g} {rate:>19.1%} ± {error(rate):.1%} {power:>19.1%} ± {error(power):.1%}")
    print(f"# {time.perf_counter() - started:.0f} s")
    print(json.dumps({"texts": args.texts, "simulations": args.simulations, "accuracy": args.accuracy, "drop": args.drop, "rows": rows}))


if __name__ == "__main__":
    main()
