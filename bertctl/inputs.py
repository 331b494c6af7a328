"""The one input layer: read a user's table or texts, check them, name their rows (their labels: bertctl.labels).

    frame = read_table(Path("news.csv"))              # csv/tsv/jsonl/json/parquet/txt -> DataFrame of raw values
    require_columns(list(frame.columns), {"--text": "headline", "--label": "topic"}, "news.csv")
    row_name(path, 3)                                 # "line 5": where a person finds row 3 (0-based) in the file
    for chunk in read_table_chunks(path, 2048).chunks: ...   # the same rows, a chunk at a time: files of any size

A recipe's splits (`bertctl.data.load_data`), `eval --data`, `predict --file`, `attention --data` and `pretrain
--data` all read through here, so a file reads, and its problems are reported, the same way in every command.
pandas is imported inside functions: `bertctl predict "text"` never loads it.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import functools
import io
import itertools
import json
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator, NamedTuple

from bertctl.errors import DataError, Problem

if TYPE_CHECKING:
    import pandas as pd

MAX_ROWS_SHOWN = 5
STDIN_NAME = "<stdin>"


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------------------------
# bytes and text


def check_readable(path: Path, what: str, *, missing_fix: str | None = None) -> None:
    """A DataError unless `path` is an existing file (`what` names what it should be)."""
    if not path.exists():
        relative = "" if path.is_absolute() else f": relative paths resolve against the working directory, {Path.cwd()}"
        raise DataError(f"{path}: file not found", fix=missing_fix or f"check the path{relative}")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not {what}", fix="name the file itself")


def read_file_bytes(path: Path, what: str, *, missing_fix: str | None = None) -> bytes:
    """The bytes of a user's file, or a DataError that says why they can't be read."""
    check_readable(path, what, missing_fix=missing_fix)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})", fix="check the file's permissions") from None


def _iconv(path: Path, source: str, target: str, why: str) -> str:
    if str(path) == STDIN_NAME:  # `iconv ... <stdin> > fixed` would read a file named "<stdin>"
        return f"convert the text on its way in: `iconv -f {source} -t {target} FILE | bertctl predict -`"
    return f"{why}: `iconv -f {source} -t {target} {shlex.quote(str(path))} > fixed{path.suffix}`"


def _double_decoded_fix(text: str, path: Path) -> str:
    """The repair for UTF-8 that was read as Latin-1 (or Windows-1252) and saved as UTF-8 again.

    Encoding the text back to that 8-bit code page gives the original bytes exactly when they are valid
    UTF-8; cp1252 is tried second because it maps 0x80-0x9f to printable characters (’ became 'â€™').
    """
    for name, codec in (("latin1", "latin-1"), ("cp1252", "cp1252")):
        try:
            text.encode(codec).decode("utf-8")
        except UnicodeError:
            continue
        return _iconv(path, "utf-8", name, "undo the second decoding, which restores the original text exactly") + ", or re-export the file from the original source"
    return "re-export the file as plain UTF-8 (without a BOM) from the original source"


def decode_text(raw: bytes, path: Path) -> str:
    """UTF-8 text without a BOM, or a DataError that says on which line the bad bytes are and how to convert them."""
    path = Path(path)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(
            f"{path}: is UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8",
            fix=_iconv(path, "utf-16", "utf-8", "re-save it as UTF-8 (Excel: 'CSV UTF-8')"),
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, raw[: exc.start].count(b"\n") + 1, raw[exc.start : exc.start + 1]) from None
    if text.startswith("\u00ef\u00bb\u00bf"):
        raise DataError(
            f"{path}: the file starts with 'ï»¿', a UTF-8 byte-order mark that was decoded twice, so its text is garbled",
            fix=_double_decoded_fix(text, path),
        )
    # Excel writes a BOM before the header; it is not part of the first column's name
    return text.removeprefix("\ufeff")


def _not_utf8(path: Path, line: int, byte: bytes) -> DataError:
    return DataError(
        f"{path}: not UTF-8 text (byte 0x{byte.hex()} on line {line}); it looks like Latin-1/Windows-1252",
        fix=_iconv(path, "latin1", "utf-8", "re-save it as UTF-8"),
    )


def decoded_lines(stream: BinaryIO, path: Path) -> Iterator[str]:
    """A binary stream's lines (ends kept), checked and decoded as decode_text does a whole file, a line at a time."""
    for number, raw in enumerate(stream, start=1):
        if number == 1:
            yield decode_text(raw, path)  # the byte-order-mark checks, and the BOM dropped
            continue
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, number, raw[exc.start : exc.start + 1]) from None


