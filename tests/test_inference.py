"""`bertctl predict`: same answers as an unbatched pass and as transformers.pipeline, order kept, inputs reported."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bertctl import inference
from bertctl.cli import app
from bertctl.cpus import configure_training_threads
from bertctl.errors import BertctlError
from conftest import AGNEWS_LABELS, agnews_rows, write_csv

runner = CliRunner()


def invoke(*args: str, input: str | bytes | None = None):
    result = runner.invoke(app, [str(a) for a in args], input=input)
    assert "Traceback" not in result.output, result.output
    return result


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def classifier(tiny_classifier_dir):
    return inference.load_for_inference(tiny_classifier_dir, device="cpu")


@pytest.fixture(scope="module")
def varied(varied_classifier_dir):
    return inference.load_for_inference(varied_classifier_dir, device="cpu")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """AG News texts, shuffled so lengths are in no order, plus a few very short and very long ones."""
    items = [r["text"] for r in agnews_rows("dev", 40)] + ["oil", "Cup final tonight", "markets " * 90]
    random.Random(3).shuffle(items)
    return items


def unbatched(model_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return np.stack([
            torch.softmax(model(**tokenizer(t, truncation=True, max_length=max_length, return_tensors="pt")).logits[0].double(), -1).numpy()
            for t in texts
        ])


# ---------------------------------------------------------------------------------------------
# answers


def test_prediction_keeps_input_order_with_shuffled_lengths(varied, texts, varied_classifier_dir):
    result = inference.predict_texts(varied, texts, batch_size=4, top_k=4)
    expected = unbatched(varied_classifier_dir, texts, varied.max_length)
    assert len(set(expected.argmax(axis=1))) > 1 and np.ptp(expected.max(axis=1)) > 0.1  # outputs differ per text
    assert [p.text for p in result.predictions] == texts
    got = np.array([[dict(p.top_k)[name] for name in AGNEWS_LABELS] for p in result.predictions])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert [p.label for p in result.predictions] == [AGNEWS_LABELS[i] for i in expected.argmax(axis=1)]


def test_prediction_labels_equal_transformers_pipeline(varied, texts, varied_classifier_dir):
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(varied_classifier_dir), device="cpu", truncation=True, max_length=varied.max_length)
    theirs = pipe(texts, batch_size=1)
    ours = inference.predict_texts(varied, texts).predictions
    assert len({t["label"] for t in theirs}) > 1
    assert [p.label for p in ours] == [t["label"] for t in theirs]
    np.testing.assert_allclose([p.score for p in ours], [t["score"] for t in theirs], atol=1e-4)


def test_prediction_batched_logits_do_not_depend_on_batch_size(varied, texts):
    encoded = inference.encode(varied, texts)
    one = inference.infer_logits(varied.model, encoded.columns, batch_size=1)
    many = inference.infer_logits(varied.model, encoded.columns, batch_size=16)
    np.testing.assert_allclose(one, many, atol=1e-4)


def test_prediction_fast_path_is_on_by_default_on_cpu_and_changes_no_answer(varied, texts, varied_classifier_dir):
    stock = inference.load_for_inference(varied_classifier_dir, device="cpu", fast_path=False)
    assert "last layer [CLS] only" in varied.fast_path and stock.fast_path == []
    encoded = inference.encode(varied, texts)
    fast_logits = inference.infer_logits(varied.model, encoded.columns, batch_size=8)
    stock_logits = inference.infer_logits(stock.model, encoded.columns, batch_size=8)
    assert np.ptp(stock_logits) > 0.5
    np.testing.assert_allclose(fast_logits, stock_logits, atol=1e-4)
    labels = [json_lines(invoke("predict", "--model", varied_classifier_dir, "--json", flag, *texts[:6]).stdout) for flag in ("--fast-path", "--no-fast-path")]
    assert [p["label"] for p in labels[0]] == [p["label"] for p in labels[1]] and len(labels[0]) == 6


def test_prediction_int8_quantize_runs_and_returns_valid_labels(tiny_classifier_dir, texts):
    import torch

    quantized = inference.load_for_inference(tiny_classifier_dir, quantize="int8")
    linear_types = {type(m).__module__ for m in quantized.model.modules() if "Linear" in type(m).__name__}
    assert any("quantized" in module for module in linear_types)
    assert quantized.fast_path and "one-GEMM QKV attention" not in quantized.fast_path  # int8 Linear layers can't be fused
    assert not any(isinstance(m, torch.nn.Linear) and type(m) is torch.nn.Linear for m in quantized.model.modules())
    result = inference.predict_texts(quantized, texts[:10], top_k=2)
    assert all(p.label in AGNEWS_LABELS and 0.0 < p.score <= 1.0 for p in result.predictions)
    cli = invoke("predict", "--model", tiny_classifier_dir, "--quantize", "int8", "--json", "Stocks fell")
    assert cli.exit_code == 0, cli.output
    assert json_lines(cli.stdout)[0]["label"] in AGNEWS_LABELS
    assert invoke("predict", "--model", tiny_classifier_dir, "--quantize", "int4", "x").exit_code == 2


def test_prediction_threads_follow_the_flag(classifier):
    import torch

    before = torch.get_num_threads()
    try:
        assert configure_training_threads(1, setting="--threads").threads == torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# the command line


def test_prediction_cli_json_schema(tiny_classifier_dir):
    result = invoke("predict", "--model", tiny_classifier_dir, "--json", "--top-k", "3", "Stocks fell as oil rose", "Cup final tonight")
    assert result.exit_code == 0, result.output
    records = json_lines(result.stdout)
    assert [r["text"] for r in records] == ["Stocks fell as oil rose", "Cup final tonight"]
    for record in records:
        assert set(record) == {"text", "label", "score", "top_k", "scores"}
        assert record["label"] in AGNEWS_LABELS and 0 < record["score"] <= 1
        assert set(record["scores"]) == set(AGNEWS_LABELS) and abs(sum(record["scores"].values()) - 1) < 1e-6
        assert record["scores"][record["label"]] == record["score"]
        assert [set(k) for k in record["top_k"]] == [{"label", "score"}] * 3
        scores = [k["score"] for k in record["top_k"]]
        assert scores == sorted(scores, reverse=True)
        assert record["top_k"][0] == {"label": record["label"], "score": record["score"]}


def test_prediction_cli_table_by_default(tiny_classifier_dir):
    result = invoke("predict", "--model", tiny_classifier_dir, "Stocks fell as oil rose")
    assert result.exit_code == 0, result.output
    assert "label" in result.stdout and "score" in result.stdout and "Stocks fell" in result.stdout
    assert any(name in result.stdout for name in AGNEWS_LABELS)


def test_prediction_cli_table_prints_brackets_in_texts_as_typed(tiny_classifier_dir):
    result = invoke("predict", "--model", tiny_classifier_dir, "closing [/] tag", "[bold]not bold[/bold]")
    assert result.exit_code == 0, result.output
    assert "closing [/] tag" in result.stdout and "[bold]not bold[/bold]" in result.stdout


def test_prediction_cli_reads_stdin_in_order(varied_classifier_dir, varied, texts):
    lines = texts[:12]
    result = invoke("predict", "--model", varied_classifier_dir, "--json", "-", input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    records = json_lines(result.stdout)
    assert [r["text"] for r in records] == lines
    expected = inference.predict_texts(varied, lines).predictions
    assert [r["label"] for r in records] == [p.label for p in expected]
    np.testing.assert_allclose([r["score"] for r in records], [p.score for p in expected], atol=1e-6)


def test_prediction_cli_reports_empty_lines(tiny_classifier_dir, tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("Stocks fell\n\nCup final\n   \noil\n")
    result = invoke("predict", "--model", tiny_classifier_dir, "--file", path, "--json")
    assert result.exit_code == 0, result.output
    records = json_lines(result.stdout)
    assert [r["text"] for r in records] == ["Stocks fell", "", "Cup final", "   ", "oil"]
    for i in (1, 3):
        assert records[i]["label"] is None and records[i]["score"] is None and "empty" in records[i]["error"]
    assert all(records[i]["label"] in AGNEWS_LABELS for i in (0, 2, 4))
    assert "2 empty inputs" in result.stderr and "line 2, line 4" in result.stderr


def test_prediction_cli_truncation_note(tiny_classifier_dir, tmp_path):
    # no recipe: the limit is the tokenizer's 512 capped at the tiny model's 128 position embeddings
    long_text = "markets rallied " * 200
    result = invoke("predict", "--model", tiny_classifier_dir, "short one", long_text, long_text)
    assert result.exit_code == 0, result.output
    assert "2 texts longer than 128 tokens truncated" in result.stderr
    run = tmp_path / "run"
    shutil.copytree(tiny_classifier_dir, run)
    (run / "recipe.toml").write_text("[model]\nmax_length = 32\n[data]\ntrain = \"gone.csv\"\n")
    with_recipe = invoke("predict", "--model", run, "word " * 40)
    assert with_recipe.exit_code == 0, with_recipe.output
    assert "1 text longer than 32 tokens" in with_recipe.stderr


def test_prediction_cli_file_columns_and_output_file(tiny_classifier_dir, tmp_path, classifier):
    rows = [{"id": str(i), "headline": r["text"]} for i, r in enumerate(agnews_rows("dev", 12))]
    source = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out" / "pred.jsonl"
    result = invoke("predict", "--model", tiny_classifier_dir, "--file", source, "--text", "headline", "--output", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "wrote 12 predictions" in result.stderr
    records = json_lines(out.read_text())
    expected = inference.predict_texts(classifier, [r["headline"] for r in rows]).predictions
    assert [(r["text"], r["label"]) for r in records] == [(p.text, p.label) for p in expected]
    as_csv = tmp_path / "pred.csv"
    assert invoke("predict", "--model", tiny_classifier_dir, "--file", source, "--text", "headline", "-o", as_csv).exit_code == 0
    header, *lines = as_csv.read_text().splitlines()
    assert header == "id,headline,label,score,error" and len(lines) == 12
    assert not list(tmp_path.glob(".pred*")) and not list(out.parent.glob(".pred*"))


def test_prediction_table_output_keeps_every_input_column_beside_the_predictions(tiny_classifier_dir, tmp_path, classifier):
    import csv

    rows = [{"id": str(i), "headline": r["text"], "label": r["label"]} for i, r in enumerate(agnews_rows("dev", 6))]
    rows[3]["headline"] = " "
    source = write_csv(tmp_path / "gold.csv", rows)
    out = tmp_path / "preds.csv"
    result = invoke("predict", "--model", tiny_classifier_dir, "--file", source, "--text", "headline", "-o", out)
    assert result.exit_code == 0, result.output
    with open(out, newline="", encoding="utf-8") as fh:
        written = list(csv.DictReader(fh))
    assert list(written[0]) == ["id", "headline", "label", "predicted_label", "score", "error"]  # the gold label column stays as it was
    assert [{k: w[k] for k in ("id", "headline", "label")} for w in written] == rows
    expected = inference.predict_texts(classifier, [r["headline"] for r in rows]).predictions
    assert [w["predicted_label"] for w in written] == [p.label or "" for p in expected]
    assert written[3]["error"] and not written[3]["score"] and all(not w["error"] for i, w in enumerate(written) if i != 3)
    as_jsonl = invoke("predict", "--model", tiny_classifier_dir, "--file", source, "--text", "headline", "--json")
    assert [r["input"] for r in json_lines(as_jsonl.stdout)] == rows and [r["text"] for r in json_lines(as_jsonl.stdout)] == [r["headline"] for r in rows]


def test_prediction_file_columns_default_to_the_run_recipe(tiny_classifier_dir, tmp_path, classifier):
    run = tmp_path / "run"
    shutil.copytree(tiny_classifier_dir, run)
    (run / "recipe.toml").write_text('[model]\nmax_length = 64\n[data]\ntext = "headline"\n')
    rows = [{"id": str(i), "headline": r["text"]} for i, r in enumerate(agnews_rows("dev", 5))]
    result = invoke("predict", "--model", run, "--json", "--file", write_csv(tmp_path / "in.csv", rows))
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in json_lines(result.stdout)] == [r["headline"] for r in rows]
    missing = invoke("predict", "--model", run, "--file", write_csv(tmp_path / "other.csv", [{"text": "x"}]))
    assert missing.exit_code == 2 and "'headline'" in missing.stderr and "the run's data.text" in missing.stderr
    (run / "recipe.toml").write_text('[model]\nmax_length = 64\n[data]\ntext = "premise"\ntext_pair = "hypothesis"\n')
    pairs = [{"premise": "A man sleeps", "hypothesis": "Nobody is awake"}, {"premise": "A dog runs", "hypothesis": "An animal moves"}]
    from_pairs = invoke("predict", "--model", run, "--json", "--file", write_csv(tmp_path / "pairs.csv", pairs))
    assert from_pairs.exit_code == 0, from_pairs.output
    assert [(r["text"], r["text_pair"]) for r in json_lines(from_pairs.stdout)] == [(p["premise"], p["hypothesis"]) for p in pairs]


def test_prediction_cli_defaults_to_runs_latest(tiny_classifier_dir, tmp_path, monkeypatch):
    shutil.copytree(tiny_classifier_dir, tmp_path / "runs" / "one")
    (tmp_path / "runs" / "latest").symlink_to("one")
    monkeypatch.chdir(tmp_path)
    result = invoke("predict", "--json", "Stocks fell")
    assert result.exit_code == 0, result.output
    assert json_lines(result.stdout)[0]["label"] in AGNEWS_LABELS


def test_prediction_sentence_pairs(tiny_classifier_dir, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = tmp_path / "pair-run"
    shutil.copytree(tiny_classifier_dir, run)
    (run / "recipe.toml").write_text('[model]\nmax_length = 64\n[data]\ntext = "premise"\ntext_pair = "hypothesis"\n')
    no_pair = invoke("predict", "--model", run, "A man sleeps")
    assert no_pair.exit_code == 2 and "--pair" in no_pair.stderr
    result = invoke("predict", "--model", run, "--json", "--top-k", "4", "A man sleeps", "--pair", "Nobody is awake")
    assert result.exit_code == 0, result.output
    record = json_lines(result.stdout)[0]
    assert record["text_pair"] == "Nobody is awake"
    tokenizer = AutoTokenizer.from_pretrained(run)
    model = AutoModelForSequenceClassification.from_pretrained(run).eval()
    with torch.no_grad():
        probs = torch.softmax(model(**tokenizer("A man sleeps", "Nobody is awake", return_tensors="pt")).logits[0], -1)
    assert {k["label"]: k["score"] for k in record["top_k"]} == pytest.approx(dict(zip(AGNEWS_LABELS, probs.tolist())), abs=1e-5)
    pairs = write_csv(tmp_path / "pairs.csv", [{"premise": "A man sleeps", "hypothesis": "Nobody is awake"}, {"premise": "x", "hypothesis": ""}])
    from_file = invoke("predict", "--model", run, "--json", "--file", pairs, "--text", "premise", "--text-pair", "hypothesis")
    assert from_file.exit_code == 0, from_file.output
    first, second = json_lines(from_file.stdout)
    assert first["score"] == pytest.approx(record["score"], abs=1e-6) and second["label"] is None


# ---------------------------------------------------------------------------------------------
# bad input: exit 2, names the file/column/flag and the fix, no traceback


def test_prediction_run_dir_without_model(tmp_path):
    (tmp_path / "run").mkdir()
    result = invoke("predict", "--model", tmp_path / "run", "text")
    assert result.exit_code == 2 and "no trained model" in result.stderr and "fix:" in result.stderr
    weights_gone = tmp_path / "run2"
    weights_gone.mkdir()
    (weights_gone / "config.json").write_text('{"architectures": ["BertForSequenceClassification"], "model_type": "bert"}')
    result = invoke("predict", "--model", weights_gone, "text")
    assert result.exit_code == 2 and "no weights" in result.stderr


def test_prediction_refuses_model_that_is_not_a_sequence_classifier(tiny_bert_dir):
    result = invoke("predict", "--model", tiny_bert_dir, "text")
    assert result.exit_code == 2
    assert "BertModel" in result.stderr and "not a sequence classifier" in result.stderr and "bertctl train" in result.stderr


def test_prediction_refuses_classifier_config_with_missing_head(tiny_bert_dir, tmp_path):
    # config claims a classifier but the weights are a plain encoder: the head would be random
    fake = tmp_path / "fake"
    shutil.copytree(tiny_bert_dir, fake)
    config = json.loads((fake / "config.json").read_text())
    config["architectures"] = ["BertForSequenceClassification"]
    (fake / "config.json").write_text(json.dumps(config))
    result = invoke("predict", "--model", fake, "text")
    assert result.exit_code == 2 and "no trained classification head" in result.stderr


def test_prediction_bad_files(tiny_classifier_dir, tmp_path):
    missing = invoke("predict", "--model", tiny_classifier_dir, "--file", tmp_path / "nope.txt")
    assert missing.exit_code == 2 and "nope.txt" in missing.stderr and "not found" in missing.stderr
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    bad = invoke("predict", "--model", tiny_classifier_dir, "--file", latin1)
    assert bad.exit_code == 2 and "not UTF-8" in bad.stderr and "line 2" in bad.stderr and "iconv" in bad.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    result = invoke("predict", "--model", tiny_classifier_dir, "--file", empty)
    assert result.exit_code == 2 and "empty" in result.stderr
    table = write_csv(tmp_path / "t.csv", [{"headline": "x"}])
    column = invoke("predict", "--model", tiny_classifier_dir, "--file", table, "--text", "headlin")
    assert column.exit_code == 2 and "'headlin'" in column.stderr and "did you mean 'headline'" in column.stderr
    stdin_bytes = invoke("predict", "--model", tiny_classifier_dir, "-", input=b"caf\xe9\n")
    assert stdin_bytes.exit_code == 2 and "not UTF-8" in stdin_bytes.stderr


def test_prediction_usage_errors(tiny_classifier_dir, tmp_path):
    no_texts = invoke("predict", "--model", tiny_classifier_dir)
    assert no_texts.exit_code == 2 and "no texts" in no_texts.stderr
    empty_stdin = invoke("predict", "--model", tiny_classifier_dir, "-", input="")
    assert empty_stdin.exit_code == 2 and "empty" in empty_stdin.stderr
    top_k = invoke("predict", "--model", tiny_classifier_dir, "--top-k", "5", "text")
    assert top_k.exit_code == 2 and "--top-k 5" in top_k.stderr and "4 labels" in top_k.stderr
    output = invoke("predict", "--model", tiny_classifier_dir, "--output", tmp_path / "out.xlsx", "text")
    assert output.exit_code == 2 and ".jsonl" in output.stderr
    both = invoke("predict", "--model", tiny_classifier_dir, "--file", tmp_path / "a.txt", "text")
    assert both.exit_code == 2
    with pytest.raises(BertctlError, match="--pair"):
        inference.open_inputs(["a", "b"], pair="c")
    column_without_file = invoke("predict", "--model", tiny_classifier_dir, "--text", "headline", "text")
    assert column_without_file.exit_code == 2 and "--text names a column of --file" in column_without_file.stderr


def test_prediction_unknown_hub_id_offline_is_exit_2():
    result = invoke("predict", "--model", "nobody/no-such-classifier", "text")
    assert result.exit_code == 2 and "could not be found" in result.stderr and "fix:" in result.stderr


def test_prediction_file_dash_reads_stdin(tiny_classifier_dir):
    result = invoke("predict", "--model", tiny_classifier_dir, "--json", "--file", "-", input="one\ntwo\n")
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in json_lines(result.stdout)] == ["one", "two"]


@pytest.mark.slow
def test_prediction_cold_path_imports_no_training_or_eval_libraries(tiny_classifier_dir):
    """The predict command must not drag in datasets/evaluate/matplotlib/pandas (seconds of import time)."""
    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from bertctl.cli import app\n"
        f"r = CliRunner().invoke(app, ['predict', '--model', {str(tiny_classifier_dir)!r}, 'Stocks fell'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(json.dumps(sorted(m for m in ('datasets', 'evaluate', 'matplotlib', 'pandas', 'sklearn') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
