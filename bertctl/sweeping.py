"""`bertctl sweep`: search a recipe's [sweep.space] with optuna; every trial is an ordinary bertctl run.

    bertctl sweep recipes/agnews.toml --trials 12                    # -> runs/agnews-sweep
    bertctl sweep recipes/agnews.toml --resume                       # after Ctrl-C or kill -9
    bertctl sweep recipes/agnews.toml --storage postgresql://me@db/sweeps   # many machines, one study
    bertctl sweep --show runs/agnews-sweep                           # the trials table and PNGs
    bertctl sweep --best postgresql://me@db/sweeps                   # which machine's best/ is the study's best

It reads like optuna's own examples: `objective(trial)` turns `trial.suggest_*` into recipe overrides, runs
`bertctl train` with them in a child process (TrainProcess: memory and process-wide state go with it), reports the
validation metric of each eval line the run logs, and kills the run with `TrialPruned` when the pruner says so.
A sweep dir holds:

    study.db        the optuna study (SQLite), unless --storage names another database
    sweep.json      what the sweep searches and where its study lives: --resume and --show read it
    trials/NNN/     trial NNN's run dir (recipe.toml, train_log.jsonl, metrics.json, curves.png); weights deleted
    trials/NNN.log  what its `bertctl train` printed
    best/           the best trial this worker ran, HF-native, swapped in whole when a better one of its own finishes
    best.json       which trial best/ is, its params and metric

Many workers (machines, or processes on one) share one study through --storage, each with its own sweep dir: a
trial records who runs it (host, pid, sweep dir), so --resume retries only this worker's cut trials and
--best finds the worker dir that holds the study's best.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bertctl import plots
from bertctl.errors import BertctlError, RunError, require
from bertctl.loop import Interrupted
from bertctl.recipe import METRICS, Recipe, apply_overrides, recipe_from_dict, schema_field, sweep_metric
from bertctl.runs import BEST, CHECKPOINTS, FINISHED_MARKER, LOG_FILE, atomic_write_json, removes_new_empty_dirs, replace_dir

EXTRA_FIX = 'pip install -e ".[sweep]"  (or: pip install "bertctl[sweep]")'
STUDY_FILE = "study.db"
SETTINGS_FILE = "sweep.json"
BEST_FILE = "best.json"
TRIALS = "trials"
PLOTS = ("history.png", "importances.png", "params.png")
# seconds to wait for a database server to answer: an address that drops packets would otherwise hang a worker for
# the kernel's TCP timeout (minutes); a URL's own ?connect_timeout= wins
CONNECT_TIMEOUT_S = 10
WEIGHT_FILES = ("*.safetensors", "pytorch_model.bin", "optimizer.bin", "scheduler.bin")


def require_optuna():
    return require("optuna", "bertctl sweep", fix=EXTRA_FIX)


def direction(metric: str) -> str:
    """optuna's study direction for a validation metric: METRICS says whether greater is better."""
    return "maximize" if METRICS[metric] else "minimize"


def default_output(recipe: Recipe) -> Path:
    return recipe.run_dir.with_name(recipe.run_dir.name + "-sweep")


@dataclass
class SweepSummary:
    """A study as a person reads it: the trials table, the best trial, and what the sweep dir holds."""

    output: Path
    study_name: str
    storage: str  # the URL with any password masked
    metric: str
    direction: str
    target: int
    keys: list[str]
    trials: list[dict[str, Any]]  # number, state, params, value, seconds, retry_of, peak_rss_mib
    best: dict[str, Any] | None
    size_bytes: int
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    study_best: int | None = None  # the study's best trial, whichever worker ran it (best is this dir's own)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "output": str(self.output), "plots": [str(p) for p in self.plots]}


# ---------------------------------------------------------------------------------------------
# the search space: [sweep.space] entries -> trial.suggest_* -> recipe overrides


def suggest(trial, space: dict[str, Any]) -> dict[str, Any]:
    """One value per space key: a list is a categorical choice, a range an int or float by the key's own type."""
    params = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            params[key] = trial.suggest_categorical(key, spec)
            continue
        _, tp = schema_field(key)
        is_int = int in getattr(tp, "__args__", (tp,))
        suggest_range = trial.suggest_int if is_int else trial.suggest_float
        params[key] = suggest_range(key, spec["low"], spec["high"], log=spec.get("log", False))
    return params


def as_overrides(params: dict[str, Any]) -> list[str]:
    """Params as the command line's key=value overrides (values in TOML, as `bertctl train` reads them)."""
    import tomli_w

    return [f"{key}={tomli_w.dumps({'v': value})[4:].strip()}" for key, value in params.items()]


