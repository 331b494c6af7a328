"""A recipe's splits (local files or a hub dataset), checked row by row, labels encoded, tokenized, cached.

    data = load_data(recipe)                      # RecipeError listing every bad row/column
    tokenized = tokenize_data(recipe, tokenizer)  # DatasetDict, cached as Arrow: a second call is instant

Every split ends up with the same columns, whatever the source called them: `text`, optionally `text_pair`,
and `label` (an integer class id into `labels`). Files are read, and rows named, by bertctl.inputs, the input
layer every command shares; labels are mapped by bertctl.labels, the one label rule.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertctl.cache import cache_root
from bertctl.errors import DataError, Problem, RecipeError
from bertctl.inputs import blank_text_problem, column_problems, first_line, read_table, read_texts
from bertctl.labels import encode_indicators, encode_labels, encode_multi_labels, encode_numbers, infer_labels, infer_multi_labels, missing_rows
from bertctl.problems import MULTI_LABEL, REGRESSION, problem_type
from bertctl.recipe import SPLITS, Recipe, label_columns, load_recipe
from bertctl.runs import umask_modes
from bertctl.truncation import encode_texts

if TYPE_CHECKING:
    import pandas as pd
    from datasets import Dataset, DatasetDict

CACHE_VERSION = 1


# ---------------------------------------------------------------------------------------------
# a recipe's splits


@dataclass
class LoadedData:
    splits: dict[str, "Dataset"]
    labels: list[str]
    sources: dict[str, str]
    dropped_empty: dict[str, int] = field(default_factory=dict)
    is_pair: bool = False
    # per file split, before any carve or limit: each kept row's record index in the file, and the rows
    # data.drop_empty dropped, by why ("empty text", "empty label")
    kept_rows: dict[str, list[int]] = field(default_factory=dict)
    dropped_rows: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def _read_split_frames(recipe: Recipe) -> tuple[dict[str, "pd.DataFrame"], dict[str, str], list[str] | None]:
    """Raw frames per split, with their source names, plus label names the source itself declares."""
    frames: dict[str, Any] = {}
    sources: dict[str, str] = {}
    declared: list[str] | None = None
    if recipe.uses_hub_dataset:
        import numpy as np
        from datasets import load_dataset

        for split in SPLITS:
            name = getattr(recipe.data, split)
            if name is None:
                continue
            where = f"{recipe.data.dataset}{'/' + recipe.data.subset if recipe.data.subset else ''}[{name}]"
            try:
                ds = load_dataset(recipe.data.dataset, recipe.data.subset, split=name)
            except Exception as exc:  # network, unknown id or split: all are input errors here
                raise DataError(
                    f"could not load hub dataset split {where}: {first_line(exc)}",
                    fix="check data.dataset/subset and split names; offline, download it once or point data.train at local files",
                ) from None
            label_column = recipe.data.label if isinstance(recipe.data.label, str) else None
            feature = ds.features.get(label_column) if label_column else None
            frame = ds.to_pandas()
            inner = getattr(feature, "feature", None)  # Sequence(ClassLabel), as go_emotions' labels
            if inner is not None and hasattr(inner, "names"):
                names = list(inner.names)
                declared = declared or names
                frame[label_column] = [[names[v] if isinstance(v, (int, np.integer)) and 0 <= v < len(names) else v for v in cell] for cell in frame[label_column]]
            elif feature is not None and hasattr(feature, "names"):
                names = list(feature.names)
                declared = declared or names
                # class ids become the dataset's own class names, so data.labels is matched by name: a
                # recipe listing the names in another order must not silently swap classes. -1 (GLUE's
                # hidden test labels) stays -1 and is reported.
                frame[label_column] = [names[v] if isinstance(v, (int, np.integer)) and 0 <= v < len(names) else v for v in frame[label_column]]
            frames[split] = frame
            sources[split] = where
    else:
        for split in SPLITS:
            path = recipe.data_path(split)
            if path is not None:
                frames[split] = read_table(path, missing_fix="check the path; relative paths resolve against the recipe's folder")
                sources[split] = str(path)
    return frames, sources, declared


def load_data(recipe: Recipe) -> LoadedData:
    """All splits of a recipe as Datasets with `text`, [`text_pair`,] `label` columns; DataError lists all problems."""
    from datasets import Dataset

    d = recipe.data
    kind = problem_type(recipe.model.problem_type)
    frames, sources, declared = _read_split_frames(recipe)
    problems: list[Problem] = []
    text_columns = [d.text] + ([d.text_pair] if d.text_pair else [])
    for split, frame in frames.items():
        problems += column_problems(list(frame.columns), {"data.text": d.text, "data.text_pair": d.text_pair}, sources[split])
        for column in label_columns(recipe):
            problems += column_problems(list(frame.columns), {"data.label": column}, sources[split])
    if problems:
        raise RecipeError(recipe.source, problems)

    indicators = isinstance(d.label, list)
    if kind == REGRESSION:
        labels = [d.label]  # one output, named after what it predicts
    elif indicators:
        labels = list(d.label)
    elif kind == MULTI_LABEL:
        labels = d.labels or declared or infer_multi_labels(list(frames["train"][d.label]), d.label_separator)
    else:
        labels = d.labels or declared or infer_labels(list(frames["train"][d.label]))
    # whose labels these are decides the advice for a value outside them
    owner, fix = "the recipe", "add them to data.labels, or fix those rows"
    if not d.labels:
        owner, fix = ("the dataset", "fix those rows") if declared else ("the train split", "fix those rows: without data.labels, the classes are the train split's labels")
    dropped: dict[str, dict[str, list[int]]] = {}
    kept: dict[str, list[int]] = {}
    encoded: dict[str, Any] = {}
    skip = "fill in or remove those rows, or set data.drop_empty = true to skip them"
    for split, frame in frames.items():
        path = None if recipe.uses_hub_dataset else Path(sources[split])
        frame = frame.reset_index(drop=True)
        blank, problem = blank_text_problem(frame, text_columns, f"data.{split}", sources[split], path, skip)
        if d.drop_empty:
            # a row without a label is dropped like one without a text; class names keep a 'NaN' they list
            names = labels if kind.has_classes and not indicators else None
            unlabeled = [i for i in missing_rows(frame, d.label, names) if i not in set(blank)]
            # dropping keeps the original index, so later problems still name the rows' places in the file
            frame = frame.drop(index=blank + unlabeled)
            dropped[split] = {why: rows for why, rows in (("empty text", blank), ("empty label", unlabeled)) if rows}
        elif problem is not None:
            problems.append(problem)
        kept[split] = [int(i) for i in frame.index]
        key = "data.label" if split == "train" else f"data.{split}"
        rows = [int(i) for i in frame.index]
        if kind == REGRESSION:
            targets, label_problems = encode_numbers(list(frame[d.label]), key, sources[split], rows, path=path, empty_fix=skip)
        elif indicators:
            targets, label_problems = encode_indicators(frame, labels, key, sources[split], path=path)
        elif kind == MULTI_LABEL:
            targets, label_problems = encode_multi_labels(
                list(frame[d.label]), labels, key, sources[split], rows, separator=d.label_separator, path=path, owner=owner, fix=fix,
                empty_fix="remove them, or set data.drop_empty = true to skip them",
            )
        else:
            targets, label_problems = encode_labels(list(frame[d.label]), labels, key, sources[split], rows, path=path, owner=owner, fix=fix, empty_fix=skip)
        problems += label_problems
        columns = {"text": frame[d.text].astype(str).tolist()}
        if d.text_pair:
            columns["text_pair"] = frame[d.text_pair].astype(str).tolist()
        columns["label"] = targets
        encoded[split] = columns
    if "train" in encoded and not encoded["train"]["label"] and not problems:
        gone = dropped.get("train", {})
        problems.append(Problem("data.train", f"no rows left in {sources['train']} after dropping {sum(map(len, gone.values()))} with empty texts or labels", "fill in the texts and labels"))
    if not problems and encoded.get("train", {}).get("label"):
        problem = kind.nothing_to_learn(encoded["train"]["label"], labels, sources["train"])
        if problem is not None:
            problems.append(problem)
    if problems:
        raise RecipeError(recipe.source, problems)

    splits = {split: Dataset.from_dict(cols) for split, cols in encoded.items()}
    splits, sources = _carve_validation(recipe, splits, sources)
    for split, limit in (("train", d.limit.train), ("validation", d.limit.validation), ("test", d.limit.test)):
        if limit is not None and split in splits and limit < len(splits[split]):
            # a seeded random sample rather than the first rows: files are often sorted by label
            splits[split] = splits[split].shuffle(seed=recipe.train.seed).select(range(limit))
    counts = {split: sum(map(len, why.values())) for split, why in dropped.items() if why}
    return LoadedData(splits, list(labels), sources, counts, is_pair=d.text_pair is not None, kept_rows=kept, dropped_rows=dropped)


def unlabeled_texts(source: "Recipe | Path", column: str = "text") -> tuple[list[str], list[str] | None, str]:
    """Texts for uses that need no labels (attention, pretrain), and where they came from: a recipe's train texts
    (pairs kept as pairs) when `source` is a Recipe or a .toml, else the non-blank texts of a data file's `column`."""
    if isinstance(source, Path) and source.suffix.lower() != ".toml":
        return read_texts(source, column), None, str(source)
    recipe = load_recipe(source) if isinstance(source, Path) else source
    data = load_data(recipe)
    train = data.splits["train"]
    return list(train["text"]), (list(train["text_pair"]) if data.is_pair else None), f"{data.sources['train']} (train texts of {recipe.source})"


