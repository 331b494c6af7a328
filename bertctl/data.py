"""Read a recipe's data (local files or a hub dataset), check it row by row, encode labels, tokenize, cache.

    data = load_data(recipe)                      # DataError listing every bad row/column
    tokenized = tokenize_data(recipe, tokenizer)  # DatasetDict, cached as Arrow: a second call is instant

Every split ends up with the same columns, whatever the source called them: `text`, optionally `text_pair`,
and `label` (an integer class id into `labels`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertctl.errors import DataError, Problem
from bertctl.recipe import SPLITS, Recipe

if TYPE_CHECKING:
    import pandas as pd
    from datasets import Dataset, DatasetDict

MAX_ROWS_SHOWN = 5
CACHE_VERSION = 1


def cache_root() -> Path:
    env = os.environ.get("BERTCTL_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bertctl"


# ---------------------------------------------------------------------------------------------
# reading one file


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def decode_text(raw: bytes, path: Path) -> str:
    """UTF-8 text without a BOM, or a DataError that says on which line the bad bytes are."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{bad} on line {line}); it looks like Latin-1/Windows-1252",
            fix=f"re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path} > fixed.{path.suffix.lstrip('.') or 'txt'}`",
        ) from None
    if text.startswith("\u00ef\u00bb\u00bf"):
        raise DataError(
            f"{path}: the file starts with 'ï»¿', a UTF-8 byte-order mark that was decoded twice, so its text is garbled",
            fix="re-export the file as plain UTF-8 (without a BOM) from the original source",
        )
    # Excel writes a BOM before the header; it is not part of the first column's name
    return text.removeprefix("\ufeff")


def read_table(path: Path) -> "pd.DataFrame":
    """One data file as a DataFrame of its raw values (strings for csv/tsv/txt), headers stripped."""
    import pandas as pd

    if not path.exists():
        raise DataError(f"{path}: file not found", fix="check the path (relative paths resolve against the recipe's folder)")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file", fix="name the file itself")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})", fix="check the file's permissions") from None
    if not raw.strip():
        raise DataError(f"{path}: the file is empty", fix="fill it with a header line and rows, or point the recipe at another file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(io.BytesIO(raw))
        else:
            text = decode_text(raw, path)
            if suffix in {".csv", ".tsv"}:
                frame = pd.read_csv(
                    io.StringIO(text),
                    sep="\t" if suffix == ".tsv" else ",",
                    dtype=str,
                    keep_default_na=False,  # an empty cell stays "", reported as an empty text
                    na_values=[],
                )
            elif suffix in {".jsonl", ".json"}:
                try:
                    frame = pd.read_json(io.StringIO(text), lines=True, dtype=False)
                except ValueError:
                    frame = pd.read_json(io.StringIO(text), dtype=False)
            elif suffix == ".txt":
                frame = pd.DataFrame({"text": text.splitlines()})
            else:
                raise DataError(f"{path}: unsupported file type {suffix!r}", fix="use csv, tsv, jsonl, parquet or txt")
    except DataError:
        raise
    except pd.errors.ParserError as exc:
        raise DataError(
            f"{path}: cannot parse as {suffix.lstrip('.')}: {_first_line(exc)}",
            fix="quote fields that contain the delimiter or a newline, and check every row has the header's column count",
        ) from None
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot parse as {suffix.lstrip('.')}: {_first_line(exc)}", fix="check the file's format matches its extension") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame) == 0:
        raise DataError(f"{path}: has a header but no rows", fix="add data rows")
    return frame


def _line_of(path: Path, index: int) -> str:
    """Human row reference: the file line for text formats (header is line 1)."""
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv"}:
        return f"row {index + 1} (line {index + 2} if no field spans lines)"
    if suffix in {".jsonl", ".txt"}:
        return f"line {index + 1}"
    return f"row {index + 1}"


def missing_column_problem(key: str, column: str, columns: list[str], where: str) -> Problem:
    import difflib

    close = difflib.get_close_matches(column, columns, n=1, cutoff=0.5)
    lowered = {c.lower().strip("# "): c for c in columns}
    guess = close[0] if close else lowered.get(column.lower().strip("# "))
    fix = f"did you mean {guess!r}? set {key} = {guess!r}" if guess else f"set {key} to one of the file's columns"
    hint = ""
    if len(columns) == 1 and ("\t" in columns[0] or "," in columns[0]):
        hint = " (the header is one column: is the delimiter right for the file's extension?)"
    return Problem(key, f"column {column!r} not in {where} (columns: {', '.join(columns)}){hint}", fix)


# ---------------------------------------------------------------------------------------------
# labels


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def infer_labels(values: list[Any]) -> list[str]:
    """Class names from training values: integer ids keep their numeric order, names sort alphabetically."""
    distinct = {v for v in values if v is not None and str(v).strip() != ""}
    ints = {_as_int(v) for v in distinct}
    if None not in ints:
        return [str(i) for i in sorted(ints)]  # type: ignore[type-var]
    return sorted(str(v).strip() for v in distinct)


def encode_labels(values: list[Any], labels: list[str], key: str, where: Path | str) -> tuple[list[int], list[Problem]]:
    """Map label values (names, or integer ids 0..N-1) to class ids; one problem per kind of bad value."""
    index = {name: i for i, name in enumerate(labels)}
    ids: list[int] = []
    unknown: dict[str, list[int]] = {}
    out_of_range: dict[int, list[int]] = {}
    empty: list[int] = []
    for row, value in enumerate(values):
        if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
            empty.append(row)
            ids.append(-1)
            continue
        name = str(value).strip()
        if name in index:
            ids.append(index[name])
            continue
        as_int = _as_int(value)
        if as_int is not None:
            if 0 <= as_int < len(labels):
                ids.append(as_int)
            else:
                out_of_range.setdefault(as_int, []).append(row)
                ids.append(-1)
            continue
        unknown.setdefault(name, []).append(row)
        ids.append(-1)
    problems = []
    path = Path(str(where))
    if unknown:
        shown = ", ".join(f"{name!r} ({_line_of(path, rows[0])}, {len(rows)} rows)" for name, rows in list(unknown.items())[:MAX_ROWS_SHOWN])
        problems.append(Problem(key, f"labels not in the label list {labels}: {shown} in {where}", "add them to data.labels, or fix those rows"))
    if out_of_range:
        shown = ", ".join(f"{v} ({_line_of(path, rows[0])})" for v, rows in list(out_of_range.items())[:MAX_ROWS_SHOWN])
        problems.append(Problem(key, f"integer labels outside 0..{len(labels) - 1}: {shown} in {where}", f"integer labels are class ids into data.labels ({len(labels)} classes)"))
    if empty:
        rows = ", ".join(_line_of(path, r) for r in empty[:MAX_ROWS_SHOWN])
        problems.append(Problem(key, f"{len(empty)} rows with an empty label in {where}: {rows}", "fill in or remove those rows"))
    return ids, problems


# ---------------------------------------------------------------------------------------------
# a recipe's splits


@dataclass
class LoadedData:
    splits: dict[str, "Dataset"]
    labels: list[str]
    sources: dict[str, str]
    dropped_empty: dict[str, int] = field(default_factory=dict)
    is_pair: bool = False


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value).strip() == ""