def trial_recipe(recipe: Recipe, params: dict[str, Any], trial_dir: Path) -> Recipe:
    """The sweep's recipe with the trial's params applied by the ordinary override mechanism, into its run dir.
    The best checkpoint of a trial is picked by the sweep's own metric, so best/ is the best by that metric."""
    overrides = [*as_overrides(params), f"output.dir={json.dumps(str(trial_dir))}", f"train.metric_for_best={json.dumps(sweep_metric(recipe))}"]
    raw = recipe.to_dict()
    apply_overrides(raw, overrides)
    built = recipe_from_dict(raw, source=recipe.source, base_dir=recipe.base_dir)
    built.overrides = [*recipe.overrides, *overrides]
    return built


def build_sampler(recipe: Recipe, *, trials_in_study: int = 0, worker: str = ""):
    """TPE, seeded from train.seed, the number of trials already in the study and the worker (its host and sweep
    dir): the same start of the same worker gives the same params.

    Why not train.seed alone: a sampler seeded alike draws alike. After Ctrl-C and --resume, the new trial 3 ran
    trial 0's exact params (TPE's first draws are random ones from the seed, whatever the history), and N workers
    on one study would all draw the same params. Every draw makes a trial, so a later start of the same worker
    sees more trials (a new seed), and two workers differ in their dir; SeedSequence mixes the three without the
    collisions a sum would have (seed + 1 trial == seed + worker 1).
    """
    import numpy as np

    optuna = require_optuna()
    key = int.from_bytes(hashlib.sha256(worker.encode("utf-8")).digest()[:8], "little")
    seed = int(np.random.SeedSequence([recipe.train.seed, trials_in_study, key]).generate_state(1)[0])
    # constant_liar: a trial other workers are still running counts as a poor result, so TPE samples away from it
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def worker_name(out: Path) -> str:
    """Who runs a trial, as the study records it: the host and the sweep dir (one worker per dir)."""
    return f"{socket.gethostname()}:{Path(out).resolve()}"


def build_pruner(name: str):
    """A trial reports once per evaluation (step 1, 2, ...). Median: after 2 finished trials, stop one whose metric is
    worse than the median of the others' at the same evaluation; Hyperband: successive halving over evaluations."""
    optuna = require_optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


# ---------------------------------------------------------------------------------------------
# the sweep


def run_sweep(
    recipe: Recipe,
    *,
    output: str | Path | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    resume: bool = False,
    storage: str | None = None,
    progress: bool = True,
) -> SweepSummary:
    """Run (or, with `resume`, continue) the sweep until `trials` (default sweep.trials) trials are complete or pruned
    in the study, or `timeout` seconds have passed; returns the summary."""
    out = Path(output) if output is not None else default_output(recipe)
    space, metric = recipe.sweep.space, sweep_metric(recipe)
    again = f"bertctl sweep {' '.join([recipe.source, *recipe.overrides])} --output {out} --resume"
    _check_can_sweep(recipe, out, resume, again)
    optuna = require_optuna()
    # the sweep prints its own line per trial, and its errors as bertctl errors: optuna's "Trial N failed" warning
    # would add a traceback (on Ctrl-C too)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    worker = worker_name(out)
    with removes_new_empty_dirs(out):  # a storage that can't be opened leaves no empty sweep dir behind
        settings = _settings(recipe, out, storage, resume)
        url = storage or settings["storage"]
        study = open_study(
            optuna, url, study_name=settings["study_name"], direction=direction(metric), load_if_exists=True,
            pruner=build_pruner(recipe.sweep.pruner),
        )
        check_study_matches(study, recipe, url)
    if not resume:
        atomic_write_json(out / SETTINGS_FILE, settings)
    else:
        _retry_cut_trials(study, out)
        _keep_best_if_missed(study, out, metric, worker)
    # seeded after the cut trials are marked: the count of trials is what makes this start's draws new
    study.sampler = build_sampler(recipe, trials_in_study=len(study.get_trials(deepcopy=False)), worker=worker)
    target = trials or recipe.sweep.trials
    states = optuna.trial.TrialState
    finished = (states.COMPLETE, states.PRUNED)
    # the trials counted before a trial to tell whether it goes past --trials (_is_surplus): a queued one will run too
    taken = (*finished, states.RUNNING, states.WAITING)
    started = time.perf_counter()

    def objective(trial) -> float:
        trial_dir = out / TRIALS / f"{trial.number:03d}"
        # who runs it, first: --resume fails a RUNNING trial whose process on this host is gone (kill -9) and retries it
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("dir", str(trial_dir.relative_to(out)))
        if _is_surplus(study, trial.number, target, taken):
            trial.set_user_attr("surplus", True)
            study.stop()
            raise _Surplus()
        params = suggest(trial, space)
        built = trial_recipe(recipe, params, trial_dir)  # a bad value is an error here, before any process starts
        child = TrainProcess(built, trial_dir, out / TRIALS / f"{trial.number:03d}.log")
        try:
            with child:
                for evaluation, record in enumerate(watch_trial(child, trial.number, params, metric, progress), start=1):
                    trial.report(record[metric], evaluation)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"{metric} {record[metric]:.4f} at step {record['step']}")
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        finally:
            if child.peak_rss_mib is not None:
                trial.set_user_attr("peak_rss_mib", round(child.peak_rss_mib, 1))
        child.check()
        value = json.loads((trial_dir / FINISHED_MARKER).read_text(encoding="utf-8"))["validation"].get(metric)
        if value is None or not math.isfinite(value):
            raise optuna.TrialPruned(f"{metric} is {value} (no validation score)")
        return float(value)

    def after_trial(study, frozen) -> None:
        if frozen.user_attrs.get("surplus"):
            return
        trial_dir = out / frozen.user_attrs.get("dir", f"{TRIALS}/{frozen.number:03d}")
        if frozen.state == optuna.trial.TrialState.COMPLETE and _own_best(study, worker) == frozen.number:
            keep_best(trial_dir, out, frozen, metric)
        drop_weights(trial_dir)
        if progress:
            done = sum(t.state in finished for t in study.get_trials(deepcopy=False))
            print(_progress_line(study, frozen, done, target, metric), flush=True)

    def enough(study, frozen) -> None:
        if _taken(study, worker) >= target:
            study.stop()

    # --trials caps the study's total: other workers' running trials and the retries they queued count as finishing
    left = target - _taken(study, worker)
    if left > 0:
        try:
            study.optimize(objective, n_trials=left, timeout=timeout, catch=(_Surplus,), callbacks=[after_trial, enough])
        except KeyboardInterrupt:
            raise Interrupted(f"sweep stopped; the study is kept in {out}", fix=f"continue it with: {again}") from None
    summary = summarize(study, out, url, metric, target, list(space))
    summary.notes.append(f"{time.perf_counter() - started:.0f} s this run")
    return summary