def _carve_validation(recipe: Recipe, splits: dict[str, "Dataset"], sources: dict[str, str]):
    """Hold out validation_fraction of train (seeded), unless the recipe names a validation split."""
    fraction = recipe.data.validation_fraction
    if "validation" in splits or fraction is None:
        return splits, sources
    n = len(splits["train"])
    held_out = math.ceil(n * fraction)
    import numpy as np

    train = splits["train"]
    # a text that occurs more than once goes wholly to one side: a copy in train would make validation optimistic
    # (STS-B's official train split repeats 43 pairs; a row-wise carve put 10 of them on both sides)
    keys = list(zip(*(train[c] for c in ("text", "text_pair") if c in train.column_names)))
    rows_of: dict[tuple, list[int]] = {}
    for row, key in enumerate(keys):
        rows_of.setdefault(key, []).append(row)
    groups = list(rows_of.values())
    held: list[int] = []
    for group in np.random.default_rng(recipe.train.seed).permutation(len(groups)):
        if len(held) >= held_out:
            break
        held += groups[group]
    kept = sorted(set(range(n)) - set(held))
    if not held or len(kept) < 2:
        raise DataError(
            f"data.validation_fraction = {fraction} of {n} training rows in {sources['train']} leaves {len(held)} for validation and {len(kept)} for training",
            fix="use more training rows, a different validation_fraction, or a data.validation file",
        )
    carved = {**splits, "train": train.select(kept), "validation": train.select(sorted(held))}
    splits = {name: carved[name] for name in SPLITS if name in carved}  # train, validation, test: the order reports use
    sources = {**sources, "validation": f"{sources['train']} ({fraction:.0%} held out, seed {recipe.train.seed})"}
    return splits, sources


