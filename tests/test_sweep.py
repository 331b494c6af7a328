"""bertctl sweep: the [sweep] table's checks, the seeded sampler, llrd and reinit, and sweeps that are killed, resumed,
pruned and shown (the shipped AG News recipe on 300 texts; tiny BERTs)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertctl.cli import app
from bertctl.errors import BertctlError, RecipeError
from bertctl.recipe import load_recipe, recipe_from_dict, sweep_metric

from conftest import AGNEWS, AGNEWS_LABELS, REPO

runner = CliRunner()
DATA = {"train": str(AGNEWS / "train.csv"), "validation": str(AGNEWS / "dev.csv"), "labels": AGNEWS_LABELS}


def _problems(sweep: dict, **sections) -> dict[str, str]:
    with pytest.raises(RecipeError) as excinfo:
        recipe_from_dict({"data": DATA, "sweep": sweep, **sections})
    return {p.key: p.message for p in excinfo.value.problems}


def _with_sweep(recipe: Path, table: str) -> Path:
    recipe.write_text(recipe.read_text() + table)
    return recipe


# ---------------------------------------------------------------------------------------------
# the [sweep] table


def test_sweep_table_valid_space_loads():
    recipe = recipe_from_dict({"data": DATA, "sweep": {"trials": 12, "metric": "log_loss", "pruner": "hyperband", "space": {
        "train.learning_rate": {"low": 2e-5, "high": 3e-4, "log": True},
        "train.epochs": [2, 3, 4],
        "train.warmup_ratio": {"low": 0.0, "high": 0.2},
        "train.scheduler": ["linear", "cosine"],
        "train.layerwise_lr_decay": {"low": 0.8, "high": 1.0},
        "train.reinit_layers": {"low": 0, "high": 2},
    }}})
    assert recipe.sweep.trials == 12 and recipe.sweep.pruner == "hyperband"
    assert recipe.sweep.space["train.epochs"] == [2, 3, 4]
    again = load_recipe(_write(recipe.to_toml()))
    assert again.sweep.space == recipe.sweep.space  # the saved recipe reads back the same space


def _write(text: str) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "r.toml"
    path.write_text(text)
    return path


def test_sweep_table_reports_every_problem_together():
    problems = _problems({"trials": 0, "pruner": "asha", "metric": "pearson", "space": {
        "train.learning_rate": {"low": 3e-4, "high": 2e-5, "log": True},
        "train.epochs": {"low": 1.5, "high": 3},
        "train.lr": [1e-5],
        "train.warmup_ratio": {"low": 0.0, "high": 1.0},
        "train.weight_decay": {"low": 0.0, "high": 0.1, "log": True},
        "train.scheduler": ["linear", "cosin"],
        "train.batch_size": [16, "32"],
        "model.name": {"low": 1, "high": 2},
        "train.seed": 3,
        "output.dir": ["a", "b"],
        "train.max_grad_norm": {"low": 0.5, "hgih": 1.0},
    }})
    assert "must be >= 1" in problems["sweep.trials"]
    assert "'asha'" in problems["sweep.pruner"]
    assert "not a single-label metric" in problems["sweep.metric"]
    assert "low 0.0003 is above high 2e-05" in problems["sweep.space.train.learning_rate"]
    assert "must be an integer, as train.epochs is" in problems["sweep.space.train.epochs.low"]
    assert "not a recipe key" in problems["sweep.space.train.lr"]
    assert "must be < 1.0" in problems["sweep.space.train.warmup_ratio.high"]
    assert "log = true needs low > 0" in problems["sweep.space.train.weight_decay"]
    assert "'cosin'" in problems["sweep.space.train.scheduler"]
    assert "value 2 must be an integer" in problems["sweep.space.train.batch_size"]
    assert "is a range, but model.name is a string" in problems["sweep.space.model.name"]
    assert "must be a range" in problems["sweep.space.train.seed"]
    assert "can't be searched" in problems["sweep.space.output.dir"]
    assert "unknown key" in problems["sweep.space.train.max_grad_norm.hgih"]
    assert "has no high" in problems["sweep.space.train.max_grad_norm"]


def test_sweep_table_unknown_key_suggests_within_its_section():
    with pytest.raises(RecipeError) as excinfo:
        recipe_from_dict({"data": DATA, "sweep": {"space": {"train.lr": [1e-5]}}})
    assert "did you mean 'train.learning_rate'?" in str(excinfo.value)


def test_sweep_table_list_values_each_validate_as_the_key():
    problems = _problems({"space": {"train.epochs": [2, 0], "train.learning_rate": [], "train.layerwise_lr_decay": [0.9, 1.5]}})
    assert "value 2: train.epochs must be >= 1" in problems["sweep.space.train.epochs"]
    assert "empty list" in problems["sweep.space.train.learning_rate"]
    assert "value 2: train.layerwise_lr_decay must be <= 1.0" in problems["sweep.space.train.layerwise_lr_decay"]


def test_sweep_table_metric_default_and_direction():
    from bertctl.sweeping import direction

    assert sweep_metric(recipe_from_dict({"data": DATA})) == "accuracy"
    assert sweep_metric(recipe_from_dict({"data": DATA, "train": {"metric_for_best": "f1_macro"}})) == "f1_macro"
    assert sweep_metric(recipe_from_dict({"data": DATA, "sweep": {"metric": "log_loss"}})) == "log_loss"
    assert [direction(m) for m in ("accuracy", "mcc", "spearman", "r2")] == ["maximize"] * 4
    assert [direction(m) for m in ("log_loss", "ece", "hamming_loss", "mse", "rmse", "mae")] == ["minimize"] * 6


def test_sweep_table_does_not_change_training_recipes():
    # train ignores [sweep]; the shipped recipe's train settings are those of the file without it
    from conftest import REPO

    shipped = load_recipe(REPO / "recipes" / "agnews.toml")
    assert shipped.sweep.space, "recipes/agnews.toml ships a [sweep.space]"
    text = (REPO / "recipes" / "agnews.toml").read_text()
    without = _write(text.split("[sweep]")[0].replace('"data/agnews/', f'"{REPO}/recipes/data/agnews/'))
    assert load_recipe(without).train == shipped.train


# ---------------------------------------------------------------------------------------------
# the sampler and the trial recipes


def _ask(recipe, n: int) -> list[dict]:
    import optuna

    from bertctl.sweeping import build_sampler, suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=build_sampler(recipe), direction="maximize")
    params = []
    for i in range(n):
        trial = study.ask()
        params.append(suggest(trial, recipe.sweep.space))
        study.tell(trial, 0.1 * i)
    return params


def test_sweep_seeded_sampler_gives_the_same_params_twice():
    space = {"train.learning_rate": {"low": 2e-5, "high": 3e-4, "log": True}, "train.epochs": [2, 3, 4], "train.reinit_layers": {"low": 0, "high": 2}}
    recipe = recipe_from_dict({"data": DATA, "sweep": {"space": space}})
    first, second = _ask(recipe, 4), _ask(recipe, 4)
    assert first == second
    assert all(isinstance(p["train.reinit_layers"], int) and p["train.epochs"] in (2, 3, 4) for p in first)
    assert all(2e-5 <= p["train.learning_rate"] <= 3e-4 for p in first)
    other = recipe_from_dict({"data": DATA, "train": {"seed": 1}, "sweep": {"space": space}})
    assert _ask(other, 4) != first


def _draw(study, recipe, worker: str, n: int) -> list[tuple]:
    """n trials of one start of a worker: its sampler seeded as run_sweep seeds it, from the study as it is."""
    from bertctl.sweeping import build_sampler, suggest

    study.sampler = build_sampler(recipe, trials_in_study=len(study.trials), worker=worker)
    drawn = []
    for _ in range(n):
        trial = study.ask()
        drawn.append(tuple(sorted(suggest(trial, recipe.sweep.space).items())))
        study.tell(trial, 0.5)
    return drawn


def test_sweep_sampler_a_resumed_start_does_not_replay_its_draws():
    # issue 27: after Ctrl-C and --resume, trial 3 ran trial 0's exact params: TPE re-seeded with train.seed alone
    # makes the same random opening draws at every start
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"train.learning_rate": {"low": 2e-5, "high": 3e-4, "log": True}, "train.warmup_ratio": {"low": 0.0, "high": 0.2}}
    recipe = recipe_from_dict({"data": DATA, "sweep": {"space": space}})
    study = optuna.create_study(direction="maximize")
    first = _draw(study, recipe, "host:/runs/s", 3)
    resumed = _draw(study, recipe, "host:/runs/s", 3)
    assert len(set(first + resumed)) == 6
    # the old seeding, for contrast: the same seed twice replays the first start
    replay = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=recipe.train.seed))
    again = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=recipe.train.seed))
    assert _params_of(replay, space, 3) == _params_of(again, space, 3)
    # and a start is still reproducible: the same worker on the same study history draws the same
    other = optuna.create_study(direction="maximize")
    assert _draw(other, recipe, "host:/runs/s", 3) == first


def _params_of(study, space, n):
    from bertctl.sweeping import suggest

    return [suggest(study.ask(), space) for _ in range(n)]


def test_sweep_sampler_three_workers_on_one_study_draw_apart():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"train.learning_rate": {"low": 2e-5, "high": 3e-4, "log": True}, "train.warmup_ratio": {"low": 0.0, "high": 0.2}}
    recipe = recipe_from_dict({"data": DATA, "sweep": {"space": space}})
    study = optuna.create_study(direction="maximize")
    # three workers start on the empty study at once (each sees 0 trials), then take turns
    samplers = {}
    from bertctl.sweeping import build_sampler, suggest

    for worker in ("a:/runs/s", "b:/runs/s", "a:/runs/s2"):
        samplers[worker] = build_sampler(recipe, trials_in_study=0, worker=worker)
    drawn = []
    for _ in range(3):
        for sampler in samplers.values():
            study.sampler = sampler
            trial = study.ask()
            drawn.append(tuple(sorted(suggest(trial, space).items())))
            study.tell(trial, 0.5)
    assert len(set(drawn)) == 9


def test_sweep_trial_recipe_applies_params_as_overrides(tmp_path):
    from bertctl.sweeping import trial_recipe

    recipe = recipe_from_dict({"data": DATA, "sweep": {"metric": "log_loss", "space": {"train.epochs": [2, 3]}}})
    trial = trial_recipe(recipe, {"train.epochs": 3, "train.learning_rate": 1.5e-5, "train.scheduler": "cosine"}, tmp_path / "trials" / "000")
    assert (trial.train.epochs, trial.train.learning_rate, trial.train.scheduler) == (3, 1.5e-5, "cosine")
    assert trial.run_dir == tmp_path / "trials" / "000" and trial.train.metric_for_best == "log_loss"
    assert "train.epochs=3" in trial.overrides


def test_sweep_without_optuna_names_the_extra(monkeypatch):
    from bertctl import sweeping

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    with pytest.raises(BertctlError) as excinfo:
        sweeping.require_optuna()
    assert 'pip install -e ".[sweep]"' in str(excinfo.value)


def test_sweep_refuses_a_non_empty_dir_without_resume(small_recipe, tmp_path):
    recipe = _with_sweep(small_recipe, '[sweep.space]\n"train.epochs" = [1, 2]\n')
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["sweep", str(recipe), "--output", str(out)])
    assert result.exit_code == 2 and "not empty" in result.stderr and "--resume" in result.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    resumed = runner.invoke(app, ["sweep", str(recipe), "--output", str(tmp_path / "none"), "--resume"])
    assert resumed.exit_code == 2 and "no sweep to resume" in resumed.stderr


def test_sweep_refuses_a_recipe_without_space_or_validation(small_recipe, tmp_path):
    result = runner.invoke(app, ["sweep", str(small_recipe), "--output", str(tmp_path / "s")])
    assert result.exit_code == 2 and "no [sweep.space]" in result.stderr
    recipe = _with_sweep(small_recipe, '[sweep.space]\n"train.epochs" = [1, 2]\n')
    result = runner.invoke(app, ["sweep", str(recipe), "data.validation=", "--output", str(tmp_path / "s")])
    assert result.exit_code == 2
    show = runner.invoke(app, ["sweep", "--show", str(tmp_path)])
    assert show.exit_code == 2 and "not a sweep dir" in show.stderr
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------------------
# layer-wise lr decay and re-initialised top layers


@pytest.fixture
def tiny_classifier():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, num_labels=4)
    return BertForSequenceClassification(config)


def test_sweep_llrd_param_groups_have_the_layer_lrs(tiny_classifier):
    from bertctl.loop import build_optimizer

    recipe = recipe_from_dict({"data": DATA, "train": {"learning_rate": 1e-3, "layerwise_lr_decay": 0.5}})
    optimizer = build_optimizer(tiny_classifier, recipe)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(tiny_classifier.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == 1e-3 and lr_of[id(named["bert.pooler.dense.weight"])] == 1e-3
    for i in range(3):  # layer i of L=3 gets lr * 0.5^(3 - i)
        assert lr_of[id(named[f"bert.encoder.layer.{i}.attention.self.query.weight"])] == pytest.approx(1e-3 * 0.5 ** (3 - i))
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == pytest.approx(1e-3 * 0.5**4)
    assert decay_of[id(named["bert.encoder.layer.0.output.LayerNorm.weight"])] == 0.0
    assert decay_of[id(named["bert.encoder.layer.0.output.dense.weight"])] == 0.01
    assert optimizer.param_groups[0]["lr"] == 1e-3  # the lr the log shows is the head's
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named)


def test_sweep_llrd_off_keeps_the_two_groups(tiny_classifier):
    from bertctl.loop import build_optimizer

    optimizer = build_optimizer(tiny_classifier, recipe_from_dict({"data": DATA}))
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [(5e-5, 0.01), (5e-5, 0.0)]


def test_sweep_reinit_changes_exactly_the_top_layers_and_is_seeded(tiny_classifier):
    import copy

    import torch

    from bertctl.training import reinit_top_layers

    before = {k: v.clone() for k, v in tiny_classifier.state_dict().items()}
    twin = copy.deepcopy(tiny_classifier)
    names = reinit_top_layers(tiny_classifier, 2, seed=7)
    assert names == ["bert.encoder.layer.1", "bert.encoder.layer.2", "bert.pooler"]
    after = tiny_classifier.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    top = ("bert.encoder.layer.1.", "bert.encoder.layer.2.", "bert.pooler.")
    assert changed and all(k.startswith(top) for k in changed)
    # every weight matrix of the top layers is new; LayerNorms go back to 1/0, which they already were
    assert {k for k in before if k.startswith(top) and k.endswith("dense.weight")} <= changed
    std = tiny_classifier.config.initializer_range
    assert after["bert.encoder.layer.2.output.dense.weight"].std().item() == pytest.approx(std, rel=0.3)
    reinit_top_layers(twin, 2, seed=7)
    assert all(torch.equal(after[k], twin.state_dict()[k]) for k in after)  # same seed, same weights
    third = copy.deepcopy(twin)
    reinit_top_layers(third, 2, seed=8)
    assert not torch.equal(third.state_dict()["bert.pooler.dense.weight"], after["bert.pooler.dense.weight"])
    # the global RNG is left alone: the dropout of training is the same with or without reinit
    torch.manual_seed(3)
    reinit_top_layers(third, 1, seed=9)
    drawn = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(drawn, torch.rand(1))


def test_sweep_reinit_and_llrd_bad_values_are_problems(tiny_classifier):
    from bertctl.training import check_reinit_layers

    with pytest.raises(RecipeError) as excinfo:
        recipe_from_dict({"data": DATA, "train": {"layerwise_lr_decay": 0.0, "reinit_layers": -1}})
    keys = {p.key: p.message for p in excinfo.value.problems}
    assert "must be > 0.0" in keys["train.layerwise_lr_decay"] and "must be >= 0" in keys["train.reinit_layers"]
    with pytest.raises(RecipeError, match="train.layerwise_lr_decay"):
        recipe_from_dict({"data": DATA, "train": {"layerwise_lr_decay": 1.1}})
    with pytest.raises(RecipeError) as excinfo:
        check_reinit_layers(recipe_from_dict({"data": DATA, "train": {"reinit_layers": 4}}), tiny_classifier.config)
    assert excinfo.value.problems[0].key == "train.reinit_layers" and "has 3 encoder layers" in str(excinfo.value)
    check_reinit_layers(recipe_from_dict({"data": DATA, "train": {"reinit_layers": 3}}), tiny_classifier.config)


@pytest.mark.slow
def test_sweep_llrd_and_reinit_train_end_to_end(small_recipe, tmp_path):
    from bertctl.training import train

    result = train(load_recipe(small_recipe, ["train.layerwise_lr_decay=0.8", "train.reinit_layers=1", "train.epochs=1"]), output_dir=tmp_path / "run", progress=False)
    assert result.metrics["global_steps"] == 10 and (tmp_path / "run" / "model.safetensors").is_file()
    refused = runner.invoke(app, ["train", str(small_recipe), "train.reinit_layers=3", "--output-dir", str(tmp_path / "r3")])
    assert refused.exit_code == 2 and "train.reinit_layers" in refused.stderr and "2 encoder layers" in refused.stderr
    assert not (tmp_path / "r3").exists()


def _child(tmp_path: Path, script: str):
    """A TrainProcess whose child is a small Python script in place of `bertctl train` (it writes run_dir's log)."""
    from bertctl.sweeping import TrainProcess

    run_dir = tmp_path / "trials" / "000"
    child = TrainProcess(load_recipe(REPO / "recipes" / "agnews.toml"), run_dir, tmp_path / "trials" / "000.log")
    child.command = [sys.executable, "-c", script, str(run_dir / "train_log.jsonl")]
    child.poll_seconds = 0.01
    return child


def test_sweep_train_process_yields_eval_lines_as_written_and_after_exit(tmp_path):
    script = """
import json, sys, time, pathlib
log = pathlib.Path(sys.argv[1]); log.parent.mkdir(parents=True)
with log.open("w") as fh:
    fh.write(json.dumps({"type": "train", "step": 5}) + "\\n"); fh.flush()
    fh.write('{"type": "eval", "step": 10, '); fh.flush(); time.sleep(0.2)   # half a line, then the rest
    fh.write('"accuracy": 0.5}\\n'); fh.flush(); time.sleep(0.2)
    fh.write(json.dumps({"type": "eval", "step": 20, "accuracy": 0.75}) + "\\n")  # just before it exits
print("done")
"""
    child = _child(tmp_path, script)
    with child:
        records = list(child.evaluations())
    assert records == [{"type": "eval", "step": 10, "accuracy": 0.5}, {"type": "eval", "step": 20, "accuracy": 0.75}]
    child.check()  # exit 0
    assert child.returncode == 0 and (tmp_path / "trials" / "000.log").read_text().strip() == "done"
    if hasattr(os, "wait4"):
        assert 1 < child.peak_rss_mib < 1000  # the child's own peak, a small Python process


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher that keeps the parent's peak out is Linux's")
def test_sweep_train_process_peak_rss_is_the_childs_not_the_sweeps(tmp_path):
    # spawned straight from a process holding 1.5 GiB, a child's ru_maxrss starts there (CI saw 1053 MiB for a
    # small script when pytest had grown): the trial's figure must be its own
    held = b"\x01" * (1536 * 2**20)  # written, so resident
    child = _child(tmp_path, "import sys, pathlib; pathlib.Path(sys.argv[1]).parent.mkdir(parents=True)")
    with child:
        list(child.evaluations())
    assert len(held) and child.returncode == 0 and 1 < child.peak_rss_mib < 500


def test_sweep_train_process_is_killed_when_the_trial_is_cut(tmp_path):
    script = """
import json, sys, time, pathlib
log = pathlib.Path(sys.argv[1]); log.parent.mkdir(parents=True)
log.write_text(json.dumps({"type": "eval", "step": 10, "accuracy": 0.5}) + "\\n")
time.sleep(60)
"""
    child = _child(tmp_path, script)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="pruned"):
        with child:
            for record in child.evaluations():
                raise RuntimeError("pruned")
    assert child.returncode == -signal.SIGKILL and time.perf_counter() - started < 30