class _Surplus(Exception):
    """A trial that workers asked for at the same moment past --trials: it is marked failed before it runs."""


def _is_surplus(study, number: int, target: int, taken: tuple) -> bool:
    """Whether trial `number` would go past `target`: two workers may both see 5 of 6 trials taken and both ask for
    one. Trial numbers are the study's order, so counting the trials before this one settles it the same way on
    every worker, with no lock."""
    before = [t for t in study.get_trials(deepcopy=False, states=taken) if t.number < number]
    return len(before) >= target


def _taken(study, worker: str) -> int:
    """Trials that will finish without this worker starting a new one: finished ones, running ones (another
    worker's), and retries queued by another worker's --resume (it runs them). This worker's own queued retries, and
    trials a person queued with optuna's enqueue_trial, are what it runs next: not counted."""
    count = 0
    for t in study.get_trials(deepcopy=False):
        state, queued_by = t.state.name, t.user_attrs.get("queued_by")
        if state in ("COMPLETE", "PRUNED", "RUNNING") or (state == "WAITING" and queued_by is not None and queued_by != worker):
            count += 1
    return count


def _own_best(study, worker: str) -> int | None:
    """The number of the best complete trial this worker ran (the earliest of equals, as optuna's best_trial)."""
    own = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.user_attrs.get("worker", worker) == worker]
    if not own:
        return None
    sign = -1 if study.direction.name == "MAXIMIZE" else 1
    return min(own, key=lambda t: (sign * t.value, t.number)).number


def watch_trial(child: "TrainProcess", number: int, params: dict[str, Any], metric: str, show: bool) -> Iterator[dict[str, Any]]:
    """The trial's eval records as its run writes them; with `show`, its start (number, params, log), its first
    training step and each evaluation printed as they happen: a trial takes minutes, and the sweep's own line
    comes only when it ends."""
    if show:
        print(f"trial #{number} started: {format_params(params) or '(no params)'}  (output: {child.console_log})", flush=True)
    trained = False
    for record in child.records():
        if record.get("type") == "eval":
            if show:
                value = record.get(metric)
                shown = f"{metric} {value:.4f}" if isinstance(value, (int, float)) else f"{metric} -"
                print(f"  trial #{number} eval step {record.get('step')}: {shown}", flush=True)
            yield record
        elif show and not trained and record.get("type") == "train":
            trained = True
            loss = record.get("loss")
            print(f"  trial #{number} step {record.get('step')}: training" + (f", loss {loss:.4f}" if isinstance(loss, (int, float)) else ""), flush=True)


