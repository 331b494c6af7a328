"""Read a recipe's data (local files or a hub dataset), check it row by row, encode labels, tokenize, cache.

    data = load_data(recipe)                      # DataError listing every bad row/column
    tokenized = tokenize_data(recipe, tokenizer)  # DatasetDict, cached as Arrow: a second call is instant

Every split ends up with the same columns, whatever the source called them: `text`, optionally `text_pair`,
and `label` (an integer class id into `labels`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import numbers
import os
import re
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
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(
            f"{path}: is UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8",
            fix=f"re-save it as UTF-8 (Excel: 'CSV UTF-8'), e.g. `iconv -f utf-16 -t utf-8 {path} > fixed{path.suffix}`",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{bad} on line {line}); it looks like Latin-1/Windows-1252",
            fix=f"re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path} > fixed{path.suffix}`",
        ) from None
    if text.startswith("\u00ef\u00bb\u00bf"):
        raise DataError(
            f"{path}: the file starts with 'ï»¿', a UTF-8 byte-order mark that was decoded twice, so its text is garbled",
            fix="re-export the file as plain UTF-8 (without a BOM) from the original source",
        )
    # Excel writes a BOM before the header; it is not part of the first column's name
    return text.removeprefix("\ufeff")


_QUOTED_FIELD = re.compile(r'"(?:[^"]|"")*"')


def _tsv_quoting(text: str) -> int:
    """How to read a TSV's double quotes: as CSV quoting, or as plain characters.

    Many TSVs (GLUE among them) are line-oriented and contain stray quotes ('"Hi, she said'). Read as CSV
    quoting, such a quote swallows the lines after it and rows merge silently. So when every line holds
    the header's number of tabs and some field opens a quote it does not close on its own, the quotes are
    characters. Files whose quoted fields span lines or hold tabs keep CSV quoting.
    """
    if '"' not in text:
        return csv.QUOTE_MINIMAL
    lines = [line for line in text.splitlines() if line.strip()]
    tabs = lines[0].count("\t")
    if any(line.count("\t") != tabs for line in lines):
        return csv.QUOTE_MINIMAL
    for line in lines:
        for value in line.split("\t"):
            if value.startswith('"') and not _QUOTED_FIELD.fullmatch(value):
                return csv.QUOTE_NONE
    return csv.QUOTE_MINIMAL


def _delimiter_hint(text: str, suffix: str) -> str:
    header = text.split("\n", 1)[0]
    if suffix == ".csv" and "\t" in header and "," not in header:
        return " The header is separated by tabs, not commas: the file looks like a TSV; rename it to .tsv."
    if suffix == ".tsv" and "\t" not in header and "," in header:
        return " The header is separated by commas, not tabs: the file looks like a CSV; rename it to .csv."
    return ""


def _read_delimited(text: str, path: Path, suffix: str) -> "pd.DataFrame":
    import pandas as pd

    sep = "\t" if suffix == ".tsv" else ","
    quoting = _tsv_quoting(text) if suffix == ".tsv" else csv.QUOTE_MINIMAL
    try:
        return pd.read_csv(
            io.StringIO(text),
            sep=sep,
            dtype=str,
            keep_default_na=False,  # an empty cell stays "", reported as an empty text
            na_values=[],
            quoting=quoting,
        )
    except pd.errors.ParserError as exc:
        message = _first_line(exc)
        fix = "quote fields that contain the delimiter or a newline, and check every row has the header's column count"
        if "EOF inside string" in message:
            fix = 'a field opens a double quote that never closes: close it, or double quotes inside a quoted field ("")'
        raise DataError(f"{path}: cannot parse as {suffix.lstrip('.')}: {message}.{_delimiter_hint(text, suffix)}", fix=fix) from None


def _read_json(text: str, path: Path, suffix: str) -> "pd.DataFrame":
    """JSON Lines (one object per line), or for .json also one array of objects / one table of columns."""
    import pandas as pd

    if suffix == ".json":
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None  # maybe JSON Lines under a .json name
        if isinstance(whole, list) and all(isinstance(r, dict) for r in whole):
            return pd.DataFrame.from_records(whole)
        if isinstance(whole, dict) and all(isinstance(v, list) for v in whole.values()):
            try:
                return pd.DataFrame(whole)
            except ValueError as exc:
                raise DataError(f"{path}: cannot use its columns: {_first_line(exc)}", fix="give every column the same number of values") from None
        if whole is not None and not isinstance(whole, dict):
            raise DataError(f"{path}: holds a JSON {type(whole).__name__}, not records", fix="write a list of objects, or one object per line (JSON Lines)")
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON ({exc})", fix="write one JSON object per line (JSON Lines)") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(record).__name__}, not an object", fix='write one object per line, e.g. {"text": "...", "label": "..."}')
        records.append(record)
    return pd.DataFrame.from_records(records)


def read_file_bytes(path: Path, what: str, *, missing_fix: str) -> bytes:
    """The bytes of a user's file, or a DataError that says why they can't be read."""
    if not path.exists():
        raise DataError(f"{path}: file not found", fix=missing_fix)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not {what}", fix="name the file itself")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})", fix="check the file's permissions") from None


def read_table(path: Path) -> "pd.DataFrame":
    """One data file as a DataFrame of its raw values (strings for csv/tsv/txt), headers stripped."""
    import pandas as pd

    path = Path(path)
    raw = read_file_bytes(path, "a data file", missing_fix="check the path (relative paths resolve against the recipe's folder)")
    if not raw.strip() or raw.strip() in (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"{path}: the file is empty", fix="fill it with a header line and rows, or point the recipe at another file")
    suffix = path.suffix.lower()
    if suffix not in {".parquet", ".csv", ".tsv", ".jsonl", ".json", ".txt"}:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}", fix="use csv, tsv, jsonl, parquet or txt")
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(io.BytesIO(raw))
        else:
            text = decode_text(raw, path)
            if suffix in {".csv", ".tsv"}:
                frame = _read_delimited(text, path, suffix)
            elif suffix in {".jsonl", ".json"}:
                frame = _read_json(text, path, suffix)
            else:
                frame = pd.DataFrame({"text": [line for line in text.splitlines() if line.strip()]})
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for a malformed file; all mean the same here
        raise DataError(f"{path}: cannot parse as {suffix.lstrip('.')}: {_first_line(exc)}", fix="check the file's format matches its extension") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    repeated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if repeated:
        raise DataError(f"{path}: repeated column names {repeated} (after trimming spaces)", fix="give every column its own name")
    if len(frame) == 0:
        raise DataError(f"{path}: has a header but no rows", fix="add data rows")
    return frame


def _record_lines(path: Path) -> list[int] | None:
    """The file line each csv/tsv record starts on (header is line 1), or None when that can't be known."""
    try:
        text = decode_text(path.read_bytes(), path)
    except (OSError, DataError):
        return None
    suffix = path.suffix.lower()
    quoting = _tsv_quoting(text) if suffix == ".tsv" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",", quoting=quoting)
    starts = []
    try:
        while True:
            start = reader.line_num + 1
            row = next(reader)
            if row:  # pandas skips blank lines, so they are not records
                starts.append(start)
    except StopIteration:
        pass
    except csv.Error:
        return None
    return starts[1:]


