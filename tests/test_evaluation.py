"""`bertctl eval`: metrics of the real model outputs, the CI gate's exit codes, reports, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm
from typer.testing import CliRunner

from bertctl.cli import app
from bertctl.recipe import PROBLEM_METRICS

METRICS = PROBLEM_METRICS["single_label_classification"]
from bertctl.errors import BertctlError, DataError, RunError
from bertctl.evaluation import evaluate_run, merge_thresholds, parse_min_options
from conftest import AGNEWS_LABELS, agnews_rows, write_csv

runner = CliRunner()


def make_run(tmp_path: Path, classifier_dir: Path, *, test: bool = True, thresholds: dict | None = None, name: str = "run", metrics: tuple[str, ...] = tuple(METRICS)) -> Path:
    """A run dir as `bertctl train` leaves it: the model plus a resolved recipe.toml with absolute data paths."""
    run = tmp_path / "runs" / name
    shutil.copytree(classifier_dir, run)
    train = write_csv(tmp_path / "train.csv", agnews_rows("train", 40))
    dev = write_csv(tmp_path / "dev.csv", agnews_rows("dev", 60)[:30])
    lines = [
        "[model]", f'name = "{run}"', "max_length = 64",
        "[data]", f'train = "{train}"', f'validation = "{dev}"',
        "labels = [" + ", ".join(f'"{label}"' for label in AGNEWS_LABELS) + "]",
    ]
    if test:
        lines.append(f'test = "{write_csv(tmp_path / "test.csv", agnews_rows("dev", 60)[30:])}"')
    lines += ["[train]", "eval_batch_size = 7"]
    if metrics:
        lines += ["[eval]", "metrics = [" + ", ".join(f'"{m}"' for m in metrics) + "]"]
    if thresholds:
        lines.append("[eval.thresholds]")
        lines += [f"{k} = {v}" for k, v in thresholds.items()]
    (run / "recipe.toml").write_text("\n".join(lines) + "\n")
    (run / "metrics.json").write_text("{}")
    return run


@pytest.fixture
def run_dir(tmp_path, tiny_classifier_dir) -> Path:
    return make_run(tmp_path, tiny_classifier_dir)


def reference_predictions(model_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    """Probabilities from one unpadded forward pass per text: no batching, no sorting, no shared code."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            rows.append(torch.softmax(model(**enc).logits[0].double(), -1).numpy())
    return np.stack(rows)


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


# ---------------------------------------------------------------------------------------------
# the numbers


def test_evaluation_metrics_equal_sklearn_on_unbatched_model_outputs(varied_classifier_dir, tmp_path):
    run_dir = make_run(tmp_path, varied_classifier_dir)
    result = evaluate_run(run_dir)
    rows = agnews_rows("dev", 60)[30:]
    refs = np.array([AGNEWS_LABELS.index(r["label"]) for r in rows])
    probs = reference_predictions(run_dir, [r["text"] for r in rows], 64)
    preds = probs.argmax(axis=1)
    assert len(set(preds)) > 1  # the model's answers differ between texts, so a mix-up would show
    overall = result.metrics.overall
    assert result.split == "test" and result.examples == len(rows)
    assert overall["accuracy"] == pytest.approx(skm.accuracy_score(refs, preds))
    assert overall["f1_macro"] == pytest.approx(skm.f1_score(refs, preds, average="macro", zero_division=0))
    assert overall["mcc"] == pytest.approx(skm.matthews_corrcoef(refs, preds), abs=1e-9)
    assert overall["log_loss"] == pytest.approx(skm.log_loss(refs, y_proba=probs, labels=range(4)), rel=1e-4)
    assert result.metrics.confusion_matrix == skm.confusion_matrix(refs, preds, labels=range(4)).tolist()
    assert [result.metrics.per_class[name]["support"] for name in AGNEWS_LABELS] == np.bincount(refs, minlength=4).tolist()


def test_evaluation_reports_the_recipes_eval_metrics_and_the_gated_ones(tmp_path, tiny_classifier_dir):
    run = make_run(tmp_path, tiny_classifier_dir, metrics=["f1_macro", "mcc"], thresholds={"ece": 0.9})
    result = invoke("eval", run, "--json", "--no-plot")
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)["metrics"]) == ["f1_macro", "mcc", "ece"]  # in the schema's order
    shown = invoke("eval", run, "--no-plot").stdout
    assert "mcc" in shown and "ece" in shown and "accuracy" not in shown and "log_loss" not in shown