class TrainProcess:
    """`bertctl train` of one trial, in a child process: everything a trial allocates goes back to the kernel when
    it exits (in one process, glibc's heap kept growing from trial to trial: 2.14 GiB for the first batch-16 trial,
    2.51 for one after batch-32 trials), and no process-wide state (accelerate's, torch's) carries over.

        with TrainProcess(recipe, trial_dir, console_log) as child:
            for record in child.evaluations():   # each eval line of the run's train_log.jsonl, as it is written
                ...                              # raising here (a pruned trial) kills the child
        child.check()                            # a failed `bertctl train` is an error naming its console log

    `peak_rss_mib` is the child's own peak resident memory, from the kernel (wait4), once it has ended. The child
    dies with the sweep (Linux: PR_SET_PDEATHSIG), so a `kill -9` of the sweep leaves no training behind.

    On Linux a small launcher (`_LAUNCHER`) sits between the two: a process's peak RSS carries over exec from the
    memory it was spawned with (fork or vfork alike), so `bertctl train` spawned straight from a sweep holding 1 GiB
    reported 1 GiB or more for every trial. Spawned from the launcher, it starts from the launcher's few MiB; the
    launcher reaps it and hands its peak back through a pipe.
    """

    poll_seconds = 0.2

    def __init__(self, recipe: Recipe, run_dir: Path, console_log: Path):
        self.command = [sys.executable, "-m", "bertctl", "train", recipe.source, *recipe.overrides]
        self.run_dir, self.console_log = run_dir, console_log
        self.peak_rss_mib: float | None = None
        self._proc = None
        self._peak_pipe: int | None = None

    @property
    def returncode(self) -> int | None:
        """The child's exit code (negative: killed by that signal); None while it runs."""
        return None if self._proc is None else self._proc.returncode

    def __enter__(self) -> "TrainProcess":
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        command, keep_fds = self.command, ()
        if sys.platform.startswith("linux"):
            self._peak_pipe, write_end = os.pipe()
            command, keep_fds = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), str(write_end), *command], (write_end,)
        try:
            with self.console_log.open("w", encoding="utf-8") as log:
                self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, pass_fds=keep_fds)
        finally:
            for fd in keep_fds:
                os.close(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self.returncode is None:  # cut short (pruned, Ctrl-C): the trial's weights are deleted anyway
            if self._peak_pipe is not None:
                self._proc.terminate()  # the launcher kills the child, then reports its peak
            else:
                self._proc.kill()
            self._reap(block=True)

    def evaluations(self) -> Iterator[dict[str, Any]]:
        """The run's eval records as the child writes them, until it exits (the last ones included)."""
        return (record for record in self.records() if record.get("type") == "eval")

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record of the run's train_log.jsonl as the child writes it, until it exits (the last ones included)."""
        log, offset = self.run_dir / LOG_FILE, 0
        while True:
            ended = self._reap(block=False)
            if log.is_file():
                with log.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                whole = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits for the next poll
                offset += len(whole)
                for line in whole.decode("utf-8").splitlines():
                    yield json.loads(line)
            if ended:
                return
            time.sleep(self.poll_seconds)

    def check(self) -> None:
        if self.returncode != 0:
            tail = self.console_log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-12:]
            raise RunError(
                f"trial run {self.run_dir} failed: `bertctl train` exited with {self.returncode}:\n" + "\n".join(tail),
                fix=f"its whole output is in {self.console_log}" + (f"; the trial's recipe is {self.run_dir / 'recipe.toml'}" if (self.run_dir / "recipe.toml").is_file() else ""),
            )

    def _reap(self, block: bool) -> bool:
        """Whether the child has ended; when it has, its exit code and peak RSS."""
        if not hasattr(os, "wait4"):  # Windows: no rusage
            return (self._proc.wait() if block else self._proc.poll()) is not None
        pid, status, usage = os.wait4(self._proc.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return False
        self._proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait for it again
        peak = usage.ru_maxrss
        if self._peak_pipe is not None:
            with os.fdopen(self._peak_pipe, "rb") as pipe:
                told = pipe.read().decode() or "0"  # nothing: the launcher was killed before its child ended
            self._peak_pipe = None
            peak = int(told) if int(told) else None
        self.peak_rss_mib = None if peak is None else peak / (2**20 if sys.platform == "darwin" else 2**10)  # bytes there, KiB on Linux
        return True


# TrainProcess's launcher. argv: the sweep's pid, the pipe to write the child's peak RSS (KiB) to, the command. Both
# it and the child die with their parent (PR_SET_PDEATHSIG, 1, survives exec); the parent checks catch a parent that
# died first. It ignores Ctrl-C, which reaches the child too: the child's exit, not the launcher's, ends the trial.
# SIGTERM kills the child and still reports its peak (a pruned trial has one too).
_LAUNCHER = """
import os, signal, subprocess, sys
def die_with(parent):
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)
die_with(int(sys.argv[1]))
launcher = os.getpid()
child = subprocess.Popen(sys.argv[3:], preexec_fn=lambda: die_with(launcher))
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, lambda *_: child.kill())
_, status, usage = os.wait4(child.pid, 0)
os.write(int(sys.argv[2]), str(usage.ru_maxrss).encode())
code = os.waitstatus_to_exitcode(status)
if code < 0:  # end the same way, so the sweep sees the signal
    if -code != signal.SIGKILL:
        signal.signal(-code, signal.SIG_DFL)
    os.kill(launcher, -code)
sys.exit(code)
"""


def open_study(optuna, url: str, *, load: bool = False, **options):
    """optuna's create_study (or load_study), with a storage it can't open said as an error, not a traceback."""
    try:
        storage = _first_storage(optuna, url)
        if load:
            return optuna.load_study(storage=storage, **options)
        return optuna.create_study(storage=storage, **options)
    except KeyError:  # load_study: no such study there
        raise RunError(f"no study {options.get('study_name')!r} in {mask_password(url)}", fix="check --storage") from None
    except (ImportError, ValueError) as exc:
        raise RunError(
            f"cannot open the study storage {mask_password(url)}: {exc}",
            fix="check the URL (sqlite:///path/study.db, postgresql://user@host/db) and that its driver is installed (pip install psycopg2-binary)",
        ) from None
    except Exception as exc:  # sqlalchemy's OperationalError & co: a database that is down, refuses, or is not there
        if type(exc).__module__.startswith("sqlalchemy"):
            said = str(exc).splitlines()[0]
            fix = "check that the database runs and the URL's host, user and database"
            if "timeout" in said.lower():
                fix = f"check that a database server answers at that host and port (waited {CONNECT_TIMEOUT_S} s; over a slow network add ?connect_timeout=SECONDS to the URL)"
            raise RunError(f"cannot open the study storage {mask_password(url)}: {said}", fix=fix) from None
        raise


def build_storage(optuna, url: str):
    """The study's storage for a URL: a database server's with a bounded connect timeout, a SQLite file's as is."""
    if url.startswith("sqlite") or "://" not in url:
        return url  # optuna parses it (and says what is wrong with it)
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        # a bare postgresql:// means psycopg2 to SQLAlchemy; the postgres extra installs psycopg (3): use it when it
        # is the driver there is, so the URL in the README works as written
        import importlib.util

        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            scheme = "postgresql+psycopg"
    url = f"{scheme}://{rest}"
    engine_kwargs = {}
    if scheme.startswith(("postgresql", "mysql")) and "connect_timeout" not in rest:
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def _first_storage(optuna, url: str, attempts: int = 5):
    """build_storage, again after a moment when another worker is creating optuna's tables in an empty database at the
    same instant: PostgreSQL refuses the second CREATE TABLE (a unique violation on pg_type), which the first one's
    tables then make moot. Seen with 3 workers started together on a new database."""
    for attempt in range(attempts):
        try:
            return build_storage(optuna, url)
        except Exception as exc:
            racing = type(exc).__name__ in ("IntegrityError", "ProgrammingError") and ("duplicate" in str(exc) or "already exists" in str(exc))
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def check_study_matches(study, recipe: Recipe, url: str) -> None:
    """A study shared by many workers must be one search: its first worker records its recipe, space and metric
    in the study, and a worker with another space or metric is refused (optuna would mix the two searches, and
    keep the first direction whatever this metric's is). Two workers creating the study at the same instant with
    different recipes both pass: the first record is kept and the next start is checked."""
    mine = {"recipe": " ".join([recipe.source, *recipe.overrides]), "metric": sweep_metric(recipe), "space": recipe.sweep.space}
    saved = study.user_attrs.get("bertctl")
    if saved is None:
        study.set_user_attr("bertctl", mine)
        return
    changed = [key for key in ("metric", "space") if saved.get(key) != mine[key]]
    if changed:
        lines = "\n".join(f"  sweep.{key}: the study's {json.dumps(saved.get(key))}, this recipe's {json.dumps(mine[key])}" for key in changed)
        raise RunError(
            f"the study {study.study_name!r} in {mask_password(url)} was made by another recipe ({saved.get('recipe')}); "
            f"this one ({mine['recipe']}) differs:\n{lines}",
            fix="run this worker with the study's recipe, or give this search its own study: another --storage database, or a recipe file of another name (the study is named after it)",
        )


def _check_can_sweep(recipe: Recipe, out: Path, resume: bool, again: str) -> None:
    """Before any import or write: something to search, something to score it on, and a dir we may write."""
    if not recipe.sweep.space:
        raise BertctlError(
            f"{recipe.source} has no [sweep.space]: nothing to search",
            fix='add e.g. [sweep.space] with "train.learning_rate" = { low = 2e-5, high = 3e-4, log = true }',
        )
    if recipe.data.validation is None and recipe.data.validation_fraction is None:
        raise BertctlError(f"{recipe.source}: a sweep scores trials on validation data, and the recipe has none", fix="set data.validation (or data.validation_fraction)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise BertctlError("bertctl sweep runs in one process", fix="run it without accelerate launch; to use many machines, run it on each with the same --storage URL")
    if out.exists() and not out.is_dir():
        raise RunError(f"sweep dir {out} is a file", fix="choose a directory: --output DIR")
    if resume and not (out / SETTINGS_FILE).is_file():
        raise RunError(f"no sweep to resume in {out} (no {SETTINGS_FILE})", fix=f"start it without --resume: bertctl sweep {recipe.source} --output {out}")
    if not resume and out.is_dir() and any(out.iterdir()):
        raise RunError(f"sweep dir {out} is not empty; nothing in it is overwritten", fix=f"continue the sweep there with --resume ({again}), or choose another --output DIR")


def _settings(recipe: Recipe, out: Path, storage: str | None, resume: bool) -> dict[str, Any]:
    """sweep.json: on a new sweep, made here; on --resume, read and checked against the recipe."""
    current = {
        "recipe": recipe.source, "overrides": recipe.overrides, "study_name": recipe.name,
        "storage": storage or f"sqlite:///{(out / STUDY_FILE).resolve()}", "metric": sweep_metric(recipe), "space": recipe.sweep.space,
    }
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        return {**current, "storage": mask_password(current["storage"])}
    saved = json.loads((out / SETTINGS_FILE).read_text(encoding="utf-8"))
    changed = [key for key in ("metric", "space") if saved.get(key) != current[key]]
    if changed:
        raise RunError(
            f"the recipe's sweep.{' and sweep.'.join(changed)} differ from those the sweep in {out} was started with",
            fix="resume with the original recipe, or start a new sweep with another --output DIR",
        )
    if storage is None and "***" in saved["storage"]:
        raise RunError(f"the sweep in {out} uses a database whose password is not saved", fix="pass --storage URL again")
    return saved


def mask_password(url: str) -> str:
    """The storage URL as sweep.json keeps it: never a password in a file."""
    if url.startswith("sqlite"):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy can parse: show its scheme only
        return url.split("://", 1)[0] + "://..." if "://" in url else "(the --storage value)"


def _retry_cut_trials(study, out: Path) -> None:
    """A trial cut by kill -9 stays RUNNING in the study, one cut by Ctrl-C is FAIL with `interrupted`: mark the first
    failed (only this host's, whose process is gone: another machine's running trial is alive), and queue each one's
    params again, once."""
    from optuna.trial import TrialState

    host, cut = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.RUNNING and trial.user_attrs.get("host") == host and not _alive(trial.user_attrs.get("pid")):
            study.tell(trial.number, state=TrialState.FAIL)
            cut.append(trial)
        elif trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted"):
            cut.append(trial)
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    for trial in cut:
        drop_weights(out / trial.user_attrs.get("dir", f"{TRIALS}/{trial.number:03d}"))
        if trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "queued_by": worker_name(out)})


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


