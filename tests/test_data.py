"""A recipe's data: splits in every format, columns, row checks, labels, limits, held-out splits, tokenize cache.

Reading one file (formats, encodings, parse errors) and the label rule on their own are in test_inputs.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertctl.data import cache_key, load_data, tokenize_data
from bertctl.errors import DataError, RecipeError
from bertctl.inputs import read_table
from bertctl.labels import infer_labels
from bertctl.recipe import load_recipe
from conftest import ROWS, write_rows

def recipe_for(tmp_path: Path, data: str, extra: str = "") -> Path:
    path = tmp_path / "r.toml"
    path.write_text(f"[data]\n{data}\n{extra}", encoding="utf-8")
    return path


def load(tmp_path: Path, data: str, extra: str = "", overrides: list[str] | None = None):
    return load_data(load_recipe(recipe_for(tmp_path, data, extra), overrides))


def problems(excinfo) -> dict[str, str]:
    return {p.key: f"{p.message} | {p.fix}" for p in excinfo.value.problems}


# ---------------------------------------------------------------------------------------------
# formats


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_data_formats_load_into_text_and_label_ids(tmp_path, suffix):
    write_rows(tmp_path / f"train{suffix}", ROWS * 2)
    loaded = load(tmp_path, f'train = "train{suffix}"\nlabels = ["World", "Sports", "Business", "Sci/Tech"]')
    train = loaded.splits["train"]
    assert train.column_names == ["text", "label"]
    assert train["text"] == [r["text"] for r in ROWS * 2]
    assert train["label"] == [2, 1, 0, 3] * 2
    assert loaded.labels == ["World", "Sports", "Business", "Sci/Tech"]
    assert loaded.sources["train"] == str(tmp_path / f"train{suffix}")
    assert not loaded.is_pair


def test_data_sentence_pair_columns(tmp_path):
    rows = [{"s1": f"a sentence {i}", "s2": f"another one {i}", "y": i % 2} for i in range(6)]
    write_rows(tmp_path / "pairs.csv", rows)
    loaded = load(tmp_path, 'train = "pairs.csv"\ntext = "s1"\ntext_pair = "s2"\nlabel = "y"')
    train = loaded.splits["train"]
    assert loaded.is_pair
    assert train.column_names == ["text", "text_pair", "label"]
    assert train["text_pair"] == [r["s2"] for r in rows]
    assert train["label"] == [0, 1] * 3
    assert loaded.labels == ["0", "1"]


def test_data_csv_quoted_newline_and_comma_load_as_one_field(tmp_path):
    (tmp_path / "q.csv").write_text('text,label\n"line one\nline two, still one",a\nplain,b\n', encoding="utf-8")
    loaded = load(tmp_path, 'train = "q.csv"')
    assert loaded.splits["train"]["text"] == ["line one\nline two, still one", "plain"]


# ---------------------------------------------------------------------------------------------
# encodings


def test_data_utf8_bom_is_accepted_and_first_column_is_clean(tmp_path):
    (tmp_path / "bom.csv").write_bytes("\ufefftext,label\nhello,a\nworld,b\n".encode("utf-8"))
    frame = read_table(tmp_path / "bom.csv")
    assert list(frame.columns) == ["text", "label"]
    loaded = load(tmp_path, 'train = "bom.csv"')
    assert loaded.splits["train"]["text"] == ["hello", "world"]


# ---------------------------------------------------------------------------------------------
# columns


def test_data_missing_column_suggests_the_close_one(tmp_path):
    write_rows(tmp_path / "t.csv", [{"sentence": "a", "label": "x"}, {"sentence": "b", "label": "y"}])
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "t.csv"\ntext = "sentense"')
    found = problems(excinfo)["data.text"]
    assert "column 'sentense' not in" in found and "(columns: sentence, label)" in found
    assert "did you mean 'sentence'? set data.text = 'sentence'" in found


def test_data_missing_column_reported_for_every_split(tmp_path):
    write_rows(tmp_path / "t.csv", ROWS)
    write_rows(tmp_path / "v.csv", [{"body": r["text"], "label": r["label"]} for r in ROWS])
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "t.csv"\nvalidation = "v.csv"\nlabel = "category"')
    keys = [p.key for p in excinfo.value.problems]
    assert keys.count("data.label") == 2 and keys.count("data.text") == 1
    assert str(tmp_path / "v.csv") in str(excinfo.value)


def test_data_headers_with_spaces_and_hash(tmp_path):
    (tmp_path / "h.csv").write_text(" text , label\nhello,a\nworld,b\n", encoding="utf-8")
    assert list(read_table(tmp_path / "h.csv").columns) == ["text", "label"]
    assert load(tmp_path, 'train = "h.csv"').splits["train"]["text"] == ["hello", "world"]
    (tmp_path / "c.csv").write_text("# Text,Label\nhello,a\n", encoding="utf-8")
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "c.csv"')
    found = problems(excinfo)
    assert "did you mean '# Text'?" in found["data.text"]
    assert "did you mean 'Label'?" in found["data.label"]


def test_data_tsv_content_in_a_csv_gets_the_delimiter_hint(tmp_path):
    (tmp_path / "wrong.csv").write_text("text\tlabel\nhello\ta\nworld\tb\n", encoding="utf-8")
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "wrong.csv"')
    found = problems(excinfo)["data.text"]
    assert "tab-separated" in found and ".tsv" in found
    # with commas in the texts the parse itself fails; the hint is still there
    (tmp_path / "wrong2.csv").write_text("text\tlabel\nhello, you\ta\nworld, big, wide\tb\n", encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_table(tmp_path / "wrong2.csv")
    assert "looks like a TSV; rename it to .tsv" in excinfo.value.message


# ---------------------------------------------------------------------------------------------
# rows: empty texts


def test_data_empty_and_nan_texts_are_refused_with_their_lines(tmp_path):
    (tmp_path / "e.csv").write_text("text,label\nfine,a\n,b\n   ,a\nalso fine,b\n", encoding="utf-8")
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "e.csv"')
    found = problems(excinfo)["data.train"]
    assert "2 rows with an empty or NaN text" in found and "line 3, line 4" in found
    assert "drop_empty = true" in found
    (tmp_path / "n.jsonl").write_text('{"text": "x", "label": "a"}\n{"text": null, "label": "b"}\n{"label": "a"}\n{"text": "y", "label": "b"}\n')
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "n.jsonl"')
    assert "2 rows with an empty or NaN text" in problems(excinfo)["data.train"]
    assert "record 2, record 3" in problems(excinfo)["data.train"]


def test_data_line_numbers_count_quoted_newlines(tmp_path):
    (tmp_path / "q.csv").write_text('text,label\n"two\nlines",a\n,b\nok,a\n', encoding="utf-8")
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "q.csv"')
    assert ": line 4" in problems(excinfo)["data.train"]


def test_data_drop_empty_drops_and_reports_them(tmp_path):
    (tmp_path / "e.csv").write_text("text,label\nfine,a\n,b\n   ,a\nalso fine,b\nthird,a\n", encoding="utf-8")
    loaded = load(tmp_path, 'train = "e.csv"\ndrop_empty = true')
    assert loaded.splits["train"]["text"] == ["fine", "also fine", "third"]
    assert loaded.dropped_empty == {"train": 2}


def test_data_drop_empty_keeps_file_lines_in_later_problems(tmp_path):
    # rows dropped before labels are checked must not shift the line a label problem names
    (tmp_path / "e.csv").write_text("text,label\n,a\n,a\nfine,a\nbad,zzz\nok,b\n", encoding="utf-8")
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "e.csv"\ndrop_empty = true\nlabels = ["a", "b"]')
    assert "'zzz' (line 5, 1 row)" in problems(excinfo)["data.label"]


def test_data_pair_text_checked_too(tmp_path):
    write_rows(tmp_path / "p.csv", [{"a": "x", "b": "y", "label": 0}, {"a": "x", "b": "", "label": 1}])
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "p.csv"\ntext = "a"\ntext_pair = "b"')
    assert "1 row with an empty or NaN text" in problems(excinfo)["data.train"]


# ---------------------------------------------------------------------------------------------
# labels


def test_data_labels_outside_the_label_list(tmp_path):
    write_rows(tmp_path / "t.csv", ROWS + [{"text": "x", "label": "Politics"}, {"text": "y", "label": "Politics"}])
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "t.csv"\nlabels = ["World", "Sports", "Business", "Sci/Tech"]')
    found = problems(excinfo)["data.label"]
    assert "'Politics' (line 6, 2 rows)" in found and "add them to data.labels" in found


def test_data_validation_labels_outside_inferred_train_labels(tmp_path):
    write_rows(tmp_path / "t.csv", ROWS)
    write_rows(tmp_path / "v.csv", [{"text": "z", "label": "Health"}])
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "t.csv"\nvalidation = "v.csv"')
    assert "'Health'" in problems(excinfo)["data.validation"]


def test_data_validation_label_typo_without_data_labels_gets_a_did_you_mean(tmp_path):
    write_rows(tmp_path / "t.csv", [{"text": f"review {i}", "label": ["positive", "negative"][i % 2]} for i in range(6)])
    write_rows(tmp_path / "v.csv", [{"text": "fine", "label": "postive"}, {"text": "bad", "label": "negative"}])
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "t.csv"\nvalidation = "v.csv"')
    found = problems(excinfo)["data.validation"]
    assert "'postive' (line 2, 1 row)" in found and "did you mean 'positive' for 'postive'?" in found
    assert "add them to data.labels" not in found  # the recipe has no such key to add to


def test_data_integer_labels_outside_range(tmp_path):
    write_rows(tmp_path / "t.csv", [{"text": "a", "label": 0}, {"text": "b", "label": 1}, {"text": "c", "label": 4}, {"text": "d", "label": -1}])
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "t.csv"\nlabels = ["neg", "pos"]')
    found = problems(excinfo)["data.label"]
    assert "integer labels outside 0..1: 4 (line 4, 1 row), -1 (line 5, 1 row)" in found
    assert "2 classes: neg, pos" in found


def test_data_integer_labels_in_range_map_to_ids(tmp_path):
    write_rows(tmp_path / "t.csv", [{"text": t, "label": i} for i, t in enumerate("abcd")] * 2)
    loaded = load(tmp_path, 'train = "t.csv"\nlabels = ["World", "Sports", "Business", "Sci/Tech"]')
    assert loaded.splits["train"]["label"] == [0, 1, 2, 3] * 2
    # jsonl ids arrive as numbers (and 1.0 from tools that write floats)
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": 1.0}\n{"text": "b", "label": 0}\n', encoding="utf-8")
    assert load(tmp_path, 'train = "t.jsonl"\nlabels = ["x", "y"]').splits["train"]["label"] == [1, 0]


def test_data_single_class_is_refused(tmp_path):
    write_rows(tmp_path / "t.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "t.csv"')
    assert "single class ('x')" in problems(excinfo)["data.train"]


def test_data_empty_labels_are_refused(tmp_path):
    write_rows(tmp_path / "t.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": ""}, {"text": "c", "label": "y"}])
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "t.csv"')
    assert "1 row with an empty or NaN label" in problems(excinfo)["data.label"]


def test_data_nan_and_null_labels_are_not_classes(tmp_path):
    # issue 28: a literal NaN in a csv became a class ('labels: Business, NaN, Sci/Tech, ...')
    (tmp_path / "t.csv").write_text("text,label\na,x\nb,NaN\nc,y\nd,null\ne,x\n", encoding="utf-8")
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "t.csv"')
    found = problems(excinfo)["data.label"]
    assert "2 rows with an empty or NaN label" in found and "line 3, line 5" in found and "drop_empty = true" in found
    (tmp_path / "v.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n{"text": "c", "label": NaN}\n', encoding="utf-8")
    with pytest.raises(RecipeError) as excinfo:
        load(tmp_path, 'train = "t.csv"\nvalidation = "v.jsonl"\ndrop_empty = false\nlabels = ["x", "y"]')
    assert "2 rows with an empty or NaN label" in problems(excinfo)["data.validation"] and "record 2, record 3" in problems(excinfo)["data.validation"]


def test_data_drop_empty_drops_rows_without_a_label_too(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\na,x\nb,NaN\n,y\nd,\ne,y\nf,x\n", encoding="utf-8")
    loaded = load(tmp_path, 'train = "t.csv"\ndrop_empty = true')
    assert loaded.labels == ["x", "y"]
    assert loaded.splits["train"]["text"] == ["a", "e", "f"]
    assert loaded.dropped_empty == {"train": 3}
    assert loaded.dropped_rows == {"train": {"empty text": [2], "empty label": [1, 3]}}
    assert loaded.kept_rows == {"train": [0, 4, 5]}


def test_data_a_listed_nan_class_stays_a_class(tmp_path):
    # the marker is missing only when the class list does not name it
    (tmp_path / "t.csv").write_text("text,label\na,NaN\nb,x\nc,NaN\n", encoding="utf-8")
    assert load(tmp_path, 'train = "t.csv"\nlabels = ["x", "NaN"]').splits["train"]["label"] == [1, 0, 1]


def test_data_labels_inferred_ints_numeric_names_sorted(tmp_path):
    assert infer_labels(["10", "2", 1, "2", " 10 "]) == ["1", "2", "10"]
    assert infer_labels(["b", "a", " c", "a", float("nan"), None, "", "NaN", " null ", "<NA>"]) == ["a", "b", "c"]
    assert infer_labels(["1", "x"]) == ["1", "x"]
    write_rows(tmp_path / "t.csv", [{"text": t, "label": lab} for t, lab in zip("abcd", ["10", "2", "10", "1"])])
    loaded = load(tmp_path, 'train = "t.csv"')
    assert loaded.labels == ["1", "2", "10"]
    assert loaded.splits["train"]["label"] == [2, 1, 2, 0]


def test_data_label_names_are_matched_without_surrounding_spaces(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\na, World\nb,Sports \n", encoding="utf-8")
    assert load(tmp_path, 'train = "t.csv"\nlabels = ["World", "Sports"]').splits["train"]["label"] == [0, 1]


# ---------------------------------------------------------------------------------------------
# limits and held-out validation


def many_rows(n: int) -> list[dict]:
    return [{"text": f"example number {i} with enough words to be cut short", "label": ["a", "b", "c"][i % 3]} for i in range(n)]


def test_data_limit_takes_a_seeded_sample(tmp_path):
    write_rows(tmp_path / "t.csv", many_rows(100))
    first = load(tmp_path, 'train = "t.csv"\n[data.limit]\ntrain = 10').splits["train"]["text"]
    again = load(tmp_path, 'train = "t.csv"\n[data.limit]\ntrain = 10').splits["train"]["text"]
    other = load(tmp_path, 'train = "t.csv"\n[data.limit]\ntrain = 10', overrides=["train.seed=1"]).splits["train"]["text"]
    assert len(first) == 10 and first == again
    assert first != other
    # a random sample, not the head of the file (files are often sorted)
    assert first != [r["text"] for r in many_rows(10)]
    assert len(set(first)) == 10


def test_data_limit_larger_than_split_keeps_everything(tmp_path):
    write_rows(tmp_path / "t.csv", many_rows(6))
    assert len(load(tmp_path, 'train = "t.csv"\n[data.limit]\ntrain = 100').splits["train"]) == 6


def test_data_validation_fraction_carves_a_disjoint_split(tmp_path):
    write_rows(tmp_path / "t.csv", many_rows(100))
    loaded = load(tmp_path, 'train = "t.csv"\nvalidation_fraction = 0.2')
    train, validation = loaded.splits["train"]["text"], loaded.splits["validation"]["text"]
    assert len(validation) == 20 and len(train) == 80
    assert not set(train) & set(validation)
    assert set(train) | set(validation) == {r["text"] for r in many_rows(100)}
    assert "20% held out, seed 42" in loaded.sources["validation"]
    assert load(tmp_path, 'train = "t.csv"\nvalidation_fraction = 0.2').splits["validation"]["text"] == validation


def test_data_validation_fraction_too_small_for_the_data(tmp_path):
    write_rows(tmp_path / "t.csv", many_rows(3))
    with pytest.raises(DataError, match="leaves 3 for validation and 0 for training"):
        load(tmp_path, 'train = "t.csv"\nvalidation_fraction = 0.9')


# ---------------------------------------------------------------------------------------------
# tokenize cache


@pytest.fixture(scope="module")
def tokenizer(bundled_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundled_tokenizer_dir)


def test_data_tokenize_second_call_is_a_cache_hit(tmp_path, tokenizer, bundled_tokenizer_dir):
    from transformers import AutoTokenizer

    write_rows(tmp_path / "t.csv", many_rows(30))
    recipe = load_recipe(recipe_for(tmp_path, 'train = "t.csv"\nvalidation_fraction = 0.2'))
    first = tokenize_data(recipe, tokenizer)
    assert not first.from_cache and first.cache_dir is not None and (first.cache_dir / "meta.json").is_file()
    second = tokenize_data(recipe, tokenizer)
    assert second.from_cache and second.cache_dir == first.cache_dir
    # a freshly loaded tokenizer is the same tokenizer: its state from earlier calls must not matter
    third = tokenize_data(recipe, AutoTokenizer.from_pretrained(bundled_tokenizer_dir))
    assert third.from_cache
    for name in ("train", "validation"):
        assert second.splits[name]["input_ids"] == first.splits[name]["input_ids"]
        assert second.splits[name]["label"] == first.splits[name]["label"]
    assert second.labels == first.labels == ["a", "b", "c"]
    assert second.sources == first.sources


@pytest.mark.slow
def test_data_tokenize_cache_misses_on_max_length_and_file_bytes(tmp_path, tokenizer):
    write_rows(tmp_path / "t.csv", many_rows(30))
    path = recipe_for(tmp_path, 'train = "t.csv"')
    first = tokenize_data(load_recipe(path), tokenizer)
    shorter = tokenize_data(load_recipe(path, ["model.max_length=8"]), tokenizer)
    assert not shorter.from_cache and shorter.cache_dir != first.cache_dir
    assert max(shorter.splits["train"]["length"]) == 8
    write_rows(tmp_path / "t.csv", many_rows(31))
    changed = tokenize_data(load_recipe(path), tokenizer)
    assert not changed.from_cache and len(changed.splits["train"]) == 31
    assert cache_key(load_recipe(path), tokenizer) != cache_key(load_recipe(path, ["data.limit.train=5"]), tokenizer)


def test_data_tokenize_columns_and_truncation(tmp_path, tokenizer):
    write_rows(tmp_path / "t.csv", [{"text": "word " * 50, "label": "a"}, {"text": "short", "label": "b"}])
    data = tokenize_data(load_recipe(recipe_for(tmp_path, 'train = "t.csv"'), ["model.max_length=16"]), tokenizer)
    train = data.splits["train"]
    assert {"input_ids", "attention_mask", "token_type_ids", "label", "length", "n_tokens"} <= set(train.column_names)
    assert train["length"] == [16, 3] and train["n_tokens"] == [52, 3]
    assert train["input_ids"][0][0] == tokenizer.cls_token_id and train["input_ids"][0][-1] == tokenizer.sep_token_id


def test_data_tokenize_cache_entry_is_never_swapped_under_a_reader(tmp_path, tokenizer):
    # a second process (a sweep worker, an accelerate rank) that tokenized the same data writes the same key: the
    # entry a first process may be reading stays in place (CI once saw a worker's arrow file deleted mid-read)
    from bertctl.data import _save_cache, load_data

    write_rows(tmp_path / "t.csv", many_rows(10))
    recipe = load_recipe(recipe_for(tmp_path, 'train = "t.csv"'))
    first = tokenize_data(recipe, tokenizer)
    arrow = next((first.cache_dir / "splits" / "train").glob("*.arrow"))
    inode = arrow.stat().st_ino
    _save_cache(first.cache_dir, first.splits, load_data(recipe))
    assert arrow.stat().st_ino == inode and list(first.splits["train"]["input_ids"])
    assert [p.name for p in first.cache_dir.parent.iterdir()] == [first.cache_dir.name]  # its temp dir removed


def test_data_tokenize_corrupt_cache_is_rebuilt(tmp_path, tokenizer):
    write_rows(tmp_path / "t.csv", many_rows(10))
    recipe = load_recipe(recipe_for(tmp_path, 'train = "t.csv"'))
    first = tokenize_data(recipe, tokenizer)
    (first.cache_dir / "meta.json").write_text("{not json")
    again = tokenize_data(recipe, tokenizer)
    assert not again.from_cache and len(again.splits["train"]) == 10
    assert tokenize_data(recipe, tokenizer).from_cache


# ---------------------------------------------------------------------------------------------
# hub datasets (datasets.load_dataset replaced by in-memory splits with the real schemas)


REPO = Path(__file__).resolve().parents[1]


def fake_hub(monkeypatch, splits: dict):
    import datasets

    calls = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        if split not in splits:
            raise ValueError(f"Unknown split {split!r}. Should be one of {list(splits)}.")
        return splits[split]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def mrpc_split(labels: list[int]):
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"sentence1": Value("string"), "sentence2": Value("string"), "label": ClassLabel(names=["not_equivalent", "equivalent"]), "idx": Value("int32")})
    rows = {"sentence1": [f"first {i}" for i in range(len(labels))], "sentence2": [f"second {i}" for i in range(len(labels))], "label": labels, "idx": list(range(len(labels)))}
    return Dataset.from_dict(rows, features=features)


def test_data_hub_mrpc_recipe_reads_pairs_by_class_name(monkeypatch):
    calls = fake_hub(monkeypatch, {"train": mrpc_split([0, 1, 1, 0, 1]), "validation": mrpc_split([1, 0]), "test": mrpc_split([-1, -1])})
    loaded = load_data(load_recipe(REPO / "recipes" / "mrpc.toml"))
    assert calls == [("nyu-mll/glue", "mrpc", "train"), ("nyu-mll/glue", "mrpc", "validation")]  # never the unlabeled test split
    assert loaded.is_pair and loaded.labels == ["not_equivalent", "equivalent"]
    # GLUE's validation split is the held-out test; validation is carved from train (1 of its 5 rows)
    assert loaded.splits["test"]["label"] == [1, 0] and loaded.sources["test"] == "nyu-mll/glue/mrpc[validation]"
    assert (len(loaded.splits["train"]), len(loaded.splits["validation"])) == (4, 1)
    carved = {t: l for split in ("train", "validation") for t, l in zip(loaded.splits[split]["text_pair"], loaded.splits[split]["label"])}
    assert carved == {f"second {i}": label for i, label in enumerate([0, 1, 1, 0, 1])}


def test_data_hub_labels_in_another_order_are_matched_by_name(monkeypatch):
    fake_hub(monkeypatch, {"train": mrpc_split([0, 1, 1]), "validation": mrpc_split([1, 0])})
    loaded = load_data(load_recipe(REPO / "recipes" / "mrpc.toml", ['data.labels=["equivalent", "not_equivalent"]']))
    assert loaded.labels == ["equivalent", "not_equivalent"]
    assert loaded.splits["test"]["label"] == [0, 1]  # GLUE's validation [1, 0]: equivalent is now id 0


def test_data_hub_hidden_test_labels_are_reported(monkeypatch):
    fake_hub(monkeypatch, {"train": mrpc_split([0, 1]), "validation": mrpc_split([1, 0]), "test": mrpc_split([-1, -1, -1])})
    with pytest.raises(RecipeError) as excinfo:
        load_data(load_recipe(REPO / "recipes" / "mrpc.toml", ["data.test=test"]))
    found = problems(excinfo)["data.test"]
    assert "integer labels outside 0..1: -1 (row 1, 3 rows)" in found and "unlabeled" in found


def test_data_hub_agnews_recipe_carves_validation(monkeypatch):
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["World", "Sports", "Business", "Sci/Tech"])})
    train = Dataset.from_dict({"text": [f"news item {i}" for i in range(100)], "label": [i % 4 for i in range(100)]}, features=features)
    test = Dataset.from_dict({"text": ["a", "b"], "label": [3, 0]}, features=features)
    fake_hub(monkeypatch, {"train": train, "test": test})
    loaded = load_data(load_recipe(REPO / "recipes" / "agnews-bert-base.toml"))
    assert len(loaded.splits["validation"]) == 5 and len(loaded.splits["train"]) == 95
    assert not set(loaded.splits["validation"]["text"]) & set(loaded.splits["train"]["text"])
    assert loaded.splits["test"]["label"] == [3, 0]


def test_data_hub_unknown_split_is_a_data_error(monkeypatch):
    fake_hub(monkeypatch, {"train": mrpc_split([0, 1])})
    with pytest.raises(DataError) as excinfo:
        load_data(load_recipe(REPO / "recipes" / "mrpc.toml"))
    assert "nyu-mll/glue/mrpc[validation]" in excinfo.value.message and "Unknown split" in excinfo.value.message


@pytest.mark.slow
def test_data_hub_splits_are_tokenized_once_and_cached_by_fingerprint(monkeypatch, bundled_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_dir)
    recipe = load_recipe(REPO / "recipes" / "mrpc.toml")
    fake_hub(monkeypatch, {"train": mrpc_split([0, 1, 1, 0, 1]), "validation": mrpc_split([1, 0])})
    first = tokenize_data(recipe, tokenizer)
    second = tokenize_data(recipe, tokenizer)
    assert not first.from_cache and second.from_cache and second.cache_dir == first.cache_dir
    assert second.splits["train"]["input_ids"] == first.splits["train"]["input_ids"]
    # new data behind the same hub id (another revision): another fingerprint, so tokenized afresh
    fake_hub(monkeypatch, {"train": mrpc_split([1, 1, 0, 0, 1, 0]), "validation": mrpc_split([1, 0])})
    changed = tokenize_data(recipe, tokenizer)
    assert not changed.from_cache and changed.cache_dir != first.cache_dir and len(changed.splits["train"]) == 5  # 6, one carved into validation
    # a split that can't be loaded skips the cache, and loading reports the problem
    fake_hub(monkeypatch, {"train": mrpc_split([0, 1])})
    with pytest.raises(DataError, match="validation"):
        tokenize_data(recipe, tokenizer)