# ---------------------------------------------------------------------------------------------
# tokenization with an Arrow cache


def hash_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (data files, model weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """What the tokenizer does to text: vocab, normalizer, pre-tokenizer, special tokens.

    Truncation and padding are left out: transformers sets them on the backend at every call, so they
    say how the tokenizer was last used, not what it is (with them, a second run would never hit the cache).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        text = json.dumps(state, sort_keys=True)
    else:
        text = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    # an ONNX export's tokenizer (bertctl.runtime) names the transformers class it stands in for: same ids, same cache
    name = getattr(tokenizer, "tokenizer_class", None) or type(tokenizer).__name__
    extra = json.dumps({"cls": tokenizer.cls_token, "sep": tokenizer.sep_token, "unk": tokenizer.unk_token, "class": name})
    return hashlib.sha256((text + extra).encode()).hexdigest()[:16]


def hub_fingerprints(recipe: Recipe) -> dict[str, str] | None:
    """`datasets`' own fingerprint of each hub split the recipe names (they change when the downloaded data or
    its version does); None when a split can't be loaded, so the caller skips the cache and load_data reports why."""
    from datasets import load_dataset

    out = {}
    for split in SPLITS:
        name = getattr(recipe.data, split)
        if name is None:
            continue
        try:
            out[split] = load_dataset(recipe.data.dataset, recipe.data.subset, split=name)._fingerprint
        except Exception:
            return None
    return out