# ---------------------------------------------------------------------------------------------
# what stays on disk


def keep_best(trial_dir: Path, out: Path, frozen, metric: str) -> None:
    """Copy the trial's run dir (model, tokenizer, recipe, metrics; no checkpoints) to a temp dir, then swap it in
    as best/: a reader finds the old best or the new one, never a mix."""
    tmp = out / f".{BEST}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(trial_dir, tmp, ignore=shutil.ignore_patterns(CHECKPOINTS, BEST, f".{BEST}.tmp"))
    replace_dir(tmp, out / BEST)
    atomic_write_json(out / BEST_FILE, {"trial": frozen.number, "dir": str(trial_dir.relative_to(out)), "params": frozen.params, metric: frozen.value})


def _keep_best_if_missed(study, out: Path, metric: str, worker: str) -> None:
    """A kill -9 between a best trial's end and its copy to best/: its weights are still in its dir, so copy now."""
    number = _own_best(study, worker)
    if number is None:
        return
    best = study.trials[number]
    trial_dir = out / best.user_attrs.get("dir", f"{TRIALS}/{best.number:03d}")
    kept = json.loads((out / BEST_FILE).read_text(encoding="utf-8")).get("trial") if (out / BEST_FILE).is_file() else None
    if kept != best.number and (trial_dir / "config.json").is_file() and any(trial_dir.glob("*.safetensors")):
        keep_best(trial_dir, out, best, metric)
    drop_weights(trial_dir)


