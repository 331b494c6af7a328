"""bertctl explain: integrated gradients on tiny BERTs, for every problem type and pairs; completeness, the word
merge, the HTML page, the CLI's outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("captum")

from bertctl import explaining
from bertctl.cli import app
from bertctl.errors import BertctlError, ModelError
from bertctl.inference import load_for_inference, predict_texts

runner = CliRunner()
TEXT = "Stocks didn't fall: U.S. markets rallied, and oil-prices rose 3%"


def _variant(source: Path, out: Path, **config) -> Path:
    """The tiny classifier's weights under another head (problem type, label count), with large random weights so
    scores differ from text to text."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    cfg = AutoConfig.from_pretrained(source, **config)
    model = AutoModelForSequenceClassification.from_pretrained(source, config=cfg, ignore_mismatched_sizes=True)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.4)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def multilabel_dir(tiny_classifier_dir, tmp_path_factory) -> Path:
    labels = ["red", "green", "blue"]
    return _variant(
        tiny_classifier_dir, tmp_path_factory.mktemp("ml"), problem_type="multi_label_classification", num_labels=3,
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}, label_thresholds=[0.2, 0.2, 0.2],
    )


@pytest.fixture(scope="module")
def regression_dir(tiny_classifier_dir, tmp_path_factory) -> Path:
    return _variant(tiny_classifier_dir, tmp_path_factory.mktemp("reg"), problem_type="regression", num_labels=1, id2label={0: "score"}, label2id={"score": 0})


@pytest.fixture(scope="module")
def varied(varied_classifier_dir):
    return load_for_inference(str(varied_classifier_dir), fast_path=False, device="cpu")


def test_explaining_completeness_sum_matches_difference_within_delta(varied):
    result = explaining.explain_texts(varied, [TEXT, "Late goal wins the cup"], steps=300)
    assert len(result.explanations) == 2
    for e in result.explanations:
        # completeness (Sundararajan et al.): sum of attributions = f(x) - f(baseline), up to the reported delta
        assert abs(e.total - e.difference) <= abs(e.delta) + 1e-5
        assert abs(e.difference) > 1e-3  # a real difference to explain, not 0 = 0
        assert e.converged, (e.delta, e.difference)
        assert not result.warnings()


def test_explaining_few_steps_warn_and_suggest_more(varied):
    coarse = explaining.explain_texts(varied, [TEXT], steps=1).explanations[0]
    fine = explaining.explain_texts(varied, [TEXT], steps=200).explanations[0]
    assert abs(fine.delta) < abs(coarse.delta)
    if not coarse.converged:
        warning = explaining.ExplainResult([coarse], "x").warnings()[0]
        assert "--steps 4" in warning and "text 1" in warning


def test_explaining_score_is_the_prediction_and_target_is_predicted_label(varied, varied_classifier_dir):
    texts = [TEXT, "Late goal wins the cup", "Parliament votes on the budget"]
    predicted = predict_texts(load_for_inference(str(varied_classifier_dir), device="cpu"), texts).predictions
    result = explaining.explain_texts(varied, texts, steps=8)
    for p, e in zip(predicted, result.explanations):
        assert e.label == p.label
        assert e.score == pytest.approx(p.score, abs=1e-4)


def test_explaining_target_label_and_unknown_target(varied):
    e = explaining.explain_texts(varied, [TEXT], steps=8, target="Sports").explanations[0]
    assert e.label == "Sports"
    with pytest.raises(explaining.ExplainError, match="'Sprots' is not a label") as info:
        explaining.explain_texts(varied, [TEXT], steps=8, target="Sprots")
    assert "did you mean 'Sports'" in str(info.value)


def test_explaining_words_merge_pieces_by_offsets(varied):
    e = explaining.explain_texts(varied, [TEXT], steps=8).explanations[0]
    # words are the text's whitespace-separated words, each exactly its character span
    assert [w.text for w in e.words] == TEXT.split()
    for w in e.words:
        assert TEXT[w.start : w.end] == w.text
    content = [p for p in e.pieces if p.start is not None]
    assert len(content) > len(e.words)  # WordPieces were merged: "didn't" is 3+ pieces
    for w in e.words:
        inside = [p for p in content if w.start <= p.start and p.end <= w.end]
        assert inside and w.attribution == pytest.approx(sum(p.attribution for p in inside), abs=1e-6)
    assert sum(w.attribution for w in e.words) == pytest.approx(sum(p.attribution for p in content), abs=1e-6)
    specials = {p.token for p in e.pieces if p.start is None}
    assert specials == {"[CLS]", "[SEP]"}


def test_explaining_multilabel_explains_each_predicted_label(multilabel_dir):
    classifier = load_for_inference(str(multilabel_dir), fast_path=False, device="cpu")
    predicted = predict_texts(classifier, [TEXT]).predictions[0]
    result = explaining.explain_texts(classifier, [TEXT], steps=8)
    if predicted.labels:
        assert [e.label for e in result.explanations] == predicted.labels
    else:
        assert len(result.explanations) == 1 and "no label reached" in result.explanations[0].note
    for e in result.explanations:
        assert e.score == pytest.approx(predicted.scores[e.label], abs=1e-4)
        assert abs(e.total - e.difference) <= abs(e.delta) + 1e-5