def test_evaluation_uses_the_prediction_batched_inference(run_dir, monkeypatch):
    from bertctl.inference import forward

    calls = []
    original = forward.infer_logits

    def spy(model, columns, **kwargs):
        calls.append(kwargs)
        return original(model, columns, **kwargs)

    monkeypatch.setattr(forward, "infer_logits", spy)
    evaluate_run(run_dir)
    assert len(calls) == 1 and calls[0]["batch_size"] == 7  # the recipe's train.eval_batch_size


def test_evaluation_falls_back_to_validation_without_a_test_split(tmp_path, tiny_classifier_dir):
    run = make_run(tmp_path, tiny_classifier_dir, test=False)
    result = evaluate_run(run)
    assert result.split == "validation" and result.examples == 30
    assert any("validation" in note for note in result.notes)
    with pytest.raises(DataError, match="no test split"):
        evaluate_run(run, split="test")


@pytest.mark.slow
def test_evaluation_maps_labels_by_name_or_integer_id(run_dir, tmp_path):
    rows = agnews_rows("dev", 60)[30:]
    by_name = write_csv(tmp_path / "names.csv", [{"headline": r["text"], "topic": r["label"]} for r in rows])
    by_id = write_csv(tmp_path / "ids.csv", [{"headline": r["text"], "topic": AGNEWS_LABELS.index(r["label"])} for r in rows])
    a = evaluate_run(run_dir, data=by_name, text="headline", label="topic")
    b = evaluate_run(run_dir, data=by_id, text="headline", label="topic")
    c = evaluate_run(run_dir)  # the same rows through the recipe's test split
    assert a.metrics.overall == pytest.approx(b.metrics.overall)
    assert a.metrics.overall == pytest.approx(c.metrics.overall, rel=1e-5)


