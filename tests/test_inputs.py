"""The input layer: reading one file in every format and encoding, naming its rows, and the one label rule."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertctl.errors import DataError
from bertctl.inputs import decode_text, json_value, line_chunks, missing_column_problem, read_table, read_table_chunks, row_name
from conftest import ROWS, write_rows

# ---------------------------------------------------------------------------------------------
# formats


def test_inputs_json_array_and_column_table(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(ROWS), encoding="utf-8")
    assert read_table(tmp_path / "a.json")["text"].tolist() == [r["text"] for r in ROWS]
    (tmp_path / "b.json").write_text(json.dumps({"text": ["x", "y"], "label": [0, 1]}), encoding="utf-8")
    assert read_table(tmp_path / "b.json")["label"].tolist() == [0, 1]


def test_inputs_txt_is_one_text_per_line(tmp_path):
    (tmp_path / "t.txt").write_text("first\n\nsecond\n", encoding="utf-8")
    assert read_table(tmp_path / "t.txt")["text"].tolist() == ["first", "second"]


def test_inputs_tsv_stray_quotes_do_not_merge_rows(tmp_path):
    # read as CSV quoting, the first quote would swallow the next lines into one text
    (tmp_path / "s.tsv").write_bytes(b'text\tlabel\n"Hi, she said\ta\nplain "word\tb\n"quoted" and more\ta\n')
    frame = read_table(tmp_path / "s.tsv")
    assert frame["text"].tolist() == ['"Hi, she said', 'plain "word', '"quoted" and more']
    assert frame["label"].tolist() == ["a", "b", "a"]


def test_inputs_tsv_with_proper_quoting_is_unquoted(tmp_path):
    write_rows(tmp_path / "p.tsv", [{"text": 'say "hi"\tnow', "label": "a"}, {"text": "multi\nline", "label": "b"}])
    assert read_table(tmp_path / "p.tsv")["text"].tolist() == ['say "hi"\tnow', "multi\nline"]


def test_inputs_unclosed_quote_in_csv_names_the_cause(tmp_path):
    (tmp_path / "u.csv").write_text('text,label\n"never closed,a\nok,b\n', encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_table(tmp_path / "u.csv")
    assert "never closes" in excinfo.value.fix

# ---------------------------------------------------------------------------------------------
# encodings


def test_inputs_double_decoded_bom_is_refused_with_a_fix(tmp_path):
    garbled = "\ufefftext,label\nhello,a\n".encode("utf-8").decode("latin-1").encode("utf-8")
    (tmp_path / "dbl.csv").write_bytes(garbled)
    with pytest.raises(DataError) as excinfo:
        read_table(tmp_path / "dbl.csv")
    assert "'ï»¿'" in excinfo.value.message and "decoded twice" in excinfo.value.message
    assert "re-export" in excinfo.value.fix


def test_inputs_latin1_names_the_line_and_byte(tmp_path):
    (tmp_path / "lat.csv").write_bytes("text,label\nhello,a\nworld,b\ncafé au lait,a\n".encode("latin-1"))
    with pytest.raises(DataError) as excinfo:
        read_table(tmp_path / "lat.csv")
    assert "byte 0xe9 on line 4" in excinfo.value.message
    assert "iconv -f latin1 -t utf-8" in excinfo.value.fix


def test_inputs_utf16_is_named_as_such(tmp_path):
    (tmp_path / "u16.csv").write_bytes("text,label\nhello,a\n".encode("utf-16"))
    with pytest.raises(DataError) as excinfo:
        read_table(tmp_path / "u16.csv")
    assert "UTF-16" in excinfo.value.message


def test_inputs_decode_text_strips_only_a_leading_bom():
    assert decode_text("\ufeffa\ufeffb".encode(), Path("x.txt")) == "a\ufeffb"


# MRPC-like text: é (C3 A9), an en dash (E2 80 93) and a curly apostrophe (E2 80 99) after a UTF-8 BOM
ORIGINAL = "\ufeffsentence,label\n\"Les Misérables – it’s back\",1\nplain,0\n".encode("utf-8")


def garbled_mrpc(tmp_path: Path, codec: str) -> tuple[Path, str]:
    """ORIGINAL read as `codec` and saved as UTF-8 again ('MisÃ©rables'; with cp1252 also 'itâ€™s'), and the repair."""
    path = tmp_path / "mrpc.csv"
    path.write_bytes(ORIGINAL.decode(codec).encode("utf-8"))
    return path, f"iconv -f utf-8 -t {'latin1' if codec == 'latin-1' else codec} {shlex.quote(str(path))} > fixed.csv"


@pytest.mark.parametrize("codec", ["latin-1", "cp1252"])
def test_inputs_double_decoded_bom_names_the_iconv_that_restores_the_file(tmp_path, codec):
    garbled, command = garbled_mrpc(tmp_path, codec)
    with pytest.raises(DataError) as excinfo:
        read_table(garbled)
    assert "decoded twice" in excinfo.value.message and f"`{command}`" in excinfo.value.fix
    with pytest.raises(DataError) as piped:
        decode_text(garbled.read_bytes(), Path("<stdin>"))
    iconv = " ".join(command.split()[:5])  # `iconv -f utf-8 -t latin1`
    assert f"`{iconv} FILE | bertctl predict -`" in piped.value.fix


@pytest.mark.slow  # runs iconv
@pytest.mark.parametrize("codec", ["latin-1", "cp1252"])
def test_inputs_double_decoded_bom_repair_command_restores_the_original_bytes(tmp_path, codec):
    garbled, command = garbled_mrpc(tmp_path, codec)
    with pytest.raises(DataError) as excinfo:
        read_table(garbled)
    assert f"`{command}`" in excinfo.value.fix
    if shutil.which("iconv") is None:
        pytest.skip("no iconv on this machine")
    subprocess.run(command, shell=True, cwd=tmp_path, check=True)
    assert (tmp_path / "fixed.csv").read_bytes() == ORIGINAL
    assert read_table(tmp_path / "fixed.csv")["sentence"].tolist() == ["Les Misérables – it’s back", "plain"]


def test_inputs_double_decoded_bom_without_a_round_trip_asks_for_a_re_export(tmp_path):
    # '日本' fits neither latin-1 nor cp1252: no iconv command can undo this file's garbling
    (tmp_path / "x.csv").write_bytes("\u00ef\u00bb\u00bftext,label\n日本 MisÃ©rables,a\n".encode("utf-8"))
    with pytest.raises(DataError) as excinfo:
        read_table(tmp_path / "x.csv")
    assert "re-export" in excinfo.value.fix and "iconv" not in excinfo.value.fix

# ---------------------------------------------------------------------------------------------
# file-level problems


READERS = [pytest.param(lambda path: read_table(path), id="whole"), pytest.param(lambda path: read_chunked(path), id="chunked")]


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf"])
def test_inputs_empty_file(tmp_path, content, read):
    (tmp_path / "e.csv").write_bytes(content)
    with pytest.raises(DataError) as excinfo:
        read(tmp_path / "e.csv")
    assert "the file is empty" in excinfo.value.message


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("name, content", [("h.csv", "text,label\n"), ("h.tsv", "text\tlabel\n"), ("h.json", "[]")])
def test_inputs_header_only_file(tmp_path, name, content, read):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read(tmp_path / name)
    assert "no rows" in excinfo.value.message


@pytest.mark.parametrize("read", READERS)
def test_inputs_missing_or_directory_file(tmp_path, read):
    with pytest.raises(DataError, match="file not found"):
        read(tmp_path / "nope.csv")
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        read(tmp_path / "d.csv")


@pytest.mark.parametrize("read", READERS)
def test_inputs_bad_jsonl_line_is_named(tmp_path, read):
    (tmp_path / "b.jsonl").write_text('{"text": "a", "label": 1}\n\n{"text": "b" "label": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 3 is not valid JSON"):
        read(tmp_path / "b.jsonl")
    (tmp_path / "l.jsonl").write_text('{"text": "a", "label": 1}\n["b", 1]\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is a JSON list, not an object"):
        read(tmp_path / "l.jsonl")


@pytest.mark.parametrize("read", READERS)
def test_inputs_garbage_parquet(tmp_path, read):
    (tmp_path / "g.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match="cannot parse as parquet"):
        read(tmp_path / "g.parquet")


@pytest.mark.parametrize("read", READERS)
def test_inputs_repeated_column_names_after_trimming(tmp_path, read):
    (tmp_path / "r.csv").write_text("text, text\na,b\n", encoding="utf-8")
    with pytest.raises(DataError, match="repeated column names"):
        read(tmp_path / "r.csv")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(
    suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt"]),
    content=st.one_of(st.binary(max_size=120), st.text(max_size=120).map(lambda s: s.encode("utf-8", "surrogatepass"))),
)
def test_inputs_read_table_random_bytes_give_a_frame_or_a_data_error(tmp_path, suffix, content):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    try:
        frame = read_table(path)
    except DataError:
        return
    assert len(frame) > 0
    assert all(isinstance(c, str) and c == c.strip() for c in frame.columns)

# ---------------------------------------------------------------------------------------------
# columns


def test_inputs_missing_column_problem_plain():
    problem = missing_column_problem("--text", "txt", ["text", "label"], "f.csv")
    assert problem.key == "--text" and "did you mean 'text'?" in problem.fix

# ---------------------------------------------------------------------------------------------
# a chunk at a time: the same rows, names and errors as reading the file whole


def read_chunked(path: Path, size: int = 2) -> tuple[list[str], list[tuple[str, dict]]]:
    table = read_table_chunks(path, size)
    return table.columns, [pair for chunk in table.chunks for pair in chunk]


def read_whole(path: Path) -> tuple[list[str], list[tuple[str, dict]]]:
    frame = read_table(path)
    return list(frame.columns), [(row_name(path, i), {k: json_value(v) for k, v in r.items()}) for i, r in enumerate(frame.to_dict("records"))]


TABLES = {
    "q.csv": 'id,text\n1,"two\nlines"\n\n2,\n   \n3,"a, b"\n4\n5,last\n',
    "s.tsv": 'text\tlabel\n"Hi, she said\tWorld\nplain\tSports\n\t\nend\tWorld\n',
    "r.jsonl": '{"text": "a", "id": 1}\n\n{"text": "b"}\n{" extra ": [1, 2], "text": ""}\n',
    "a.json": json.dumps([{"text": "x", "id": 1}, {"text": "y", "id": None}]),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_inputs_chunked_reader_equals_read_table(tmp_path, name):
    path = tmp_path / name
    path.write_text(TABLES[name], encoding="utf-8")
    assert read_chunked(path) == read_whole(path)
    assert read_chunked(path, 1) == read_chunked(path, 1000)


def test_inputs_chunked_reader_keeps_parquet_columns_without_pandas_index(tmp_path):
    import pandas as pd

    path = tmp_path / "p.parquet"
    pd.DataFrame({"text": ["a", None, "c"], "n": [1.5, float("nan"), 3.0]}, index=[7, 8, 9]).to_parquet(path)
    columns, rows = read_chunked(path)
    assert (columns, rows) == read_whole(path) and columns == ["text", "n"]
    assert rows == [("row 1", {"text": "a", "n": 1.5}), ("row 2", {"text": None, "n": None}), ("row 3", {"text": "c", "n": 3.0})]


def test_inputs_row_name_skips_lines_of_spaces_as_pandas_does(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("text,label\nfirst,a\n   \nsecond,b\n", encoding="utf-8")
    assert read_table(path)["text"].tolist() == ["first", "second"]
    assert row_name(path, 1) == "line 4"


@pytest.mark.parametrize(
    "name, content, says",
    [
        ("bad.csv", "text\n" + "fine\n" * 5000 + "caf\xe9\n", "byte 0xe9 on line 5002"),
        ("bad.jsonl", '{"text": "fine"}\n' * 5000 + '{"text": \n', "line 5001 is not valid JSON"),
        ("bad.txt", "fine\n" * 5000 + "caf\xe9\n", "byte 0xe9 on line 5001"),
    ],
)
def test_inputs_chunked_readers_check_the_whole_file_before_the_first_row(tmp_path, name, content, says):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(DataError, match=says):  # raised when opened, not when the last chunk comes
        read_table_chunks(path, 10) if path.suffix != ".txt" else line_chunks(path, 10)


@pytest.mark.parametrize("name", ["big.csv", "big.jsonl", "big.txt"])
def test_inputs_chunked_readers_read_a_chunk_not_the_file(tmp_path, name):
    path = tmp_path / name
    line = "a headline about markets, long enough to matter " * 3
    if path.suffix == ".csv":
        path.write_text("text\n" + f'"{line}"\n' * 20_000, encoding="utf-8")
    elif path.suffix == ".jsonl":
        path.write_text(json.dumps({"text": line}) + "\n" * 1 + (json.dumps({"text": line}) + "\n") * 19_999, encoding="utf-8")
    else:
        path.write_text(f"{line}\n" * 20_000, encoding="utf-8")
    table = read_table_chunks(path, 100) if path.suffix != ".txt" else line_chunks(path, 100)
    first = next(table.chunks)
    assert len(first) == 100 and table.fraction() < 0.2  # ~3 MB file: a buffer's worth read, not the file
    assert sum(len(chunk) for chunk in table.chunks) == 19_900 and table.fraction() == 1.0


def test_inputs_line_chunks_keep_every_line_as_str_splitlines_does(tmp_path):
    raw = "\ufeffone\r\ntwo\n\n  \nthree\u2028four\nlast".encode("utf-8")
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    lines = [pair for chunk in line_chunks(path, 2).chunks for pair in chunk]
    assert [text for _, text in lines] == decode_text(raw, path).splitlines() == ["one", "two", "", "  ", "three", "four", "last"]
    assert [where for where, _ in lines] == [f"line {i}" for i in range(1, 8)]
    with pytest.raises(DataError, match="no text to predict"):
        line_chunks(write_bytes(tmp_path / "blank.txt", b"\n \n"), 2)


def write_bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(
    suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".parquet"]),
    content=st.one_of(
        st.binary(max_size=120),
        st.text(alphabet=st.sampled_from('ab ,\t"\n\r{}:[]1'), max_size=80).map(lambda s: s.encode("utf-8")),
        st.text(max_size=120).map(lambda s: s.encode("utf-8", "surrogatepass")),
    ),
)
def test_inputs_chunked_reader_and_read_table_agree_on_random_bytes(tmp_path, suffix, content):
    path = write_bytes(tmp_path / f"fuzz{suffix}", content)
    outcomes = []
    for read in (read_whole, read_chunked):
        try:
            outcomes.append(read(path))
        except DataError:
            outcomes.append("DataError")
    assert outcomes[0] == outcomes[1]
