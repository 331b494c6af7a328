"""bertctl attention: head statistics on hand-built tensors, position analysis, and the CLI's files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from bertctl.attention import (
    STATISTICS,
    analyse_positions,
    head_statistics,
    is_punctuation,
    run_attention,
    sinusoidal_table,
    spearman,
    token_kinds,
)
from bertctl.cli import app
from bertctl.modeling import load_encoder
from tests.conftest import agnews_rows, write_csv

runner = CliRunner()


def masks(n: int, cls=(0,), sep=(), punct=()):
    out = {}
    for name, where in (("is_cls", cls), ("is_sep", sep), ("is_punct", punct)):
        m = np.zeros(n, dtype=bool)
        m[list(where)] = True
        out[name] = m
    return out


def test_attention_all_on_cls_gives_share_one_and_zero_entropy():
    n = 6
    attn = np.zeros((2, 3, n, n))
    attn[..., 0] = 1.0
    means = head_statistics(attn, **masks(n, cls=(0,), sep=(n - 1,))).means()
    assert means["cls"].shape == (2, 3)
    np.testing.assert_allclose(means["cls"], 1.0)
    np.testing.assert_allclose(means["sep"], 0.0)
    np.testing.assert_allclose(means["entropy"], 0.0, atol=1e-12)
    # only query 0 attends to itself: 1 of n queries
    np.testing.assert_allclose(means["self"], 1.0 / n)
    # only query 1 has [CLS] as its previous token; n - 1 queries have a previous token
    np.testing.assert_allclose(means["prev"], 1.0 / (n - 1))
    np.testing.assert_allclose(means["next"], 0.0)


def test_attention_uniform_rows_give_entropy_log_n_and_share_by_count():
    n = 8
    attn = np.full((1, 2, n, n), 1.0 / n)
    means = head_statistics(attn, **masks(n, cls=(0,), sep=(3, 7), punct=(2, 5, 6))).means()
    np.testing.assert_allclose(means["entropy"], math.log(n))
    np.testing.assert_allclose(means["cls"], 1 / n)
    np.testing.assert_allclose(means["sep"], 2 / n)
    np.testing.assert_allclose(means["punct"], 3 / n)
    for name in ("self", "next", "prev"):
        np.testing.assert_allclose(means[name], 1 / n)


def test_attention_diagonal_shifts_give_self_next_prev():
    n = 5
    eye = np.eye(n)
    shifted_next = np.eye(n, k=1)
    shifted_next[-1, -1] = 1.0  # the last token has no next token: it attends to itself
    shifted_prev = np.eye(n, k=-1)
    shifted_prev[0, 0] = 1.0
    attn = np.stack([eye, shifted_next, shifted_prev])[None]  # 1 layer, 3 heads
    means = head_statistics(attn, **masks(n)).means()
    np.testing.assert_allclose(means["self"][0], [1.0, 1 / n, 1 / n])
    np.testing.assert_allclose(means["next"][0], [0.0, 1.0, 0.0])  # averaged over the n - 1 queries that have a next token
    np.testing.assert_allclose(means["prev"][0], [0.0, 0.0, 1.0])


def test_attention_padding_is_excluded_as_query_and_key():
    # 3 real tokens + 2 padding; the padded rows hold garbage that must not count
    n, real = 5, 3
    attn = np.zeros((1, 1, n, n))
    attn[0, 0, :real, :real] = 1.0 / real
    attn[0, 0, real:, :] = 0.0
    attn[0, 0, real:, real] = 1.0  # padding queries attend to padding
    valid = np.array([True] * real + [False] * (n - real))
    means = head_statistics(attn, **masks(n, cls=(0,), sep=(2,)), valid=valid).means()
    np.testing.assert_allclose(means["entropy"], math.log(real))
    np.testing.assert_allclose(means["cls"], 1 / real)
    np.testing.assert_allclose(means["self"], 1 / real)


def test_attention_batch_statistics_are_token_weighted_sums():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 2, 3, 6, 6))
    attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    valid = np.array([[True] * 6, [True] * 4 + [False] * 2])
    attn[1, ..., 4:] = 0.0
    attn[1] /= attn[1].sum(-1, keepdims=True)
    kinds = {"is_cls": np.zeros((2, 6), bool), "is_sep": np.zeros((2, 6), bool), "is_punct": np.zeros((2, 6), bool)}
    kinds["is_cls"][:, 0] = True
    together = head_statistics(attn, **kinds, valid=valid)
    first = head_statistics(attn[0], **{k: v[0] for k, v in kinds.items()}, valid=valid[0])
    second = head_statistics(attn[1], **{k: v[1] for k, v in kinds.items()}, valid=valid[1])
    summed = first + second
    assert together.texts == summed.texts == 2
    for name in STATISTICS:
        np.testing.assert_allclose(together.means()[name], summed.means()[name])
    # token-weighted: 6 + 4 queries, not the mean of two per-text means
    expected = (first.means()["cls"] * 6 + second.means()["cls"] * 4) / 10
    np.testing.assert_allclose(together.means()["cls"], expected)


def test_attention_rejects_non_square_maps():
    with pytest.raises(ValueError):
        head_statistics(np.zeros((1, 1, 3, 4)), **masks(3))


def test_attention_punctuation_detection():
    assert is_punctuation(".") and is_punctuation(",") and is_punctuation("##!") and is_punctuation("'")
    assert not is_punctuation("man") and not is_punctuation("[CLS]") and not is_punctuation("##s") and not is_punctuation("")


def test_attention_real_model_rows_sum_to_one_and_shapes_match(tiny_classifier_dir):
    from transformers import AutoTokenizer

    model = load_encoder(str(tiny_classifier_dir))
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    texts = ["The man went to the store.", "Stocks fell sharply on Monday, analysts said."]
    encoding, maps = run_attention(model, tokenizer, texts, max_length=32)
    batch, n = encoding["input_ids"].shape
    assert maps.shape == (batch, model.config.num_hidden_layers, model.config.num_attention_heads, n, n)
    mask = encoding["attention_mask"].numpy().astype(bool)
    for b in range(batch):
        rows = maps[b][..., mask[b], :].sum(-1)
        np.testing.assert_allclose(rows, 1.0, atol=1e-5)
        np.testing.assert_allclose(maps[b][..., mask[b], :][..., ~mask[b]], 0.0, atol=1e-6)
    kinds = token_kinds(tokenizer, encoding["input_ids"].numpy(), encoding["attention_mask"].numpy())
    assert kinds["is_cls"][:, 0].all() and kinds["is_cls"].sum() == batch
    assert kinds["is_sep"].sum() == batch and kinds["is_punct"].sum() == 3  # '.', ',' and '.'
    means = head_statistics(maps, **kinds).means()
    for name in STATISTICS:
        assert means[name].shape == (2, 2)
        assert np.isfinite(means[name]).all()
    assert ((means["entropy"] >= 0) & (means["entropy"] <= math.log(n) + 1e-9)).all()


def test_attention_spearman_with_ties_matches_pearson_of_average_ranks():
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    # ties: x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4)
    rx = np.array([1, 2.5, 2.5, 4]) - 2.5
    ry = np.array([1, 2, 3, 4]) - 2.5
    assert spearman(np.array([1, 5, 5, 9]), np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx((rx * ry).sum() / math.sqrt((rx**2).sum() * (ry**2).sum()))


def test_attention_positions_sinusoidal_table_has_equal_norms_and_falling_similarity():
    report = analyse_positions(sinusoidal_table(128, 64))
    assert report.norm_cv == pytest.approx(0.0, abs=1e-9)
    assert report.distance_spearman < -0.8
    assert report.similarity_at[1] > report.similarity_at[8] > report.similarity_at[64]
    assert report.similarity.shape == (128, 128)
    np.testing.assert_allclose(np.diag(report.similarity), 1.0)


def test_attention_positions_random_table_shows_no_distance_structure():
    table = np.random.default_rng(0).normal(size=(128, 64))
    table[5] *= 10  # one outlier norm
    report = analyse_positions(table)
    assert abs(report.distance_spearman) < 0.1
    assert abs(report.similarity_at[1]) < 0.1
    assert report.largest_norm_position == 5
    assert report.norm_cv > 0.3
    assert analyse_positions(table, 16).positions == 16
    assert 64 not in analyse_positions(table, 16).similarity_at


# ---------------------------------------------------------------------------------------------
# CLI


@pytest.mark.slow
def test_attention_cli_writes_layer_pngs_and_index(tiny_classifier_dir, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["attention", "--model", str(tiny_classifier_dir), "--out", str(out), "The man went to the store.", "He bought milk."])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.glob("*.png")} == {"layer00.png", "layer01.png", "statistics.png"}
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = (out / "index.html").read_text()
    assert "layer00.png" in index and "statistics.png" in index and "He bought milk." in index
    report = json.loads((out / "attention.json").read_text())
    assert report["tokens"][0] == "[CLS]" and report["tokens"].count("[SEP]") == 2
    assert set(report["statistics"]) == set(STATISTICS)
    assert np.asarray(report["statistics"]["cls"]).shape == (2, 2)
    assert "[CLS]" in result.output and "entropy" in result.output
    assert not list(tmp_path.glob(".report.*"))  # the temp dir was renamed, not left behind


@pytest.mark.slow
def test_attention_cli_layer_and_head_draw_one_png_per_head(tiny_bert_dir, tmp_path):
    out = tmp_path / "one"
    result = runner.invoke(app, ["attention", "-m", str(tiny_bert_dir), "--layer", "1", "--out", str(out), "A short text."])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.glob("layer*.png")} == {"layer01_head00.png", "layer01_head01.png"}
    result = runner.invoke(app, ["attention", "-m", str(tiny_bert_dir), "--layer", "0", "--head", "1", "--out", str(out), "A short text."])
    assert result.exit_code == 0, result.output  # its own earlier report: replaced
    assert {p.name for p in out.glob("layer*.png")} == {"layer00_head01.png"}


@pytest.mark.slow
def test_attention_cli_default_out_is_a_slug_under_cwd(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["attention", "-m", str(tiny_bert_dir), "Hello, World!"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "attention" / "hello-world" / "index.html").is_file()


def test_attention_cli_refuses_foreign_out_dir_and_bad_indices(tiny_bert_dir, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["attention", "-m", str(tiny_bert_dir), "--out", str(foreign), "text"])
    assert result.exit_code == 2
    assert "did not write" in result.output
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1

    result = runner.invoke(app, ["attention", "-m", str(tiny_bert_dir), "--out", str(tmp_path / "x"), "--head", "2", "text"])
    assert result.exit_code == 2 and "numbered 0..1" in result.output
    result = runner.invoke(app, ["attention", "-m", str(tiny_bert_dir), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "nothing to show" in result.output
    result = runner.invoke(app, ["attention", "-m", str(tiny_bert_dir), "a", "b", "c"])
    assert result.exit_code == 2 and "got 3 texts" in result.output


def test_attention_cli_positions_on_tiny_model(tiny_bert_dir, tmp_path):
    out = tmp_path / "pos"
    result = runner.invoke(app, ["attention", "--positions", "-m", str(tiny_bert_dir), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["positions"]["positions"] == 128  # the tiny config's max_position_embeddings
    assert payload["positions"]["norm_cv"] >= 0
    assert (out / "positions.png").is_file() and "positions.png" in (out / "index.html").read_text()
    result = runner.invoke(app, ["attention", "--positions", "-m", str(tiny_bert_dir), "--out", str(out), "--max-length", "64"])
    assert result.exit_code == 0, result.output
    assert "64 positions" in result.output and "Spearman" in result.output and "coefficient of variation" in result.output


def test_attention_cli_data_averages_over_csv(tiny_classifier_dir, tmp_path):
    data = write_csv(tmp_path / "news.csv", [{"body": r["text"], "label": r["label"]} for r in agnews_rows("train", 12)])
    out = tmp_path / "stats"
    result = runner.invoke(app, ["attention", "-m", str(tiny_classifier_dir), "--data", str(data), "--text", "body", "--limit", "5", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["texts"] == 5
    assert np.asarray(payload["statistics"]["entropy"]).shape == (2, 2)
    assert (out / "statistics.png").is_file() and not list(out.glob("layer*.png"))
    assert "statistics.png" in (out / "index.html").read_text()

    result = runner.invoke(app, ["attention", "-m", str(tiny_classifier_dir), "--data", str(data), "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "'text'" in result.output and "body" in result.output


def test_attention_cli_data_from_recipe(small_recipe, tiny_bert_dir, tmp_path):
    out = tmp_path / "recipe-stats"
    result = runner.invoke(app, ["attention", "-m", str(tiny_bert_dir), "--data", str(small_recipe), "--limit", "8", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["texts"] == 8


@pytest.mark.slow
def test_attention_cli_prints_bracketed_paths_and_texts_verbatim(tiny_bert_dir, tmp_path):
    # rich reads "[red]" as markup and drops it; paths and texts must be printed as they are
    folder = tmp_path / "a[red]b"
    folder.mkdir()
    data = write_csv(folder / "news.csv", [{"text": r["text"]} for r in agnews_rows("train", 4)])
    result = runner.invoke(app, ["attention", "-m", str(tiny_bert_dir), "--data", str(data), "--out", str(folder / "out"), "[b]bold?[/b]"])
    assert result.exit_code == 0, result.output
    assert "a[red]b" in result.output
