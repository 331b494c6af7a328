"""Batch prediction on Ray Data (bertctl.Predictor) against `bertctl predict --file`: texts/s and each actor's memory.

    python benchmarks/predict_ray.py --model runs/agnews/onnx --texts 4000      # an export dir (ONNX) or a run dir
    python benchmarks/predict_ray.py --model runs/agnews --actors 1 2 --cpus 2

The same texts (AG News, repeated and numbered) as one CSV for `bertctl predict --file` (one process, --threads
CPUS) and as 4 Parquet shards for Ray Data (a local cluster of CPUS CPUs; N actors of --threads 1 each, half a CPU
apiece so the read tasks are never starved). Times are wall time of the whole job, start-up included (model
loads, Ray's actors); memory is each actor's peak RSS (VmHWM) as the actor reports it.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _texts(n: int) -> list[str]:
    with open(REPO / "recipes" / "data" / "agnews" / "train.csv", newline="", encoding="utf-8") as fh:
        rows = [r["text"] for r in csv.DictReader(fh)]
    return [f"{rows[i % len(rows)]} #{i}" for i in range(n)]


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class MeasuredPredictor:
    """bertctl.Predictor plus the actor's pid and peak RSS on every row (what the benchmark reports per actor)."""

    def __init__(self, **options):
        from bertctl import Predictor

        self.predictor = Predictor(**options)

    def __call__(self, batch):
        out = self.predictor(batch)
        out["actor_pid"] = os.getpid()
        out["actor_peak_rss_mib"] = _peak_rss_mib()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    import pandas as pd

    texts = _texts(args.texts)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frame = pd.DataFrame({"id": range(len(texts)), "text": texts})
        frame.to_csv(root / "texts.csv", index=False)
        (root / "shards").mkdir()
        for i in range(4):
            frame.iloc[i::4].to_parquet(root / "shards" / f"part-{i}.parquet", index=False)

        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bertctl", "predict", "--model", args.model, "--file", str(root / "texts.csv"), "--text", "text",
                        "--output", str(root / "predict.jsonl"), "--threads", str(args.cpus)], check=True, capture_output=True)
        rows = [("bertctl predict --file", f"1 process, {args.cpus} threads", time.perf_counter() - started, "-")]

        import ray

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        for actors in args.actors:
            started = time.perf_counter()
            ds = ray.data.read_parquet(str(root / "shards")).repartition(8)  # small shards read as one block: split it, so every actor gets work
            out = ds.map_batches(MeasuredPredictor, fn_constructor_kwargs={"model": args.model, "threads": 1}, concurrency=actors,
                                 batch_size=args.batch_size, batch_format="pandas", num_cpus=0.5).to_pandas()
            seconds = time.perf_counter() - started
            memory = out.groupby("actor_pid")["actor_peak_rss_mib"].max()
            rows.append(("Ray Data + Predictor", f"{actors} actor{'s' if actors > 1 else ''}, 1 thread each", seconds, ", ".join(f"{m:.0f}" for m in memory)))
        ray.shutdown()

    print(f"{len(texts)} texts, model {args.model}, {args.cpus} CPUs")
    print(f"{'way':<24} {'processes':<24} {'seconds':>8} {'texts/s':>8}  actor peak RSS (MiB)")
    for way, processes, seconds, memory in rows:
        print(f"{way:<24} {processes:<24} {seconds:>8.1f} {len(texts) / seconds:>8.0f}  {memory}")


if __name__ == "__main__":
    main()
