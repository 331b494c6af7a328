"""How long `bertctl eval`'s 95% bootstrap CIs take: every metric of each problem type on N texts x B resamples.

    python benchmarks/eval_bootstrap.py                   # 10,000 texts x 1,000 resamples (target: under 2 s)
    python benchmarks/eval_bootstrap.py --texts 7600 --resamples 2000 --rounds 5

The scores are synthetic (the bootstrap never looks at the model), seeded. Each round draws the (B, n) index
array and computes every metric the problem type reports on every resample, as `bertctl eval` does; the table
gives the best and the median round, and for multi-label also the default metrics alone (without
roc_auc_macro, the one rank statistic per label). Nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bertctl.metrics.bootstrap import Resamples  # noqa: E402
from bertctl.problems import MULTI_LABEL, REGRESSION, SINGLE_LABEL  # noqa: E402


def data(problem, n: int, rng):
    if problem == SINGLE_LABEL:
        refs = rng.integers(0, 4, n)
        logits = rng.normal(size=(n, 4))
        logits[np.arange(n), refs] += 2.5
        return refs, SINGLE_LABEL.scores(logits), None
    if problem == MULTI_LABEL:
        refs = (rng.random((n, 6)) < 0.25).astype(float)
        return refs, 1 / (1 + np.exp(-(refs * 3 - 1.5 + rng.normal(size=(n, 6))))), [0.5] * 6
    y = np.round(rng.uniform(0, 5, n) / 0.2) * 0.2  # STS-B-like: steps of 0.2, many ties
    return y, y + rng.normal(size=n) * 0.7, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"# python benchmarks/eval_bootstrap.py --texts {args.texts} --resamples {args.resamples} --rounds {args.rounds}")
    print(f"{'problem type':32} {'metrics':>7} {'best s':>8} {'median s':>9}")
    results = {}
    for problem in (SINGLE_LABEL, MULTI_LABEL, REGRESSION):
        refs, scores, thresholds = data(problem, args.texts, rng)
        times = []
        for round_ in range(args.rounds):
            started = time.perf_counter()
            # every metric, roc_auc_macro included (eval computes it only when reported)
            values = problem.resampled(refs, scores, Resamples.draw(args.texts, args.resamples, seed=round_), thresholds, problem.metrics)
            times.append(time.perf_counter() - started)
        results[problem.name] = {"best_s": min(times), "median_s": statistics.median(times), "metrics": len(values)}
        print(f"{problem.name:32} {len(values):>7} {min(times):>8.3f} {statistics.median(times):>9.3f}")
        if problem == MULTI_LABEL:
            started = time.perf_counter()
            values = problem.resampled(refs, scores, Resamples.draw(args.texts, args.resamples, seed=0), thresholds, problem.default_metrics)
            took = time.perf_counter() - started
            results["multi_label_default_metrics"] = {"best_s": took, "median_s": took, "metrics": len(values)}
            print(f"{'  without roc_auc_macro':32} {len(values):>7} {took:>8.3f} {took:>9.3f}")
    print(json.dumps({"texts": args.texts, "resamples": args.resamples, "results": results}))


if __name__ == "__main__":
    main()