def _check_texts(frame: "pd.DataFrame", columns: list[str], key: str, where: str, path: Path, drop: bool) -> tuple["pd.DataFrame", int, list[Problem]]:
    import pandas as pd

    bad_rows = pd.Series(False, index=frame.index)
    for column in columns:
        bad_rows |= frame[column].map(_is_empty)
    n_bad = int(bad_rows.sum())
    if n_bad == 0:
        return frame, 0, []
    if drop:
        return frame[~bad_rows].reset_index(drop=True), n_bad, []
    rows = ", ".join(_line_of(path, int(i)) for i in list(frame.index[bad_rows])[:MAX_ROWS_SHOWN])
    return frame, n_bad, [Problem(key, f"{n_bad} rows with an empty or NaN text in {where}: {rows}", "fill in or remove those rows, or set data.drop_empty = true to skip them")]


def _read_split_frames(recipe: Recipe) -> tuple[dict[str, "pd.DataFrame"], dict[str, str], list[str] | None]:
    """Raw frames per split, with their source names, plus label names the source itself declares."""
    frames: dict[str, Any] = {}
    sources: dict[str, str] = {}
    declared: list[str] | None = None
    if recipe.uses_hub_dataset:
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
                    f"could not load hub dataset split {where}: {_first_line(exc)}",
                    fix="check data.dataset/subset and split names; offline, download it once or point data.train at local files",
                ) from None
            feature = ds.features.get(recipe.data.label)
            if declared is None and feature is not None and hasattr(feature, "names"):
                declared = list(feature.names)
            frames[split] = ds.to_pandas()
            sources[split] = where
    else:
        for split in SPLITS:
            path = recipe.data_path(split)
            if path is not None:
                frames[split] = read_table(path)
                sources[split] = str(path)
    return frames, sources, declared


