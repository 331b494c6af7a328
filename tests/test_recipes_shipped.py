"""Every shipped recipe validates offline and says on its first line how to run it; the pair sample is reproducible."""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertctl.cli import app
from bertctl.data import load_data
from bertctl.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.toml"))
COMMANDS = {"train", "eval", "tokenize", "validate", "pretrain", "attention", "predict"}


def test_recipes_shipped_exist():
    names = {p.name for p in RECIPES}
    assert {"agnews.toml", "agnews-bert-base.toml", "mrpc.toml", "pairs-demo.toml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipes_shipped_validate_offline(path):
    recipe = load_recipe(path)
    if recipe.uses_hub_dataset:
        assert recipe.data_path("train") is None
        assert recipe.data.labels, "hub recipes name their labels, so the class order is fixed without a download"
    else:
        data = load_data(recipe)
        assert len(data.splits["train"]) > 0
        assert set(data.splits) >= {"train", "validation"}
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipes_shipped_hold_out_a_test_split_that_picks_nothing(path):
    # scoring the split that picked the checkpoint (and tuned thresholds, a temperature) is optimistic: each shipped
    # recipe scores a test split that nothing was chosen on, and says in a comment how it was carved
    recipe = load_recipe(path)
    assert recipe.data.test is not None and recipe.eval.split == "test"
    assert recipe.data.validation is None and recipe.data.validation_fraction is not None
    assert re.search(r"^validation_fraction = .*# .*seed", path.read_text(encoding="utf-8"), re.M), "say how validation is carved"
    if recipe.uses_hub_dataset:
        return
    first, again = load_data(recipe), load_data(recipe)
    assert first.splits["validation"]["text"] == again.splits["validation"]["text"]  # the same rows every run

    def rows(split):
        columns = [first.splits[split][c] for c in ("text", "text_pair") if c in first.splits[split].column_names]
        return set(zip(*columns))

    # the official splits share a few short texts on their own (GoEmotions: "Thank you!", "I love you [NAME]!";
    # STS-B: 6 of 1,500 dev pairs, e.g. "A man is playing a guitar." twice), kept so scores compare with published ones
    assert len(rows("test") & (rows("train") | rows("validation"))) <= 0.005 * len(rows("test"))
    assert not rows("validation") & rows("train")  # the carve keeps a repeated text on one side


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipes_shipped_first_line_is_the_command_that_runs_it(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    match = re.fullmatch(rf"# bertctl (\S+)(?: .*)? recipes/{re.escape(path.name)}(?: .*)?", lines[0])
    assert match, f"{path.name}: first line should be '# bertctl <command> recipes/{path.name}', got {lines[0]!r}"
    assert match.group(1) in COMMANDS
    assert lines[1].startswith("# ") and len(lines[1]) > 20, "the second line says what the recipe is for"


def test_recipes_shipped_agnews_bert_base_is_the_classic_setup():
    recipe = load_recipe(REPO / "recipes" / "agnews-bert-base.toml")
    assert recipe.model.name == "bert-base-uncased" and recipe.model.max_length == 128
    assert (recipe.train.learning_rate, recipe.train.batch_size, recipe.train.epochs, recipe.train.warmup_ratio) == (2e-5, 32, 3, 0.1)
    assert recipe.data.dataset == "fancyzhx/ag_news"
    assert (recipe.data.train, recipe.data.validation, recipe.data.test) == ("train", None, "test")
    assert recipe.data.validation_fraction == 0.05
    assert recipe.data.labels == ["World", "Sports", "Business", "Sci/Tech"]


def test_recipes_shipped_mrpc_holds_out_glues_validation_split_as_its_test():
    recipe = load_recipe(REPO / "recipes" / "mrpc.toml")
    assert (recipe.data.dataset, recipe.data.subset) == ("nyu-mll/glue", "mrpc")
    assert (recipe.data.text, recipe.data.text_pair) == ("sentence1", "sentence2")
    assert recipe.data.labels == ["not_equivalent", "equivalent"]
    # GLUE's test labels are hidden (-1): its validation split is the held-out test, validation is carved from train
    assert (recipe.data.train, recipe.data.validation, recipe.data.test, recipe.data.validation_fraction) == ("train", None, "validation", 0.1)
    assert recipe.eval.split == "test"
    assert recipe.train.metric_for_best == "f1_macro"


def test_recipes_shipped_pairs_demo_reads_pairs():
    data = load_data(load_recipe(REPO / "recipes" / "pairs-demo.toml"))
    assert data.is_pair and data.labels == ["not_equivalent", "equivalent"]
    assert (len(data.splits["train"]), len(data.splits["validation"]), len(data.splits["test"])) == (170, 30, 60)
    for split in data.splits.values():
        assert set(split["label"]) == {0, 1}
        assert all(a != b for a, b in zip(split["text"], split["text_pair"]))


def _make_pairs_module():
    spec = importlib.util.spec_from_file_location("make_pairs", REPO / "recipes" / "data" / "pairs" / "make_pairs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipes_shipped_pairs_sample_is_reproducible(tmp_path, monkeypatch):
    module = _make_pairs_module()
    monkeypatch.setattr(module, "HERE", tmp_path)
    module.main()
    for name in ("train.csv", "dev.csv"):
        assert (tmp_path / name).read_bytes() == (REPO / "recipes" / "data" / "pairs" / name).read_bytes(), name


def test_recipes_shipped_pairs_sample_is_balanced_and_disjoint():
    def rows(name):
        with open(REPO / "recipes" / "data" / "pairs" / name, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    train, dev = rows("train.csv"), rows("dev.csv")
    assert len(train) == 200 and len(dev) == 60
    for split in (train, dev):
        labels = [r["label"] for r in split]
        assert labels.count("equivalent") == labels.count("not_equivalent")
    assert not {r["sentence1"] for r in train} & {r["sentence1"] for r in dev}
