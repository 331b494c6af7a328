"""Bad input across every command, as a table: each row is one mistake a user makes.

For every row the command must exit with the row's code (2: bad input, 0: input that only looks odd), say on
stderr which file/key/row is wrong and how to fix it, never show a traceback, and leave the folders it was
pointed at exactly as they were (same files, same sizes and mtimes; no empty run dir, no temp file).

Write failures (a read-only folder, a full disk) run on a real tmpfs when this process may mount one (CI runs
as root, which ignores permission bits, so chmod can't make a folder read-only); elsewhere the same rows run
with the writes below that folder failing the way the kernel would fail them.
"""

from __future__ import annotations

import builtins
import csv
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from bertctl.cli import app
from conftest import AGNEWS_LABELS, agnews_rows

runner = CliRunner()
ROWS = 20  # data rows in every generated file; special rows come after them (first special row = file line 22)
BIG_TEXT_CHARS = 5_000_000


# ---------------------------------------------------------------------------------------------
# model dirs shared by the rows (read only; every row snapshots them to prove it)


@pytest.fixture(scope="module")
def pickle_classifier_dir(tmp_path_factory, tiny_classifier_dir) -> Path:
    """The tiny classifier with its weights only as pytorch_model.bin (pickle)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    out = tmp_path_factory.mktemp("pickle-classifier")
    for item in tiny_classifier_dir.iterdir():
        if item.suffix != ".safetensors":
            shutil.copy(item, out / item.name)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir)
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    return out


@pytest.fixture(scope="module")
def weightless_dir(tmp_path_factory, tiny_classifier_dir) -> Path:
    """config.json and tokenizer, no weights file at all."""
    out = tmp_path_factory.mktemp("weightless")
    for item in tiny_classifier_dir.iterdir():
        if item.suffix != ".safetensors":
            shutil.copy(item, out / item.name)
    return out


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    """A tiny BertForMaskedLM (a real MLM head), for fill-mask rows that must get past loading."""
    from transformers import AutoTokenizer, BertForMaskedLM

    out = tmp_path_factory.mktemp("tiny-mlm")
    BertForMaskedLM.from_pretrained(tiny_bert_dir).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------
# the workspace a row builds its inputs in (the test's cwd, so default output paths land in it too)


class Workspace:
    def __init__(self, root: Path, models: dict[str, Path]):
        self.root = root
        self.models = models
        self.rows = agnews_rows("train", ROWS)
        # the model dirs as a command line names them
        self.tiny_bert = str(models["tiny_bert"])
        self.tiny_classifier = str(models["tiny_classifier"])
        self.pickle_classifier = str(models["pickle_classifier"])
        self.weightless = str(models["weightless"])
        self.mlm = str(models["mlm"])

    def path(self, name: str) -> str:
        return str(self.root / name)

    def write(self, name: str, content: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return str(path)

    def csv_text(self, extra_rows: list[tuple[str, str]] = (), header: str = "text,label") -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows([(r["text"], r["label"]) for r in self.rows] + list(extra_rows))
        return header + "\n" + buffer.getvalue()

    def csv(self, name: str, extra_rows: list[tuple[str, str]] = (), header: str = "text,label") -> str:
        return self.write(name, self.csv_text(extra_rows, header))

    def recipe(self, train: str, *, name: str = "r", labels: bool = True, model: str = "", data: str = "", train_keys: str = "") -> str:
        """A recipe over the tiny BERT whose run dir would be runs/<name> in the workspace; `model`, `data` and
        `train_keys`: more lines for those tables."""
        label_line = "labels = [" + ", ".join(f'"{label}"' for label in AGNEWS_LABELS) + "]\n" if labels else ""
        return self.write(
            f"{name}.toml",
            f'[model]\nname = "{self.tiny_bert}"\nmax_length = 64\n{model}'
            f'[data]\ntrain = "{train}"\n{label_line}{data}'
            f'[train]\nepochs = 1\nbatch_size = 8\n{train_keys}[output]\ndir = "{self.root / "runs" / name}"\n',
        )

    def multilabel(self, rows: str, **keys: str) -> str:
        """A multi-label recipe over `rows` (tsv lines of text and comma-joined labels) after 20 good ones."""
        good = "".join(f"{r['text']}\t{r['label']},World\n" for r in self.rows)
        path = self.write("ml.tsv", "text\tlabels\n" + good + rows)
        return self.recipe(path, name="ml", model='problem_type = "multi_label_classification"\n' + keys.pop("model", ""), data='label = "labels"\nlabel_separator = ","\n' + keys.pop("data", ""), **keys)

    def run(self) -> str:
        """A finished run dir as `bertctl train` leaves it: the tiny classifier, recipe.toml, metrics.json."""
        run = self.root / "runs" / "run"
        if not run.exists():
            shutil.copytree(self.models["tiny_classifier"], run)
            train = self.csv("run-train.csv")
            dev = self.csv("run-dev.csv")
            labels = ", ".join(f'"{label}"' for label in AGNEWS_LABELS)
            (run / "recipe.toml").write_text(
                f'[model]\nname = "{run}"\nmax_length = 64\n[data]\ntrain = "{train}"\nvalidation = "{dev}"\nlabels = [{labels}]\n'
            )
            (run / "metrics.json").write_text("{}")
        return str(run)


def weightless_run(w: Workspace) -> str:
    """The finished run without its weights: whatever names this dir's columns must not need the model loaded."""
    run = Path(w.run()).with_name("weightless-run")
    if not run.exists():
        shutil.copytree(w.run(), run)
        (run / "model.safetensors").unlink()
    return str(run)