def test_sweep_train_process_failure_is_an_error_naming_its_log(tmp_path):
    child = _child(tmp_path, "import sys; print('error: data.train not found'); sys.exit(2)")
    with child:
        assert list(child.evaluations()) == []
    with pytest.raises(BertctlError) as excinfo:
        child.check()
    assert "exited with 2" in str(excinfo.value) and "data.train not found" in str(excinfo.value)
    assert "000.log" in excinfo.value.fix


# ---------------------------------------------------------------------------------------------
# sweeps of the tiny BERT


def _study(out: Path):
    import optuna

    settings = json.loads((out / "sweep.json").read_text())
    return optuna.load_study(study_name=settings["study_name"], storage=settings["storage"])


def _states(out: Path) -> list[str]:
    return [t.state.name for t in _study(out).get_trials(deepcopy=False)]


def _running_trial(db: Path) -> int | None:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute("select number from trials where state = 'RUNNING'").fetchall()
    except sqlite3.Error:
        return None
    return rows[0][0] if rows else None


def _processes_naming(path: Path) -> list[int]:
    """Live processes whose command line names `path` (Linux /proc; none elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((line for line in (entry / "status").read_text().splitlines() if line.startswith("State:")), "")
        except OSError:
            continue
        if str(path) in cmdline and "zombie" not in state:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_sweep_survives_kill_9_and_resumes_to_exactly_the_trials(tmp_path):
    # the shipped recipe's own [sweep] table and model (MiniLM), on 300 training texts; pruning off, so that every
    # trial that finishes is complete
    recipe = REPO / "recipes" / "agnews.toml"
    short = ["data.limit.train=300", "data.limit.validation=100", 'sweep.pruner="none"']
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "bertctl", "sweep", str(recipe), *short, "--trials", "3", "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    # kill -9 once the second trial (#1) is training: its log has a line
    while time.time() < deadline and proc.poll() is None:
        if _running_trial(out / "study.db") == 1 and (out / "trials" / "001" / "train_log.jsonl").is_file():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before the second trial could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _states(out) == ["COMPLETE", "RUNNING"]
    # the trial's `bertctl train` child died with the sweep: nothing trains on into trials/001
    deadline = time.time() + 10
    while time.time() < deadline and _processes_naming(out / "trials" / "001"):
        time.sleep(0.1)
    assert not _processes_naming(out / "trials" / "001")
    assert (out / "best" / "model.safetensors").is_file()

    resumed = runner.invoke(app, ["sweep", str(recipe), *short, "--trials", "3", "--output", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    trials = _study(out).get_trials(deepcopy=False)
    assert [t.state.name for t in trials].count("COMPLETE") == 3
    assert trials[1].state.name == "FAIL"
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 1)
    assert retry.params == trials[1].params and retry.state.name == "COMPLETE"
    assert "trial 3/3" in resumed.output and "best" in resumed.output
    assert "sweep dir" in resumed.output  # the size line
    assert "peak RSS" in resumed.output and all(t.user_attrs["peak_rss_mib"] > 100 for t in trials if t.state.name == "COMPLETE")

    # best/ is the best complete trial, HF-native; every trial dir keeps its log and metrics, no weights
    best = _study(out).best_trial
    assert json.loads((out / "best.json").read_text())["trial"] == best.number
    from transformers import pipeline

    predicted = pipeline("text-classification", model=str(out / "best"))(["Stocks fell as oil prices rose"])
    assert predicted[0]["label"] in AGNEWS_LABELS
    for trial_dir in (p for p in (out / "trials").iterdir() if p.is_dir() and not p.is_symlink()):
        assert (out / "trials" / f"{trial_dir.name}.log").is_file()  # what its bertctl train printed
        assert not list(trial_dir.rglob("*.safetensors")) and not (trial_dir / "checkpoints").exists()
        assert (trial_dir / "recipe.toml").is_file() and (trial_dir / "train_log.jsonl").is_file()
    assert (out / "trials" / f"{best.number:03d}" / "metrics.json").is_file()
    assert load_recipe(out / "trials" / f"{best.number:03d}" / "recipe.toml").train.epochs == best.params["train.epochs"]

    shown = runner.invoke(app, ["sweep", "--show", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "learning_rate" in shown.output and "complete" in shown.output and "fail" in shown.output
    for png in ("history.png", "importances.png", "params.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
    again = runner.invoke(app, ["sweep", str(recipe), *short, "--trials", "3", "--output", str(out), "--resume"])
    assert again.exit_code == 0 and _states(out).count("COMPLETE") == 3  # done: nothing more runs


@pytest.mark.slow
def test_sweep_resumed_runs_no_params_twice(small_recipe, tmp_path):
    # issue 27 as a user met it: a sweep stopped after 2 trials and resumed to 4 ran trial 0's params again
    recipe = _with_sweep(small_recipe, '[sweep]\npruner = "none"\n[sweep.space]\n"train.learning_rate" = { low = 1e-4, high = 1e-2, log = true }\n')
    out = tmp_path / "sweep"
    base = ["sweep", str(recipe), "train.epochs=1", "--output", str(out)]
    assert runner.invoke(app, [*base, "--trials", "2"]).exit_code == 0
    resumed = runner.invoke(app, [*base, "--trials", "4", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    trials = _study(out).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert len({t.params["train.learning_rate"] for t in trials}) == 4


@pytest.mark.slow
def test_sweep_trial_that_fails_is_an_error_naming_the_cause_and_its_log(small_recipe, tmp_path):
    recipe = _with_sweep(small_recipe, '[sweep.space]\n"train.epochs" = [1, 2]\n')
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", str(recipe), f'model.name="{tmp_path / "no-such-model"}"', "--trials", "2", "--output", str(out)])
    assert result.exit_code == 2
    assert "trial run" in result.stderr and "no-such-model" in result.stderr and "does not exist" in result.stderr
    assert str(out / "trials" / "000.log") in result.stderr and "Traceback" not in result.output + result.stderr
    assert _states(out) == ["FAIL"]


@pytest.mark.slow
def test_sweep_prunes_a_trial_with_a_bad_learning_rate(small_recipe, tmp_path):
    import optuna

    from bertctl.sweeping import run_sweep

    recipe_path = _with_sweep(small_recipe, '[sweep]\nmetric = "log_loss"\npruner = "median"\n[sweep.space]\n"train.learning_rate" = [1e-3, 1.0]\n')
    recipe = load_recipe(recipe_path, ["train.epochs=3"])
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    # a study another machine made, with the trials queued: two good ones, then one whose lr blows the model up
    study = optuna.create_study(study_name=recipe.name, storage=storage, direction="minimize")
    for lr in (1e-3, 1e-3, 1.0):
        study.enqueue_trial({"train.learning_rate": lr})
    summary = run_sweep(recipe, output=tmp_path / "sweep", trials=3, storage=storage, progress=False)
    states = [t["state"] for t in summary.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"]
    pruned = summary.trials[2]
    assert pruned["value"] > max(t["value"] for t in summary.trials[:2])  # log_loss: lower is better
    assert summary.best["trial"] in (0, 1) and summary.direction == "minimize"
    log = [json.loads(line) for line in (tmp_path / "sweep" / "trials" / "002" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "eval"][0] == 10
    assert list(optuna.load_study(study_name=recipe.name, storage=storage).trials[2].intermediate_values) == [1]  # pruned at its first evaluation
    assert not list((tmp_path / "sweep" / "trials").rglob("*.safetensors"))
    shown = runner.invoke(app, ["sweep", "--show", str(tmp_path / "sweep")])
    assert shown.exit_code == 0 and "pruned" in shown.output
    assert "peak RSS" in shown.output and all(t["peak_rss_mib"] > 100 for t in summary.trials)  # torch alone is more


@pytest.mark.parametrize("url", ["nosuchdb://host/db", "not a url", "postgresql://me:secret@127.0.0.1:1/sweeps"])
def test_sweep_storage_that_cannot_be_opened_is_an_error(small_recipe, tmp_path, url):
    recipe = _with_sweep(small_recipe, '[sweep.space]\n"train.epochs" = [1, 2]\n')
    result = runner.invoke(app, ["sweep", str(recipe), "--output", str(tmp_path / "s"), "--storage", url])
    assert result.exit_code == 2, result.output
    assert "cannot open the study storage" in result.stderr and "secret" not in result.stderr
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------------------
# the command's arguments


@pytest.mark.parametrize(
    "given",
    [{"recipe": "r.toml"}, {"resume": True}, {"trials": 3}, {"timeout": 60.0}, {"output": "out"}],
)
def test_sweep_check_sweep_arguments_show_takes_nothing_that_runs(given):
    from bertctl.sweeping import check_sweep_arguments

    given = dict(given)
    with pytest.raises(BertctlError, match="--show reads a sweep dir and runs nothing") as refused:
        check_sweep_arguments(given.pop("recipe", None), show="runs/s", **given)
    assert "bertctl sweep --show runs/s" in str(refused.value)


def test_sweep_check_sweep_arguments_needs_a_recipe_or_show():
    from bertctl.sweeping import check_sweep_arguments

    with pytest.raises(BertctlError, match=r"needs a recipe with a \[sweep.space\], or --show DIR"):
        check_sweep_arguments(None, trials=3)
    check_sweep_arguments("r.toml", trials=3, resume=True, output="out")  # a run: no error
    check_sweep_arguments(None, show="runs/s")  # a show: no error
    result = runner.invoke(app, ["sweep", "--show", "runs/s", "--trials", "3"])
    assert result.exit_code == 2 and "runs nothing" in result.stderr


def test_sweep_prints_a_trials_start_and_progress_as_they_happen(tmp_path, capsys):
    # issue 28: a sweep printed nothing until its first trial ended (110 s on AG News)
    from bertctl.sweeping import watch_trial

    script = """