def line_chunks(source: Path | BinaryIO, size: int, name: str = STDIN_NAME) -> "Chunks":
    """Every line of a text file or of a stream (stdin, called `name`), blank ones included (each line is one
    input), as ("line N", text) pairs, about `size` at a time; lines split as str.splitlines splits them.

    A file is read through once first, so a bad byte anywhere is reported before any line is used.
    """
    if not isinstance(source, Path):
        return Chunks(None, _line_chunks(contextlib.nullcontext(source), Path(name), size), lambda: 0.0)
    if _scan(source, ".txt")[0] is None:
        raise _no_text(source)
    stream, total = _open(source), source.stat().st_size or 1
    return Chunks(None, _line_chunks(stream, source, size), lambda: 1.0 if stream.closed else stream.tell() / total)


def _no_text(path: Path) -> DataError:
    return DataError(f"{path}: no text to predict (the input is empty)", fix='give texts as arguments, one per line in a file, or on stdin: echo "text" | bertctl predict -')


def _line_chunks(opened, path: Path, size: int) -> Iterator[list[tuple[str, str]]]:
    with opened as stream:
        chunk: list[tuple[str, str]] = []
        number = 0
        for line in decoded_lines(stream, path):
            for text in line.splitlines() or [""]:
                number += 1
                chunk.append((f"line {number}", text))
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if not number:
            raise _no_text(path)
        if chunk:
            yield chunk


# ---------------------------------------------------------------------------------------------
# tables

_QUOTED_FIELD = re.compile(r'"(?:[^"]|"")*"')


def _tsv_quoting(lines: Iterable[str]) -> int:
    """How to read a TSV's double quotes: as CSV quoting, or as plain characters.

    Many TSVs (GLUE among them) are line-oriented and contain stray quotes ('"Hi, she said'). Read as CSV
    quoting, such a quote swallows the lines after it and rows merge silently. So when every line holds
    the header's number of tabs and some field opens a quote it does not close on its own, the quotes are
    characters. Files whose quoted fields span lines or hold tabs keep CSV quoting. `lines` (without their
    ends) are read to the last, so a file streamed through here is also checked whole.
    """
    tabs, ragged, stray = None, False, False
    for line in lines:
        if not line.strip():
            continue
        tabs = line.count("\t") if tabs is None else tabs
        ragged = ragged or line.count("\t") != tabs
        stray = stray or ('"' in line and any(v.startswith('"') and not _QUOTED_FIELD.fullmatch(v) for v in line.split("\t")))
    return csv.QUOTE_NONE if stray and not ragged else csv.QUOTE_MINIMAL


def _csv_options(suffix: str, quoting: int) -> dict[str, Any]:
    """How pandas reads every csv/tsv, whole or in chunks."""
    # keep_default_na off: an empty cell stays "", reported as an empty text
    return {"sep": "\t" if suffix == ".tsv" else ",", "dtype": str, "keep_default_na": False, "na_values": [], "quoting": quoting}


def _parse_error(exc: Exception, path: Path, suffix: str, header: str) -> DataError:
    message = first_line(exc)
    fix = "quote fields that contain the delimiter or a newline, and check every row has the header's column count"
    if "EOF inside string" in message:
        fix = 'a field opens a double quote that never closes: close it, or double quotes inside a quoted field ("")'
    return DataError(f"{path}: cannot parse as {suffix.lstrip('.')}: {message}.{_delimiter_hint(header, suffix)}", fix=fix)