def big_text() -> str:
    return ("Stocks fell as oil prices rose, " * (BIG_TEXT_CHARS // 32 + 1))[:BIG_TEXT_CHARS]


# ---------------------------------------------------------------------------------------------
# the table


@dataclass
class Case:
    id: str
    argv: Callable[[Workspace], list[str]]
    exit_code: int
    says: tuple[str, ...]  # on stderr: the file/key/row and what is wrong
    fix: bool = True  # a "fix:" line on stderr
    stdin: Callable[[Workspace], bytes] | None = None
    writes: tuple[str, ...] = ()  # workspace paths a positive row may create or change
    check: Callable[[Workspace, object], None] | None = None  # more about a positive row's output
    subprocess: bool = False  # real process: real stdin bytes, stderr apart from stdout
    slow: bool = False


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def loads_train_rows(n: int) -> Callable[[Workspace, object], None]:
    def check(w: Workspace, result) -> None:
        assert f"train {n};" in result.stdout, result.stdout  # `validate` reports the rows it read per split

    return check


def _attention_report_written(w: Workspace, result) -> None:
    assert (w.root / "att" / "index.html").is_file() and (w.root / "att" / "attention.json").is_file()


def _quoted_newline_predictions(w: Workspace, result) -> None:
    records = json_lines(result.stdout)
    assert len(records) == ROWS + 1
    assert records[-1]["text"] == "line one\nline two, with a comma"


def _stray_quote_predictions(w: Workspace, result) -> None:
    records = json_lines(result.stdout)
    assert len(records) == ROWS + 1  # the stray quote swallowed no rows
    assert records[-1]["text"] == '"Hi, she said'


def _bom_eval(w: Workspace, result) -> None:
    report = json.loads(result.stdout)
    assert report["data"]["examples"] == ROWS


def _pickle_loaded(w: Workspace, result) -> None:
    assert json.loads(result.stdout)["label"] in AGNEWS_LABELS


def _big_prediction(w: Workspace, result) -> None:
    assert json_lines(result.stdout)[0]["label"] in AGNEWS_LABELS


def _big_tokenize(w: Workspace, result) -> None:
    train = json.loads(result.stdout)["splits"][0]
    assert train["examples"] == ROWS + 1 and train["length_max"] > 100_000 and train["truncated_share"] > 0


def _big_train(w: Workspace, result) -> None:
    metrics = json.loads((w.root / "runs" / "big" / "metrics.json").read_text())
    assert metrics["train_examples"] == ROWS + 1


CASES = [
    # --- recipes: syntax, schema, files ------------------------------------------------------
    Case("validate-malformed-toml", lambda w: ["validate", w.write("bad.toml", '[model]\nname = "unclosed\n')], 2,
         ("bad.toml", "(toml)", "line 2", "name = \"unclosed")),
    Case("validate-unknown-key", lambda w: ["validate", w.write("k.toml", f'[model]\nnme = "x"\n[data]\ntrain = "{w.csv("t.csv")}"\n')], 2,
         ("k.toml", "model.nme", "unknown key", "did you mean 'name'?")),
    # type and range problems say the expected type/bound in the message but carry no separate fix line
    Case("validate-wrong-type", lambda w: ["validate", w.write("t.toml", f'[data]\ntrain = "{w.csv("t.csv")}"\n[train]\nepochs = "three"\n')], 2,
         ("t.toml", "train.epochs", "must be an integer", "'three'"), fix=False),
    Case("validate-out-of-range", lambda w: ["validate", w.write("o.toml", f'[data]\ntrain = "{w.csv("t.csv")}"\n[train]\nlearning_rate = 5.0\n')], 2,
         ("o.toml", "train.learning_rate", "must be <= 1.0", "5.0"), fix=False),
    Case("validate-empty-recipe", lambda w: ["validate", w.write("empty.toml", "")], 2, ("empty.toml", "data.train", "missing")),
    Case("validate-missing-recipe", lambda w: ["validate", w.path("nope.toml")], 2, ("nope.toml", "(file)", "not found")),
    Case("train-recipe-is-a-directory", lambda w: ["train", str(Path(w.write("dir.toml/x", "")).parent)], 2, ("dir.toml", "is a directory")),
    Case("validate-override-bad-type", lambda w: ["validate", w.recipe(w.csv("t.csv")), "train.epochs=many"], 2,
         ("train.epochs", "must be an integer", "from the command line: train.epochs=many"), fix=False),
    Case("train-override-list-for-integer", lambda w: ["train", w.recipe(w.csv("t.csv")), "train.batch_size=[8]"], 2,
         ("train.batch_size", "from the command line", "override values are TOML")),
    Case("tokenize-override-unknown-key", lambda w: ["tokenize", w.recipe(w.csv("t.csv")), "train.epoch=1"], 2,
         ("train.epoch", "unknown key", "did you mean 'epochs'?")),
    Case("validate-override-without-equals", lambda w: ["validate", w.recipe(w.csv("t.csv")), "train.epochs"], 2,
         ("train.epochs", "is not an override", "key=value")),
    Case("validate-data-file-missing", lambda w: ["validate", w.recipe("nope.csv")], 2, ("data.train", "file not found", "nope.csv")),
    Case("train-data-file-empty", lambda w: ["train", w.recipe(w.write("empty.csv", ""))], 2, ("empty.csv", "the file is empty")),
    Case("validate-data-path-is-a-directory", lambda w: ["validate", w.recipe(str(Path(w.write("folder.csv/x", "")).parent))], 2,
         ("data.train", "folder.csv", "is a directory")),
    # --- data files: quoting, encodings, headers, delimiters ---------------------------------
    Case("validate-csv-quoted-newline-loads", lambda w: ["validate", w.recipe(w.csv("q.csv", [("line one\nline two, with a comma", "World")]))], 0,
         (), fix=False, check=loads_train_rows(ROWS + 1)),
    Case("predict-csv-quoted-newline-loads",
         lambda w: ["predict", "--model", w.tiny_classifier, "--json", "--file", w.csv("q.csv", [("line one\nline two, with a comma", "World")])], 0,
         (), fix=False, check=_quoted_newline_predictions),
    Case("validate-tsv-stray-quotes-keep-rows",
         lambda w: ["validate", w.recipe(w.write("s.tsv", "text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in w.rows) + '"Hi, she said\tWorld\n'))], 0,
         (), fix=False, check=loads_train_rows(ROWS + 1)),
    Case("predict-tsv-stray-quotes-keep-rows",
         lambda w: ["predict", "--model", w.tiny_classifier, "--json", "--file",
                    w.write("s.tsv", "text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in w.rows) + '"Hi, she said\tWorld\n')], 0,
         (), fix=False, check=_stray_quote_predictions),
    Case("validate-utf8-bom-accepted", lambda w: ["validate", w.recipe(w.write("bom.csv", b"\xef\xbb\xbf" + w.csv_text().encode()))], 0,
         (), fix=False, check=loads_train_rows(ROWS)),
    Case("eval-utf8-bom-accepted", lambda w: ["eval", w.run(), "--json", "--data", w.write("bom.csv", b"\xef\xbb\xbf" + w.csv_text().encode())], 0,
         (), fix=False, writes=("runs/run/eval.json", "runs/run/eval_confusion_matrix.png"), check=_bom_eval),
    Case("validate-bom-decoded-twice", lambda w: ["validate", w.recipe(w.write("bom2.csv", "\u00ef\u00bb\u00bf" + w.csv_text()))], 2,
         ("bom2.csv", "ï»¿", "decoded twice")),
    Case("eval-bom-decoded-twice", lambda w: ["eval", w.run(), "--data", w.write("bom2.csv", "\u00ef\u00bb\u00bf" + w.csv_text())], 2,
         ("bom2.csv", "ï»¿", "decoded twice")),
    Case("train-latin1-bytes", lambda w: ["train", w.recipe(w.write("l.csv", w.csv_text([("caf\xe9 prices rise", "Business")]).encode("latin-1")))], 2,
         ("l.csv", "not UTF-8", "byte 0xe9 on line 22", "iconv -f latin1")),
    Case("attention-data-latin1-bytes",
         lambda w: ["attention", "--model", w.tiny_bert, "--out", w.path("att"), "--data", w.write("l.csv", w.csv_text([("caf\xe9", "World")]).encode("latin-1"))], 2,
         ("l.csv", "not UTF-8", "line 22", "iconv")),
    Case("validate-header-spaces-and-hash", lambda w: ["validate", w.recipe(w.csv("h.csv", header="  text  ,# label"))], 2,
         ("h.csv", "data.label", "column 'label' not in", "did you mean '# label'?")),
    Case("validate-tab-separated-csv", lambda w: ["validate", w.recipe(w.write("tabs.csv", "text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in w.rows)))], 2,
         ("tabs.csv", "separated by tabs", ".tsv")),
    Case("validate-semicolon-separated-csv",
         lambda w: ["validate", w.recipe(w.write("semi.csv", "text;label\n" + "".join(f"{r['text'].replace(',', ' ').replace(';', ' ')};{r['label']}\n" for r in w.rows)))], 2,
         ("semi.csv", "data.text", "commas/semicolons", "delimiter")),
    Case("tokenize-missing-column", lambda w: ["tokenize", w.recipe(w.csv("c.csv", header="text,topic"))], 2,
         ("c.csv", "data.label", "column 'label' not in", "topic")),
    Case("validate-empty-and-nan-texts",
         lambda w: ["validate", w.recipe(w.write("n.jsonl", "".join(json.dumps(r) + "\n" for r in w.rows)
                                                 + '{"text": null, "label": "World"}\n{"text": NaN, "label": "World"}\n{"text": "  ", "label": "Sports"}\n'))], 2,
         ("n.jsonl", "3 rows with an empty or NaN text", "record 21", "record 22", "record 23", "data.drop_empty")),
    Case("train-labels-outside-the-list", lambda w: ["train", w.recipe(w.csv("p.csv", [("Parliament votes", "Politics")]))], 2,
         ("p.csv", "data.label", "'Politics'", "line 22", "data.labels")),
    Case("validate-integer-labels-out-of-range",
         lambda w: ["validate", w.recipe(w.write("i.csv", "text,label\n" + "".join(f"text {i},{i % 4}\n" for i in range(ROWS)) + "seven,7\nunlabelled,-1\n"))], 2,
         ("i.csv", "integer labels outside 0..3", "7 (line 22", "-1 (line 23", "class ids")),
    Case("validate-multilabel-unknown-name", lambda w: ["validate", w.multilabel("Parliament votes\tWorld,Politics\n")], 2,
         ("ml.tsv", "data.label", "'Politics' (line 22", "data.labels")),
    Case("validate-multilabel-empty-cell", lambda w: ["validate", w.multilabel("no labels given\t\n")], 2,
         ("ml.tsv", "1 row with an empty or NaN label", "line 22", "names joined by ','")),
    Case("validate-label-list-needs-multilabel", lambda w: ["validate", w.recipe(w.csv("t.csv"), data='label = ["World", "Sports"]\n')], 2,
         ("data.label", "one per label", "multi_label_classification")),
    Case("validate-separator-needs-multilabel", lambda w: ["validate", w.recipe(w.csv("t.csv"), data='label_separator = ","\n')], 2,
         ("data.label_separator", "multi_label_classification")),
    Case("validate-indicator-column-not-0-1",
         lambda w: ["validate", w.recipe(w.write("j.csv", "text,toxic,insult\n" + "".join(f"text {i},{i % 2},0\n" for i in range(ROWS)) + "bad row,yes,0\n"), labels=False,
                                         model='problem_type = "multi_label_classification"\n', data='label = ["toxic", "insult"]\n')], 2,
         ("j.csv", "'toxic'", "other than 0 and 1", "line 22", "'yes'")),
    Case("validate-regression-bad-numbers",
         lambda w: ["validate", w.recipe(w.write("s.csv", "text,score\n" + "".join(f"text {i},{i / 4}\n" for i in range(ROWS)) + "empty,\nword,high\nnan,NaN\n"), labels=False,
                                         model='problem_type = "regression"\n', data='label = "score"\n')], 2,
         ("s.csv", "2 rows with an empty or NaN label", "line 22", "line 24", "not a finite number", "'high'", "line 23")),
    Case("validate-regression-constant-label",
         lambda w: ["train", w.recipe(w.write("c.csv", "text,score\n" + "".join(f"text {i},3\n" for i in range(ROWS))), labels=False, model='problem_type = "regression"\n', data='label = "score"\n')], 2,
         ("c.csv", "every label", "is 3", "nothing to learn")),
    Case("validate-problem-type-misspelt", lambda w: ["validate", w.recipe(w.csv("t.csv"), model='problem_type = "multilabel"\n')], 2,
         ("model.problem_type", "must be one of", "multi_label_classification")),
    Case("validate-truncation-misspelt", lambda w: ["validate", w.recipe(w.csv("t.csv"), model='truncation = "head_tail"\n')], 2,
         ("model.truncation", "must be one of", "head+tail")),
    Case("validate-truncation-on-pairs",
         lambda w: ["validate", w.recipe(w.write("p.csv", "a,b,label\n" + "".join(f"x {i},y {i},World\n" for i in range(ROWS))), model='truncation = "tail"\n', data='text = "a"\ntext_pair = "b"\n')], 2,
         ("model.truncation", "'tail'", "pairs", "truncation = 'head'")),
    Case("predict-stride-without-chunks", lambda w: ["predict", "--model", w.tiny_classifier, "--stride", "8", "text"], 2, ("--stride", "--chunks")),
    Case("eval-stride-without-chunks", lambda w: ["eval", w.run(), "--stride", "8"], 2, ("--stride", "add --chunks")),
    Case("predict-stride-fills-the-window", lambda w: ["predict", "--model", w.tiny_classifier, "--chunks", "--stride", "126", "text"], 2,
         ("--stride 126", "below 126", "--stride 32")),
    Case("predict-chunks-on-pairs", lambda w: ["predict", "--model", w.tiny_classifier, "--chunks", "--pair", "second", "first"], 2,
         ("--chunks", "sentence pairs", "drop --chunks")),
    Case("validate-class-weights-wrong-length", lambda w: ["validate", w.recipe(w.csv("t.csv"), train_keys="class_weights = [1.0, 2.0]\n")], 2,
         ("train.class_weights", "2 weights for 4 labels", "one weight per label")),
    Case("validate-class-weights-misspelt", lambda w: ["validate", w.recipe(w.csv("t.csv"), train_keys='class_weights = "balance"\n')], 2,
         ("train.class_weights", "did you mean 'balanced'")),
    Case("validate-metric-of-another-problem-type", lambda w: ["validate", w.multilabel("", train_keys='metric_for_best = "accuracy"\n')], 2,
         ("train.metric_for_best", "'accuracy' is not a multi-label metric")),
    Case("train-single-class", lambda w: ["train", w.recipe(w.write("one.csv", "text,label\n" + "".join(f"text {i},World\n" for i in range(ROWS))), labels=False)], 2,
         ("one.csv", "single class ('World')", "at least two classes")),
    Case("pretrain-bom-decoded-twice", lambda w: ["pretrain", w.recipe(w.write("bom2.csv", "\u00ef\u00bb\u00bf" + w.csv_text())), "--epochs", "1"], 2,
         ("bom2.csv", "decoded twice")),
    Case("tokenize-5mb-text", lambda w: ["tokenize", "--json", w.recipe(w.csv("big.csv", [(big_text(), "World")]), name="big")], 0,
         (), fix=False, check=_big_tokenize, slow=True),
    Case("train-5mb-text", lambda w: ["train", w.recipe(w.csv("big.csv", [(big_text(), "World")]), name="big")], 0,
         (), fix=False, writes=("runs",), check=_big_train, slow=True),
    # --- models ------------------------------------------------------------------------------
    Case("predict-model-without-weights", lambda w: ["predict", "--model", w.weightless, "text"], 2, ("weightless", "no weights", "model.safetensors")),
    Case("fill-mask-model-without-weights", lambda w: ["fill-mask", "--model", w.weightless, "a [MASK] b"], 2, ("weightless", "no weights")),
    Case("predict-pickle-only-checkpoint", lambda w: ["predict", "--model", w.pickle_classifier, "text"], 2,
         ("pickle-classifier", "pytorch_model.bin", "pickle", "--trust-pickle")),
    Case("eval-pickle-only-checkpoint", lambda w: ["eval", w.pickle_classifier, "--data", w.csv("e.csv")], 2, ("pytorch_model.bin", "--trust-pickle")),
    Case("attention-pickle-only-checkpoint", lambda w: ["attention", "--model", w.pickle_classifier, "--out", w.path("att"), "text"], 2,
         ("pytorch_model.bin", "--trust-pickle")),
    Case("predict-trust-pickle-loads", lambda w: ["predict", "--model", w.pickle_classifier, "--trust-pickle", "--json", "text"], 0,
         (), fix=False, check=_pickle_loaded),
    Case("eval-trust-pickle-loads", lambda w: ["eval", w.pickle_classifier, "--trust-pickle", "--data", w.csv("e.csv"), "--report", w.path("e.json")], 0,
         (), fix=False, writes=("e.json", "e_confusion_matrix.png")),
    Case("attention-trust-pickle-loads", lambda w: ["attention", "--model", w.pickle_classifier, "--trust-pickle", "--out", w.path("att"), "text"], 0,
         (), fix=False, writes=("att",), check=_attention_report_written),
    Case("predict-not-a-sequence-classifier", lambda w: ["predict", "--model", w.tiny_bert, "text"], 2, ("BertModel", "not a sequence classifier", "bertctl train")),
    Case("eval-not-a-sequence-classifier", lambda w: ["eval", w.tiny_bert, "--data", w.csv("e.csv")], 2, ("BertModel", "not a sequence classifier")),
    Case("fill-mask-not-a-masked-lm", lambda w: ["fill-mask", "--model", w.tiny_classifier, "a [MASK] b"], 2,
         ("no masked-language-model head", "bertctl pretrain")),
    Case("tokenize-dir-that-is-not-a-model", lambda w: ["tokenize", "--model", str(Path(w.write("notamodel/readme.md", "")).parent), "text"], 2,
         ("notamodel", "no config.json")),
    # --- run dirs and output paths -----------------------------------------------------------
    Case("eval-run-dir-without-model", lambda w: ["eval", str(Path(w.write("runs/empty/train_log.jsonl", "")).parent)], 2,
         ("runs/empty", "no trained model", "bertctl train")),
    Case("eval-unfinished-run", lambda w: ["eval", str(Path(w.write("runs/half/checkpoints/step-1/x", "")).parents[2])], 2,
         ("runs/half", "no trained model", "--resume")),
    Case("predict-run-dir-is-a-file", lambda w: ["predict", "--model", w.write("runs/afile", "x"), "text"], 2, ("afile", "is a file, not a run dir")),
    Case("train-output-dir-is-a-file", lambda w: ["train", w.recipe(w.csv("t.csv")), "--output-dir", w.write("taken", "mine")], 2,
         ("taken", "is a file", "directory")),
    Case("pretrain-output-dir-is-a-file", lambda w: ["pretrain", w.recipe(w.csv("t.csv")), "--output-dir", w.write("taken", "mine")], 2,
         ("taken", "is a file", "directory")),
    Case("predict-output-below-a-file", lambda w: ["predict", "--model", w.tiny_classifier, "--output", str(Path(w.write("afile", "x")) / "p.jsonl"), "text"], 2,
         ("afile", "is a file, not a directory")),
    Case("eval-report-below-a-file", lambda w: ["eval", w.run(), "--report", str(Path(w.write("afile", "x")) / "eval.json")], 2,
         ("afile", "is a file, not a directory")),
    Case("attention-out-is-a-file", lambda w: ["attention", "--model", w.tiny_bert, "--out", w.write("afile", "x"), "text"], 2, ("afile", "is a file")),
    Case("attention-out-below-a-file", lambda w: ["attention", "--model", w.tiny_bert, "--out", str(Path(w.write("afile", "x")) / "att"), "text"], 2,
         ("afile", "is a file, not a directory")),
    Case("pretrain-data-missing", lambda w: ["pretrain", w.recipe(w.csv("t.csv")), "--data", w.path("nope.txt")], 2, ("nope.txt", "file not found")),
    # --- bertctl sweep ---------------------------------------------------------------------------
    Case("sweep-space-bad-keys-and-ranges",
         lambda w: ["sweep", w.recipe(w.csv("t.csv")), 'sweep.space={"train.lr" = [1e-5], "train.epochs" = { low = 0, high = 2.5 }}'], 2,
         ("sweep.space.train.lr", "not a recipe key", "did you mean 'train.learning_rate'?", "sweep.space.train.epochs.high", "must be an integer")),
    Case("sweep-output-not-empty",
         lambda w: ["sweep", w.recipe(w.csv("t.csv"), data=f'validation = "{w.csv("v.csv")}"\n'), 'sweep.space={"train.epochs" = [1, 2]}',
                    "--output", str(Path(w.write("mine/notes.txt", "mine")).parent)], 2,
         ("mine", "not empty", "--resume")),
    Case("sweep-show-not-a-sweep-dir", lambda w: ["sweep", "--show", str(Path(w.write("plain/notes.txt", "mine")).parent)], 2, ("plain", "not a sweep dir")),
    # --- command options -----------------------------------------------------------------------
    Case("predict-second-text-to-a-single-text-model", lambda w: ["predict", "--model", w.run(), "The cat sat.", "--pair", "A cat."], 2,
         ("trained on single texts", "takes no second text, but --pair gave one", "drop --pair")),
    # the run's own data.text ('text') is checked against the file before the model loads: this run has no weights
    Case("predict-file-without-the-runs-text-column", lambda w: ["predict", "--model", weightless_run(w), "--file", w.write("h.csv", "headline\nStocks fell\n")], 2,
         ("'text'", "headline"), fix=False),
    Case("predict-top-k-too-large", lambda w: ["predict", "--model", w.tiny_classifier, "--top-k", "9", "text"], 2, ("--top-k 9", "4 labels", "between 1 and 4")),
    Case("fill-mask-top-k-zero", lambda w: ["fill-mask", "--model", w.mlm, "--top-k", "0", "a [MASK] b"], 2, ("--top-k", "at least 1")),
    Case("fill-mask-text-without-mask", lambda w: ["fill-mask", "--model", w.mlm, "no mask here"], 2, ("no [MASK] token", "'no mask here'")),
    Case("tokenize-negative-max-length", lambda w: ["tokenize", "--model", w.tiny_bert, "--max-length", "-3", "text"], 2,
         ("--max-length -3", "[CLS] and [SEP] take 2 tokens", "--max-length 3 or more")),
    Case("tokenize-max-length-too-small-for-a-pair", lambda w: ["tokenize", "--model", w.tiny_bert, "--max-length", "2", "first", "second"], 2,
         ("--max-length 2", "texts", "--max-length 5 or more")),
    Case("attention-layer-out-of-range", lambda w: ["attention", "--model", w.tiny_bert, "--out", w.path("att"), "--layer", "5", "text"], 2,
         ("--layer 5", "2 layers", "between 0 and 1")),
    Case("predict-non-utf8-stdin", lambda w: [sys.executable, "-m", "bertctl", "predict", "--model", w.tiny_classifier, "-"], 2,
         ("<stdin>", "not UTF-8", "line 2", "iconv -f latin1 -t utf-8 FILE | bertctl predict -"),
         stdin=lambda w: "fine\ncaf\xe9\n".encode("latin-1"), subprocess=True),
    Case("predict-5mb-text-is-truncated-with-a-note", lambda w: ["predict", "--model", w.tiny_classifier, "--json", "--file", w.write("big.txt", big_text() + "\n")], 0,
         ("note: 1 text longer than 128 tokens truncated",), fix=False, check=_big_prediction, slow=True),
    Case("eval-min-without-value", lambda w: ["eval", w.run(), "--min", "accuracy"], 2, ("--min accuracy", "METRIC=VALUE")),
    Case("eval-min-not-a-number", lambda w: ["eval", w.run(), "--min", "accuracy=high"], 2, ("--min accuracy=high", "'high' is not a number")),
    Case("eval-min-unknown-metric", lambda w: ["eval", w.run(), "--min", "accurcy=0.9"], 2, ("unknown metric 'accurcy'", "did you mean 'accuracy'?")),
    Case("eval-integer-label-outside-the-model", lambda w: ["eval", w.run(), "--data", w.csv("e.csv", [("Parliament votes", "7")])], 2,
         ("e.csv", "integer labels outside 0..3", "7 (line 22", "the model's labels", "World, Sports, Business, Sci/Tech")),
    # --- serve: everything it refuses before it listens (its HTTP error answers: tests/test_serve.py) --
    Case("serve-run-dir-missing", lambda w: ["serve", w.path("runs/nope"), "--port", "0"], 2, ("runs/nope", "does not exist")),
    Case("serve-not-a-sequence-classifier", lambda w: ["serve", w.tiny_bert, "--port", "0"], 2, ("BertModel", "not a sequence classifier")),
    Case("serve-max-texts-zero", lambda w: ["serve", w.tiny_classifier, "--max-texts", "0"], 2, ("--max-texts must be at least 1",)),
    Case("serve-negative-wait", lambda w: ["serve", w.tiny_classifier, "--max-wait-ms", "-1"], 2, ("--max-wait-ms must be 0 or more, got -1.0",)),
    Case("serve-quantize-unknown", lambda w: ["serve", w.tiny_classifier, "--port", "0", "--quantize", "int4"], 2, ("--quantize 'int4' is not supported", "int8")),
    # --- issue 28 --------------------------------------------------------------------------------------------------
    Case("validate-nan-label-is-not-a-class", lambda w: ["validate", w.recipe(w.csv("nan.csv", [("no label here", "NaN"), ("nor here", "null")]), labels=False)], 2,
         ("nan.csv", "data.label", "2 rows with an empty or NaN label", "line 22, line 23", "data.drop_empty = true")),
    Case("eval-nan-label", lambda w: ["eval", w.run(), "--data", w.csv("e.csv", [("no label here", "NaN")])], 2,
         ("e.csv", "1 row with an empty or NaN label", "line 22")),
    Case("validate-label-typo-without-close-match-gets-no-guess", lambda w: ["validate", w.recipe(w.csv("s.csv", [("so sad", "sadness"), ("big win", "Sprots")]))], 2,
         ("s.csv", "'sadness' (line 22", "did you mean 'Sports' for 'Sprots'?"), check=lambda w, o: _no_guess_for(o.stderr, "sadness")),
    # --- explain (issue 26) ------------------------------------------------------------------------------------------
    Case("explain-export-dir-has-no-gradients",
         lambda w: ["explain", _export_stand_in(w), "text"], 2,
         ("onnx", "ONNX export", "no gradients", "bertctl explain runs/agnews")),
    Case("explain-unknown-target", lambda w: ["explain", w.tiny_classifier, "--target", "Sprots", "Stocks fell"], 2,
         ("--target 'Sprots' is not a label", "World, Sports, Business, Sci/Tech", "did you mean 'Sports'?")),
    Case("explain-steps-zero", lambda w: ["explain", w.tiny_classifier, "--steps", "0", "Stocks fell"], 2, ("--steps 0", "out of range", "--steps 50")),
    Case("explain-empty-text", lambda w: ["explain", w.tiny_classifier, ""], 2, ("every input is empty", "text 1", "non-empty text")),
    # issue 23: eval --baseline and --slice-by
    Case("eval-baseline-with-other-labels", lambda w: ["eval", w.run(), "--baseline", baseline_predictions(w, labels=["World", "Sports", "Business", "Science"])], 2,
         ("has labels World, Sports, Business, Science", "the new model has World, Sports, Business, Sci/Tech", "only the baseline has Science")),
    Case("eval-baseline-on-fewer-texts", lambda w: ["eval", w.run(), "--data", w.csv("e.csv"), "--baseline", baseline_predictions(w, texts=[r["text"] for r in w.rows[:3]])], 2,
         ("predictions for 3 texts", f"this eval has {ROWS}", "different data")),
    Case("eval-baseline-on-other-texts", lambda w: ["eval", w.run(), "--data", w.csv("e.csv"),
         "--baseline", baseline_predictions(w, texts=[r["text"] for r in w.rows[:4]] + ["An edited headline"] + [r["text"] for r in w.rows[5:]])], 2,
         ("text 5 differs", "baseline: 'An edited headline'", " ".join(agnews_rows("train", ROWS)[4]["text"].split())[:40])),
    Case("eval-baseline-not-a-predictions-file", lambda w: ["eval", w.run(), "--baseline", w.csv("b.csv")], 2, ("b.csv", "not a predictions file", "--save-predictions")),
    Case("eval-slice-by-missing-column", lambda w: ["eval", w.run(), "--data", w.csv("e.csv"), "--slice-by", "lable"], 2,
         ("--slice-by 'lable' is not a column of", "did you mean 'label'?")),
    # --- issue 24: serve on a network (the HTTP side: a missing/wrong key is a 401, a hostile X-Request-ID is replaced,
    # tests/test_serve_network.py) --------------------------------------------------------------------------------
    Case("serve-non-loopback-host-without-a-key", lambda w: ["serve", w.tiny_classifier, "--host", "0.0.0.0", "--port", "0"], 2,
         ("--host 0.0.0.0", "no API key", "BERTCTL_API_KEY", "--allow-unauthenticated")),
    Case("serve-empty-api-key", lambda w: ["serve", w.tiny_classifier, "--port", "0", "--api-key", " "], 2, ("the API key is empty", "BERTCTL_API_KEY")),
    Case("serve-cors-origin-with-a-path", lambda w: ["serve", w.tiny_classifier, "--port", "0", "--cors-origin", "https://app.example.com/x"], 2,
         ("--cors-origin 'https://app.example.com/x' is not an origin", "https://app.example.com")),
    Case("serve-request-timeout-zero", lambda w: ["serve", w.tiny_classifier, "--port", "0", "--request-timeout", "0"], 2, ("--request-timeout must be more than 0 seconds",)),
    Case("serve-negative-drain", lambda w: ["serve", w.tiny_classifier, "--port", "0", "--drain-seconds", "-1"], 2, ("--drain-seconds must be 0 or more, got -1",)),
    # --- issue 27: sweep workers sharing one study ---------------------------------------------------------------
    # a server that takes the connection and never answers: refused after the bounded connect timeout, not hung
    Case("sweep-database-that-does-not-answer", lambda w: ["sweep", _sweep_recipe(w), "--output", w.path("s"), "--storage", f"postgresql://me:secret@127.0.0.1:{_silent_port()}/sweeps"], 2,
         ("cannot open the study storage", "postgresql://me:***@127.0.0.1", "timeout"), slow=True),
    Case("sweep-study-of-another-recipe", lambda w: ["sweep", _sweep_recipe(w), "--output", w.path("s"), "--storage", _other_recipes_study(w)], 2,
         ("the study 'sw' in sqlite:///", "made by another recipe (other/sw.toml sweep.metric=\"log_loss\")", "sw.toml) differs",
          'sweep.metric: the study\'s "log_loss", this recipe\'s "accuracy"', "sweep.space: the study's", "train.epochs"),
         writes=("other.db",)),
    # issue 23 part 5: eval --checks FILE
    Case("eval-checks-unknown-label", lambda w: ["eval", w.run(), "--checks", w.write("c.toml", '[tests.sport]\nkind = "mft"\nlabel = "Sprots"\ntexts = ["Late goal"]\nmax_fail_rate = 0\n')], 2,
         ("c.toml is not a valid checks file", "tests.sport.label", "unknown label 'Sprots'", "line 1", "did you mean 'Sports'?")),
    Case("eval-checks-unknown-perturbation", lambda w: ["eval", w.run(), "--checks", w.write("c.toml", '[tests.t]\nkind = "inv"\nperturb = "typo"\ntexts = ["Stocks fell"]\nmax_fail_rate = 0\n')], 2,
         ("c.toml", "tests.t.perturb", "unknown perturbation 'typo' (line 3)", "did you mean 'typos'?")),
    Case("eval-checks-toml-error", lambda w: ["eval", w.run(), "--checks", w.write("c.toml", '[tests.t]\nkind = "mft\n')], 2,
         ("c.toml", "(toml)", "line 2", 'kind = "mft')),
    Case("eval-checks-missing-max-fail-rate", lambda w: ["eval", w.run(), "--checks", w.write("c.toml", '[tests.t]\nkind = "mft"\nlabel = "Sports"\ntexts = ["Late goal"]\n')], 2,
         ("c.toml", "tests.t", "has no max_fail_rate", "(line 1)", "max_fail_rate = 0.1")),
    Case("eval-checks-file-missing", lambda w: ["eval", w.run(), "--checks", w.path("nope.toml")], 2, ("nope.toml", "does not exist", "--checks recipes/checks/agnews.toml")),
    # issue 25: bertctl distill
    Case("distill-no-teacher", lambda w: ["distill", w.recipe(w.csv("t.csv"))], 2, ("r.toml: no teacher to distil from", "--teacher RUN_DIR", "distill.teacher")),
    Case("distill-teacher-not-a-run-dir", lambda w: ["distill", w.recipe(w.csv("t.csv")), "--teacher", str(Path(w.write("plain/notes.txt", "mine")).parent)], 2,
         ("plain is not a finished bertctl run dir (no config.json)", "train the teacher")),
    Case("distill-teacher-unfinished", lambda w: ["distill", w.recipe(w.csv("t.csv")), "--teacher", _unfinished_run(w)], 2, ("unfinished is not a finished bertctl run dir (no metrics.json)", "--resume")),
    Case("distill-teacher-is-an-export", lambda w: ["distill", w.recipe(w.csv("t.csv")), "--teacher", _export_stand_in(w)], 2,
         ("onnx is an ONNX export", "distill.teacher_export")),
    Case("distill-labels-in-another-order", lambda w: ["distill", w.recipe(w.csv("t.csv"), labels=False, data='labels = ["Sports", "World", "Business", "Sci/Tech"]\n'), "--teacher", w.run()], 2,
         ("has the labels ['World', 'Sports', 'Business', 'Sci/Tech']", "and ", "['Sports', 'World', 'Business', 'Sci/Tech']", 'data.labels = ["World", "Sports", "Business", "Sci/Tech"]')),
    Case("distill-problem-type-differs", lambda w: ["distill", w.multilabel(""), "--teacher", w.run()], 2,
         ("is a single-label classification model", "ml.toml trains multi-label classification")),
    Case("distill-layers-out-of-range", lambda w: ["distill", w.recipe(w.csv("t.csv")), "--teacher", w.run(), "distill.layers=[0, 2]"], 2,
         ("distill.layers [0, 2] names layer 2, but the teacher has 2 encoder layers (0 to 1)", "distill.layers = [0]")),
    Case("distill-layers-and-num-layers", lambda w: ["distill", w.recipe(w.csv("t.csv")), "--teacher", w.run(), "distill.layers=[1, 0]", "distill.num_layers=1"], 2,
         ("distill.num_layers", "distill.layers is set too", "distill.layers", "[1, 0] is not ascending", "[0, 1]")),
    Case("distill-tokenizer-differs", lambda w: ["distill", w.recipe(w.csv("t.csv"), model=""), "--teacher", w.run(), f"model.name={json.dumps(_other_vocab_bert(w))}"], 2,
         ("other-vocab has another tokenizer than teacher", "against 30522 tokens", "distill.num_layers")),
    Case("distill-unlabeled-overlaps-validation",
         lambda w: ["distill", w.recipe(w.csv("t.csv"), data=f'validation = "{w.csv("v.csv")}"\n'), "--teacher", w.run(), "distill.num_layers=1",
                    f"distill.unlabeled={json.dumps(w.write('more.jsonl', json.dumps({'text': 'a text of its own'}) + chr(10) + json.dumps({'text': ' ' + w.rows[2]['text'].upper()}) + chr(10)))}"], 2,
         ("more.jsonl: 1 of its 2 texts are also in the validation split (record 2)", "leak", "remove those rows")),
]


def _unfinished_run(w: Workspace) -> str:
    """The finished run without metrics.json: what an interrupted `bertctl train` leaves."""
    run = Path(w.run()).with_name("unfinished")
    if not run.exists():
        shutil.copytree(w.run(), run)
        (run / "metrics.json").unlink()
    return str(run)


def _other_vocab_bert(w: Workspace) -> str:
    """The tiny BERT with a 31-token cased vocabulary of its own in place of the uncased WordPiece one."""
    from transformers import BertTokenizerFast

    out = w.root / "other-vocab"
    if not out.exists():
        shutil.copytree(w.models["tiny_bert"], out)
        for item in out.iterdir():
            if "token" in item.name or item.name in {"vocab.txt", "special_tokens_map.json"}:
                item.unlink()
        vocab = w.write("other-vocab-src/vocab.txt", "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]) + "\n")
        BertTokenizerFast(vocab_file=vocab, do_lower_case=False).save_pretrained(out)
    return str(out)


def _export_stand_in(w: Workspace) -> str:
    """What makes a dir an export to bertctl (model.onnx + export.json naming its run dir): explain refuses it unread."""
    w.write("onnx/model.onnx", "stand-in")
    w.write("onnx/config.json", "{}")
    return str(Path(w.write("onnx/export.json", '{"source": "runs/agnews"}')).parent)



def baseline_predictions(w: Workspace, labels: list[str] = AGNEWS_LABELS, texts: list[str] | None = None) -> str:
    """A file as `eval --save-predictions` writes it, for the run's validation split (the workspace's rows)."""
    texts = [r["text"] for r in w.rows] if texts is None else texts
    header = {"format": "bertctl-predictions/1", "problem_type": "single_label_classification", "labels": labels, "thresholds": None}
    rows = [{"id": i, "text": t, "reference": labels[0], "scores": {label: 1.0 / len(labels) for label in labels}} for i, t in enumerate(texts)]
    return w.write("baseline.jsonl", "\n".join(json.dumps(r) for r in [header, *rows]) + "\n")



def _sweep_recipe(w: Workspace) -> str:
    """A recipe with a validation file and a [sweep.space]: what `bertctl sweep` runs."""
    recipe = Path(w.recipe(w.csv("sw-train.csv"), name="sw", data=f'validation = "{w.csv("sw-dev.csv")}"\n'))
    recipe.write_text(recipe.read_text() + '[sweep.space]\n"train.learning_rate" = { low = 1e-4, high = 1e-2, log = true }\n')
    return str(recipe)


_SILENT: list = []  # the listening sockets, kept open for the test session


def _silent_port() -> int:
    """A port on 127.0.0.1 that accepts TCP connections (the kernel's backlog) and never says a word."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    _SILENT.append(listener)
    return listener.getsockname()[1]


def _other_recipes_study(w: Workspace) -> str:
    """A SQLite study named as the sweep recipe's, started by another recipe: another metric, another space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{w.root / 'other.db'}"
    study = optuna.create_study(study_name="sw", storage=url, direction="minimize")
    study.set_user_attr("bertctl", {"recipe": 'other/sw.toml sweep.metric="log_loss"', "metric": "log_loss", "space": {"train.epochs": [1, 2]}})
    return url


def _no_guess_for(stderr: str, name: str) -> None:
    assert f"for {name!r}" not in stderr, stderr  # issue 28: 'sadness' was offered 'Business'


def _case_params():
    for case in CASES:
        marks = [pytest.mark.slow] if case.slow or case.subprocess else []
        yield pytest.param(case, id=case.id, marks=marks)


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file (size, mtime) and folder under the roots; folder mtimes are left out, as temp files
    created and removed inside change them without changing what the folder holds."""
    seen: dict[str, tuple] = {}
    for root in roots:
        if not os.path.lexists(root):
            continue
        for path in [root, *root.rglob("*")]:
            stat = path.lstat()
            seen[str(path)] = ("dir",) if path.is_dir() and not path.is_symlink() else ("file", stat.st_size, stat.st_mtime_ns)
    return seen


def changed(before: dict, after: dict, allowed: tuple[Path, ...] = ()) -> list[str]:
    def is_allowed(name: str) -> bool:
        return any(Path(name) == a or a in Path(name).parents for a in allowed)

    keys = set(before) | set(after)
    return sorted(f"{k}: {before.get(k)} -> {after.get(k)}" for k in keys if before.get(k) != after.get(k) and not is_allowed(k))


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None


def run_command(argv: list[str], stdin: bytes | None, in_subprocess: bool, cwd: Path) -> Outcome:
    if in_subprocess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = subprocess.run(argv, input=stdin or b"", capture_output=True, cwd=cwd, env=env, timeout=300)
        return Outcome(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))
    result = runner.invoke(app, argv, input=stdin)
    exception = None if result.exception is None or isinstance(result.exception, SystemExit) else result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr, exception)


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_bert_dir, tiny_classifier_dir, pickle_classifier_dir, weightless_dir, mlm_dir) -> Workspace:
    monkeypatch.chdir(tmp_path)
    models = {
        "tiny_bert": tiny_bert_dir,
        "tiny_classifier": tiny_classifier_dir,
        "pickle_classifier": pickle_classifier_dir,
        "weightless": weightless_dir,
        "mlm": mlm_dir,
    }
    return Workspace(tmp_path, models)


@pytest.mark.parametrize("case", _case_params())
def test_bad_input_matrix(case: Case, workspace: Workspace):
    argv = case.argv(workspace)  # builds the row's files first: they are part of "before"
    stdin = case.stdin(workspace) if case.stdin else None
    watched = [workspace.root, *workspace.models.values()]
    if case.exit_code != 0:
        watched.append(Path(os.environ["BERTCTL_CACHE"]))  # a refused input leaves no tokenize cache entry
    before = snapshot(*map(Path, watched))

    outcome = run_command(argv, stdin, case.subprocess, workspace.root)

    shown = f"exit {outcome.exit_code}\nstdout:\n{outcome.stdout[-3000:]}\nstderr:\n{outcome.stderr[-3000:]}"
    assert outcome.exception is None, f"{type(outcome.exception).__name__}: {outcome.exception}\n{shown}"
    assert "Traceback" not in outcome.stdout and "Traceback" not in outcome.stderr, shown
    assert outcome.exit_code == case.exit_code, shown
    for needle in case.says:
        assert needle in outcome.stderr, f"{needle!r} not on stderr\n{shown}"
    if case.exit_code != 0:
        assert outcome.stderr.startswith("error: "), shown
        assert outcome.stdout == "", shown  # stdout carries results only (scripts parse it)
    if case.fix:
        assert "fix: " in outcome.stderr, shown
    after = snapshot(*map(Path, watched))
    assert not changed(before, after, tuple(workspace.root / p for p in case.writes)), "\n".join(changed(before, after))
    if case.check is not None:
        case.check(workspace, outcome)


def test_bad_input_matrix_covers_every_command():
    commands = ("validate", "tokenize", "train", "distill", "eval", "predict", "attention", "pretrain", "fill-mask", "serve", "sweep")
    refused = {command for command in commands for case in CASES if case.id.startswith(command + "-") and case.exit_code == 2}
    assert refused == set(commands)
    assert sum(case.exit_code == 2 for case in CASES) >= 30 and len({case.id for case in CASES}) == len(CASES)


# ---------------------------------------------------------------------------------------------
# write failures: a read-only folder and a full disk, for every command that writes


def _can_mount(where: Path) -> bool:
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return False
    probe = where / "mount-probe"
    probe.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True).returncode == 0
    except OSError:
        return False
    if mounted:
        subprocess.run(["umount", str(probe)], capture_output=True)
    probe.rmdir()
    return mounted


class BrokenFolder:
    """A folder whose writes fail with `reason` once sealed: a real tmpfs (remounted read-only, or filled to
    the last page) when mounting works, else the same errors raised by patched open/mkdir calls."""

    def __init__(self, path: Path, reason: int, real: bool):
        self.path = path
        self.reason = reason
        self.monkeypatch = pytest.MonkeyPatch()
        self.real = real
        path.mkdir()
        if real:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], check=True, capture_output=True)

    def seal(self) -> None:
        if self.real and self.reason == errno.EROFS:
            subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True, capture_output=True)
        elif self.real:
            with open(self.path / "filler", "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        else:
            self._patch()

    def _inside(self, target) -> bool:
        try:
            resolved = Path(os.fsdecode(target)).absolute()
        except TypeError:  # a file descriptor or a file object
            return False
        return resolved == self.path or self.path in resolved.parents

    def _patch(self) -> None:
        error = OSError(self.reason, os.strerror(self.reason))
        real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

        def guarded_open(file, mode="r", *args, **kwargs):
            if any(flag in mode for flag in "wax+") and self._inside(file):
                raise error
            return real_open(file, mode, *args, **kwargs)

        def guarded_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and self._inside(path):
                raise error
            return real_os_open(path, flags, *args, **kwargs)

        def guarded_mkdir(path, *args, **kwargs):
            # on a full tmpfs mkdir still works (no data pages); on a read-only one it fails
            if self.reason == errno.EROFS and self._inside(path):
                raise error
            return real_mkdir(path, *args, **kwargs)

        self.monkeypatch.setattr(builtins, "open", guarded_open)
        self.monkeypatch.setattr(io, "open", guarded_open)
        self.monkeypatch.setattr(os, "open", guarded_os_open)
        self.monkeypatch.setattr(os, "mkdir", guarded_mkdir)

    def close(self) -> None:
        self.monkeypatch.undo()
        if self.real and subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
            # still busy (a memory-mapped model from the folder, not yet collected): detach it lazily rather
            # than leave a read-only mount behind for pytest's temp-dir cleanup to trip over
            subprocess.run(["umount", "--lazy", str(self.path)], capture_output=True)


@pytest.fixture(scope="module")
def mount_works(tmp_path_factory) -> bool:
    return os.geteuid() == 0 and _can_mount(tmp_path_factory.mktemp("mount-check"))


@dataclass
class WriteCase:
    id: str
    # (workspace, broken folder) -> argv; may put inputs (a run dir) into the folder before it is sealed
    argv: Callable[[Workspace, Path], list[str]]
    says: tuple[str, ...]
    reasons: tuple[str, ...] = ("read-only", "disk-full")


WRITE_CASES = [
    WriteCase("predict-output", lambda w, d: ["predict", "--model", w.tiny_classifier, "--output", str(d / "out" / "p.jsonl"), "a", "b"],
              ("could not write predictions", "p.jsonl")),
    WriteCase("eval-report-in-the-run-dir", lambda w, d: ["eval", shutil.copytree(w.run(), d / "run"), "--split", "validation"],
              ("cannot write the eval report", "eval.json")),
    WriteCase("attention-out", lambda w, d: ["attention", "--model", w.tiny_bert, "--out", str(d / "reports" / "att"), "text"],
              ("could not write the attention report", "att")),
    WriteCase("train-run-dir", lambda w, d: ["train", w.recipe(w.csv("t.csv")), "--output-dir", str(d / "run")], ("run",)),
    WriteCase("pretrain-output-dir", lambda w, d: ["pretrain", w.recipe(w.csv("t.csv")), "--output-dir", str(d / "mlm")], ("mlm",)),
]
REASONS = {"read-only": (errno.EROFS, "Read-only file system"), "disk-full": (errno.ENOSPC, "No space left on device")}


@pytest.mark.parametrize(
    "case, reason", [pytest.param(case, reason, id=f"{case.id}-{reason}") for case in WRITE_CASES for reason in case.reasons]
)
@pytest.mark.slow
def test_bad_input_write_failure(case: WriteCase, reason: str, workspace: Workspace, mount_works):
    code, words = REASONS[reason]
    folder = BrokenFolder(workspace.root / "broken", code, real=mount_works)
    try:
        argv = case.argv(workspace, folder.path)
        folder.seal()
        before = snapshot(workspace.root, folder.path)
        outcome = run_command([str(a) for a in argv], None, False, workspace.root)
        after = snapshot(workspace.root, folder.path)
    finally:
        folder.close()
    shown = f"exit {outcome.exit_code}\nstdout:\n{outcome.stdout[-2000:]}\nstderr:\n{outcome.stderr[-2000:]}"
    assert outcome.exception is None, f"{type(outcome.exception).__name__}: {outcome.exception}\n{shown}"
    assert "Traceback" not in outcome.stderr and outcome.exit_code == 2, shown
    assert words in outcome.stderr and "fix: " in outcome.stderr, shown
    for needle in case.says:
        assert needle in outcome.stderr, f"{needle!r} not on stderr\n{shown}"
    assert not changed(before, after), "\n".join(changed(before, after))


def test_bad_input_eval_report_write_failure_keeps_the_previous_pair(workspace, monkeypatch):
    """When eval.json can't be written, the confusion-matrix PNG beside it must stay the one that matches it."""
    import bertctl.evaluation

    run = Path(workspace.run())
    (run / "eval.json").write_text('{"from": "the previous eval"}\n')
    (run / "eval_confusion_matrix.png").write_bytes(b"the previous eval's PNG")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(bertctl.evaluation, "atomic_write_json", disk_full)
    before = snapshot(workspace.root)
    outcome = run_command(["eval", str(run), "--split", "validation"], None, False, workspace.root)
    shown = f"exit {outcome.exit_code}\nstderr:\n{outcome.stderr[-2000:]}"
    assert outcome.exception is None and outcome.exit_code == 2, shown
    assert "eval.json" in outcome.stderr and "No space left on device" in outcome.stderr and "fix: " in outcome.stderr, shown
    assert not changed(before, snapshot(workspace.root)), "\n".join(changed(before, snapshot(workspace.root)))


# ---------------------------------------------------------------------------------------------
# bertctl.Predictor (a Python API, not a command): a batch without the text column


def test_bad_input_predictor_batch_without_the_text_column(tiny_classifier_dir):
    import numpy as np

    from bertctl import Predictor
    from bertctl.errors import DataError

    batch = {"headline": np.array(["Stocks fell"]), "path": np.array(["/data/news/part-3.parquet"])}
    with pytest.raises(DataError) as refused:
        Predictor.load(tiny_classifier_dir)(batch)
    said = str(refused.value)
    assert "the batch from /data/news/part-3.parquet: no text column 'text' (columns: headline, path)" in said
    assert "Predictor.load(MODEL, text=COLUMN)" in refused.value.fix
    with pytest.raises(DataError, match="no pair column 'second'"):
        Predictor.load(tiny_classifier_dir, text="headline", pair="second")({"headline": np.array(["x"])})