import json, sys, time, pathlib
log = pathlib.Path(sys.argv[1]); log.parent.mkdir(parents=True)
with log.open("w") as fh:
    for record in ({"type": "train", "step": 2, "loss": 1.25}, {"type": "train", "step": 4, "loss": 1.0}, {"type": "eval", "step": 4, "accuracy": 0.5}):
        fh.write(json.dumps(record) + "\\n"); fh.flush()
    time.sleep(2)
    fh.write(json.dumps({"type": "eval", "step": 8, "accuracy": 0.75}) + "\\n")
"""
    child = _child(tmp_path, script)
    seen = []
    with child:
        watched = watch_trial(child, 3, {"train.learning_rate": 3e-5, "train.batch_size": 16}, "accuracy", True)
        first = next(watched)
        # the start, the first training step and the first eval are out while the run still goes on
        assert child.returncode is None
        seen.append(capsys.readouterr().out)
        rest = list(watched)
    assert [first, *rest] == [{"type": "eval", "step": 4, "accuracy": 0.5}, {"type": "eval", "step": 8, "accuracy": 0.75}]
    assert seen[0].splitlines() == [
        f"trial #3 started: learning_rate=3e-05 batch_size=16  (output: {tmp_path / 'trials' / '000.log'})",
        "  trial #3 step 2: training, loss 1.2500",
        "  trial #3 eval step 4: accuracy 0.5000",
    ]
    assert capsys.readouterr().out == "  trial #3 eval step 8: accuracy 0.7500\n"
    with _child(tmp_path / "quiet", script) as child:
        assert len(list(watch_trial(child, 0, {}, "accuracy", False))) == 2
    assert capsys.readouterr().out == ""


def test_sweep_check_sweep_arguments_best_takes_nothing_that_runs():
    from bertctl.sweeping import check_sweep_arguments

    check_sweep_arguments(None, best="postgresql://me@db/sweeps", study="agnews")  # a read: no error
    with pytest.raises(BertctlError, match="--best reads a study and runs nothing"):
        check_sweep_arguments("r.toml", best="postgresql://me@db/sweeps")
    with pytest.raises(BertctlError, match="--study names the study of --best URL"):
        check_sweep_arguments(None, show="runs/s", study="agnews")
    result = runner.invoke(app, ["sweep", "--best", "runs/no-such-sweep"])
    assert result.exit_code == 2 and "neither a storage URL nor a sweep dir" in result.stderr


def test_sweep_best_of_a_study_names_the_worker_dir_and_the_copy(tmp_path):
    # two workers' trials in one SQLite study, as run_sweep records them: --best names the better one's dir
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from bertctl.sweeping import find_study_best, worker_name

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    study = optuna.create_study(study_name="agnews", storage=url, direction="maximize")
    study.set_user_attr("bertctl", {"recipe": "recipes/agnews.toml", "metric": "accuracy", "space": {}})
    for out, value in ((tmp_path / "a", 0.7), (tmp_path / "b", 0.9), (tmp_path / "a", 0.8)):
        trial = study.ask()
        trial.suggest_float("train.learning_rate", 1e-5, 1e-3, log=True)
        trial.set_user_attr("worker", worker_name(out))
        trial.set_user_attr("host", worker_name(out).split(":", 1)[0])
        study.tell(trial, value)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "best.json").write_text(json.dumps({"trial": 1}))
    found = find_study_best(url)
    assert (found.trial, found.value, found.metric) == (1, 0.9, "accuracy")
    assert found.sweep_dir == str((tmp_path / "b").resolve()) and found.held is True
    assert found.copy == f"cp -r {(tmp_path / 'b').resolve() / 'best'} best"
    assert sorted(found.workers.values()) == [1, 2]
    shown = runner.invoke(app, ["sweep", "--best", url])
    assert shown.exit_code == 0 and "best trial 1, accuracy 0.9000" in shown.stdout and "copy it: cp -r" in shown.stdout