def test_explaining_regression_explains_the_value(regression_dir):
    classifier = load_for_inference(str(regression_dir), fast_path=False, device="cpu")
    value = predict_texts(classifier, [TEXT]).predictions[0].value
    [e] = explaining.explain_texts(classifier, [TEXT], steps=8).explanations
    assert e.label is None and e.score == pytest.approx(value, abs=1e-4)
    assert e.to_dict()["label"] is None
    with pytest.raises(explaining.ExplainError, match="regression"):
        explaining.explain_texts(classifier, [TEXT], steps=8, target="score")


def test_explaining_pairs_say_which_segment_each_word_is_in(varied):
    first, second = "The cat sat on the mat.", "A cat is sitting, quietly."
    [e] = explaining.explain_texts(varied, [first], [second], steps=8).explanations
    assert [w.text for w in e.words if w.segment == 0] == first.split()
    assert [w.text for w in e.words if w.segment == 1] == second.split()
    for w in e.words:
        assert (first if w.segment == 0 else second)[w.start : w.end] == w.text
    assert e.to_dict()["text_pair"] == second
    assert sum(1 for p in e.pieces if p.token == "[SEP]") == 1  # both [SEP]s in one special entry


def test_explaining_chunks_cover_a_long_text(varied):
    long = " ".join(f"word{i} market" for i in range(90))  # well past the tiny model's 128 positions
    varied.chunk_stride = 16
    try:
        [e] = explaining.explain_texts(varied, [long], steps=4, chunks=True).explanations
    finally:
        varied.chunk_stride = None
    assert e.windows > 1 and not e.truncated
    assert [w.text for w in e.words] == long.split()
    [cut] = explaining.explain_texts(varied, [long], steps=4).explanations
    assert cut.truncated and len(cut.words) < len(long.split())


def test_explaining_html_is_standalone(varied, tmp_path):
    result = explaining.explain_texts(varied, [TEXT, "<b>tags</b> & quotes \" stay text"], steps=4)
    page = explaining.render_html(result)
    assert not re.search(r"https?:|//|\bsrc=|\bhref=|url\(|@import|<link|<script|<img", page, re.IGNORECASE)
    assert "&lt;b&gt;tags&lt;/b&gt;" in page and "<b>tags</b>" not in page
    assert page.count('class="w"') == sum(len(e.words) for e in result.explanations)


def test_explaining_empty_texts_are_skipped_and_all_empty_refused(varied, tiny_classifier_dir):
    result = explaining.explain_texts(varied, ["", "Stocks fell"], steps=4)
    assert [e.where for e in result.explanations] == ["text 2"] and result.empty == ["text 1"]
    assert "1 empty input" in result.notes()[0]


def test_explaining_export_dir_is_refused_naming_the_run_dir(tmp_path, tiny_classifier_dir):
    export = tmp_path / "onnx"
    export.mkdir()
    (export / "config.json").write_text("{}")
    (export / "model.onnx").write_bytes(b"x")
    (export / "export.json").write_text(json.dumps({"source": str(tiny_classifier_dir)}))
    with pytest.raises(ModelError, match="ONNX export") as info:
        explaining.check_not_export(str(export))
    assert str(tiny_classifier_dir) in str(info.value)


def test_explaining_steps_out_of_range():
    for bad in (0, -1, explaining.MAX_STEPS + 1):
        with pytest.raises(BertctlError, match="out of range"):
            explaining.check_steps(bad)