_LINES_CACHE: dict[tuple[str, float, int], list[int] | None] = {}


def _line_of(path: Path, index: int) -> str:
    """Human row reference: the file line for text formats (header is line 1)."""
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv"}:
        try:
            stat = path.stat()
            key = (str(path), stat.st_mtime, stat.st_size)
        except (OSError, ValueError):
            return f"row {index + 1}"
        if key not in _LINES_CACHE:
            _LINES_CACHE.clear()  # only the file being reported on is worth keeping
            _LINES_CACHE[key] = _record_lines(path)
        lines = _LINES_CACHE[key]
        if lines is not None and index < len(lines):
            return f"line {lines[index]}"
        return f"row {index + 1}"
    if suffix in {".jsonl", ".json"}:
        return f"record {index + 1}"
    if suffix == ".txt":
        return f"line {index + 1}"
    return f"row {index + 1}"


def missing_column_problem(key: str, column: str, columns: list[str], where: str) -> Problem:
    import difflib

    close = difflib.get_close_matches(column, columns, n=1, cutoff=0.5)
    lowered = {c.lower().strip("# "): c for c in columns}
    guess = close[0] if close else lowered.get(column.lower().strip("# "))
    fix = f"did you mean {guess!r}? set {key} = {guess!r}" if guess else f"set {key} to one of the file's columns"
    hint = ""
    if len(columns) == 1:
        if "\t" in columns[0]:
            hint = " (the header is one column holding tabs: the file is tab-separated; name it .tsv)"
            fix = "rename the file to .tsv (or re-save it comma-separated)"
        elif "," in columns[0] or ";" in columns[0]:
            hint = " (the header is one column holding commas/semicolons: is the delimiter right for the file's extension?)"
            fix = "use a .csv for comma-separated data and a .tsv for tab-separated data"
    return Problem(key, f"column {column!r} not in {where} (columns: {', '.join(columns)}){hint}", fix)


