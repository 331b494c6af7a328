"""Multi-label, regression and class weights: labels in, metrics, training, eval, predict, serve, the pipeline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bertctl.cli import app
from bertctl.errors import RecipeError
from bertctl.labels import encode_indicators, encode_multi_labels, encode_numbers
from bertctl.metrics import functional as F
from bertctl.problems import MULTI_LABEL
from bertctl.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
EMOTIONS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
runner = CliRunner()


def goemotions_rows(split: str, n: int) -> list[dict]:
    with open(REPO / "recipes" / "data" / "goemotions" / f"{split}.tsv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[:n]


def stsb_rows(split: str, n: int) -> list[dict]:
    with open(REPO / "recipes" / "data" / "stsb" / f"{split}.tsv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[:n]


def write_tsv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writeheader()
        writer.writerows(rows)
    return path


def recipe_text(model_dir: Path, run_dir: Path, body: str) -> str:
    return f'[model]\nname = "{model_dir}"\nmax_length = 48\n{body}\n[output]\ndir = "{run_dir}"\n'


def write_recipe(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# labels in: every format, every bad value named by its row


def test_multi_labels_from_lists_names_ids_and_separators():
    targets, problems = encode_multi_labels([["joy", "fear"], [], ["anger"], [3]], EMOTIONS, "data.label", "x.jsonl")
    assert not problems
    assert targets == [[0, 0, 1, 1, 0, 0, 0], [0] * 7, [1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0]]
    joined, problems = encode_multi_labels(["joy,fear", " sadness , surprise", "neutral"], EMOTIONS, "data.label", "x.tsv", separator=",")
    assert not problems and joined[1] == [0, 0, 0, 0, 0, 1, 1]


def test_multi_labels_unknown_and_missing_are_named_by_row(tmp_path):
    path = write_tsv(tmp_path / "e.tsv", [{"text": "a", "emotions": "joy"}, {"text": "b", "emotions": "joy,glee"}, {"text": "c", "emotions": ""}])
    import pandas as pd

    frame = pd.read_csv(path, sep="\t")
    _, problems = encode_multi_labels(frame["emotions"].tolist(), EMOTIONS, "data.label", str(path), separator=",", path=path)
    text = " ".join(f"{p.message} {p.fix}" for p in problems)
    assert "'glee' (line 3" in text and "empty or NaN label" in text and "line 4" in text


def test_indicator_columns_accept_0_1_only(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"toxic": [1, 0, 1], "insult": [0, 0, 2]})
    targets, problems = encode_indicators(frame, ["toxic", "insult"], "data.label", "j.csv")
    assert targets[0] == [1.0, 0.0] and targets[1] == [0.0, 0.0]
    assert len(problems) == 1 and "'insult'" in problems[0].message and "row 3" in problems[0].message


def test_regression_labels_refuse_nan_empty_and_words():
    values, problems = encode_numbers(["3.8", 2, float("nan"), "", "high", float("inf")], "data.label", "s.tsv")
    assert values[:2] == [3.8, 2.0]
    text = " ".join(p.message for p in problems)
    assert "2 rows with an empty or NaN label" in text and "row 3" in text and "row 4" in text
    assert "'high'" in text and "row 6" in text


# ---------------------------------------------------------------------------------------------
# recipe rules


def test_problem_type_keys_checked_together(tmp_path, tiny_bert_dir):
    write_tsv(tmp_path / "t.tsv", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}])
    body = (
        '[data]\ntrain = "t.tsv"\nlabel = ["toxic", "insult"]\nlabel_separator = ","\n'
        '[train]\nclass_weights = "balance"\nmetric_for_best = "spearman"\n[eval]\nmetrics = ["pearson"]\n'
    )
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(tmp_path, recipe_text(tiny_bert_dir, tmp_path / "run", body)))
    text = str(err.value)
    for expected in ("data.label", "one per label", "data.label_separator", "train.class_weights", "did you mean 'balanced'", "'spearman' is not a single-label metric", "'pearson'"):
        assert expected in text, expected


def test_regression_refuses_labels_and_weights(tmp_path, tiny_bert_dir):
    write_tsv(tmp_path / "t.tsv", [{"text": "x", "score": "1"}, {"text": "y", "score": "2"}])
    body = '[data]\ntrain = "t.tsv"\nlabel = "score"\nlabels = ["a", "b"]\n[train]\nclass_weights = "balanced"\n'
    text = recipe_text(tiny_bert_dir, tmp_path / "run", body).replace("max_length = 48\n", 'max_length = 48\nproblem_type = "regression"\n')
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(tmp_path, text))
    assert "regression predicts a number" in str(err.value) and "no classes to weight" in str(err.value)


def test_defaults_follow_the_problem_type(tmp_path, tiny_bert_dir):
    write_tsv(tmp_path / "t.tsv", [{"text": "x", "score": "1"}, {"text": "y", "score": "2"}])
    for kind, best, metrics in (
        ("regression", "spearman", ["pearson", "spearman", "rmse"]),
        ("multi_label_classification", "f1_macro", ["f1_macro", "f1_micro", "subset_accuracy"]),
        ("single_label_classification", "accuracy", ["accuracy", "f1_macro"]),
    ):
        text = recipe_text(tiny_bert_dir, tmp_path / "run", '[data]\ntrain = "t.tsv"\nlabel = "score"\n').replace("max_length = 48\n", f'max_length = 48\nproblem_type = "{kind}"\n')
        recipe = load_recipe(write_recipe(tmp_path, text))
        assert recipe.train.metric_for_best == best and recipe.eval.metrics == metrics


def test_class_weight_list_must_match_labels(tmp_path, tiny_bert_dir):
    write_tsv(tmp_path / "t.tsv", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}])
    body = '[data]\ntrain = "t.tsv"\nlabels = ["a", "b"]\n[train]\nclass_weights = [1.0, 2.0, 0.0]\n'
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(tmp_path, recipe_text(tiny_bert_dir, tmp_path / "run", body)))
    assert "3 weights for 2 labels" in str(err.value) and "not > 0" in str(err.value)


# ---------------------------------------------------------------------------------------------
# metrics, against scikit-learn and scipy


def test_multilabel_metrics_equal_sklearn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    refs = (rng.random((200, 5)) < [0.5, 0.2, 0.05, 0.3, 0.1]).astype(float)
    probs = np.clip(refs * 0.4 + rng.random((200, 5)) * 0.6, 0, 1)
    thresholds = [0.5, 0.4, 0.6, 0.55, 0.45]
    got = MULTI_LABEL.score(refs, probs, list("abcde"), thresholds)
    preds = (probs >= np.asarray(thresholds)).astype(int)
    for average in ("macro", "micro", "weighted"):
        assert got.overall[f"f1_{average}"] == pytest.approx(sklearn.f1_score(refs, preds, average=average, zero_division=0))
        assert got.overall[f"precision_{average}"] == pytest.approx(sklearn.precision_score(refs, preds, average=average, zero_division=0))
        assert got.overall[f"recall_{average}"] == pytest.approx(sklearn.recall_score(refs, preds, average=average, zero_division=0))
    assert got.overall["subset_accuracy"] == pytest.approx(sklearn.accuracy_score(refs, preds))
    assert got.overall["hamming_loss"] == pytest.approx(sklearn.hamming_loss(refs, preds))
    assert got.overall["roc_auc_macro"] == pytest.approx(sklearn.roc_auc_score(refs, probs, average="macro"))
    assert got.overall["log_loss"] == pytest.approx(np.mean([sklearn.log_loss(refs[:, j], probs[:, j], labels=[0, 1]) for j in range(5)]))
    assert got.per_class["c"]["support"] == int(refs[:, 2].sum()) and got.per_class["c"]["threshold"] == 0.6
    (tn, fp), (fn, tp) = got.confusion_matrix[1]
    assert tp + fn == refs[:, 1].sum() and tp + fp == preds[:, 1].sum() and tn + fp + fn + tp == 200


def test_regression_metrics_equal_scipy_and_sklearn():
    stats = pytest.importorskip("scipy.stats")
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 6, 300).astype(float)  # ties, as STS-B's scores have
    p = y + rng.normal(0, 1, 300)
    got = F.regression_scores(y, p)
    assert got["pearson"] == pytest.approx(stats.pearsonr(y, p)[0])
    assert got["spearman"] == pytest.approx(stats.spearmanr(y, p)[0])
    assert got["mse"] == pytest.approx(sklearn.mean_squared_error(y, p))
    assert got["rmse"] == pytest.approx(np.sqrt(sklearn.mean_squared_error(y, p)))
    assert got["mae"] == pytest.approx(sklearn.mean_absolute_error(y, p))
    assert got["r2"] == pytest.approx(sklearn.r2_score(y, p))


def test_tuned_thresholds_maximise_each_labels_f1():
    rng = np.random.default_rng(2)
    refs = (rng.random((150, 3)) < [0.4, 0.1, 0.0]).astype(float)
    probs = np.clip(refs * 0.3 + rng.random((150, 3)) * 0.7, 0, 1)
    tuned = F.best_f1_thresholds(refs, probs)
    assert tuned[2] == 0.5  # no positives: nothing to tune on
    for j in range(2):
        def f1(t):
            pred = probs[:, j] >= t
            tp = (pred & (refs[:, j] > 0)).sum()
            return 2 * tp / (pred.sum() + refs[:, j].sum())
        best = max(f1(t) for t in np.unique(probs[:, j]))
        assert f1(tuned[j]) == pytest.approx(best)


def test_balanced_class_weights_are_inverse_frequency(tmp_path, tiny_bert_dir):
    from bertctl.training import class_weights

    write_tsv(tmp_path / "t.tsv", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}])
    recipe = load_recipe(write_recipe(tmp_path, recipe_text(tiny_bert_dir, tmp_path / "run", '[data]\ntrain = "t.tsv"\n[train]\nclass_weights = "balanced"\n')))
    weights = class_weights(recipe, [0, 0, 0, 1], ["a", "b"])
    assert weights.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    recipe.model.problem_type = "multi_label_classification"
    pos_weight = class_weights(recipe, [[1, 0], [0, 0], [1, 1], [1, 0]], ["a", "b"])
    assert pos_weight.tolist() == pytest.approx([1 / 3, 3 / 1])


# ---------------------------------------------------------------------------------------------
# end to end on a tiny BERT: train, eval (with the gate), predict, the transformers pipeline, serve


@pytest.fixture
def multilabel_recipe(tmp_path, tiny_bert_dir) -> Path:
    write_tsv(tmp_path / "train.tsv", goemotions_rows("train", 160))
    write_tsv(tmp_path / "dev.tsv", goemotions_rows("dev", 60))
    body = (
        '[data]\ntrain = "train.tsv"\nvalidation = "dev.tsv"\nlabel = "emotions"\nlabel_separator = ","\n'
        f"labels = {json.dumps(EMOTIONS)}\n"
        '[train]\nepochs = 2\nbatch_size = 16\nlearning_rate = 1e-3\nclass_weights = "balanced"\nseed = 3\n[eval]\nsplit = "validation"\n'
    )
    text = recipe_text(tiny_bert_dir, tmp_path / "runs" / "ml", body).replace("max_length = 48\n", 'max_length = 48\nproblem_type = "multi_label_classification"\n')
    return write_recipe(tmp_path, text, "ml.toml")


@pytest.fixture
def regression_recipe(tmp_path, tiny_bert_dir) -> Path:
    write_tsv(tmp_path / "train.tsv", stsb_rows("train", 160))
    write_tsv(tmp_path / "dev.tsv", stsb_rows("dev", 60))
    body = '[data]\ntrain = "train.tsv"\nvalidation = "dev.tsv"\ntext = "sentence1"\ntext_pair = "sentence2"\nlabel = "score"\n[train]\nepochs = 2\nbatch_size = 16\nlearning_rate = 1e-3\nseed = 3\n[eval]\nsplit = "validation"\n'
    text = recipe_text(tiny_bert_dir, tmp_path / "runs" / "reg", body).replace("max_length = 48\n", 'max_length = 48\nproblem_type = "regression"\n')
    return write_recipe(tmp_path, text, "reg.toml")


def _train(recipe: Path) -> Path:
    result = runner.invoke(app, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    return Path(load_recipe(recipe).run_dir)


@pytest.mark.slow
def test_multilabel_end_to_end_agrees_with_the_pipeline(multilabel_recipe):
    run = _train(multilabel_recipe)
    config = json.loads((run / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    thresholds = config["label_thresholds"]
    assert list(thresholds) == EMOTIONS and all(0 < t < 1 for t in thresholds.values())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["metric_for_best"] == "f1_macro"

    # eval on the validation split decides with the saved thresholds: the same f1_macro training picked the model by
    result = runner.invoke(app, ["eval", str(run), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["metrics"]["f1_macro"] == pytest.approx(metrics["best_value"], abs=1e-6)
    assert [report["per_class"][label]["threshold"] for label in EMOTIONS] == pytest.approx(list(thresholds.values()))
    assert (run / "eval_confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    failed = runner.invoke(app, ["eval", str(run), "--min", "f1_macro=0.999", "--min", "hamming_loss=0.0001"])
    assert failed.exit_code == 1 and "hamming_loss" in failed.output

    texts = [r["text"] for r in goemotions_rows("dev", 12)]
    result = runner.invoke(app, ["predict", "--model", str(run), "--json", *texts])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    from transformers import pipeline

    piped = pipeline("text-classification", model=str(run), function_to_apply="sigmoid", top_k=None)(texts)
    for record, scores in zip(records, piped):
        assert set(record) == {"text", "labels", "scores"}
        theirs = {s["label"]: s["score"] for s in scores}
        assert record["scores"] == pytest.approx(theirs, abs=1e-5)
        assert record["labels"] == [label for label in sorted(theirs, key=lambda k: -theirs[k]) if theirs[label] >= thresholds[label]]

    # a table output gets the multi-label columns; --top-k has nothing to rank
    source = multilabel_recipe.parent / "dev.tsv"
    out = multilabel_recipe.parent / "predicted.csv"
    result = runner.invoke(app, ["predict", "--model", str(run), "--file", str(source), "--output", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0])[-3:] == ["labels", "scores", "error"] and len(table) == 60
    first = json.loads(runner.invoke(app, ["predict", "--model", str(run), "--json", table[0]["text"]]).stdout)
    assert table[0]["labels"] == ",".join(first["labels"])
    ranked = runner.invoke(app, ["predict", "--model", str(run), "--top-k", "2", "some text"])
    assert ranked.exit_code == 2 and "--top-k" in ranked.output


@pytest.mark.slow
def test_regression_end_to_end_outputs_the_labels_units(regression_recipe):
    run = _train(regression_recipe)
    config = json.loads((run / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "score"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["metric_for_best"] == "spearman"

    # the saved model carries the target scaling: eval's rmse is training's own validation rmse
    result = runner.invoke(app, ["eval", str(run), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["metrics"]["rmse"] == pytest.approx(metrics["validation"]["rmse"], rel=1e-4)
    assert set(report["metrics"]) == {"pearson", "spearman", "rmse"}
    gate = runner.invoke(app, ["eval", str(run), "--min", f"rmse={report['metrics']['rmse'] / 2}"])
    assert gate.exit_code == 1 and "rmse" in gate.output  # rmse is gated as a maximum
    wrong = runner.invoke(app, ["eval", str(run), "--min", "accuracy=0.5"])
    assert wrong.exit_code == 2 and "not a metric of this regression model" in wrong.output

    rows = stsb_rows("dev", 8)
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(run), function_to_apply="none")
    for row in rows:
        result = runner.invoke(app, ["predict", "--model", str(run), "--json", row["sentence1"], "--pair", row["sentence2"]])
        assert result.exit_code == 0, result.output
        record = json.loads(result.stdout)
        assert set(record) == {"text", "text_pair", "value"}
        theirs = pipe({"text": row["sentence1"], "text_pair": row["sentence2"]})
        assert record["value"] == pytest.approx(theirs["score"], abs=1e-4)
    values = [json.loads(runner.invoke(app, ["predict", "--model", str(run), "--json", r["sentence1"], "--pair", r["sentence2"]]).stdout)["value"] for r in rows]
    assert 0.5 < float(np.mean(values)) < 4.5  # the scale of the labels (0-5), not of standardised targets


@pytest.mark.slow
def test_indicator_columns_train_and_serve(tmp_path, tiny_bert_dir):
    rows = []
    for r in goemotions_rows("train", 120):
        names = r["emotions"].split(",")
        rows.append({"text": r["text"], **{label: int(label in names) for label in ("joy", "anger", "neutral")}})
    from conftest import write_csv

    write_csv(tmp_path / "j.csv", rows)
    body = '[data]\ntrain = "j.csv"\nvalidation_fraction = 0.25\nlabel = ["joy", "anger", "neutral"]\n[train]\nepochs = 1\nbatch_size = 16\nlearning_rate = 1e-3\n'
    text = recipe_text(tiny_bert_dir, tmp_path / "runs" / "j", body).replace("max_length = 48\n", 'max_length = 48\nproblem_type = "multi_label_classification"\n')
    run = _train(write_recipe(tmp_path, text, "j.toml"))
    assert json.loads((run / "config.json").read_text())["id2label"] == {"0": "joy", "1": "anger", "2": "neutral"}

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from bertctl.serving.app import Backend, ServeOptions, create_app

    with TestClient(create_app(Backend.load(str(run)), ServeOptions())) as client:
        answer = client.post("/predict", json={"texts": ["so happy for you", " "]})
        assert answer.status_code == 200, answer.text
        first, empty = answer.json()["predictions"]
        cli = json.loads(runner.invoke(app, ["predict", "--model", str(run), "--json", "so happy for you"]).stdout)
        assert first["labels"] == cli["labels"] and first["scores"] == pytest.approx(cli["scores"], abs=1e-6)
        assert empty["error"] and empty["labels"] is None
        assert client.get("/metadata").json()["problem_type"] == "multi_label_classification"


@pytest.mark.slow
def test_class_weights_change_the_loss_on_skewed_data(tmp_path, small_recipe):
    plain = runner.invoke(app, ["train", str(small_recipe), "train.epochs=1", f"output.dir={tmp_path / 'plain'}"])
    weighted = runner.invoke(app, ["train", str(small_recipe), "train.epochs=1", "train.class_weights=[1.0, 1.0, 1.0, 8.0]", f"output.dir={tmp_path / 'weighted'}"])
    assert plain.exit_code == 0 and weighted.exit_code == 0, weighted.output

    def first_loss(run: Path) -> float:
        return next(json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines() if '"train"' in line)

    assert first_loss(tmp_path / "plain") != pytest.approx(first_loss(tmp_path / "weighted"), rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["multilabel", "regression"])
def test_export_keeps_thresholds_and_scaling(kind, request, tmp_path):
    pytest.importorskip("onnxruntime")
    recipe = request.getfixturevalue(f"{kind}_recipe")
    run = _train(recipe)
    exported = tmp_path / "export"
    result = runner.invoke(app, ["export", str(run), "--output", str(exported)])
    assert result.exit_code == 0, result.output
    info = json.loads((exported / "export.json").read_text())
    assert info["checks"]["logits"]["same_labels"] == 1.0
    if kind == "regression":
        # a regression model has no labels to agree on: the check says what it compared, and the metric is measured
        assert "same labels" not in result.output and "values within 1e-3 of torch 100.00%" in result.output
        assert info["checks"]["metric"]["metric"] == "spearman" and "spearman: torch" in result.output
        assert "same labels" not in (exported / "README.md").read_text()
    args = ["love this so much", "--pair", "I love it"] if kind == "regression" else ["love this so much", "what a terrible, scary day"]
    ours = runner.invoke(app, ["predict", "--model", str(exported), "--json", *args])
    theirs = runner.invoke(app, ["predict", "--model", str(run), "--json", *args])
    assert ours.exit_code == 0 and theirs.exit_code == 0, ours.output
    for a, b in zip(ours.stdout.splitlines(), theirs.stdout.splitlines()):
        a, b = json.loads(a), json.loads(b)
        if kind == "regression":
            assert a["value"] == pytest.approx(b["value"], abs=1e-3)
        else:
            assert a["labels"] == b["labels"] and a["scores"] == pytest.approx(b["scores"], abs=1e-4)
    evaluated = json.loads(runner.invoke(app, ["eval", str(exported), "--json"]).stdout)
    reference = json.loads(runner.invoke(app, ["eval", str(run), "--json"]).stdout)
    assert evaluated["metrics"] == pytest.approx(reference["metrics"], abs=1e-3)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_list_columns_load_from_jsonl_and_parquet(tmp_path, tiny_bert_dir, suffix):
    from conftest import write_rows

    from bertctl.data import load_data

    rows = [{"text": f"text {i}", "emotions": [["joy"], ["anger", "fear"], []][i % 3]} for i in range(12)]
    write_rows(tmp_path / f"t{suffix}", rows)
    body = f'[data]\ntrain = "t{suffix}"\nlabel = "emotions"\n'
    text = recipe_text(tiny_bert_dir, tmp_path / "run", body).replace("max_length = 48\n", 'max_length = 48\nproblem_type = "multi_label_classification"\n')
    data = load_data(load_recipe(write_recipe(tmp_path, text)))
    assert data.labels == ["anger", "fear", "joy"]  # inferred from the lists, sorted
    assert data.splits["train"]["label"][:3] == [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