def drop_weights(trial_dir: Path) -> None:
    """Keep a trial's metrics, log, recipe and curves; delete its checkpoints and weights (disk stays bounded)."""
    if not trial_dir.is_dir():
        return
    for name in (CHECKPOINTS, BEST, f".{BEST}.tmp"):
        shutil.rmtree(trial_dir / name, ignore_errors=True)
    for pattern in WEIGHT_FILES:
        for path in trial_dir.glob(pattern):
            path.unlink(missing_ok=True)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink())


# ---------------------------------------------------------------------------------------------
# reading a study: the progress line, the table, --show


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{key.rsplit('.', 1)[-1]}={_format_value(value)}" for key, value in params.items())


def _trial_value(frozen) -> float | None:
    """A complete trial's metric; a pruned one's last reported value."""
    if frozen.value is not None:
        return frozen.value
    if frozen.intermediate_values:
        return frozen.intermediate_values[max(frozen.intermediate_values)]
    return None


def _progress_line(study, frozen, done: int, target: int, metric: str) -> str:
    value = _trial_value(frozen)
    shown = f"{metric} {value:.4f}" if value is not None else f"{metric} -"
    try:
        best = study.best_trial
        best_text = f"best {best.value:.4f} (trial {best.number})"
    except ValueError:
        best_text = "best -"
    state = frozen.state.name.lower()
    seconds = (frozen.datetime_complete - frozen.datetime_start).total_seconds() if frozen.datetime_complete and frozen.datetime_start else 0.0
    memory = f"  peak RSS {frozen.user_attrs['peak_rss_mib'] / 1024:.2f} GiB" if "peak_rss_mib" in frozen.user_attrs else ""
    return f"trial {done}/{target} (#{frozen.number})  {state:<8}  {shown}  {best_text}  {format_params(frozen.params)}  {seconds:.0f} s{memory}"


