"""What to predict on: texts from the command line, a file (txt, csv, tsv, jsonl, parquet) or stdin, read a chunk
at a time so a file of any size fits in memory, each text with a human reference to where it came from.

    stream = open_inputs(file=Path("news.csv"), text_column="headline")   # checked now, before a model loads
    stream.for_model(classifier.settings)                                 # default columns: the run's data.text
    for items in stream.items(2048): ...                                  # lists of InputText
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from bertctl import inputs
from bertctl.errors import BertctlError
from bertctl.inference.classifier import DEFAULT_CHUNK_SIZE, RunSettings
from bertctl.inputs import cell_text, is_blank, require_columns

TABLE_SUFFIXES = {".csv", ".tsv", ".jsonl", ".json", ".parquet"}


@dataclass
class InputText:
    text: str
    pair: str | None
    where: str  # "text 2", "line 7", "record 3": how the user finds it
    row: dict[str, Any] | None = None  # a table's row, every column: written out beside the prediction


@dataclass
class InputStream:
    """What `bertctl predict` labels, read `items(size)` at a time so a file of any size fits in memory."""

    source: str  # "the command line", a file path, "stdin"
    chunks: Iterator[list[tuple[str, Any]]]  # (where, text) pairs; a table's: (where, row), its texts picked by for_model
    table: list[str] | None = None  # a table's columns
    text_column: str | None = None
    pair_column: str | None = None
    pair: str | None = None  # --pair: the second text of the one command-line text
    file: Path | None = None
    fraction: Callable[[], float] | None = None  # how much of the file has been read

    @property
    def has_pairs(self) -> bool:
        return self.pair is not None or self.pair_column is not None

    def for_model(self, settings: RunSettings) -> "InputStream":
        """A table's texts from --text/--text-pair, else from the run's data.text/data.text_pair (as eval reads them)."""
        if self.table is not None:
            self.text_column, self.pair_column = self.text_column or settings.text or "text", self.pair_column or settings.text_pair
            note = "\n(unset, --text/--text-pair are the run's data.text/text_pair)" if settings.text or settings.text_pair else ""
            require_columns(self.table, {"--text": self.text_column, "--text-pair": self.pair_column}, self.source, note=note)
        return self

    def items(self, size: int, skip: int = 0) -> Iterator[list[InputText]]:
        """Lists of `size` inputs (the last one shorter) in input order, after the first `skip`."""
        text, pair = self.text_column, self.pair_column
        for chunk in _rechunk(self.chunks, size, skip):
            if self.table is None:
                yield [InputText(value, self.pair, where) for where, value in chunk]
            else:
                yield [InputText(cell_text(row[text]), cell_text(row[pair]) if pair else None, where, row) for where, row in chunk]


def _rechunk(chunks: Iterable[list], size: int, skip: int) -> Iterator[list]:
    """The same items in lists of exactly `size`, the first `skip` dropped: chunk boundaries then fall where an
    uninterrupted run put them, so a resumed run batches (and scores) each chunk as that run did."""
    buffer: list = []
    for chunk in chunks:
        dropped = min(skip, len(chunk))
        skip -= dropped
        buffer.extend(chunk[dropped:])
        while len(buffer) >= size:
            yield buffer[:size]
            del buffer[:size]
    if buffer:
        yield buffer


def open_inputs(
    texts: Sequence[str] = (),
    *,
    file: Path | None = None,
    text_column: str | None = None,
    pair_column: str | None = None,
    pair: str | None = None,
    stdin: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> InputStream:
    """The texts to label, each with a human reference to where it came from. A file is checked whole here,
    a line at a time (encoding, JSON, named columns), before any model loads; its rows are read when iterated."""
    texts = list(texts)
    from_stdin = texts == ["-"] or (file is not None and str(file) == "-")
    if file is not None and texts:
        raise BertctlError("give texts as arguments or --file, not both", fix="bertctl predict --file texts.txt, or bertctl predict \"text\" \"more text\"")
    if pair is not None and (from_stdin or file is not None or len(texts) != 1):
        raise BertctlError("--pair goes with a single text argument", fix='bertctl predict "first text" --pair "second text"; for many pairs use --file FILE --text COL --text-pair COL')
    if text_column is not None and (file is None or from_stdin):
        raise BertctlError("--text names a column of --file", fix="bertctl predict --file texts.csv --text COL; texts given as arguments need no --text")
    if pair_column is not None and (file is None or from_stdin):
        raise BertctlError("--text-pair names a column of --file", fix="bertctl predict --file pairs.csv --text COL --text-pair COL")
    if from_stdin:
        stream = stdin if stdin is not None else sys.stdin
        binary = stream.buffer if hasattr(stream, "buffer") else io.BytesIO(stream.read().encode("utf-8"))
        return InputStream("stdin", inputs.line_chunks(binary, chunk_size).chunks)
    if file is None:
        if not texts:
            raise BertctlError("no texts to predict", fix='bertctl predict "some text" ["more text" ...], --file FILE, or - to read stdin')
        return InputStream("the command line", iter([[(f"text {i + 1}", t) for i, t in enumerate(texts)]]), pair=pair)

    file = Path(file).expanduser()
    if file.suffix.lower() in TABLE_SUFFIXES:
        table = inputs.read_table_chunks(file, chunk_size)
        # named columns are checked now, before the model loads; defaults need the run's recipe (for_model)
        inputs.require_columns(table.columns, {"--text": text_column, "--text-pair": pair_column}, str(file))
        return InputStream(str(file), table.chunks, table.columns, text_column, pair_column, file=file, fraction=table.fraction)
    if text_column is not None:
        raise BertctlError(
            f"--text names a column, but {file} is read as plain text (one text per line)",
            fix=f"drop --text, or use a csv/tsv/jsonl/parquet file (suffixes: {', '.join(sorted(TABLE_SUFFIXES))})",
        )
    inputs.check_readable(file, "a file of texts", missing_fix="check the path; give texts one per line in a .txt file, or a csv/tsv/jsonl/parquet file with --text COL")
    lines = inputs.line_chunks(file, chunk_size)
    return InputStream(str(file), lines.chunks, file=file, fraction=lines.fraction)


def is_empty(item: InputText, has_pairs: bool) -> bool:
    """An input with nothing to classify: a blank text, or a blank second text of a pair."""
    return is_blank(item.text) or (has_pairs and is_blank(item.pair))