def test_explain_cli_json_and_html(varied_classifier_dir, tmp_path):
    page = tmp_path / "why.html"
    result = runner.invoke(app, ["explain", str(varied_classifier_dir), TEXT, "Late goal", "--json", "--steps", "8", "--html", str(page)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["text"] for r in records] == [TEXT, "Late goal"]
    assert {"label", "score", "words", "pieces", "delta", "difference"} <= set(records[0])
    assert page.is_file() and ">goal</span>" in page.read_text()


def test_explain_cli_reads_a_file_and_prints_words(varied_classifier_dir, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("Stocks fell\n\nLate goal wins\n")
    result = runner.invoke(app, ["explain", str(varied_classifier_dir), "--file", str(texts), "--steps", "8"])
    assert result.exit_code == 0, result.output
    assert "line 1" in result.stdout and "line 3" in result.stdout and "label" in result.stdout
    assert "1 empty input" in result.stderr


# ---------------------------------------------------------------------------------------------
# serve: POST /explain and the page


def _client(classifier, **options):
    from fastapi.testclient import TestClient

    from bertctl.serving.app import Backend, ServeOptions, create_app

    return TestClient(create_app(Backend(classifier), ServeOptions(**options), log_stream=__import__("io").StringIO()), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def served(varied_classifier_dir):
    pytest.importorskip("fastapi")
    return load_for_inference(str(varied_classifier_dir), device="cpu")  # the fast path: /explain reloads a stock copy


def test_serve_explain_answers_like_predict_with_words(served):
    texts = [TEXT, "", "Late goal wins the cup"]
    with _client(served) as client:
        predicted = client.post("/predict", json={"texts": texts}).json()["predictions"]
        response = client.post("/explain", json={"texts": texts, "steps": 16})
        assert response.status_code == 200, response.text
        records = response.json()["explanations"]
        assert [r["text"] for r in records] == texts
        assert records[1] == {"text": "", "error": predicted[1]["error"]}
        for p, r in zip(predicted, records):
            if "error" in r:
                continue
            [e] = r["explanations"]
            assert e["label"] == p["label"] and e["score"] == pytest.approx(p["score"], abs=1e-4)
            assert [w["word"] for w in e["words"]] == p["text"].split()
            assert abs(e["attribution_sum"] - e["difference"]) <= abs(e["delta"]) + 1e-5
        assert client.get("/metadata").json()["explain"] is True


@pytest.mark.parametrize(
    "body, status, says",
    [
        ({"texts": [TEXT], "steps": 0}, 422, "steps"),
        ({"texts": [TEXT], "steps": 5000}, 422, "steps"),
        ({"texts": [TEXT], "target": "Sprots"}, 422, "did you mean 'Sports'"),
        ({"texts": ["a"] * 3}, 413, "limit of 2"),
        ({"text": [TEXT]}, 422, "texts"),
        ({"texts": [TEXT], "pairs": ["a", "b"]}, 422, "one second text per text"),
        ({"texts": [TEXT], "top_k": 9}, 422, "top_k"),
    ],
)
def test_serve_explain_refuses_bad_requests_like_predict(served, body, status, says):
    with _client(served, max_explain_texts=2) as client:
        response = client.post("/explain", json=body)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]


def test_serve_explain_on_an_export_is_404_naming_the_run_dir(served, tmp_path, varied_classifier_dir):
    import dataclasses

    class OnnxStandIn:  # what an export dir's model says of itself: onnxruntime, no gradients
        backend = "onnxruntime"
        config = served.model.config

    export = tmp_path / "onnx"
    export.mkdir()
    (export / "export.json").write_text(json.dumps({"source": str(varied_classifier_dir)}))
    classifier = dataclasses.replace(served, model=OnnxStandIn(), location=str(export), run_dir=export)
    with _client(classifier) as client:
        response = client.post("/explain", json={"texts": [TEXT]})
        assert client.get("/metadata").json()["explain"] is False
    assert response.status_code == 404
    assert "ONNX export" in response.json()["error"] and str(varied_classifier_dir) in response.json()["error"]


@pytest.mark.slow
def test_serve_page_highlights_the_explanation_in_headless_chromium(varied_classifier_dir, tmp_path):
    import html
    import subprocess
    import urllib.parse

    import httpx
    from test_serve import chromium, server_process

    if chromium() is None:
        pytest.skip("no chromium binary: apt-get install -y chromium (CI's .ci/run installs it)")
    text = "Late goal wins the cup final"
    with server_process(varied_classifier_dir) as (proc, url):
        expected = httpx.post(f"{url}/explain", json={"texts": [text]}, timeout=120).json()["explanations"][0]["explanations"][0]
        # the page fills its form from ?text=, classifies, then presses "explain" (explain=1), through the buttons' handlers
        done = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=30000", "--dump-dom", f"{url}/?text={urllib.parse.quote(text)}&explain=1"],
            capture_output=True, text=True, timeout=180,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    shown = re.findall(r'<span class="w"[^>]*data-attribution="([^"]+)"[^>]*>(.*?)</span>', dom)
    assert [html.unescape(word) for _, word in shown] == text.split(), dom[-3000:]
    assert [float(a) for a, _ in shown] == pytest.approx([w["attribution"] for w in expected["words"]], abs=1e-4)
    assert expected["label"] in re.search(r'<div class="target">(.*?)</div>', dom).group(1)


def test_explain_cli_reads_stdin(varied_classifier_dir):
    result = runner.invoke(app, ["explain", str(varied_classifier_dir), "-", "--steps", "4", "--json"], input="Stocks fell\nLate goal wins\n")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(r["where"], r["text"]) for r in records] == [("line 1", "Stocks fell"), ("line 2", "Late goal wins")]


@pytest.mark.slow
def test_explain_refuses_a_real_export_on_the_cli_and_the_server(varied_classifier_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from bertctl.export import export_run
    from test_export import make_run

    run = make_run(tmp_path, varied_classifier_dir)
    export = export_run(run).output
    result = runner.invoke(app, ["explain", str(export), TEXT])
    assert result.exit_code == 2 and "ONNX export" in result.stderr and f"bertctl explain {run}" in result.stderr
    with _client(load_for_inference(str(export))) as client:
        response = client.post("/explain", json={"texts": [TEXT]})
        assert client.post("/predict", json={"texts": [TEXT]}).status_code == 200  # the export still predicts
    assert response.status_code == 404 and str(run) in response.json()["error"]
