"""Long documents: model.truncation (head, tail, head+tail), --chunks windows with pooled logits, and what
`bertctl tokenize` says each strategy drops."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from bertctl.cli import app
from bertctl.problems import PROBLEM_TYPES
from bertctl.truncation import encode_texts, encode_windows, head_tail_split, kept_ids, window_starts
from conftest import AGNEWS_LABELS, agnews_rows, write_csv

runner = CliRunner()
LONG = " ".join(f"word{i}" for i in range(300))  # 900 WordPieces: far past every max_length below


@pytest.fixture(scope="module")
def tokenizer(bundled_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundled_tokenizer_dir)


def test_head_tail_split_is_sun_et_al_at_512():
    assert head_tail_split(512) == (128, 382)  # the 128 + 382 of 510 that Sun et al. 2019 found best on IMDb
    assert head_tail_split(128) == (32, 94)


def test_each_strategy_keeps_its_part():
    ids = list(range(100))
    assert kept_ids(ids, 12, "head") == list(range(10))
    assert kept_ids(ids, 12, "tail") == list(range(90, 100))
    assert kept_ids(ids, 12, "head+tail") == [0, 1, 2] + list(range(93, 100))
    assert kept_ids(ids[:10], 12, "tail") == list(range(10))  # a text that fits is kept whole


@pytest.mark.parametrize("truncation", ["head", "tail", "head+tail"])
def test_encoded_ids_are_the_kept_wordpieces_framed(tokenizer, truncation):
    content = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    encoded = encode_texts(tokenizer, [LONG, "a short one"], max_length=40, truncation=truncation, lengths=True)
    assert encoded.columns["input_ids"][0] == [tokenizer.cls_token_id, *kept_ids(content, 40, truncation), tokenizer.sep_token_id]
    assert encoded.columns["input_ids"][1] == tokenizer("a short one")["input_ids"]
    assert encoded.columns["token_type_ids"][0] == [0] * 40 and encoded.columns["attention_mask"][0] == [1] * 40
    assert encoded.truncated == 1 and encoded.n_tokens == [len(content) + 2, 5]


def test_head_is_what_transformers_truncation_does(tokenizer):
    """The head path is transformers' own truncation; it must agree with kept_ids' rule for head."""
    content = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert tokenizer(LONG, truncation=True, max_length=40)["input_ids"] == [tokenizer.cls_token_id, *kept_ids(content, 40, "head"), tokenizer.sep_token_id]


def test_export_tokenizer_encodes_like_transformers(tokenizer, bundled_tokenizer_dir):
    from bertctl.inference.onnx import ExportTokenizer

    export = ExportTokenizer(Path(bundled_tokenizer_dir))
    for truncation in ("tail", "head+tail"):
        ours = encode_texts(export, [LONG, "short"], max_length=40, truncation=truncation)
        theirs = encode_texts(tokenizer, [LONG, "short"], max_length=40, truncation=truncation)
        assert ours.columns == theirs.columns
    windows = encode_windows(export, [LONG], max_length=40, stride=8)
    assert windows.columns == encode_windows(tokenizer, [LONG], max_length=40, stride=8).columns


@given(n=st.integers(0, 2000), budget=st.integers(6, 510), data=st.data())
def test_windows_cover_every_token_and_overlap_by_the_stride(n, budget, data):
    stride = data.draw(st.integers(0, budget - 1))
    starts = window_starts(n, budget, stride)
    assert starts[0] == 0 and starts == sorted(set(starts))
    covered = set()
    for s in starts:
        covered.update(range(s, min(n, s + budget)))
        assert s + budget <= max(n, budget)  # every window full (a text that fits is one window)
    assert covered == set(range(n))
    for a, b in zip(starts, starts[1:]):
        assert a + budget - b >= stride  # consecutive windows share at least `stride` tokens


def test_windows_rebuild_the_text(tokenizer):
    content = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    windows = encode_windows(tokenizer, ["short", LONG], max_length=64, stride=16)
    assert windows.owners[0] == 0 and set(windows.owners[1:]) == {1}
    assert windows.columns["input_ids"][0] == tokenizer("short")["input_ids"]
    starts = window_starts(len(content), 62, 16)
    assert len(windows.owners) == 1 + len(starts) > 2
    for row, start in zip(windows.columns["input_ids"][1:], starts):
        assert row == [tokenizer.cls_token_id, *content[start : start + 62], tokenizer.sep_token_id]


def test_pooling_is_mean_and_max_for_multi_label():
    logits = np.array([[1.0, 0.0], [3.0, -2.0], [5.0, 4.0], [0.0, 1.0]])
    owners = [0, 0, 0, 1]
    for kind in ("single_label_classification", "regression"):
        assert PROBLEM_TYPES[kind].pool(logits, owners, 2) == pytest.approx(np.array([[3.0, 2 / 3], [0.0, 1.0]]))
    assert PROBLEM_TYPES["multi_label_classification"].pool(logits, owners, 2).tolist() == [[5.0, 4.0], [0.0, 1.0]]


# ---------------------------------------------------------------------------------------------
# predict and eval on a model dir


@pytest.fixture
def tail_model_dir(varied_classifier_dir, tmp_path) -> Path:
    """The varied tiny classifier as a run dir whose recipe trained it on the tail of long texts."""
    out = tmp_path / "tail-run"
    shutil.copytree(varied_classifier_dir, out)
    (out / "recipe.toml").write_text('[model]\nname = "x"\nmax_length = 32\ntruncation = "tail"\n')
    return out


def _stock_logits(model_dir: Path, rows: list[list[int]]) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return np.concatenate([model(input_ids=torch.tensor([ids])).logits.numpy() for ids in rows])


def test_predict_uses_the_runs_truncation(tail_model_dir, tokenizer):
    from bertctl.inference import encode, load_for_inference, predict_texts

    classifier = load_for_inference(tail_model_dir)
    assert classifier.truncation == "tail" and classifier.max_length == 32
    ids = encode(classifier, [LONG]).columns["input_ids"][0]
    assert ids[1:-1] == tokenizer(LONG, add_special_tokens=False)["input_ids"][-30:]
    result = predict_texts(classifier, [LONG])
    expected = _stock_logits(tail_model_dir, [ids])[0]
    scores = result.predictions[0].scores
    assert [scores[label] for label in AGNEWS_LABELS] == pytest.approx(np.exp(expected) / np.exp(expected).sum(), abs=1e-5)
    assert result.tally.truncated == 1


def test_predict_chunks_pools_the_windows_logits(tail_model_dir):
    from bertctl.inference import load_for_inference, predict_texts, run_as_windows
    from bertctl.truncation import encode_windows

    classifier = load_for_inference(tail_model_dir)
    run_as_windows(classifier, stride=8)
    windows = encode_windows(classifier.tokenizer, [LONG], max_length=32, stride=8)
    assert len(windows.owners) > 10
    mean = _stock_logits(tail_model_dir, windows.columns["input_ids"]).mean(axis=0)
    result = predict_texts(classifier, [LONG, "short text"])
    scores = [result.predictions[0].scores[label] for label in AGNEWS_LABELS]
    assert scores == pytest.approx(np.exp(mean) / np.exp(mean).sum(), abs=1e-5)
    # a text that fits in one window scores as it does without --chunks
    plain = predict_texts(load_for_inference(tail_model_dir), ["short text"]).predictions[0].scores
    assert result.predictions[1].scores == pytest.approx(plain, abs=1e-5)  # batched beside padded windows: float noise only
    assert result.tally.truncated == 0  # windows drop nothing


def test_predict_cli_chunks_json(tail_model_dir):
    plain = runner.invoke(app, ["predict", "--model", str(tail_model_dir), "--json", LONG])
    chunked = runner.invoke(app, ["predict", "--model", str(tail_model_dir), "--json", "--chunks", "--stride", "8", LONG])
    assert plain.exit_code == 0 and chunked.exit_code == 0, plain.output + chunked.output
    assert "truncated" in plain.stderr and "--chunks reads them whole" in plain.stderr
    a, b = json.loads(plain.stdout), json.loads(chunked.stdout)
    assert a["scores"] != b["scores"]  # the windows saw the whole text, the tail only its end


def test_eval_chunks_on_a_file_scores_the_pooled_outputs(tail_model_dir, tmp_path):
    from bertctl.evaluation import evaluate_run
    from bertctl.inference import load_for_inference, predict_texts, run_as_windows

    rows = [{"text": f"{r['text']} {LONG}" if i % 2 else r["text"], "label": r["label"]} for i, r in enumerate(agnews_rows("dev", 30))]
    data = write_csv(tmp_path / "long.csv", rows)
    result = evaluate_run(tail_model_dir, data=data, chunks=True, stride=8)
    classifier = load_for_inference(tail_model_dir)
    run_as_windows(classifier, 8)
    predicted = [p.label for p in predict_texts(classifier, [r["text"] for r in rows]).predictions]
    accuracy = float(np.mean([p == r["label"] for p, r in zip(predicted, rows)]))
    assert result.metrics.overall["accuracy"] == pytest.approx(accuracy)
    assert result.truncated == 0
    long = sum(1 for r in rows if len(classifier.tokenizer(r["text"])["input_ids"]) > 32)
    assert long >= 15
    assert any(f"--chunks: {long} texts longer than 32 tokens ran as" in note for note in result.notes), result.notes
    plain = evaluate_run(tail_model_dir, data=data)
    assert plain.truncated == long and any("truncated (tail)" in note for note in plain.notes)


# ---------------------------------------------------------------------------------------------
# a recipe: the tokenize report and a trained run


@pytest.fixture
def long_recipe(tmp_path, tiny_bert_dir) -> Path:
    write_csv(tmp_path / "train.csv", agnews_rows("train", 120))
    write_csv(tmp_path / "dev.csv", agnews_rows("dev", 40))
    recipe = tmp_path / "long.toml"
    labels = ", ".join(f'"{label}"' for label in AGNEWS_LABELS)
    recipe.write_text(
        f'[model]\nname = "{tiny_bert_dir}"\nmax_length = 24\ntruncation = "head+tail"\n'
        f'[data]\ntrain = "train.csv"\nvalidation = "dev.csv"\nlabels = [{labels}]\n'
        f'[train]\nepochs = 1\nbatch_size = 16\nlearning_rate = 1e-3\nseed = 5\n[eval]\nsplit = "validation"\n'
        f'[output]\ndir = "{tmp_path / "runs" / "long"}"\n'
    )
    return recipe


def test_tokenize_report_counts_what_truncation_drops(long_recipe, tokenizer):
    from bertctl.recipe import load_recipe
    from bertctl.tokenization import tokenize_report
    from bertctl.truncation import windows_needed

    report = tokenize_report(load_recipe(long_recipe), tokenizer)
    dev = next(s for s in report.splits if s.name == "validation")
    lengths = [len(tokenizer(r["text"])["input_ids"]) for r in agnews_rows("dev", 40)]
    long = [n for n in lengths if n > 24]
    assert dev.over_max_length == len(long) > 0
    assert dev.tokens_dropped == sum(n - 24 for n in long)
    assert dev.chunk_windows == sum(windows_needed(n, 24, report.stride) for n in long) > len(long)
    assert report.truncation == "head+tail" and report.stride == 6
    shown = runner.invoke(app, ["tokenize", str(long_recipe)])
    assert shown.exit_code == 0, shown.output
    assert "head+tail (recipe) drops the middle" in shown.stdout and f"0 ({dev.chunk_windows:,} windows)" in shown.stdout
    assert "first 6 and the last 16 WordPieces" in shown.stdout


def test_the_cache_keeps_strategies_apart(long_recipe, tokenizer):
    """A tail recipe must not reuse the head+tail recipe's cached token ids."""
    from bertctl.data import tokenize_data
    from bertctl.recipe import load_recipe

    text = agnews_rows("train", 120)[0]["text"]
    content = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(content) > 22
    for truncation in ("head+tail", "tail", "head"):
        recipe = load_recipe(long_recipe, [f"model.truncation={truncation}"])
        first = tokenize_data(recipe, tokenizer).splits["train"]
        ids = [row for row in first["input_ids"] if row[1 : 1 + 3] == content[:3] or row[-4:-1] == content[-3:]]
        assert [tokenizer.cls_token_id, *kept_ids(content, 24, truncation), tokenizer.sep_token_id] in ids