def summarize(study, out: Path, url: str, metric: str, target: int, keys: list[str]) -> SweepSummary:
    rows, surplus = [], 0
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):  # never ran: asked for by two workers at once past --trials
            surplus += 1
            continue
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name, "params": dict(t.params), "value": _trial_value(t), "seconds": seconds, "retry_of": t.user_attrs.get("retry_of"), "peak_rss_mib": t.user_attrs.get("peak_rss_mib")})
    best = json.loads((out / BEST_FILE).read_text(encoding="utf-8")) if (out / BEST_FILE).is_file() else None
    summary = SweepSummary(out, study.study_name, mask_password(url), metric, study.direction.name.lower(), target, keys, rows, best, dir_size(out))
    complete = [t for t in rows if t["state"] == "COMPLETE"]
    if complete:
        summary.study_best = study.best_trial.number
    if surplus:
        summary.notes.append(f"{surplus} trial{'s' if surplus > 1 else ''} asked for past the target by workers at the same moment: marked failed, never run, not shown")
    return summary


@dataclass
class StudyBest:
    """The study's best trial and where its model is: the sweep dir of the worker that ran it, on its host."""

    study_name: str
    storage: str  # masked
    metric: str | None
    direction: str
    trial: int
    value: float
    params: dict[str, Any]
    host: str | None
    sweep_dir: str | None
    held: bool | None  # that dir's best.json names this trial (None: the dir is on another host, not checked here)
    copy: str | None  # the command that copies the model here
    workers: dict[str, int]  # worker -> complete trials it ran

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_sweep_dir(out: Path, storage: str | None, not_one: str, fix: str) -> tuple[dict[str, Any], str]:
    """A sweep dir's sweep.json and the storage URL to open: --storage, else the saved one (whose password is not kept)."""
    if not (out / SETTINGS_FILE).is_file():
        raise RunError(f"{out} {not_one}", fix=fix)
    settings = json.loads((out / SETTINGS_FILE).read_text(encoding="utf-8"))
    if storage is None and "***" in settings["storage"]:
        raise RunError(f"the sweep in {out} uses a database whose password is not saved", fix="pass --storage URL too")
    return settings, storage or settings["storage"]


