"""A sweep's own cost per trial on its study storage: SQLite (one machine) against PostgreSQL (many).

    python benchmarks/sweep_storage.py                     # 20 trials each, 1 worker; PostgreSQL started here
    python benchmarks/sweep_storage.py --trials 30 --workers 3
    python benchmarks/sweep_storage.py --storage postgresql://me@db.example/sweeps   # a server of your own

Every trial runs the real `run_sweep` path (ask, suggest, the trial's user attrs, a report per evaluation, tell,
the callbacks, best/ kept, weights dropped, the progress line) with the training replaced by a stub that writes a
run's log and metrics at once: what is left is the sweep's own overhead, mostly the storage's round trips. A real
trial takes seconds (tiny BERT) to minutes: this is the part of it that grows with the database's distance.
With --workers N, N sweep processes share the study (each with its own sweep dir) and the figure is wall time over
all trials.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # postgres_server: the tests' throwaway server
sys.path.insert(0, str(Path(__file__).resolve().parent))

EVALS = 3  # evaluations reported per trial, as a 3-epoch run does


class StubTrain:
    """Stands in for sweeping.TrainProcess: the files a finished `bertctl train` leaves, written at once."""

    def __init__(self, recipe, run_dir: Path, console_log: Path):
        self.run_dir, self.console_log, self.peak_rss_mib, self.returncode = run_dir, console_log, 1.0, None
        self.lr = float(recipe.train.learning_rate)

    def __enter__(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.console_log.write_text("stub\n")
        value = 1.0 - abs(self.lr - 1e-3)  # a smooth objective, so TPE has something to model
        (self.run_dir / "train_log.jsonl").write_text("".join(json.dumps({"type": "eval", "step": s, "accuracy": value * s / EVALS}) + "\n" for s in range(1, EVALS + 1)))
        (self.run_dir / "config.json").write_text("{}")
        (self.run_dir / "model.safetensors").write_bytes(b"\0" * 1024)
        (self.run_dir / "metrics.json").write_text(json.dumps({"validation": {"accuracy": value}}))
        self.returncode = 0
        return self

    def __exit__(self, *exc):
        return None

    def records(self):
        with (self.run_dir / "train_log.jsonl").open() as fh:
            return [json.loads(line) for line in fh]

    def check(self):
        return None


def _recipe(root: Path):
    from bertctl.recipe import recipe_from_dict

    data = REPO / "recipes" / "data" / "agnews"
    recipe = recipe_from_dict(
        {"data": {"train": str(data / "train.csv"), "validation": str(data / "dev.csv")}, "sweep": {"pruner": "median", "space": {
            "train.learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}, "train.warmup_ratio": {"low": 0.0, "high": 0.3}}}},
        source=str(root / "bench.toml"),
    )
    return recipe


def _worker(args: tuple[str, str, int]) -> None:
    url, out, trials = args
    from bertctl import sweeping

    sweeping.TrainProcess = StubTrain
    sweeping.run_sweep(_recipe(Path(out).parent), output=out, trials=trials, storage=url, progress=False)


def measure(url: str | None, trials: int, workers: int, root: Path) -> dict:
    from bertctl import sweeping

    sweeping.TrainProcess = StubTrain
    outs = [root / f"w{i}" for i in range(workers)]
    started = time.perf_counter()
    if workers == 1:
        sweeping.run_sweep(_recipe(root), output=outs[0], trials=trials, storage=url, progress=False)
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_worker, [(url, str(out), trials) for out in outs])
    seconds = time.perf_counter() - started
    import optuna

    study = optuna.load_study(study_name="bench", storage=sweeping.build_storage(optuna, url or f"sqlite:///{(outs[0] / 'study.db').resolve()}"))
    complete = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))
    assert complete == trials, f"{complete} finished trials, not {trials}"  # --trials caps the study across workers
    return {"storage": "sqlite (default)" if url is None else url.split("://")[0], "workers": workers, "trials": trials, "seconds": round(seconds, 2), "ms_per_trial": round(1000 * seconds / trials, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--storage", help="a PostgreSQL URL of your own (default: a throwaway server started here)")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.workers == 1:  # SQLite is one machine's: several processes on one file is not what it is for
            rows.append(measure(None, args.trials, 1, Path(tmp) / "sqlite"))
        if args.storage:
            rows.append(measure(args.storage, args.trials, args.workers, Path(tmp) / "pg"))
        else:
            from postgres_server import postgres_server, why_not

            reason = why_not()
            if reason:
                print(f"no PostgreSQL figure: {reason}")
            else:
                with postgres_server() as url:
                    rows.append(measure(url, args.trials, args.workers, Path(tmp) / "pg"))
    print(f"{'storage':<18} {'workers':>7} {'trials':>6} {'seconds':>8} {'ms/trial':>9}")
    for row in rows:
        print(f"{row['storage']:<18} {row['workers']:>7} {row['trials']:>6} {row['seconds']:>8} {row['ms_per_trial']:>9}")


if __name__ == "__main__":
    main()
