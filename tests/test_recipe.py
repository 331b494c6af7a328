"""Recipe loading: schema checks (all problems at once), overrides, relative paths, round trip, file errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bertctl.errors import BertctlError, RecipeError
from bertctl.recipe import (
    DEFAULT_MODEL,
    METRICS,
    Recipe,
    apply_overrides,
    describe_schema,
    json_schema,
    load_recipe,
    parse_override,
    readme_table,
    recipe_from_dict,
)

REPO = Path(__file__).resolve().parents[1]
AGNEWS_RECIPE = REPO / "recipes" / "agnews.toml"


def write_recipe(folder: Path, body: str, name: str = "r.toml", data: bool = True) -> Path:
    """A recipe file in `folder`; with data=True a tiny train.csv next to it so data checks pass."""
    folder.mkdir(parents=True, exist_ok=True)
    if data:
        (folder / "train.csv").write_text("text,label\na,x\nb,y\n", encoding="utf-8")
    path = folder / name
    path.write_text(body, encoding="utf-8")
    return path


def problems_of(excinfo) -> dict[str, str]:
    """key -> message (+ fix) of every problem in a RecipeError."""
    return {p.key: f"{p.message} | {p.fix}" for p in excinfo.value.problems}


MINIMAL = '[data]\ntrain = "train.csv"\n'


# ---------------------------------------------------------------------------------------------
# the shipped recipe and defaults


def test_recipe_loads_agnews():
    recipe = load_recipe(AGNEWS_RECIPE)
    assert recipe.model.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert recipe.data.labels == ["World", "Sports", "Business", "Sci/Tech"]
    assert recipe.eval.thresholds == {"accuracy": 0.88}
    assert recipe.data_path("train") == AGNEWS_RECIPE.parent / "data" / "agnews" / "train.csv"
    assert recipe.data_path("train").is_file()
    assert recipe.name == "agnews"
    assert recipe.run_dir == Path("runs/agnews")
    assert not recipe.uses_hub_dataset


def test_recipe_defaults_fill_every_unset_key(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, MINIMAL))
    assert recipe.model.name == DEFAULT_MODEL
    assert recipe.model.max_length == 128
    assert recipe.data.text == "text" and recipe.data.label == "label" and recipe.data.text_pair is None
    assert recipe.data.labels is None and recipe.data.validation is None and recipe.data.drop_empty is False
    assert recipe.data.limit.train is None
    assert (recipe.train.epochs, recipe.train.batch_size, recipe.train.learning_rate) == (3, 32, 5e-5)
    assert recipe.train.scheduler == "linear" and recipe.train.mixed_precision == "no"
    assert recipe.eval.metrics == ["accuracy", "f1_macro"] and recipe.eval.split == "test"
    assert recipe.eval.thresholds == {}
    p = recipe.pretrain
    assert (p.mlm_probability, p.whole_word_masking, p.nsp, p.heldout_fraction) == (0.15, False, False, 0.1)
    assert (p.epochs, p.max_steps, p.data, p.text) == (None, None, None, "text")
    # default run dir is named after the recipe file
    assert recipe.run_dir == Path("runs") / "r"


def test_recipe_defaults_match_describe_schema():
    rows = {key: default for key, _, default, _ in describe_schema()}
    recipe = Recipe()
    for key, default in rows.items():
        section, *rest = key.split(".")
        value = getattr(recipe, section)
        for part in rest:
            value = getattr(value, part)
        # the default is shown as a recipe would spell it: TOML that reads back as the value
        parsed = None if default == "(unset)" else tomllib.loads(f"v = {default}")["v"]
        assert parsed == value, key


def test_recipe_default_mutable_values_are_not_shared():
    a, b = Recipe(), Recipe()
    a.train.log_with.append("tensorboard")
    assert b.train.log_with == []


def test_recipe_integer_accepted_for_number(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, MINIMAL + "[train]\nlearning_rate = 1\nmax_grad_norm = 0\n"))
    assert recipe.train.learning_rate == 1.0 and isinstance(recipe.train.learning_rate, float)
    assert recipe.train.max_grad_norm == 0.0


# ---------------------------------------------------------------------------------------------
# schema problems, each kind, and all of them at once


def test_recipe_unknown_key_suggests_the_close_one(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, MINIMAL + "[train]\nlearning_rte = 1e-4\n"))
    found = problems_of(excinfo)
    assert "unknown key" in found["train.learning_rte"]
    assert "did you mean 'learning_rate'?" in found["train.learning_rte"]


def test_recipe_unknown_section_suggests_the_close_one(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, MINIMAL + "[trian]\nepochs = 1\n"))
    assert "did you mean 'train'?" in problems_of(excinfo)["trian"]


def test_recipe_unknown_key_without_close_match_lists_known_keys(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, MINIMAL + "[model]\nzzzz = 1\n"))
    assert "known keys here: name, max_length" in problems_of(excinfo)["model.zzzz"]


@pytest.mark.parametrize(
    "body, key, expected",
    [
        ("[train]\nepochs = \"3\"\n", "train.epochs", "must be an integer, got str '3'"),
        ("[train]\nepochs = 2.5\n", "train.epochs", "must be an integer, got float 2.5"),
        ("[train]\nepochs = true\n", "train.epochs", "must be an integer, got bool True"),
        ("[train]\nlearning_rate = \"2e-5\"\n", "train.learning_rate", "must be a number, got str '2e-5'"),
        ("[train]\nlearning_rate = nan\n", "train.learning_rate", "nan and inf are not allowed"),
        ("[train]\ngroup_by_length = 1\n", "train.group_by_length", "must be a true/false, got int 1"),
        ("[model]\nname = 5\n", "model.name", "must be a string, got int 5"),
        ("[eval]\nmetrics = \"accuracy\"\n", "eval.metrics", "must be a list of strings, got str 'accuracy'"),
        ("labels = [\"a\", 1]\n", "data.labels", "(item 2 is int 1)"),
        ("[eval.thresholds]\naccuracy = \"high\"\n", "eval.thresholds.accuracy", "must be a number, got str 'high'"),
        ("[pretrain]\nnsp = \"yes\"\n", "pretrain.nsp", "must be a true/false, got str 'yes'"),
        ("[pretrain]\nmax_steps = 2.5\n", "pretrain.max_steps", "must be an integer, got float 2.5"),
    ],
)
def test_recipe_wrong_type_names_key_expected_type_and_value(tmp_path, body, key, expected):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, MINIMAL + body))
    assert expected in problems_of(excinfo)[key]


@pytest.mark.parametrize(
    "body, key, expected",
    [
        ("[train]\nepochs = 0\n", "train.epochs", "must be >= 1, got 0"),
        ("[train]\nlearning_rate = 0.0\n", "train.learning_rate", "must be > 0.0, got 0.0"),
        ("[train]\nlearning_rate = 3.0\n", "train.learning_rate", "must be <= 1.0, got 3.0"),
        ("[train]\nwarmup_ratio = 1.0\n", "train.warmup_ratio", "must be < 1.0, got 1.0"),
        ("[model]\nmax_length = 4\n", "model.max_length", "must be >= 8, got 4"),
        ("[model]\nmax_length = 100000\n", "model.max_length", "must be <= 8192, got 100000"),
        ("[data.limit]\ntrain = 0\n", "data.limit.train", "must be >= 1, got 0"),
        ("[train]\nseed = -1\n", "train.seed", "must be >= 0, got -1"),
        ("[pretrain]\nmlm_probability = 1.0\n", "pretrain.mlm_probability", "must be < 1.0, got 1.0"),
        ("[pretrain]\nmlm_probability = 0\n", "pretrain.mlm_probability", "must be > 0.0, got 0.0"),
        ("[pretrain]\nheldout_fraction = 0.6\n", "pretrain.heldout_fraction", "must be <= 0.5, got 0.6"),
        ("[pretrain]\nmax_steps = 0\n", "pretrain.max_steps", "must be >= 1, got 0"),
        ("[pretrain]\nepochs = 0\n", "pretrain.epochs", "must be >= 1, got 0"),
    ],
)
def test_recipe_out_of_range_value_names_the_bound(tmp_path, body, key, expected):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, MINIMAL + body))
    assert expected in problems_of(excinfo)[key]


def test_recipe_validation_fraction_must_be_a_share(tmp_path):
    for bad in ("0.0", "1.0", "1.5"):
        with pytest.raises(RecipeError) as excinfo:
            load_recipe(write_recipe(tmp_path, MINIMAL + f"validation_fraction = {bad}\n"))
        assert "data.validation_fraction" in problems_of(excinfo)


def test_recipe_bad_choice_suggests_the_close_one(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, MINIMAL + '[train]\nscheduler = "cosin"\nmixed_precision = "fp32"\n'))
    found = problems_of(excinfo)
    assert "must be one of 'linear', 'cosine', 'constant', got 'cosin'" in found["train.scheduler"]
    assert "did you mean 'cosine'?" in found["train.scheduler"]
    assert "'no', 'fp16', 'bf16'" in found["train.mixed_precision"]


def test_recipe_bad_list_choice_names_the_unknown_entries(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, MINIMAL + '[eval]\nmetrics = ["accuracy", "f1", "auc"]\n[train]\nlog_with = ["tensorbord"]\n'))
    found = problems_of(excinfo)
    assert "unknown 'f1', 'auc'" in found["eval.metrics"]
    assert "did you mean 'tensorboard'?" in found["train.log_with"]


def test_recipe_metric_for_best_must_be_a_known_metric(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, MINIMAL + '[train]\nmetric_for_best = "f1macro"\n'))
    assert "did you mean 'f1_macro'?" in problems_of(excinfo)["train.metric_for_best"]


def test_recipe_non_table_section_is_a_problem(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, 'model = "bert-base-uncased"\n' + MINIMAL + "limit = 200\n"))
    found = problems_of(excinfo)
    assert "must be a table ([model]), got str 'bert-base-uncased'" in found["model"]
    assert "must be a table ([data.limit]), got int 200" in found["data.limit"]


def test_recipe_reports_every_problem_in_one_error(tmp_path):
    body = (
        '[model]\nmax_length = 2\nnme = "x"\n'
        '[data]\ntrain = "missing.csv"\nlabels = ["only"]\n'
        '[train]\nepochs = "three"\nscheduler = "cosin"\n'
        '[eval.thresholds]\naccurcy = 0.9\nf1_macro = 1.5\n'
        "[extra]\n"
    )
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, body, data=False))
    found = problems_of(excinfo)
    assert set(found) == {
        "model.max_length",
        "model.nme",
        "data.train",
        "data.labels",
        "train.epochs",
        "train.scheduler",
        "eval.thresholds.accurcy",
        "eval.thresholds.f1_macro",
        "extra",
    }
    message = str(excinfo.value)
    assert message.startswith(f"{tmp_path / 'r.toml'} is not a valid recipe (9 problems):")
    assert "file not found" in found["data.train"] and "needs at least 2 entries" in found["data.labels"]
    assert "did you mean 'accuracy'?" in found["eval.thresholds.accurcy"]
    assert "outside the metric's range" in found["eval.thresholds.f1_macro"]
    for key in found:
        assert key in message


def test_recipe_rejected_key_is_not_reported_twice(tmp_path):
    # data.train = 5 is a type error; "no training data" would only repeat it
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, "[data]\ntrain = 5\ntext = 3\nlabel = \"text\"\n"))
    assert [p.key for p in excinfo.value.problems] == ["data.train", "data.text"]


def test_recipe_cross_key_rules(tmp_path):
    body = (
        '[data]\ntrain = "train.csv"\nvalidation = "train.csv"\nvalidation_fraction = 0.1\n'
        'text = "a"\ntext_pair = "a"\nlabel = "a"\nlabels = ["x", "y", "x"]\nsubset = "mrpc"\n'
    )
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, body))
    found = problems_of(excinfo)
    assert "data.validation is set too" in found["data.validation_fraction"]
    assert "same column as data.text" in found["data.text_pair"]
    assert "also a text column" in found["data.label"]
    assert "repeated names ['x']" in found["data.labels"]
    assert "data.dataset is not" in found["data.subset"]


def test_recipe_early_stopping_needs_validation(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, MINIMAL + "[train]\nearly_stopping_patience = 2\n"))
    assert "no validation data" in problems_of(excinfo)["train.early_stopping_patience"]
    recipe = load_recipe(write_recipe(tmp_path, MINIMAL + "validation_fraction = 0.2\n[train]\nearly_stopping_patience = 2\n"))
    assert recipe.train.early_stopping_patience == 2


def test_recipe_eval_split_validation_needs_validation(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, MINIMAL + '[eval]\nsplit = "validation"\n'))
    assert "no validation data" in problems_of(excinfo)["eval.split"]
    assert load_recipe(write_recipe(tmp_path, MINIMAL + 'validation = "train.csv"\n[eval]\nsplit = "validation"\n')).eval.split == "validation"


def test_recipe_threshold_ranges_follow_the_metric(tmp_path):
    ok = load_recipe(write_recipe(tmp_path, MINIMAL + "[eval.thresholds]\nmcc = -0.2\nlog_loss = 2.5\naccuracy = 1\n"))
    assert ok.eval.thresholds == {"mcc": -0.2, "log_loss": 2.5, "accuracy": 1.0}
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, MINIMAL + "[eval.thresholds]\nmcc = -1.5\nlog_loss = -1\nece = 2\n"))
    found = problems_of(excinfo)
    assert "between -1 and 1" in found["eval.thresholds.mcc"]
    assert ">= 0" in found["eval.thresholds.log_loss"]
    assert "between 0 and 1" in found["eval.thresholds.ece"]


def test_recipe_empty_strings_are_problems(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, MINIMAL + 'text = " "\nlabels = ["a", ""]\n[model]\nname = ""\n[output]\ndir = ""\n[eval]\nmetrics = []\n'))
    found = problems_of(excinfo)
    assert set(found) == {"data.text", "data.labels", "model.name", "output.dir", "eval.metrics"}
    assert "is empty" in found["model.name"] and "empty entry" in found["data.labels"]


def test_recipe_missing_training_data(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, "[train]\nepochs = 1\n"))
    assert "no training data" in problems_of(excinfo)["data.train"]


def test_recipe_data_file_problems(tmp_path):
    (tmp_path / "folder.csv").mkdir()
    body = '[data]\ntrain = "train.xlsx"\nvalidation = "nope.csv"\ntest = "folder.csv"\n'
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, body))
    found = problems_of(excinfo)
    assert "unsupported file type '.xlsx'" in found["data.train"]
    assert "file not found" in found["data.validation"] and "recipe's folder" in found["data.validation"]
    assert "is a directory" in found["data.test"]


def test_recipe_pretrain_data_is_checked_and_resolves_against_the_recipe_folder(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    path = write_recipe(folder, MINIMAL + '[pretrain]\ndata = "news.txt"\ntext = "body"\nnsp = true\n')
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    assert "file not found" in problems_of(excinfo)["pretrain.data"]
    (folder / "news.txt").write_text("one text\n", encoding="utf-8")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(os.path.relpath(path, elsewhere))
    assert recipe.data_path("pretrain").resolve() == (folder / "news.txt").resolve()
    saved = recipe.to_dict()["pretrain"]
    assert saved == {**saved, "data": str((folder / "news.txt").resolve()), "text": "body", "nsp": True}
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path, ['pretrain.data="news.xlsx"', "pretrain.nps=true"])
    found = problems_of(excinfo)
    assert "unsupported file type '.xlsx'" in found["pretrain.data"] and "did you mean 'nsp'" in found["pretrain.nps"]


def test_recipe_hub_dataset_is_only_schema_checked(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, '[data]\ndataset = "fancyzhx/ag_news"\ntest = "test"\n', data=False))
    assert recipe.uses_hub_dataset
    assert recipe.data.train == "train"  # the default split name
    assert recipe.data_path("train") is None
    assert recipe.to_dict()["data"]["train"] == "train"


def test_recipe_error_is_a_bertctl_error_with_exit_code_2(tmp_path):
    with pytest.raises(BertctlError) as excinfo:
        load_recipe(write_recipe(tmp_path, "[train]\nepochs = 0\n"))
    assert excinfo.value.exit_code == 2


# ---------------------------------------------------------------------------------------------
# overrides


def test_recipe_override_sets_values_with_toml_types():
    recipe = load_recipe(AGNEWS_RECIPE, ["train.epochs=1", "data.limit.train=200", "train.learning_rate=2e-5", "train.group_by_length=false"])
    assert recipe.train.epochs == 1
    assert recipe.data.limit.train == 200
    assert recipe.train.learning_rate == 2e-5
    assert recipe.train.group_by_length is False


def test_recipe_override_bare_word_is_a_string():
    recipe = load_recipe(AGNEWS_RECIPE, ["model.name=bert-base-uncased", "eval.split=test", "data.labels=[\"a\",\"b\",\"c\",\"d\"]"])
    assert recipe.model.name == "bert-base-uncased"
    assert recipe.eval.split == "test"
    assert recipe.data.labels == ["a", "b", "c", "d"]


def test_recipe_override_type_error_says_it_came_from_the_command_line():
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(AGNEWS_RECIPE, ["train.learning_rate=abc"])
    found = problems_of(excinfo)
    assert "must be a number, got str 'abc'" in found["train.learning_rate"]
    assert "(from the command line: train.learning_rate=abc)" in found["train.learning_rate"]


def test_recipe_override_unknown_key_suggests_the_close_one():
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(AGNEWS_RECIPE, ["train.epoch=1"])
    found = problems_of(excinfo)
    assert "unknown key" in found["train.epoch"] and "did you mean 'epochs'?" in found["train.epoch"]


def test_recipe_override_list_without_quotes_gets_a_toml_hint():
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(AGNEWS_RECIPE, ["data.labels=[a,b]"])
    assert "quote strings inside lists" in problems_of(excinfo)["data.labels"]
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(AGNEWS_RECIPE, ["data.labels="])
    assert "quote strings" not in problems_of(excinfo)["data.labels"]


@pytest.mark.parametrize("text, message", [("=1", "bad key ''"), ("train.epochs", "is not an override"), ("train..epochs=1", "bad key"), (" =x", "bad key")])
def test_recipe_override_malformed(text, message):
    with pytest.raises(RecipeError) as excinfo:
        parse_override(text)
    assert message in str(excinfo.value)
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(AGNEWS_RECIPE, [text])
    assert message in str(excinfo.value)


def test_recipe_override_problems_come_with_schema_problems(tmp_path):
    path = write_recipe(tmp_path, MINIMAL + "[train]\nepochs = 0\n")
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path, ["train.epochs", "=1", "model.max_length=2"])
    assert set(problems_of(excinfo)) == {"train.epochs", "=1", "model.max_length"}
    assert len(excinfo.value.problems) == 4  # train.epochs twice: the malformed override and the file's 0


def test_recipe_override_cannot_descend_into_a_value():
    with pytest.raises(RecipeError) as excinfo:
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1", "train.epochs=2"])
    assert "'train.epochs' is a value, not a table" in str(excinfo.value)


def test_recipe_parse_override_values():
    assert parse_override("train.epochs=1") == (["train", "epochs"], 1)
    assert parse_override(" train.learning_rate = 2e-5") == (["train", "learning_rate"], 2e-5)
    assert parse_override('model.name="a=b"') == (["model", "name"], "a=b")
    assert parse_override("model.name=a=b") == (["model", "name"], "a=b")
    assert parse_override("output.dir=") == (["output", "dir"], "")
    # a newline must not smuggle in more keys
    assert parse_override("train.epochs=1\nseed = 3") == (["train", "epochs"], "1\nseed = 3")


def test_recipe_override_does_not_change_the_file():
    before = AGNEWS_RECIPE.read_bytes()
    load_recipe(AGNEWS_RECIPE, ["train.epochs=1"])
    assert AGNEWS_RECIPE.read_bytes() == before
    assert load_recipe(AGNEWS_RECIPE).train.epochs == 2


# ---------------------------------------------------------------------------------------------
# paths, round trip


def test_recipe_relative_data_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    path = write_recipe(folder, MINIMAL)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(os.path.relpath(path, elsewhere))
    assert recipe.data_path("train").resolve() == (folder / "train.csv").resolve()
    assert recipe.to_dict()["data"]["train"] == str((folder / "train.csv").resolve())


def test_recipe_absolute_and_home_paths(tmp_path, monkeypatch):
    write_recipe(tmp_path / "data", "", data=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    recipe = load_recipe(write_recipe(tmp_path / "r", '[data]\ntrain = "~/data/train.csv"\n', data=False))
    assert recipe.data_path("train") == tmp_path / "data" / "train.csv"
    absolute = load_recipe(write_recipe(tmp_path / "r2", f'[data]\ntrain = "{tmp_path / "data" / "train.csv"}"\n', data=False))
    assert absolute.data_path("train") == tmp_path / "data" / "train.csv"


def test_recipe_unknown_home_user_is_file_not_found(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, '[data]\ntrain = "~no-such-user-bertctl/x.csv"\n', data=False))
    assert "file not found" in problems_of(excinfo)["data.train"]


def test_recipe_to_toml_round_trips_from_another_folder(tmp_path):
    path = write_recipe(
        tmp_path / "src",
        MINIMAL
        + 'validation = "train.csv"\nlabels = ["x", "y"]\ndrop_empty = true\n[data.limit]\ntrain = 5\n'
        + '[train]\nepochs = 1\nlearning_rate = 3e-5\nlog_with = ["tensorboard"]\n'
        + '[eval]\nmetrics = ["accuracy", "mcc"]\n[eval.thresholds]\naccuracy = 0.5\n',
    )
    recipe = load_recipe(path, ["train.seed=7"])
    saved = tmp_path / "run" / "recipe.toml"
    saved.parent.mkdir()
    saved.write_text(recipe.to_toml(), encoding="utf-8")
    again = load_recipe(saved)
    assert again.to_dict() == recipe.to_dict()
    assert again.train.seed == 7 and again.data.limit.train == 5 and again.eval.thresholds == {"accuracy": 0.5}
    assert again.data_path("train") == (tmp_path / "src" / "train.csv").resolve()
    # the saved copy keeps the original run dir, not one named after recipe.toml
    assert again.run_dir == recipe.run_dir == Path("runs/r")
    assert saved.read_text().startswith(f"# resolved from {path}")


def test_recipe_to_toml_makes_a_relative_model_dir_absolute(tmp_path):
    # only the directory matters to the recipe; loading the model is modeling's job
    (tmp_path / "src" / "tiny").mkdir(parents=True)
    (tmp_path / "src" / "tiny" / "config.json").write_text("{}")
    recipe = load_recipe(write_recipe(tmp_path / "src", '[model]\nname = "tiny"\n' + MINIMAL))
    assert recipe.to_dict()["model"]["name"] == str((tmp_path / "src" / "tiny").resolve())
    hub = load_recipe(write_recipe(tmp_path / "hub", '[model]\nname = "bert-base-uncased"\n' + MINIMAL))
    assert hub.to_dict()["model"]["name"] == "bert-base-uncased"


def test_recipe_to_dict_is_valid_toml_without_none(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, MINIMAL))
    parsed = tomllib.loads(recipe.to_toml())
    assert "validation" not in parsed["data"] and "text_pair" not in parsed["data"]
    assert recipe_from_dict(parsed, base_dir=tmp_path).to_dict() == recipe.to_dict()


# ---------------------------------------------------------------------------------------------
# the file itself


def test_recipe_malformed_toml_names_the_line(tmp_path):
    path = write_recipe(tmp_path, '[train]\nepochs = 1\nlearning_rate = \n')
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    assert "at line 3" in str(excinfo.value)
    assert "'learning_rate ='" in str(excinfo.value)
    assert "fix the TOML syntax" in str(excinfo.value)


def test_recipe_data_file_passed_as_recipe_gets_a_hint():
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(REPO / "recipes" / "data" / "agnews" / "dev.csv")
    assert "looks like a data file" in str(excinfo.value)


def test_recipe_non_utf8_names_byte_and_line(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes('[data]\ntrain = "train.csv"\n# caf\xe9\n'.encode("latin-1"))
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    assert "not UTF-8 text (byte 0xe9 on line 3)" in str(excinfo.value)


def test_recipe_utf8_bom_is_accepted(tmp_path):
    path = write_recipe(tmp_path, MINIMAL)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_recipe(path).data.train == "train.csv"


def test_recipe_path_missing_or_directory(tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(tmp_path / "nope.toml")
    assert "not found" in str(excinfo.value) and str(tmp_path / "nope.toml") in str(excinfo.value)
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(tmp_path)
    assert "is a directory" in str(excinfo.value)


def test_recipe_unreadable_file(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    path = write_recipe(tmp_path, MINIMAL)
    real_read_bytes = Path.read_bytes

    # CI runs as root, which reads any file whatever its mode: fail the read itself, as chmod 0 would
    def denied(self):
        if self == path:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    assert "cannot be read" in str(excinfo.value) and "Permission denied" in str(excinfo.value)


# ---------------------------------------------------------------------------------------------
# schema description


def test_recipe_describe_schema_covers_every_field_with_its_checks():
    rows = {key: (tp, default, help) for key, tp, default, help in describe_schema()}
    assert rows["train.learning_rate"][0] == "number"
    assert "[> 0, <= 1]" in rows["train.learning_rate"][2]
    assert "one of: linear, cosine, constant" in rows["train.scheduler"][2]
    assert rows["data.limit.train"][1] == "(unset)"  # as the README spells it, not Python's None
    assert set(METRICS) <= set(rows["train.metric_for_best"][2].replace(",", " ").replace("]", " ").split())
    # every described key is one a recipe accepts, with its default as the value
    keys_with_defaults = [f"{key}={default}" for key, (_, default, _) in rows.items() if default != "(unset)"]
    recipe = load_recipe(AGNEWS_RECIPE, keys_with_defaults)
    assert recipe.train.epochs == 3 and recipe.eval.split == "test"  # the defaults, not the file's values


def test_recipe_import_leaves_pydantic_for_validation():
    # `bertctl predict` and `--help` import bertctl.recipe for its tables; pydantic costs them ~100-200 ms
    code = "import sys, bertctl.recipe; print('pydantic' in sys.modules); bertctl.recipe.Recipe; print('pydantic' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "True"], done.stderr


# ---------------------------------------------------------------------------------------------
# the same declaration for editors (JSON Schema) and for the README


def test_recipe_json_schema_is_valid_and_accepts_every_shipped_recipe():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    recipes = sorted((REPO / "recipes").glob("*.toml"))
    assert len(recipes) >= 5
    for path in recipes:
        jsonschema.validate(tomllib.loads(path.read_text(encoding="utf-8")), schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize(
    "body",
    [
        "[train]\nepochs = \"3\"\n",
        "[train]\nepochs = 2.5\n",
        "[train]\nlearning_rte = 1e-4\n",
        "[trian]\nepochs = 1\n",
        "[train]\nscheduler = \"cosin\"\n",
        "[model]\nmax_length = 4\n",
        "[output]\ndir = \" \"\n",
        "[eval]\nmetrics = [\"accuracy\", \"auc\"]\n",
        "[train]\nclass_weights = \"balance\"\n",
        "[sweep.space]\n\"train.epochs\" = { low = 1 }\n",
    ],
)
def test_recipe_json_schema_refuses_what_the_loader_refuses(tmp_path, body):
    jsonschema = pytest.importorskip("jsonschema")
    with pytest.raises(RecipeError):
        load_recipe(write_recipe(tmp_path, MINIMAL + body))
    errors = list(jsonschema.Draft202012Validator(json_schema()).iter_errors(tomllib.loads(MINIMAL + body)))
    assert errors, f"an editor would accept {body!r}"


def test_recipe_json_schema_file_is_the_schema():
    from typer.testing import CliRunner

    from bertctl.cli import app

    shipped = REPO / "recipes" / "recipe.schema.json"
    printed = CliRunner().invoke(app, ["schema", "--json"])
    assert printed.exit_code == 0 and json.loads(printed.stdout) == json_schema()
    assert json.loads(shipped.read_text(encoding="utf-8")) == json_schema(), "regenerate it: bertctl schema --json > recipes/recipe.schema.json"


def test_recipe_taplo_checks_recipes_against_the_schema(tmp_path):
    # what Even Better TOML runs in the editor: .taplo.toml points recipes/*.toml at recipes/recipe.schema.json
    taplo = shutil.which("taplo") or pytest.skip("taplo not installed (pip install taplo, in the dev extra)")
    good = subprocess.run([taplo, "check", "recipes/agnews.toml"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    bad = write_recipe(tmp_path, MINIMAL + "[train]\nepochs = \"three\"\nlearning_rte = 1e-4\n", data=False)
    schema = f"file://{REPO / 'recipes' / 'recipe.schema.json'}"
    done = subprocess.run([taplo, "check", "--schema", schema, str(bad)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert '"three" is not of type "integer"' in done.stderr and "'learning_rte' was unexpected" in done.stderr


def test_recipe_readme_key_table_is_the_schema():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Every key", 1)[1].split("\n#", 1)[0]
    table = "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))
    assert table == readme_table(), f"replace the table under '### Every key' in README.md with:\n\n{readme_table()}"


@pytest.mark.parametrize(
    "override, suggestion",
    [("train.lr=3e-5", "learning_rate"), ("train.epoch=2", "epochs"), ("train.warmup=0.1", "warmup_ratio"), ("data.lables=[]", "labels")],
)
def test_recipe_override_typo_suggests_the_key(tmp_path, override, suggestion):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(write_recipe(tmp_path, "[data]\ntrain = \"train.csv\"\n"), [override])
    message = str(excinfo.value)
    assert f"did you mean {suggestion!r}?" in message and "known keys here" not in message


def test_recipe_override_tilde_unsets_a_key_so_it_takes_its_default():
    # the shipped recipe holds dev out as its test split; `~key` gives back the old setup (select on dev)
    recipe = load_recipe(AGNEWS_RECIPE, ["data.validation=data/agnews/dev.csv", "~data.validation_fraction", "~data.test"])
    assert (recipe.data.validation.endswith("dev.csv"), recipe.data.validation_fraction, recipe.data.test) == (True, None, None)
    assert "validation_fraction" not in recipe.to_toml() and "~data.test" in recipe.overrides
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(AGNEWS_RECIPE, ["~data.tset", "~", "~train.epochs=1"])
    found = problems_of(excinfo)
    assert "nothing to unset" in found["~data.tset"] and "bad key ''" in found["~"]
    assert "did you mean 'train'" in found["~train"]  # `~key=value` is no unset: the key '~train' is unknown