def find_study_best(source: str | Path, *, study_name: str | None = None, storage: str | None = None, dest: str = "best") -> StudyBest:
    """The study-wide best trial of a study many workers share: which worker dir holds its model, and what to copy.
    `source` is a storage URL, or a sweep dir (its sweep.json names the storage and study)."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, metric = str(source), None
    if "://" not in url:
        settings, url = read_sweep_dir(
            Path(source), storage, f"is neither a storage URL nor a sweep dir (no {SETTINGS_FILE})", "bertctl sweep --best postgresql://user@host/db, or --best runs/agnews-sweep"
        )
        study_name, metric = study_name or settings["study_name"], settings["metric"]
    if study_name is None:
        names = [s.study_name for s in open_study_summaries(optuna, url)]
        if len(names) != 1:
            listed = ", ".join(names) if names else "none"
            raise RunError(f"{mask_password(url)} holds {len(names)} studies ({listed}): say which", fix=f"bertctl sweep --best URL --study NAME")
        study_name = names[0]
    study = open_study(optuna, url, load=True, study_name=study_name)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        raise RunError(f"the study {study_name!r} in {mask_password(url)} has no complete trial yet", fix="wait for a trial to finish; bertctl sweep --show DIR shows the running ones")
    best = study.best_trial
    metric = metric or (study.user_attrs.get("bertctl") or {}).get("metric")
    workers: dict[str, int] = {}
    for t in complete:
        name = t.user_attrs.get("worker", "?")
        workers[name] = workers.get(name, 0) + 1
    host, held, copy = best.user_attrs.get("host"), None, None
    sweep_dir = best.user_attrs.get("worker", "").split(":", 1)[1] if ":" in best.user_attrs.get("worker", "") else None
    if sweep_dir is not None:
        if host == socket.gethostname():
            kept = Path(sweep_dir) / BEST_FILE
            held = kept.is_file() and json.loads(kept.read_text(encoding="utf-8")).get("trial") == best.number
            copy = f"cp -r {Path(sweep_dir) / BEST} {dest}"
        else:
            copy = f"rsync -a {host}:{Path(sweep_dir) / BEST}/ {dest}/"
    return StudyBest(
        study_name, mask_password(url), metric, study.direction.name.lower(), best.number, best.value, dict(best.params),
        host, sweep_dir, held, copy, workers,
    )


def open_study_summaries(optuna, url: str):
    try:
        return optuna.get_all_study_summaries(storage=build_storage(optuna, url), include_best_trial=False)
    except Exception as exc:
        if type(exc).__module__.startswith(("sqlalchemy", "optuna")) or isinstance(exc, (ImportError, ValueError)):
            raise RunError(f"cannot open the study storage {mask_password(url)}: {str(exc).splitlines()[0]}", fix="check that the database runs and the URL's host, user and database") from None
        raise


def show_sweep(output: str | Path, *, storage: str | None = None, plots: bool = True) -> SweepSummary:
    """The study of a sweep dir as a table, and its PNGs: optimisation history, parameter importances, and the
    metric against each parameter."""
    out = Path(output)
    settings, url = read_sweep_dir(out, storage, f"is not a sweep dir (no {SETTINGS_FILE})", "name the --output dir of a bertctl sweep, e.g. bertctl sweep --show runs/agnews-sweep")
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(optuna, url, load=True, study_name=settings["study_name"])
    summary = summarize(study, out, url, settings["metric"], 0, list(settings["space"]))
    if plots:
        _draw(study, summary, settings["space"])
    return summary


def _draw(study, summary: SweepSummary, space: dict[str, Any]) -> None:
    out, metric = summary.output, summary.metric
    complete = [t for t in summary.trials if t["state"] == "COMPLETE"]
    if not complete:
        summary.notes.append("no complete trial yet: no plots")
        return
    summary.plots.append(plots.plot_sweep_history(out / PLOTS[0], summary.trials, metric, summary.direction == "maximize"))
    if len(complete) >= 2:
        try:
            summary.plots.append(plots.plot_sweep_importances(out / PLOTS[1], _importances(study), metric))
        except Exception as exc:  # importances are a nicety: too few distinct trials, a missing package
            summary.notes.append(f"no importances.png: {exc}")
    else:
        summary.notes.append("importances.png needs 2 complete trials")
    log_keys = {key for key, spec in space.items() if isinstance(spec, dict) and spec.get("log")}
    summary.plots.append(plots.plot_sweep_params(out / PLOTS[2], complete, summary.keys, metric, log_keys))


def _importances(study) -> dict[str, float]:
    """optuna's default evaluator (PED-ANOVA from optuna 4.x; before, fANOVA, which needs scikit-learn, else PED-ANOVA)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "quantiles select the same set of trials" on a handful of trials
        try:
            return optuna.importance.get_param_importances(study)
        except ImportError:
            return optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())


# ---------------------------------------------------------------------------------------------
# `bertctl sweep`'s arguments


def check_sweep_arguments(
    recipe: str | Path | None,
    *,
    show: str | Path | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    best: str | None = None,
    study: str | None = None,
) -> None:
    """A sweep either runs a recipe or, with --show (or --best), reads a sweep dir (or a study) and runs nothing:
    refuse a mix of the two, or neither, before optuna or a recipe is loaded."""
    if study is not None and best is None:
        raise BertctlError("--study names the study of --best URL", fix="bertctl sweep --best postgresql://user@host/db --study NAME")
    if best is not None:
        if show is not None or recipe is not None or resume or trials is not None or timeout is not None or output is not None:
            raise BertctlError("--best reads a study and runs nothing: it takes no recipe, --show, --trials, --timeout, --output or --resume", fix=f"bertctl sweep --best {best}")
    elif show is not None:
        if recipe is not None or resume or trials is not None or timeout is not None or output is not None:
            raise BertctlError("--show reads a sweep dir and runs nothing: it takes no recipe, --trials, --timeout, --output or --resume", fix=f"bertctl sweep --show {show}")
    elif recipe is None:
        raise BertctlError("sweep needs a recipe with a [sweep.space], or --show DIR", fix="bertctl sweep recipes/agnews.toml --trials 12")