def test_evaluation_integer_named_labels_match_by_name_only(tmp_path, tiny_classifier_dir):
    # labels named "1".."4", as AG News' original csv has them: a 0 is no class, not class id 0 (named "1")
    model = tmp_path / "one-based"
    shutil.copytree(tiny_classifier_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["id2label"], config["label2id"] = {str(i): str(i + 1) for i in range(4)}, {str(i + 1): i for i in range(4)}
    (model / "config.json").write_text(json.dumps(config))
    rows = agnews_rows("dev", 40)
    ids = [AGNEWS_LABELS.index(r["label"]) for r in rows]
    assert set(ids) == {0, 1, 2, 3}
    named = evaluate_run(model, data=write_csv(tmp_path / "named.csv", [{"text": r["text"], "label": i + 1} for r, i in zip(rows, ids)]))
    assert [named.metrics.per_class[str(i + 1)]["support"] for i in range(4)] == np.bincount(ids, minlength=4).tolist()
    with pytest.raises(DataError) as excinfo:
        evaluate_run(model, data=write_csv(tmp_path / "zero-based.csv", [{"text": r["text"], "label": i} for r, i in zip(rows, ids)]))
    assert "'0'" in excinfo.value.message and "by name, never as a class id" in excinfo.value.message


def test_evaluation_missing_data_file_says_paths_resolve_against_the_working_directory(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as excinfo:
        evaluate_run(run_dir, data=Path("data/nope.csv"))
    assert "data/nope.csv: file not found" in excinfo.value.message
    assert f"relative paths resolve against the working directory, {tmp_path}" in excinfo.value.fix and "recipe" not in excinfo.value.fix


# ---------------------------------------------------------------------------------------------
# the gate


@pytest.mark.slow
def test_evaluation_gate_exit_0_when_thresholds_hold(run_dir):
    overall = evaluate_run(run_dir).metrics.overall
    below = f"accuracy={overall['accuracy'] - 0.01:.4f}"
    above_loss = f"log_loss={overall['log_loss'] + 0.01:.4f}"
    result = invoke("eval", run_dir, "--min", below, "--min", above_loss)
    assert result.exit_code == 0, result.output
    assert "gate passed" in result.output


@pytest.mark.slow
def test_evaluation_gate_exit_1_names_metric_value_threshold_and_shortfall(run_dir):
    overall = evaluate_run(run_dir).metrics.overall
    f1 = overall["f1_macro"]
    threshold = round(min(1.0, f1 + 0.1), 4)
    assert f1 < threshold
    result = invoke("eval", run_dir, "--min", f"f1_macro={threshold}", "--min", "accuracy=0")
    assert result.exit_code == 1, result.output
    assert f"f1_macro = {f1:.4f} < {threshold:.4f}" in result.stderr
    assert f"short by {threshold - f1:.4f}" in result.stderr
    assert "accuracy" not in result.stderr.split("not met", 1)[1]  # only the failing metric is listed


@pytest.mark.slow
def test_evaluation_gate_log_loss_and_ece_thresholds_are_maximums(run_dir):
    overall = evaluate_run(run_dir).metrics.overall
    tight = overall["log_loss"] - 0.05
    result = invoke("eval", run_dir, "--min", f"log_loss={tight:.4f}")
    assert result.exit_code == 1
    assert "over by" in result.stderr and "allowed maximum" in result.stderr
    assert invoke("eval", run_dir, "--min", f"ece={overall['ece'] + 0.01:.4f}").exit_code == 0


@pytest.mark.slow
def test_evaluation_gate_merges_recipe_thresholds_and_cli_wins(tmp_path, tiny_classifier_dir):
    probe = evaluate_run(make_run(tmp_path / "probe", tiny_classifier_dir)).metrics.overall
    unreachable = round(min(1.0, probe["accuracy"] + 0.2), 4)
    run = make_run(tmp_path, tiny_classifier_dir, thresholds={"accuracy": unreachable, "mcc": -1.0})
    failed = invoke("eval", run, "--json")
    assert failed.exit_code == 1 and "from recipe" in failed.stderr
    assert json.loads(failed.stdout)["passed"] is False  # the report still comes out, on stdout only
    overridden = invoke("eval", run, "--min", "accuracy=0", "--json")
    assert overridden.exit_code == 0, overridden.output
    checks = {c["metric"]: c for c in json.loads(overridden.stdout)["thresholds"]}
    assert checks["accuracy"]["source"] == "--min" and checks["accuracy"]["threshold"] == 0
    assert checks["mcc"]["source"] == "recipe"


@pytest.mark.parametrize(
    "flag, message",
    [
        ("accuracy:0.9", "expected METRIC=VALUE"),
        ("accuracy=high", "'high' is not a number"),
        ("acuracy=0.9", "did you mean 'accuracy'"),
        ("f1=0.9", "unknown metric 'f1'"),
        ("accuracy=1.5", "outside the metric's range"),
        ("acc=0.9", "did you mean 'accuracy'"),  # a prefix wins over a closer spelling ('mcc')
    ],
)
def test_evaluation_bad_min_syntax_is_exit_2_before_loading_anything(flag, message, tmp_path):
    result = invoke("eval", tmp_path / "no-such-run", "--min", flag)
    assert result.exit_code == 2
    assert message in result.stderr


def test_evaluation_merge_thresholds_rejects_unknown_recipe_metric():
    with pytest.raises(BertctlError, match="did you mean 'f1_macro'"):
        merge_thresholds({"f1_macr": 0.5}, {})
    assert merge_thresholds({"accuracy": 0.5}, parse_min_options(["accuracy=0.7"])) == {"accuracy": (0.7, "--min")}


# ---------------------------------------------------------------------------------------------
# outputs


def test_evaluation_writes_eval_json_and_confusion_png(run_dir):
    result = invoke("eval", run_dir)
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "eval.json").read_text())
    assert set(report["metrics"]) >= {"accuracy", "f1_macro", "mcc", "log_loss", "ece", "precision_weighted", "recall_micro"}
    assert report["labels"] == AGNEWS_LABELS and len(report["confusion_matrix"]) == 4
    assert sum(map(sum, report["confusion_matrix"])) == report["data"]["examples"] == 30
    png = run_dir / "eval_confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in AGNEWS_LABELS:
        assert name in result.stdout  # per-class rows and matrix labels in the table
    assert not list(run_dir.glob(".eval*"))  # no temp files left behind


