"""The foundation commands through the real CLI: validate, schema, tokenize; exit codes; a light --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertctl.cli import app
from bertctl.recipe import describe_schema
from tests.conftest import AGNEWS_LABELS, write_csv

REPO = Path(__file__).resolve().parents[1]
AGNEWS_RECIPE = str(REPO / "recipes" / "agnews.toml")
SMALL = ["data.limit.train=40", "data.limit.validation=12", "data.limit.test=8"]


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def test_cli_foundation_validate_good_recipe():
    result = invoke("validate", AGNEWS_RECIPE)
    assert result.exit_code == 0, result.output
    assert "valid schema and data (train 3600, validation 400, test 1000; labels: World, Sports, Business, Sci/Tech)" in result.stdout


def test_cli_foundation_validate_applies_overrides():
    result = invoke("validate", AGNEWS_RECIPE, "data.limit.train=100")
    assert result.exit_code == 0 and "train 100," in result.stdout


def test_cli_foundation_validate_bad_recipe_prints_every_problem(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(
        '[model]\nmax_length = 2\n[data]\ntrain = "nope.csv"\n[train]\nlearning_rte = 1e-4\nscheduler = "cosin"\n[eval.thresholds]\naccuracy = 2\n',
        encoding="utf-8",
    )
    result = invoke("validate", str(recipe), "train.epochs=zero")
    assert result.exit_code == 2
    assert result.stdout == ""
    err = result.stderr
    assert err.startswith(f"error: {recipe} is not a valid recipe (6 problems):")
    for expected in (
        "model.max_length",
        "must be >= 8, got 2",
        "data.train",
        "file not found",
        "train.learning_rte",
        "did you mean 'learning_rate'?",
        "did you mean 'cosine'?",
        "eval.thresholds.accuracy",
        "train.epochs",
        "(from the command line: train.epochs=zero)",
    ):
        assert expected in err, expected


def test_cli_foundation_validate_data_problems_exit_2(tmp_path):
    write_csv(tmp_path / "t.csv", [{"text": "a", "label": "x"}, {"text": "", "label": "y"}, {"text": "c", "label": "y"}])
    (tmp_path / "r.toml").write_text('[data]\ntrain = "t.csv"\ntext = "txt"\n', encoding="utf-8")
    result = invoke("validate", str(tmp_path / "r.toml"))
    assert result.exit_code == 2 and "did you mean 'text'?" in result.stderr
    result = invoke("validate", str(tmp_path / "r.toml"), "data.text=text")
    assert result.exit_code == 2 and "1 row with an empty or NaN text" in result.stderr and "line 3" in result.stderr
    result = invoke("validate", "--no-data", str(tmp_path / "r.toml"))
    assert result.exit_code == 0 and "valid schema" in result.stdout


def test_cli_foundation_validate_file_errors(tmp_path):
    assert invoke("validate", str(tmp_path / "missing.toml")).exit_code == 2
    assert invoke("validate", str(tmp_path)).exit_code == 2
    (tmp_path / "broken.toml").write_text("[train\n", encoding="utf-8")
    result = invoke("validate", str(tmp_path / "broken.toml"))
    assert result.exit_code == 2 and "(toml)" in result.stderr


def test_cli_foundation_validate_hub_recipe_offline(tmp_path):
    (tmp_path / "hub.toml").write_text('[data]\ndataset = "fancyzhx/ag_news"\ntest = "test"\nvalidation_fraction = 0.05\n', encoding="utf-8")
    result = invoke("validate", str(tmp_path / "hub.toml"))
    assert result.exit_code == 0, result.output
    assert "hub dataset fancyzhx/ag_news" in result.stdout


def test_cli_foundation_schema_lists_every_key():
    result = invoke("schema")
    assert result.exit_code == 0
    for key, *_ in describe_schema():
        assert key in result.stdout


@pytest.mark.slow
def test_cli_foundation_tokenize_recipe_table():
    result = invoke("tokenize", AGNEWS_RECIPE, *SMALL)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "max_length 128" in out and "tokens p50" in out
    lines = out.splitlines()
    train_row = next(line for line in lines if line.split()[:1] == ["train"])
    assert train_row.split()[1] == "40"
    validation_row = next(line for line in lines if line.split()[:1] == ["validation"])
    assert validation_row.split()[1] == "12"
    for label in AGNEWS_LABELS:
        assert any(line.split()[:1] == [label] for line in lines), label


@pytest.mark.slow
def test_cli_foundation_tokenize_json():
    result = invoke("tokenize", "--json", AGNEWS_RECIPE, *SMALL)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["labels"] == AGNEWS_LABELS
    assert [s["name"] for s in report["splits"]] == ["train", "validation", "test"]
    assert [s["examples"] for s in report["splits"]] == [40, 12, 8]
    assert sum(report["splits"][0]["label_counts"].values()) == 40
    assert report["from_cache"] is False
    again = json.loads(invoke("tokenize", "--json", AGNEWS_RECIPE, *SMALL).stdout)
    assert again["from_cache"] is True and again["splits"] == report["splits"]


def test_cli_foundation_tokenize_model_text_pair(bundled_tokenizer_dir):
    result = invoke("tokenize", "--model", str(bundled_tokenizer_dir), "tokenization", "second text")
    assert result.exit_code == 0, result.output
    assert "[CLS] token ##ization [SEP] second text [SEP]" in result.stdout
    rows = json.loads(invoke("tokenize", "--json", "--model", str(bundled_tokenizer_dir), "tokenization", "second text").stdout)
    assert [r["token"] for r in rows] == ["[CLS]", "token", "##ization", "[SEP]", "second", "text", "[SEP]"]
    assert [r["segment"] for r in rows] == [0, 0, 0, 0, 1, 1, 1]
    assert all(r["attention"] == 1 for r in rows)


def test_cli_foundation_tokenize_usage_errors(bundled_tokenizer_dir, tmp_path):
    assert invoke("tokenize").exit_code == 2
    result = invoke("tokenize", "--model", str(bundled_tokenizer_dir), "a", "b", "c")
    assert result.exit_code == 2 and "one text, or two" in result.stderr
    result = invoke("tokenize", "--model", str(tmp_path / "no-such-model"), "text")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


@pytest.mark.slow
def test_cli_foundation_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from bertctl.cli import app\n"
        "import typer.main\n"
        "for args in (['--help'], *([name, '--help'] for name in typer.main.get_command(app).commands)):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        "heavy = ('torch', 'transformers', 'datasets', 'pandas', 'numpy', 'fastapi', 'uvicorn', 'onnxruntime', 'optuna', 'cleanlab', 'accelerate')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_cli_foundation_python_m_bertctl_help():
    done = subprocess.run([sys.executable, "-m", "bertctl", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and "validate" in done.stdout and "tokenize" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_cli_foundation_python_m_bertctl_validate_exit_codes(tmp_path):
    (tmp_path / "bad.toml").write_text("[train]\nepochs = 0\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bertctl", "validate", str(tmp_path / "bad.toml")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2
    assert "must be >= 1, got 0" in done.stderr and "Traceback" not in done.stderr


def test_cli_foundation_version():
    from importlib.metadata import version

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"bertctl {version('bertctl')}"


def test_cli_foundation_schema_on_a_pipe_is_one_key_per_line_with_unset():
    result = invoke("schema")  # CliRunner's stdout is not a terminal, like a pipe
    lines = result.stdout.splitlines()
    assert [line.split("\t") for line in lines] == [list(row) for row in describe_schema()]
    assert "data.dataset\tstring\t(unset)\t" in result.stdout and "None" not in result.stdout


def test_cli_foundation_readme_key_table_is_the_schema():
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Every key", 1)[1].split("\n#", 1)[0]
    rows = [re.match(r"\| `([^`]+)` \| (.*?) \| `?(.*?)`? \| (.*) \|$", line) for line in table.splitlines() if line.startswith("| `")]
    assert [m.groups() for m in rows] == list(describe_schema()), "regenerate the README table from describe_schema()"


@pytest.mark.slow
def test_cli_foundation_help_on_a_pipe_is_not_cut_at_80_columns():
    done = subprocess.run([sys.executable, "-m", "bertctl", "predict", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    import re

    assert "…" not in done.stdout  # rich cuts a word that doesn't fit its column
    flat = " ".join(re.sub("[│╭╮╰╯─]", " ", done.stdout).split())
    assert "texts from a file: .txt one per line, or csv/tsv/jsonl/parquet with --text COL" in flat
    flags = [line for line in done.stdout.splitlines() if any(f in line for f in ("--json", "--trust-pickle", "--fast-path"))]
    assert flags and not any("<bool>" in line for line in flags)
    split_help = subprocess.run([sys.executable, "-m", "bertctl", "eval", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120).stdout
    assert "train, validation or test" in split_help


# ---------------------------------------------------------------------------------------------
# the plain functions under validate and tokenize --model


def test_cli_foundation_validate_recipe_returns_the_line_validate_prints():
    from bertctl.data import validate_recipe

    line = validate_recipe(AGNEWS_RECIPE, ["data.limit.train=100"])
    assert line == f"{AGNEWS_RECIPE}: valid schema and data (train 100, validation 400, test 1000; labels: World, Sports, Business, Sci/Tech)"
    assert invoke("validate", AGNEWS_RECIPE, "data.limit.train=100").stdout.strip() == line


def test_cli_foundation_validate_recipe_names_the_problem_type_and_reads_data_only_when_asked(tmp_path):
    from bertctl.data import validate_recipe
    from bertctl.errors import BertctlError

    write_csv(tmp_path / "t.csv", [{"text": "a", "score": 0.5}, {"text": "b", "score": 2.0}, {"text": "c", "score": 1.0}])
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nproblem_type = "regression"\n[data]\ntrain = "t.csv"\nlabel = "score"\n', encoding="utf-8")
    assert validate_recipe(recipe).endswith("valid schema and data (train 3; regression of 'score')")
    write_csv(tmp_path / "t.csv", [{"text": "a", "score": 0.5}, {"text": "", "score": 2.0}])
    with pytest.raises(BertctlError, match="empty or NaN text"):
        validate_recipe(recipe)
    assert validate_recipe(recipe, data=False) == f"{recipe}: valid schema"  # the file is not read


def test_cli_foundation_explain_texts_checks_arguments_before_loading_the_tokenizer(bundled_tokenizer_dir, tmp_path):
    from bertctl.errors import BertctlError
    from bertctl.tokenization import explain_texts

    for texts in ([], ["a", "b", "c"]):  # a model that doesn't exist: the count is checked first
        with pytest.raises(BertctlError, match="one text, or two"):
            explain_texts(str(tmp_path / "no-such-model"), texts)
    rows = explain_texts(str(bundled_tokenizer_dir), ["tokenization is fun"], max_length=4)
    assert [r.token for r in rows] == ["[CLS]", "token", "##ization", "[SEP]"]
    with pytest.raises(BertctlError, match=r"--max-length 3 leaves no room for the texts: \[CLS\] and \[SEP\] take 3 tokens") as short:
        explain_texts(str(bundled_tokenizer_dir), ["a", "b"], max_length=3)
    assert "use --max-length 5 or more" in str(short.value)
    assert [r.segment for r in explain_texts(str(bundled_tokenizer_dir), ["a", "b"], max_length=5)] == [0, 0, 0, 1, 1]


def test_cli_foundation_one_module_per_command_each_opening_with_its_usage():
    import importlib

    import typer.main

    commands = typer.main.get_command(app).commands
    modules = sorted(p.stem for p in (REPO / "bertctl" / "cli").glob("*.py") if not p.stem.startswith("_"))
    assert sorted(name.replace("-", "_") for name in commands) == modules
    for name in commands:
        doc = importlib.import_module(f"bertctl.cli.{name.replace('-', '_')}").__doc__ or ""
        assert f"\n    bertctl {name} " in doc, f"bertctl/cli/{name.replace('-', '_')}.py: its docstring shows no usage line"
