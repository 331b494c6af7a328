"""What BERT sees: WordPiece rows of one input, and the per-split report checked against a direct computation."""

from __future__ import annotations

import json
import math

import pytest

from bertctl.recipe import load_recipe
from bertctl.tokenization import explain_input, tokenize_report
from tests.conftest import write_csv


@pytest.fixture(scope="module")
def tokenizer(bundled_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundled_tokenizer_dir)


def test_tokenization_explain_single_word(tokenizer):
    rows = explain_input(tokenizer, "tokenization")
    assert [r.token for r in rows] == ["[CLS]", "token", "##ization", "[SEP]"]
    assert [r.position for r in rows] == [0, 1, 2, 3]
    assert [r.id for r in rows] == tokenizer("tokenization")["input_ids"]
    assert [r.segment for r in rows] == [0, 0, 0, 0]
    assert [r.attention for r in rows] == [1, 1, 1, 1]
    # both pieces belong to word 0; [CLS]/[SEP] to no word
    assert [r.word for r in rows] == [None, 0, 0, None]


def test_tokenization_explain_pair_segments(tokenizer):
    rows = explain_input(tokenizer, "The cat sat.", "A dog ran away")
    tokens = [r.token for r in rows]
    assert tokens == ["[CLS]", "the", "cat", "sat", ".", "[SEP]", "a", "dog", "ran", "away", "[SEP]"]
    first_sep = tokens.index("[SEP]")
    segments = [r.segment for r in rows]
    assert segments == [0] * (first_sep + 1) + [1] * (len(rows) - first_sep - 1)
    assert all(r.attention == 1 for r in rows)


def test_tokenization_explain_truncates_to_max_length(tokenizer):
    rows = explain_input(tokenizer, "one two three four five six seven eight", max_length=5)
    assert [r.token for r in rows] == ["[CLS]", "one", "two", "three", "[SEP]"]
    pair = explain_input(tokenizer, "one two three four", "five six seven eight", max_length=8)
    assert len(pair) == 8 and [r.token for r in pair].count("[SEP]") == 2


def test_tokenization_explain_lowercases_and_marks_unknowns(tokenizer):
    rows = explain_input(tokenizer, "HELLO \u2603")
    assert [r.token for r in rows] == ["[CLS]", "hello", "[UNK]", "[SEP]"]  # the uncased vocab has no snowman
    assert rows[2].id == tokenizer.unk_token_id


# ---------------------------------------------------------------------------------------------
# the report, against an independent computation


