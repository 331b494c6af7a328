"""Many `bertctl sweep` workers on one study in a real PostgreSQL server (started here: tests/postgres_server.py),
with tiny trainings: the study's trial count, no repeated draws, a worker killed with -9 and resumed, each worker's
best/, the same --show table from every worker, and --best naming the worker dir that holds the study's best."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertctl.cli import app

from postgres_server import postgres_server, why_not

runner = CliRunner()
WORKERS = 3
TRIALS = 6


@pytest.fixture(scope="module")
def postgres_url():
    reason = why_not()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


def _sweep_recipe(small_recipe: Path) -> Path:
    # continuous ranges only: two equal parameter sets can then come from a repeated draw, never from chance;
    # one epoch of 10 steps, no pruning (every trial that runs to its end is complete)
    small_recipe.write_text(
        small_recipe.read_text().replace("epochs = 2", "epochs = 1")
        + '[sweep]\npruner = "none"\n[sweep.space]\n"train.learning_rate" = { low = 1e-4, high = 1e-2, log = true }\n'
        '"train.warmup_ratio" = { low = 0.0, high = 0.3 }\n'
    )
    return small_recipe


def _worker(recipe: Path, out: Path, url: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bertctl", "sweep", str(recipe), "--trials", str(TRIALS), "--output", str(out), "--storage", url, *extra]
    log = (out.parent / f"{out.name}{'-resumed' if extra else ''}.out").open("w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def _trials(url: str, name: str):
    import optuna

    from bertctl.sweeping import build_storage

    return optuna.load_study(study_name=name, storage=build_storage(optuna, url)).get_trials(deepcopy=False)


def _table(output: str) -> str:
    """The trials table of `sweep --show`: what every worker must print alike (its own best/ and size lines differ)."""
    return output.split("\nstudy '")[0]


@pytest.mark.slow
def test_sweep_postgres_three_workers_one_study_kill_9_and_resume(small_recipe, tmp_path, postgres_url):
    import optuna

    recipe = _sweep_recipe(small_recipe)
    outs = [tmp_path / f"worker{i}" for i in range(WORKERS)]
    procs = [_worker(recipe, out, postgres_url) for out in outs]
    started = time.time()

    # kill -9 worker 0 once its first trial is training (its run has written a log line); the others carry on
    cut_dir = None
    while time.time() - started < 240 and procs[0].poll() is None:
        logs = sorted((outs[0] / "trials").glob("*/train_log.jsonl")) if (outs[0] / "trials").is_dir() else []
        if logs and logs[0].stat().st_size > 0:
            cut_dir = logs[0].parent
            break
        time.sleep(0.05)
    assert cut_dir is not None and procs[0].poll() is None, "worker 0 ended before a trial of its own could be cut"
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    cut = int(cut_dir.name)
    assert next(t for t in _trials(postgres_url, recipe.stem) if t.number == cut).state.name == "RUNNING"

    procs[0] = _worker(recipe, outs[0], postgres_url, "--resume")
    for proc, out in zip(procs, outs):
        try:
            code = proc.wait(timeout=max(10, 300 - (time.time() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "timeout"
        log = (out.parent / f"{out.name}{'-resumed' if out == outs[0] else ''}.out").read_text()
        assert code == 0, f"{out.name}: {code}\n{log[-3000:]}"

    trials = _trials(postgres_url, recipe.stem)
    ran = [t for t in trials if not t.user_attrs.get("surplus")]
    assert sum(t.state.name == "COMPLETE" for t in trials) == TRIALS
    assert not any(t.state.name in ("RUNNING", "WAITING") for t in trials)
    # the cut trial is failed and retried exactly once, with its own params; nothing else failed
    assert trials[cut].state.name == "FAIL" and trials[cut].user_attrs["worker"].endswith(str(outs[0]))
    retries = [t for t in ran if t.user_attrs.get("retry_of") is not None]
    assert [t.user_attrs["retry_of"] for t in retries] == [cut]
    assert retries[0].params == trials[cut].params and retries[0].state.name == "COMPLETE"
    assert [t.number for t in ran if t.state.name == "FAIL"] == [cut]
    # no parameter set twice, but for the retry the sweep chose to run
    drawn = [tuple(sorted(t.params.items())) for t in ran if t.user_attrs.get("retry_of") is None]
    assert len(drawn) == len(set(drawn)) == TRIALS, drawn
    # every worker ran trials, and keeps the best of its own as a loadable run dir
    from bertctl.inference import load_for_inference, predict_texts

    workers = {t.user_attrs["worker"].split(":", 1)[1] for t in ran if t.state.name == "COMPLETE"}
    assert workers == {str(out.resolve()) for out in outs}
    for out in outs:
        kept = json.loads((out / "best.json").read_text())
        own = [t for t in ran if t.state.name == "COMPLETE" and t.user_attrs["worker"].endswith(str(out.resolve()))]
        assert kept["trial"] == max(own, key=lambda t: (t.value, -t.number)).number  # accuracy: higher is better
        result = predict_texts(load_for_inference(out / "best", threads=1), ["Stocks fell as oil prices rose"])
        assert result.predictions[0].label in result.labels

    # --show from any worker: the same table (the study's), each with its own best/ line
    shown = [runner.invoke(app, ["sweep", "--show", str(out)]) for out in outs]
    assert all(r.exit_code == 0 for r in shown), [r.output for r in shown]
    assert _table(shown[0].stdout) == _table(shown[1].stdout) == _table(shown[2].stdout)
    assert _table(shown[0].stdout).count("complete") == TRIALS and "retry of" in shown[0].stdout

    # --best: the study's best, the worker dir that holds it, and the copy command
    best = optuna_best = max((t for t in ran if t.state.name == "COMPLETE"), key=lambda t: (t.value, -t.number))
    found = runner.invoke(app, ["sweep", "--best", postgres_url, "--json"])
    assert found.exit_code == 0, found.output
    answer = json.loads(found.stdout)
    holder = Path(answer["sweep_dir"])
    assert answer["trial"] == optuna_best.number and answer["held"] is True
    assert json.loads((holder / "best.json").read_text())["trial"] == best.number
    assert answer["copy"] == f"cp -r {holder / 'best'} best"
    assert sum(answer["workers"].values()) == TRIALS
    said = runner.invoke(app, ["sweep", "--best", str(outs[1])])
    assert said.exit_code == 0 and f"best trial {best.number}" in said.stdout and f"cp -r {holder / 'best'}" in said.stdout


@pytest.mark.slow
def test_sweep_postgres_a_new_worker_with_another_space_is_refused(small_recipe, tmp_path, postgres_url):
    # two copies of a recipe named alike on two machines share a study name: the second, with another space, is refused
    recipe = _sweep_recipe(small_recipe).rename(tmp_path / "another.toml")
    first = runner.invoke(app, ["sweep", str(recipe), "--trials", "1", "--output", str(tmp_path / "a"), "--storage", postgres_url])
    assert first.exit_code == 0, first.output
    (tmp_path / "elsewhere").mkdir()
    for data in ("train.csv", "dev.csv"):  # the recipe's relative paths, beside it
        (tmp_path / "elsewhere" / data).write_bytes((tmp_path / data).read_bytes())
    changed = tmp_path / "elsewhere" / "another.toml"
    changed.write_text(recipe.read_text().split("[sweep.space]")[0] + '[sweep.space]\n"train.epochs" = [1, 2]\n')
    other = runner.invoke(app, ["sweep", str(changed), "--trials", "1", "--output", str(tmp_path / "b"), "--storage", postgres_url])
    assert other.exit_code == 2
    assert f"made by another recipe ({recipe})" in other.stderr and f"this one ({changed})" in other.stderr
    assert "sweep.space: the study's" in other.stderr and "train.epochs" in other.stderr and "Traceback" not in other.output
    assert not (tmp_path / "b").exists()