# ---------------------------------------------------------------------------------------------
# labels


def _np_bool_types() -> tuple[type, ...]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return ()
    return (np.bool_,)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _as_int(value: Any) -> int | None:
    if isinstance(value, (bool, _np_bool_types())):
        return None
    if isinstance(value, numbers.Integral):  # numpy integers too
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?[0-9]+(\.0*)?", text):  # ASCII digits only: int('²') fails
            return int(text.split(".")[0])
    return None


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        if pd.api.types.is_scalar(value) and pd.isna(value):
            return True
    except (TypeError, ValueError):
        pass
    return isinstance(value, str) and value.strip() == ""


def infer_labels(values: list[Any]) -> list[str]:
    """Class names from training values: integer ids keep their numeric order, names sort alphabetically."""
    distinct = {v if not isinstance(v, str) else v.strip() for v in values if not _is_empty(v)}
    ints = {_as_int(v) for v in distinct}
    if None not in ints:
        return [str(i) for i in sorted(ints)]  # type: ignore[type-var]
    return sorted({str(v).strip() for v in distinct})


def encode_labels(
    values: list[Any], labels: list[str], key: str, where: Path | str, rows: list[int] | None = None
) -> tuple[list[int], list[Problem]]:
    """Map label values (names, or integer ids 0..N-1) to class ids; one problem per kind of bad value.

    `rows` are the values' row numbers in the source (0-based) when some rows were dropped before.
    When the label names are themselves integers ("1".."4"), a value is only ever matched by name:
    reading 0 as class id 0 (name "1") would silently shift every class.
    """
    index = {name.strip(): i for i, name in enumerate(labels)}
    ids_allowed = any(_as_int(name) is None for name in labels)
    rows = list(range(len(values))) if rows is None else rows
    ids: list[int] = []
    unknown: dict[str, list[int]] = {}
    out_of_range: dict[int, list[int]] = {}
    empty: list[int] = []
    for row, value in zip(rows, values):
        if _is_empty(value):
            empty.append(row)
            ids.append(-1)
            continue
        as_int = _as_int(value)
        name = str(as_int) if as_int is not None and not ids_allowed else str(value).strip()
        if name in index:
            ids.append(index[name])
            continue
        if as_int is not None and ids_allowed:
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
        shown = ", ".join(f"{name!r} ({_line_of(path, rows_[0])}, {_count(len(rows_), 'row')})" for name, rows_ in list(unknown.items())[:MAX_ROWS_SHOWN])
        more = f" and {len(unknown) - MAX_ROWS_SHOWN} more" if len(unknown) > MAX_ROWS_SHOWN else ""
        problems.append(Problem(key, f"labels not in the label list {labels}: {shown}{more} in {where}", "add them to data.labels, or fix those rows"))
    if out_of_range:
        shown = ", ".join(f"{v} ({_line_of(path, rows_[0])}, {_count(len(rows_), 'row')})" for v, rows_ in list(out_of_range.items())[:MAX_ROWS_SHOWN])
        problems.append(
            Problem(
                key,
                f"integer labels outside 0..{len(labels) - 1}: {shown} in {where}",
                f"integer labels are class ids into data.labels ({len(labels)} classes: {', '.join(labels)}); "
                "-1 usually marks an unlabeled (test) split: evaluate on a labeled split",
            )
        )
    if empty:
        shown_rows = ", ".join(_line_of(path, r) for r in empty[:MAX_ROWS_SHOWN])
        problems.append(Problem(key, f"{_count(len(empty), 'row')} with an empty label in {where}: {shown_rows}", "fill in or remove those rows"))
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