def nearest_rank(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@pytest.fixture
def report_recipe(tmp_path, bundled_tokenizer_dir):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    train = [{"text": " ".join(words[: 1 + i % 10]) + f" item{i}", "label": ["red", "green", "blue"][i % 3]} for i in range(40)]
    # validation: 3 texts copied from train (one of them twice), no 'blue' label
    validation = [train[0], train[1], train[1], train[4]] + [{"text": f"fresh text number {i}", "label": ["red", "green"][i % 2]} for i in range(6)]
    write_csv(tmp_path / "train.csv", train)
    write_csv(tmp_path / "dev.csv", validation)
    recipe = tmp_path / "rep.toml"
    recipe.write_text(
        f'[model]\nname = "{bundled_tokenizer_dir}"\nmax_length = 8\n[data]\ntrain = "train.csv"\nvalidation = "dev.csv"\n',
        encoding="utf-8",
    )
    return recipe, train, validation


def test_tokenization_report_numbers_match_a_direct_computation(report_recipe, tokenizer):
    path, train, validation = report_recipe
    report = tokenize_report(load_recipe(path), tokenizer)
    assert report.max_length == 8
    assert report.labels == ["blue", "green", "red"]
    by_name = {s.name: s for s in report.splits}
    assert list(by_name) == ["train", "validation"]
    for name, rows in (("train", train), ("validation", validation)):
        split = by_name[name]
        lengths = [len(tokenizer(r["text"])["input_ids"]) for r in rows]
        assert split.examples == len(rows)
        assert split.length_p50 == nearest_rank(lengths, 50)
        assert split.length_p90 == nearest_rank(lengths, 90)
        assert split.length_p99 == nearest_rank(lengths, 99)
        assert split.length_max == max(lengths)
        assert split.truncated_share == pytest.approx(sum(n > 8 for n in lengths) / len(rows))
        assert split.label_counts == {label: sum(r["label"] == label for r in rows) for label in ["blue", "green", "red"]}
        assert split.source.endswith("train.csv" if name == "train" else "dev.csv")
        assert split.empty_dropped == 0
    # some texts are longer than 8 tokens, some are not: the share is a real fraction
    assert 0 < by_name["train"].truncated_share < 1


def test_tokenization_report_duplicates_and_missing_labels(report_recipe, tokenizer):
    path, train, validation = report_recipe
    report = tokenize_report(load_recipe(path), tokenizer)
    # max_length 8 truncates; duplicates are judged on what the model sees, so count the same way
    seen = {tuple(tokenizer(r["text"], truncation=True, max_length=8)["input_ids"]) for r in train}
    expected = sum(tuple(tokenizer(r["text"], truncation=True, max_length=8)["input_ids"]) in seen for r in validation)
    assert report.duplicates == {"validation~train": expected}
    assert expected >= 4  # the 4 copied rows (one of them twice) count as examples, not distinct texts
    assert report.labels_missing == {"validation": ["blue"]}


def test_tokenization_report_unk_share(tmp_path, tokenizer, bundled_tokenizer_dir):
    texts = ["plain words here", "\u2603 \u2603 snow", "more plain words", "\u0f00 odd"]
    write_csv(tmp_path / "t.csv", [{"text": t, "label": i % 2} for i, t in enumerate(texts)])
    (tmp_path / "u.toml").write_text(f'[model]\nname = "{bundled_tokenizer_dir}"\n[data]\ntrain = "t.csv"\n', encoding="utf-8")
    report = tokenize_report(load_recipe(tmp_path / "u.toml"), tokenizer)
    ids = [tokenizer(t)["input_ids"] for t in texts]
    unk = sum(i == tokenizer.unk_token_id for row in ids for i in row)
    total = sum(len(row) for row in ids)
    assert unk == 3
    assert report.splits[0].unk_share == pytest.approx(unk / total)
    assert report.splits[0].truncated_share == 0


def test_tokenization_report_second_run_comes_from_cache_and_is_json(report_recipe, tokenizer):
    path, _, _ = report_recipe
    first = tokenize_report(load_recipe(path), tokenizer)
    second = tokenize_report(load_recipe(path), tokenizer)
    assert not first.from_cache and second.from_cache
    assert second.cache_dir == first.cache_dir
    assert [s.length_p90 for s in second.splits] == [s.length_p90 for s in first.splits]
    payload = json.loads(json.dumps(second.to_dict()))
    assert payload["splits"][0]["name"] == "train" and payload["duplicates"] == first.duplicates


def test_tokenization_report_pairs_count_both_texts(tmp_path, tokenizer, bundled_tokenizer_dir):
    rows = [{"a": "short one", "b": "a much longer second sentence here", "y": i % 2} for i in range(4)]
    write_csv(tmp_path / "p.csv", rows)
    (tmp_path / "p.toml").write_text(
        f'[model]\nname = "{bundled_tokenizer_dir}"\n[data]\ntrain = "p.csv"\ntext = "a"\ntext_pair = "b"\nlabel = "y"\n', encoding="utf-8"
    )
    report = tokenize_report(load_recipe(tmp_path / "p.toml"), tokenizer)
    assert report.splits[0].length_max == len(tokenizer("short one", "a much longer second sentence here")["input_ids"])


def test_tokenization_report_loads_the_recipe_tokenizer_itself(report_recipe):
    path, _, _ = report_recipe
    report = tokenize_report(load_recipe(path))
    assert report.splits[0].examples == 40