def cache_key(recipe: Recipe, tokenizer) -> str | None:
    """A key that changes whenever the tokenized data would: file bytes, data settings, tokenizer, max_length."""
    parts: dict[str, Any] = {
        "version": CACHE_VERSION,
        "data": recipe.to_dict()["data"],
        "seed": recipe.train.seed,
        "max_length": recipe.model.max_length,
        "truncation": recipe.model.truncation,
        "problem_type": recipe.model.problem_type,
        "tokenizer": tokenizer_fingerprint(tokenizer),
    }
    if recipe.uses_hub_dataset:
        parts["hub"] = hub_fingerprints(recipe)
        if parts["hub"] is None:
            return None
    else:
        parts["files"] = {split: hash_file(p) for split in SPLITS if (p := recipe.data_path(split)) is not None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def tokenize_batch(tokenizer, max_length: int, is_pair: bool, truncation: str):

    unk = tokenizer.unk_token_id

    def fn(batch: dict[str, list]) -> dict[str, list]:
        # untruncated lengths only feed the report (how many texts are cut, and by how much)
        encoded = encode_texts(tokenizer, batch["text"], batch["text_pair"] if is_pair else None, max_length=max_length, truncation=truncation, lengths=True)
        enc = dict(encoded.columns)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        enc["n_tokens"] = encoded.n_tokens
        enc["n_unk"] = [sum(1 for t in ids if t == unk) for ids in enc["input_ids"]]
        return enc

    return fn


@dataclass
class TokenizedData:
    splits: "DatasetDict"
    labels: list[str]
    sources: dict[str, str]
    dropped_empty: dict[str, int]
    is_pair: bool
    from_cache: bool
    cache_dir: Path | None


def tokenize_data(recipe: Recipe, tokenizer, *, use_cache: bool = True) -> TokenizedData:
    """Tokenized splits (input_ids, token_type_ids, attention_mask, label, length); cached on disk by content."""
    import datasets
    from datasets import DatasetDict, load_from_disk

    # our own report says what happened; per-split bars from `datasets` only clutter logs
    datasets.disable_progress_bars()
    key = cache_key(recipe, tokenizer) if use_cache else None
    cache_dir = cache_root() / "tokenized" / key if key else None
    corrupt = False
    if cache_dir is not None and (cache_dir / "meta.json").is_file():
        try:
            meta = json.loads((cache_dir / "meta.json").read_text())
            splits = load_from_disk(str(cache_dir / "splits"))
            return TokenizedData(splits, meta["labels"], meta["sources"], meta["dropped_empty"], meta["is_pair"], True, cache_dir)
        except Exception:
            corrupt = True  # a corrupt or foreign cache entry: rebuild it below

    data = load_data(recipe)
    fn = tokenize_batch(tokenizer, recipe.model.max_length, data.is_pair, recipe.model.truncation)
    remove = ["text", "text_pair"] if data.is_pair else ["text"]
    splits = DatasetDict(
        {name: ds.map(fn, batched=True, batch_size=1000, remove_columns=remove, desc=f"tokenizing {name}") for name, ds in data.splits.items()}
    )
    if cache_dir is not None:
        _save_cache(cache_dir, splits, data, replace=corrupt)
        splits = load_from_disk(str(cache_dir / "splits"))  # memory-mapped, like a cache hit
    return TokenizedData(splits, data.labels, data.sources, data.dropped_empty, data.is_pair, False, cache_dir)


def _save_cache(cache_dir: Path, splits: "DatasetDict", data: LoadedData, *, replace: bool = False) -> None:
    """Write to a temp dir and rename, so a killed run never leaves a cache entry that looks complete. A complete
    entry is never removed under a reader: when another process (a sweep worker, an accelerate rank) wrote the same
    key first, its entry holds the same data and stays; only a `replace`d corrupt one is moved aside."""
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}-", dir=cache_dir.parent))
    try:
        splits.save_to_disk(str(tmp / "splits"))
        meta = {"labels": data.labels, "sources": data.sources, "dropped_empty": data.dropped_empty, "is_pair": data.is_pair}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if replace and cache_dir.exists():
            stale = cache_dir.with_name(f".{cache_dir.name}.stale-{os.getpid()}")
            os.replace(cache_dir, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(umask_modes(tmp), cache_dir)  # fails (not empty) where another process finished first: keep theirs
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a cache is an optimisation: failing to write it is not fatal


# ---------------------------------------------------------------------------------------------
# `bertctl validate`


def validate_recipe(path: str | Path, overrides: list[str] | None = None, *, data: bool = True) -> str:
    """Check a recipe without loading a model; return the line `bertctl validate` prints, e.g.
    "recipes/agnews.toml: valid schema and data (train 4000, validation 1000; labels: World, ...)".
    With `data`, local data files are read and checked row by row too. Raises RecipeError/DataError listing every problem."""
    recipe = load_recipe(path, overrides)
    checked = "schema"
    if recipe.uses_hub_dataset:
        # reading a hub dataset means downloading it: validate stays offline and instant
        checked = f"schema (hub dataset {recipe.data.dataset}: files and columns are checked when it loads)"
    elif data:
        loaded = load_data(recipe)
        sizes = ", ".join(f"{name} {len(ds)}" for name, ds in loaded.splits.items())
        checked = f"schema and data ({sizes}; {problem_type(recipe.model.problem_type).describe(loaded.labels)})"
    return f"{path}: valid {checked}"