def _check_texts(frame: "pd.DataFrame", columns: list[str], key: str, where: str, path: Path, drop: bool) -> tuple["pd.DataFrame", int, list[Problem]]:
    """Refuse (or with drop, remove) rows whose text is empty, whitespace or NaN. Dropping keeps the
    original index, so later problems still name the rows' places in the file."""
    import pandas as pd

    bad_rows = pd.Series(False, index=frame.index)
    for column in columns:
        bad_rows |= frame[column].map(_is_empty).astype(bool)
    n_bad = int(bad_rows.sum())
    if n_bad == 0:
        return frame, 0, []
    if drop:
        return frame[~bad_rows], n_bad, []
    rows = ", ".join(_line_of(path, int(i)) for i in list(frame.index[bad_rows])[:MAX_ROWS_SHOWN])
    more = " ..." if n_bad > MAX_ROWS_SHOWN else ""
    return frame, n_bad, [Problem(key, f"{_count(n_bad, 'row')} with an empty or NaN text in {where}: {rows}{more}", "fill in or remove those rows, or set data.drop_empty = true to skip them")]


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
                    f"could not load hub dataset split {where}: {_first_line(exc)}",
                    fix="check data.dataset/subset and split names; offline, download it once or point data.train at local files",
                ) from None
            feature = ds.features.get(recipe.data.label)
            frame = ds.to_pandas()
            if feature is not None and hasattr(feature, "names"):
                names = list(feature.names)
                declared = declared or names
                # class ids become the dataset's own class names, so data.labels is matched by name: a
                # recipe listing the names in another order must not silently swap classes. -1 (GLUE's
                # hidden test labels) stays -1 and is reported.
                frame[recipe.data.label] = [names[v] if isinstance(v, (int, np.integer)) and 0 <= v < len(names) else v for v in frame[recipe.data.label]]
            frames[split] = frame
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
        path = Path(sources[split]) if not recipe.uses_hub_dataset else Path(f"{split}.hub")
        frame = frame.reset_index(drop=True)
        frame, n_empty, text_problems = _check_texts(frame, text_columns, f"data.{split}", sources[split], path, d.drop_empty)
        problems += text_problems
        if n_empty and d.drop_empty:
            dropped[split] = n_empty
        rows = [int(i) for i in frame.index]
        ids, label_problems = encode_labels(list(frame[d.label]), labels, "data.label" if split == "train" else f"data.{split}", sources[split], rows=rows)
        problems += label_problems
        columns = {"text": frame[d.text].astype(str).tolist()}
        if d.text_pair:
            columns["text_pair"] = frame[d.text_pair].astype(str).tolist()
        columns["label"] = ids
        encoded[split] = columns
    if "train" in encoded and not encoded["train"]["label"] and not problems:
        problems.append(Problem("data.train", f"no rows left in {sources['train']} after dropping {dropped.get('train', 0)} with empty texts", "fill in the texts"))
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
    """Hold out validation_fraction of train (seeded), unless the recipe names a validation split."""
    fraction = recipe.data.validation_fraction
    if "validation" in splits or fraction is None:
        return splits, sources
    n = len(splits["train"])
    held_out = math.ceil(n * fraction)
    if held_out < 1 or n - held_out < 2:
        raise DataError(
            f"data.validation_fraction = {fraction} of {n} training rows in {sources['train']} leaves {held_out} for validation and {n - held_out} for training",
            fix="use more training rows, a different validation_fraction, or a data.validation file",
        )
    parts = splits["train"].train_test_split(test_size=held_out, seed=recipe.train.seed)
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
        "tokenizer": tokenizer_fingerprint(tokenizer),
    }
    if recipe.uses_hub_dataset:
        parts["hub"] = hub_fingerprints(recipe)
        if parts["hub"] is None:
            return None
    else:
        parts["files"] = {split: _hash_file(p) for split in SPLITS if (p := recipe.data_path(split)) is not None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _tokenize_batch(tokenizer, max_length: int, is_pair: bool):
    unk = tokenizer.unk_token_id
    # the untruncated pass below is deliberate (it measures lengths); its "longer than the maximum
    # sequence length" warning would only alarm the user about inputs that training does truncate
    warned = getattr(tokenizer, "deprecation_warnings", None)
    if isinstance(warned, dict):
        warned["sequence-length-is-longer-than-the-specified-maximum"] = True

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