@pytest.mark.slow
def test_train_eval_predict_with_head_tail_and_chunks(long_recipe):
    trained = runner.invoke(app, ["train", str(long_recipe)])
    assert trained.exit_code == 0, trained.output
    run = long_recipe.parent / "runs" / "long"
    assert 'truncation = "head+tail"' in (run / "recipe.toml").read_text()
    plain = runner.invoke(app, ["eval", str(run), "--json", "--report", str(run / "plain.json")])
    chunked = runner.invoke(app, ["eval", str(run), "--json", "--chunks", "--report", str(run / "chunked.json")])
    assert plain.exit_code == 0 and chunked.exit_code == 0, plain.output + chunked.output
    a, b = json.loads(plain.stdout), json.loads(chunked.stdout)
    assert a["data"]["examples"] == b["data"]["examples"] == 40
    assert a["data"]["truncated"] > 0 and b["data"]["truncated"] == 0
    assert any(note.startswith("--chunks:") for note in b["notes"])
    predicted = runner.invoke(app, ["predict", "--model", str(run), "--chunks", "--json", LONG])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.stdout)["label"] in AGNEWS_LABELS


def test_eval_chunks_refuses_pairs_named_on_the_command_line(tail_model_dir, tmp_path):
    from bertctl.errors import BertctlError
    from bertctl.evaluation import evaluate_run

    data = write_csv(tmp_path / "pairs.csv", [{"a": f"first {i}", "b": f"second {i}", "label": "World"} for i in range(4)])
    with pytest.raises(BertctlError, match="sentence pairs"):
        evaluate_run(tail_model_dir, data=data, text="a", text_pair="b", chunks=True)