def load_data(recipe: Recipe) -> LoadedData:
    """All splits of a recipe as Datasets with `text`, [`text_pair`,] `label` columns; DataError lists all problems."""
    from datasets import Dataset

    d = recipe.data
    frames, sources, declared = _read_split_frames(recipe)
    problems: list[Problem] = []
    text_columns = [d.text] + ([d.text_pair] if d.text_pair else [])
    for split, frame in frames.items():
        for key, column in (("data.text", d.text), ("data.text_pair", d.text_pair), ("data.label", d.label)):
            if column is not None and column not in frame.columns:
                problems.append(missing_column_problem(key, column, list(frame.columns), sources[split]))
    if problems:
        raise_problems(recipe, problems)

    labels = d.labels or declared or infer_labels(list(frames["train"][d.label]))
    dropped: dict[str, int] = {}
    encoded: dict[str, Any] = {}
    for split, frame in frames.items():
        path = Path(sources[split])
        frame, n_empty, text_problems = _check_texts(frame, text_columns, f"data.{split}", sources[split], path, d.drop_empty)
        problems += text_problems
        if n_empty and d.drop_empty:
            dropped[split] = n_empty
        ids, label_problems = encode_labels(list(frame[d.label]), labels, "data.label" if split == "train" else f"data.{split}", sources[split])
        problems += label_problems
        columns = {"text": frame[d.text].astype(str).tolist()}
        if d.text_pair:
            columns["text_pair"] = frame[d.text_pair].astype(str).tolist()
        columns["label"] = ids
        encoded[split] = columns
    if not problems and "train" in encoded:
        present = set(encoded["train"]["label"])
        if len(present) < 2:
            only = labels[next(iter(present))] if present else "(none)"
            problems.append(Problem("data.train", f"has a single class ({only!r}) in {sources['train']}: nothing to learn", "train on data with at least two classes"))
    if problems:
        raise_problems(recipe, problems)

    splits = {split: Dataset.from_dict(cols) for split, cols in encoded.items()}
    splits, sources = _carve_validation(recipe, splits, sources)
    for split, limit in (("train", d.limit.train), ("validation", d.limit.validation), ("test", d.limit.test)):
        if limit is not None and split in splits and limit < len(splits[split]):
            # a seeded random sample rather than the first rows: files are often sorted by label
            splits[split] = splits[split].shuffle(seed=recipe.train.seed).select(range(limit))
    return LoadedData(splits, list(labels), sources, dropped, is_pair=d.text_pair is not None)


def _carve_validation(recipe: Recipe, splits: dict[str, "Dataset"], sources: dict[str, str]):
    fraction = recipe.data.validation_fraction
    if "validation" in splits or fraction is None:
        return splits, sources
    parts = splits["train"].train_test_split(test_size=fraction, seed=recipe.train.seed)
    splits = {**splits, "train": parts["train"], "validation": parts["test"]}
    sources = {**sources, "validation": f"{sources['train']} ({fraction:.0%} held out, seed {recipe.train.seed})"}
    return splits, sources


def raise_problems(recipe: Recipe, problems: list[Problem]) -> None:
    from bertctl.errors import RecipeError

    raise RecipeError(recipe.source, problems)


# ---------------------------------------------------------------------------------------------
# tokenization with an Arrow cache


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    state = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(state.encode()).hexdigest()[:16]


def cache_key(recipe: Recipe, tokenizer) -> str | None:
    """A key that changes whenever the tokenized data would: file bytes, data settings, tokenizer, max_length."""
    if recipe.uses_hub_dataset:
        return None  # `datasets` caches hub data itself; we re-tokenize through its own map cache
    parts: dict[str, Any] = {
        "version": CACHE_VERSION,
        "data": recipe.to_dict()["data"],
        "seed": recipe.train.seed,
        "max_length": recipe.model.max_length,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "files": {split: _hash_file(p) for split in SPLITS if (p := recipe.data_path(split)) is not None},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _tokenize_batch(tokenizer, max_length: int, is_pair: bool):
    unk = tokenizer.unk_token_id

    def fn(batch: dict[str, list]) -> dict[str, list]:
        args = (batch["text"], batch["text_pair"]) if is_pair else (batch["text"],)
        enc = tokenizer(*args, truncation=True, max_length=max_length)
        # untruncated lengths only feed the report (share truncated); special tokens counted as in `enc`
        full = tokenizer(*args, truncation=False, add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        enc["n_tokens"] = [len(ids) for ids in full["input_ids"]]
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
    if cache_dir is not None and (cache_dir / "meta.json").is_file():
        try:
            meta = json.loads((cache_dir / "meta.json").read_text())
            splits = load_from_disk(str(cache_dir / "splits"))
            return TokenizedData(splits, meta["labels"], meta["sources"], meta["dropped_empty"], meta["is_pair"], True, cache_dir)
        except Exception:
            pass  # a corrupt or foreign cache entry: rebuild it below

    data = load_data(recipe)
    fn = _tokenize_batch(tokenizer, recipe.model.max_length, data.is_pair)
    remove = ["text", "text_pair"] if data.is_pair else ["text"]
    splits = DatasetDict(
        {name: ds.map(fn, batched=True, batch_size=1000, remove_columns=remove, desc=f"tokenizing {name}") for name, ds in data.splits.items()}
    )
    if cache_dir is not None:
        _save_cache(cache_dir, splits, data)
        splits = load_from_disk(str(cache_dir / "splits"))  # memory-mapped, like a cache hit
    return TokenizedData(splits, data.labels, data.sources, data.dropped_empty, data.is_pair, False, cache_dir)


def _save_cache(cache_dir: Path, splits: "DatasetDict", data: LoadedData) -> None:
    """Write to a temp dir and rename, so a killed run never leaves a cache entry that looks complete."""
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}-", dir=cache_dir.parent))
    try:
        splits.save_to_disk(str(tmp / "splits"))
        meta = {"labels": data.labels, "sources": data.sources, "dropped_empty": data.dropped_empty, "is_pair": data.is_pair}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        os.replace(tmp, cache_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a cache is an optimisation: failing to write it is not fatal