def test_evaluation_json_flag_prints_only_json_and_report_flag_moves_files(run_dir, tmp_path):
    target = tmp_path / "reports" / "ci.json"
    result = invoke("eval", run_dir, "--json", "--report", target)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["passed"] is True and payload["report"] == str(target)
    assert json.loads(target.read_text())["metrics"] == payload["metrics"]
    assert (tmp_path / "reports" / "ci_confusion_matrix.png").is_file()
    assert not (run_dir / "eval.json").exists()


def test_evaluation_defaults_to_runs_latest(run_dir, monkeypatch):
    monkeypatch.chdir(run_dir.parent.parent)
    (run_dir.parent / "latest").symlink_to(run_dir.name)
    result = invoke("eval", "--json", "--no-plot")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run_dir"] == str(run_dir.resolve())


# ---------------------------------------------------------------------------------------------
# bad input: exit 2, a message that names the thing and the fix, no traceback


def test_evaluation_unknown_labels_in_eval_data_are_listed(run_dir, tmp_path):
    rows = [{"text": r["text"], "label": r["label"]} for r in agnews_rows("dev", 6)]
    rows[2]["label"] = "Politics"
    rows[4]["label"] = "Weather"
    path = write_csv(tmp_path / "new.csv", rows)
    result = invoke("eval", run_dir, "--data", path)
    assert result.exit_code == 2
    assert "'Politics'" in result.stderr and "'Weather'" in result.stderr and "does not know" in result.stderr
    assert "line 4" in result.stderr and "World, Sports, Business, Sci/Tech" in result.stderr


def test_evaluation_missing_column_names_flag_and_suggestion(run_dir, tmp_path):
    path = write_csv(tmp_path / "new.csv", [{"text": "a b", "topic": "World"}])
    result = invoke("eval", run_dir, "--data", path)
    assert result.exit_code == 2
    assert "--label" in result.stderr and "'label'" in result.stderr and "topic" in result.stderr


def test_evaluation_bad_data_files_are_exit_2(run_dir, tmp_path):
    missing = invoke("eval", run_dir, "--data", tmp_path / "nope.csv")
    assert missing.exit_code == 2 and "file not found" in missing.stderr
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text,label\ncaf\xe9 news,World\n".encode("latin-1"))
    bad = invoke("eval", run_dir, "--data", latin1)
    assert bad.exit_code == 2 and "not UTF-8" in bad.stderr and "line 2" in bad.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert invoke("eval", run_dir, "--data", empty).exit_code == 2
    blank_text = write_csv(tmp_path / "blank.csv", [{"text": "ok", "label": "World"}, {"text": " ", "label": "World"}])
    blank = invoke("eval", run_dir, "--data", blank_text)
    assert blank.exit_code == 2 and "empty text" in blank.stderr and "line 3" in blank.stderr


def test_evaluation_run_dir_without_model_or_recipe(tmp_path, tiny_classifier_dir):
    (tmp_path / "empty-run").mkdir()
    no_model = invoke("eval", tmp_path / "empty-run")
    assert no_model.exit_code == 2 and "no trained model" in no_model.stderr
    plain = tmp_path / "plain-model"
    shutil.copytree(tiny_classifier_dir, plain)
    no_recipe = invoke("eval", plain)
    assert no_recipe.exit_code == 2 and "--data" in no_recipe.stderr
    with pytest.raises(RunError):
        evaluate_run(tmp_path / "does-not-exist")


def test_evaluation_refuses_a_model_without_classification_head(tiny_bert_dir, tmp_path):
    path = write_csv(tmp_path / "new.csv", [{"text": "a b", "label": "0"}])
    result = invoke("eval", tiny_bert_dir, "--data", path)
    assert result.exit_code == 2
    assert "BertModel" in result.stderr and "not a sequence classifier" in result.stderr


def test_evaluation_conflicting_flags_are_usage_errors(run_dir, tmp_path):
    assert invoke("eval", run_dir, "--data", tmp_path / "x.csv", "--split", "test").exit_code == 2
    assert invoke("eval", run_dir, "--label", "topic").exit_code == 2
    bad_split = invoke("eval", run_dir, "--split", "testing")
    assert bad_split.exit_code == 2 and "not a split" in bad_split.stderr


# ---------------------------------------------------------------------------------------------
# end to end: the run dir `bertctl train` writes