def _delimiter_hint(text: str, suffix: str) -> str:
    header = text.split("\n", 1)[0]
    if suffix == ".csv" and "\t" in header and "," not in header:
        return " The header is separated by tabs, not commas: the file looks like a TSV; rename it to .tsv."
    if suffix == ".tsv" and "\t" not in header and "," in header:
        return " The header is separated by commas, not tabs: the file looks like a CSV; rename it to .csv."
    return ""


def _read_delimited(text: str, path: Path, suffix: str) -> "pd.DataFrame":
    import pandas as pd

    try:
        return pd.read_csv(io.StringIO(text), **_csv_options(suffix, _tsv_quoting(text.splitlines()) if suffix == ".tsv" else csv.QUOTE_MINIMAL))
    except pd.errors.ParserError as exc:
        raise _parse_error(exc, path, suffix, text) from None


def _json_record(line: str, number: int, path: Path) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise DataError(f"{path}: line {number} is not valid JSON ({exc})", fix="write one JSON object per line (JSON Lines)") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: line {number} is a JSON {type(record).__name__}, not an object", fix='write one object per line, e.g. {"text": "...", "label": "..."}')
    return record


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
                raise DataError(f"{path}: cannot use its columns: {first_line(exc)}", fix="give every column the same number of values") from None
        if whole is not None and not isinstance(whole, dict):
            raise DataError(f"{path}: holds a JSON {type(whole).__name__}, not records", fix="write a list of objects, or one object per line (JSON Lines)")
    records = [_json_record(line, number, path) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    return pd.DataFrame.from_records(records)


def read_table(path: Path, *, missing_fix: str | None = None) -> "pd.DataFrame":
    """One data file as a DataFrame of its raw values (strings for csv/tsv/txt), headers stripped.

    A .txt is one text per non-blank line, in a column named `text`. `missing_fix` replaces the default
    advice for a path that does not exist (relative paths resolve against the working directory).
    """
    import pandas as pd

    path = Path(path)
    raw = read_file_bytes(path, "a data file", missing_fix=missing_fix)
    if not raw.strip() or raw.strip() in (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"):
        raise _empty_file(path)
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
        raise DataError(f"{path}: cannot parse as {suffix.lstrip('.')}: {first_line(exc)}", fix="check the file's format matches its extension") from None
    frame.columns = _column_names(frame.columns, path)
    if len(frame) == 0:
        raise _no_rows(path)
    return frame


def _column_names(names: Iterable[Any], path: Path) -> list[str]:
    columns = [str(c).strip() for c in names]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataError(f"{path}: repeated column names {repeated} (after trimming spaces)", fix="give every column its own name")
    return columns


# ---------------------------------------------------------------------------------------------
# tables a chunk at a time: memory that does not grow with the file


class Chunks(NamedTuple):
    columns: list[str] | None  # a table's (None: lines of text)
    chunks: Iterator[list[tuple[str, dict[str, Any]]]]  # (row name, row) pairs, in file order
    fraction: Callable[[], float]  # how much of the file has been read, for a progress bar


def read_table_chunks(path: Path, size: int) -> Chunks:
    """A data file's rows as read_table reads them, `size` at a time (a .json document is read whole).

    A text file is first read through once, a line at a time, so a bad byte, a bad JSON line, a TSV's quoting
    and a JSONL's columns are known before any row is used; its rows keep their raw values (a JSONL's ints stay
    ints whatever the other rows hold).
    """
    path = Path(path)
    check_readable(path, "a data file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_chunks(path, size)
    if suffix not in {".csv", ".tsv", ".jsonl"}:
        frame = read_table(path)
        rows = [(row_name(path, i), {k: json_value(v) for k, v in r.items()}) for i, r in enumerate(frame.to_dict("records"))]
        done = [0]

        def whole() -> Iterator[list[tuple[str, dict[str, Any]]]]:
            for start in range(0, len(rows), size):
                done[0] = start + size
                yield rows[start : start + size]

        return Chunks(list(frame.columns), whole(), lambda: min(1.0, done[0] / len(rows)))
    header, quoting, keys = _scan(path, suffix)
    if header is None:
        raise _empty_file(path)
    total = path.stat().st_size or 1
    stream = _open(path)

    def fraction() -> float:
        return 1.0 if stream.closed else stream.tell() / total

    if suffix == ".jsonl":
        names = dict(zip(keys, _column_names(keys, path)))
        return Chunks(list(names.values()), _jsonl_chunks(stream, path, size, names), fraction)
    import pandas as pd

    try:
        reader = pd.read_csv(stream, chunksize=size, encoding="utf-8-sig", **_csv_options(suffix, quoting))
        first = next(reader)
    except pd.errors.ParserError as exc:
        raise _parse_error(exc, path, suffix, header) from None
    columns = _column_names(first.columns, path)
    if len(first) == 0:
        raise _no_rows(path)

    def chunks() -> Iterator[list[tuple[str, dict[str, Any]]]]:
        frame = first
        with stream, _open(path) as again:
            names = _line_names(again, path, suffix, quoting)
            while frame is not None:
                yield [(next(names), {c: json_value(v) for c, v in zip(columns, r.values())}) for r in frame.to_dict("records")]
                try:
                    frame = next(reader, None)
                except pd.errors.ParserError as exc:
                    raise _parse_error(exc, path, suffix, header) from None

    return Chunks(columns, chunks(), fraction)


def _line_names(stream: BinaryIO, path: Path, suffix: str, quoting: int) -> Iterator[str]:
    """Each csv/tsv row's "line N", from the same records read by the csv module (as row_name names them); "row N"
    from where the csv module cannot follow."""
    rows = 0
    try:
        for rows, line in enumerate(itertools.islice(_record_starts(decoded_lines(stream, path), suffix, quoting), 1, None), start=1):
            yield f"line {line}"
    except csv.Error:
        pass
    while True:
        rows += 1
        yield f"row {rows}"


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})", fix="check the file's permissions") from None


def _no_rows(path: Path) -> DataError:
    return DataError(f"{path}: has a header but no rows", fix="add data rows")


def _empty_file(path: Path) -> DataError:
    return DataError(f"{path}: the file is empty", fix="fill it with a header line and rows, or point the recipe at another file")


def _scan(path: Path, suffix: str) -> tuple[str | None, int, list[str]]:
    """One pass through a text file, a line at a time: its first line with text (None: none has any), a TSV's
    quoting, a JSONL's keys in first-seen order."""
    seen: list[str] = []
    with _open(path) as stream:

        def content() -> Iterator[tuple[int, str]]:
            for number, line in enumerate(decoded_lines(stream, path), start=1):
                if line.strip():
                    if not seen:
                        seen.append(line)
                    yield number, line.rstrip("\r\n")

        keys: dict[str, None] = {}
        quoting = csv.QUOTE_MINIMAL
        if suffix == ".jsonl":
            for number, line in content():
                keys.update(dict.fromkeys(_json_record(line, number, path)))
        elif suffix == ".tsv":
            quoting = _tsv_quoting(line for _, line in content())
        else:
            for _ in content():
                pass
    return (seen[0] if seen else None), quoting, list(keys)


def _jsonl_chunks(stream: BinaryIO, path: Path, size: int, names: dict[str, str]) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    with stream:
        chunk: list[tuple[str, dict[str, Any]]] = []
        records = 0
        for number, line in enumerate(decoded_lines(stream, path), start=1):
            if line.strip():
                record = _json_record(line, number, path)
                records += 1
                chunk.append((f"record {records}", {name: json_value(record.get(key)) for key, name in names.items()}))
                if len(chunk) == size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk


def _parquet_chunks(path: Path, size: int) -> Chunks:
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise _empty_file(path)
    try:
        file = pq.ParquetFile(path)
        # pandas saves a frame's index beside its columns; read_table (pd.read_parquet) makes it the index again
        index = (file.schema_arrow.pandas_metadata or {}).get("index_columns", [])
    except Exception as exc:  # pyarrow raises several types for a file that is not parquet
        raise DataError(f"{path}: cannot parse as parquet: {first_line(exc)}", fix="check the file's format matches its extension") from None
    names = [name for name in file.schema_arrow.names if name not in index]
    columns = _column_names(names, path)
    total = file.metadata.num_rows
    if total == 0:
        raise _no_rows(path)
    done = [0]

    def chunks() -> Iterator[list[tuple[str, dict[str, Any]]]]:
        for batch in file.iter_batches(batch_size=size, columns=names):
            rows = batch.to_pylist()
            yield [(f"row {done[0] + i + 1}", {c: json_value(r[n]) for c, n in zip(columns, names)}) for i, r in enumerate(rows)]
            done[0] += len(rows)

    return Chunks(columns, chunks(), lambda: done[0] / total)


# ---------------------------------------------------------------------------------------------
# naming rows


def _record_starts(lines: Iterable[str], suffix: str, quoting: int) -> Iterator[int]:
    """The file line each csv/tsv record starts on, the header's (line 1) included, reading `lines` as they come."""
    delimiter = "\t" if suffix == ".tsv" else ","
    last = [""]

    def remembered() -> Iterator[str]:
        for line in lines:
            last[0] = line
            yield line

    reader = csv.reader(remembered(), delimiter=delimiter, quoting=quoting)
    while True:
        start = reader.line_num + 1
        try:
            next(reader)
        except StopIteration:
            return
        # pandas skips a line of nothing but spaces (when no delimiter is among them): it is no record
        if reader.line_num > start or last[0].strip() or delimiter in last[0]:
            yield start


@functools.lru_cache(maxsize=1)  # the file being reported on; mtime and size make an edited file a new key
def _record_lines(path: Path, mtime: float, size: int) -> list[int] | None:
    """The file line each row of read_table starts on (a csv/tsv header is line 1), or None when that can't be known."""
    try:
        text = decode_text(path.read_bytes(), path)
    except (OSError, DataError):
        return None
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [i for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    quoting = _tsv_quoting(text.splitlines()) if suffix == ".tsv" else csv.QUOTE_MINIMAL
    try:
        return list(_record_starts(io.StringIO(text, newline=""), suffix, quoting))[1:]
    except csv.Error:
        return None


def row_name(path: Path | None, index: int) -> str:
    """Where a person finds row `index` (0-based, as read_table numbers rows): the file line for csv/tsv (the
    header is line 1, quoted newlines counted) and txt, the record for json/jsonl, else the row."""
    suffix = path.suffix.lower() if path is not None else ""
    if suffix in {".jsonl", ".json"}:
        return f"record {index + 1}"
    try:
        stat = path.stat() if suffix in {".csv", ".tsv", ".txt"} else None
    except (OSError, ValueError):
        stat = None
    lines = _record_lines(path, stat.st_mtime, stat.st_size) if stat is not None else None
    return f"line {lines[index]}" if lines is not None and index < len(lines) else f"row {index + 1}"


def rows_named(path: Path | None, rows: list[int]) -> str:
    return ", ".join(row_name(path, r) for r in rows[:MAX_ROWS_SHOWN]) + (" ..." if len(rows) > MAX_ROWS_SHOWN else "")


# ---------------------------------------------------------------------------------------------
# columns and texts


def is_blank(value: Any) -> bool:
    """None, NaN (or pandas' NA), or a string of whitespace: no text (or no label) at all."""
    if isinstance(value, str):
        return value.strip() == ""
    if value is None or (isinstance(value, float) and value != value):
        return True
    pd = sys.modules.get("pandas")  # other missing markers only come from frames pandas read
    try:
        return pd is not None and pd.api.types.is_scalar(value) and bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def json_value(value: Any) -> Any:
    """A table cell as a JSON value: None when missing, a numpy array as a list."""
    return None if not isinstance(value, str) and is_blank(value) else (value.tolist() if hasattr(value, "tolist") else value)


def cell_text(value: Any) -> str:
    """A cell as text: '' for None/NaN (never 'nan')."""
    return value if isinstance(value, str) else ("" if is_blank(value) else str(value))


def missing_column_problem(key: str, column: str, columns: list[str], where: str) -> Problem:
    """`column` (named by recipe key or flag `key`) is not among `columns`: a did-you-mean and delimiter hints."""
    close = difflib.get_close_matches(column, columns, n=1, cutoff=0.5)
    lowered = {c.lower().strip("# "): c for c in columns}
    guess = close[0] if close else lowered.get(column.lower().strip("# "))
    set_it = f"pass {key} {shlex.quote(guess)}" if key.startswith("--") else f"set {key} = {guess!r}"
    fix = f"did you mean {guess!r}? {set_it}" if guess else f"set {key} to one of the file's columns"
    hint = ""
    if len(columns) == 1:
        if "\t" in columns[0]:
            hint = " (the header is one column holding tabs: the file is tab-separated; name it .tsv)"
            fix = "rename the file to .tsv (or re-save it comma-separated)"
        elif "," in columns[0] or ";" in columns[0]:
            hint = " (the header is one column holding commas/semicolons: is the delimiter right for the file's extension?)"
            fix = "use a .csv for comma-separated data and a .tsv for tab-separated data"
    return Problem(key, f"column {column!r} not in {where} (columns: {', '.join(columns)}){hint}", fix)


def column_problems(columns: list[str], wanted: dict[str, str | None], where: str) -> list[Problem]:
    """A problem for each column in `wanted` (key or flag -> column, None when unused) that is not in `columns`."""
    return [missing_column_problem(key, name, columns, where) for key, name in wanted.items() if name is not None and name not in columns]


def problems_error(problems: list[Problem], note: str = "") -> DataError:
    """Problems keyed by command-line flags, as one DataError (recipes report theirs as a RecipeError)."""
    return DataError("\n".join(f"{p.key}: {p.message}" for p in problems) + note, fix="; ".join(p.fix for p in problems if p.fix))


def require_columns(columns: list[str], wanted: dict[str, str | None], where: str, *, note: str = "") -> None:
    """Every column in `wanted` exists, else one DataError naming them all (and `note`)."""
    if problems := column_problems(columns, wanted, where):
        raise problems_error(problems, note)


def blank_text_problem(frame: "pd.DataFrame", columns: list[str], key: str, where: str, path: Path | None, fix: str) -> tuple[list[int], Problem | None]:
    """The index labels of rows whose text (in any of `columns`) is empty, whitespace or NaN, and the problem to report."""
    values = zip(*(frame[c].tolist() for c in columns))
    bad = [int(i) for i, row in zip(frame.index, values) if any(map(is_blank, row))]
    if not bad:
        return [], None
    return bad, Problem(key, f"{_count(len(bad), 'row')} with an empty or NaN text in {where}: {rows_named(path, bad)}", fix)


def read_texts(path: Path, column: str = "text") -> list[str]:
    """The non-blank texts of one column of a data file (of a .txt: its lines), for unlabeled uses."""
    frame = read_table(path)
    require_columns(list(frame.columns), {"--text": column}, str(path))
    texts = [t for t in map(cell_text, frame[column].tolist()) if not is_blank(t)]
    if not texts:
        raise DataError(f"{path}: no non-empty texts in column {column!r}", fix="point --data at a file with text rows")
    return texts