@pytest.mark.slow
def test_evaluation_end_to_end_on_a_trained_run(small_recipe, tmp_path):
    trained = invoke("train", small_recipe, 'eval.metrics=["accuracy", "f1_macro", "mcc", "log_loss", "ece"]')
    assert trained.exit_code == 0, trained.output
    run = tmp_path / "runs" / "small"
    validation = json.loads((run / "metrics.json").read_text())["validation"]
    result = invoke("eval", run, "--split", "validation", "--json", "--min", f"accuracy={validation['accuracy']:.6f}")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # training scored the same model on the same split with its own loop: the numbers must agree
    for name in ("accuracy", "f1_macro", "mcc", "log_loss", "ece"):
        assert report["metrics"][name] == pytest.approx(validation[name], rel=1e-4, abs=1e-6), name
    predicted = invoke("predict", "--model", run, "--json", "Stocks fell as oil prices rose")
    assert predicted.exit_code == 0, predicted.output
    from transformers import pipeline

    expected = pipeline("text-classification", model=str(run))("Stocks fell as oil prices rose")[0]["label"]
    assert json.loads(predicted.stdout)["label"] == expected


@pytest.mark.parametrize("metric, value", [("ece", "1.5"), ("log_loss", "-0.1"), ("mcc", "-1.5"), ("accuracy", "nan")])
def test_evaluation_min_and_recipe_thresholds_share_one_range_rule(metric, value, tmp_path):
    from bertctl.errors import RecipeError
    from bertctl.recipe import load_recipe

    result = invoke("eval", tmp_path / "no-such-run", "--min", f"{metric}={value}")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[data]\ntrain = "t.csv"\n[eval.thresholds]\n{metric} = {value}\n')
    (tmp_path / "t.csv").write_text("text,label\na,x\nb,y\n")
    with pytest.raises(RecipeError) as recipe_error:
        load_recipe(recipe)
    assert result.exit_code == 2, result.output
    assert "outside the metric's range" in result.stderr or "is not a number" in result.stderr
    assert f"eval.thresholds.{metric}" in str(recipe_error.value)


def test_evaluation_every_bad_min_is_reported_at_once(tmp_path):
    result = invoke("eval", tmp_path / "no-such-run", "--min", "acc=0.9", "--min", "ece=1.5", "--min", "f1_macro=0.8")
    assert result.exit_code == 2
    assert "--min acc=0.9" in result.stderr and "--min ece=1.5" in result.stderr and "f1_macro" not in result.stderr


# ---------------------------------------------------------------------------------------------
# the command's sequence as plain functions: evaluate_and_write, check_gate


def test_evaluation_evaluate_and_write_refuses_bad_usage_before_loading_anything(tmp_path):
    from bertctl.evaluation import evaluate_and_write

    missing = tmp_path / "no-such-run"  # were anything loaded, this would be a RunError about the run dir
    with pytest.raises(BertctlError, match="unknown metric 'f1'") as bad_min:
        evaluate_and_write(missing, minimums=["f1=0.9"])
    assert not isinstance(bad_min.value, RunError)
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(BertctlError, match="--report .* is a file, not a directory"):
        evaluate_and_write(missing, report=tmp_path / "taken" / "eval.json")
    assert not missing.exists()


def test_evaluation_evaluate_and_write_keeps_the_report_of_a_failed_gate(run_dir):
    from bertctl.errors import GateFailed
    from bertctl.evaluation import check_gate, evaluate_and_write

    passed = evaluate_and_write(run_dir, minimums=["accuracy=0"], plot=False)
    assert passed.passed and passed.report_path == str(run_dir / "eval.json")
    check_gate(passed)  # no error
    log_loss = passed.metrics.overall["log_loss"]
    tight = round(log_loss / 2, 4)
    failed = evaluate_and_write(run_dir, minimums=[f"log_loss={tight}"], plot=False)
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["passed"] is False and report["thresholds"][0]["threshold"] == tight
    with pytest.raises(GateFailed) as gate:
        check_gate(failed)
    assert gate.value.exit_code == 1
    assert f"log_loss = {log_loss:.4f} > {tight:.4f}" in str(gate.value) and "--min METRIC=VALUE" in str(gate.value)
