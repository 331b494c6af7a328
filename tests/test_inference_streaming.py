"""`bertctl predict` at scale: chunked = one chunk, order kept, empties reported, atomic and resumable output, shards."""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bertctl import inference
from bertctl.inference import streaming
from bertctl.cli import app
from bertctl.errors import BertctlError, DataError
from conftest import agnews_rows, write_rows

runner = CliRunner()


def invoke(*args, input=None):
    result = runner.invoke(app, [str(a) for a in args], input=input)
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def varied(varied_classifier_dir):
    return inference.load_for_inference(varied_classifier_dir, device="cpu")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """AG News rows in no length order, with empty texts in several chunks (and a first chunk of only empty ones)."""
    items = [{"id": i, "text": r["text"], "label": r["label"]} for i, r in enumerate(agnews_rows("dev", 30))]
    random.Random(5).shuffle(items)
    for i in (0, 1, 2, 11, 24):
        items[i]["text"] = "" if i % 2 else "   "
    return items


def run(classifier, path: Path, output: Path | None, chunk_size: int, **kwargs) -> streaming.StreamSummary:
    stream = inference.open_inputs(file=path, chunk_size=chunk_size).for_model(classifier.settings)
    return streaming.predict_stream(classifier, stream, output=output, chunk_size=chunk_size, batch_size=8, **kwargs)


def records(path: Path) -> list[dict]:
    suffix = Path(path.name.removesuffix(".partial")).suffix
    if suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))


def without_scores(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in ("score", "top_k", "scores")}
    out["top_k"] = [t["label"] for t in record.get("top_k", [])]
    return out


def scores(record: dict) -> list[float]:
    if "top_k" in record:
        return [t["score"] for t in record["top_k"]]
    return [float(record["score"])] if record["score"] else []


# ---------------------------------------------------------------------------------------------
# chunked output = one chunk, every format


@pytest.mark.parametrize("source, suffix", [("in.csv", ".tsv"), ("in.tsv", ".csv"), ("in.jsonl", ".jsonl"), ("in.parquet", ".csv"), ("in.txt", ".jsonl")])
def test_streaming_chunked_output_equals_one_chunk(varied, rows, tmp_path, source, suffix):
    path = tmp_path / source
    if path.suffix == ".txt":
        path.write_text("".join(r["text"] + "\n" for r in rows), encoding="utf-8")
    else:
        write_rows(path, rows)
    printed: dict[int, list] = {4: [], 10_000: []}
    for size in printed:
        run(varied, path, tmp_path / f"{size}{suffix}", chunk_size=size, echo=lambda block, first, size=size: printed[size].extend(p.to_dict() for p in block))
    written = records(tmp_path / f"4{suffix}")
    for got, want in ((written, records(tmp_path / f"10000{suffix}")), (printed[4], printed[10_000])):  # --output, and stdout's JSON lines
        assert len(got) == len(rows) == len(want)
        assert [without_scores(r) for r in got] == [without_scores(r) for r in want]
        # a chunk's texts share batches with other texts than in one chunk: float32 round-off, nothing more
        np.testing.assert_allclose(sum(map(scores, got), []), sum(map(scores, want), []), atol=2e-6)
        assert [r["text"] for r in got] == [r["text"] for r in rows]  # input order
    expected = inference.predict_texts(varied, [r["text"] or "x" for r in rows]).predictions
    assert [r["label"] for r in printed[4]] == [None if not r["text"].strip() else p.label for r, p in zip(rows, expected)]
    assert sum(r["label"] is None for r in printed[4]) == 5
    if path.suffix != ".txt" and suffix != ".jsonl":
        assert list(written[0]) == ["id", "text", "label", "predicted_label", "score", "error"]  # the input's columns kept


def test_streaming_table_rows_name_their_file_lines_across_chunks(varied, tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('text,label\n"two\nlines",World\n,Sports\n   \nok,World\n"",Business\nlast,World\n', encoding="utf-8")
    summary = run(varied, path, None, chunk_size=2)
    assert summary.tally.empty == 2 and summary.tally.empty_where == ["line 4", "line 7"]  # the quoted newline and the blank line counted


def test_streaming_holds_back_leading_empty_chunks_and_refuses_an_input_without_text(varied, tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("\n \n\n\nfirst text\nsecond\n", encoding="utf-8")
    shown: list[tuple[int, list[str]]] = []
    out = tmp_path / "o.jsonl"
    summary = run(varied, path, out, chunk_size=2, echo=lambda block, first: shown.append((first, [p.text for p in block])))
    assert [first for first, _ in shown] == [0, 2, 4] and sum((t for _, t in shown), []) == ["", " ", "", "", "first text", "second"]
    assert [r["label"] is None for r in records(out)] == [True] * 4 + [False] * 2 and summary.tally.empty == 4
    blank = tmp_path / "b.csv"
    blank.write_text("text,id\n,1\n  ,2\n,3\n", encoding="utf-8")
    echoed: list = []
    with pytest.raises(DataError, match="every input is empty"):
        run(varied, blank, tmp_path / "none" / "o.csv", chunk_size=1, echo=lambda block, first: echoed.append(block))
    assert echoed == [] and not (tmp_path / "none").exists()


# ---------------------------------------------------------------------------------------------
# atomic output, resume


def test_streaming_output_appears_whole_at_the_end(varied, rows, tmp_path):
    path = write_rows(tmp_path / "in.csv", rows)
    out = tmp_path / "o.csv"
    seen = []

    def look(done: int) -> None:
        seen.append((done, out.exists(), out.with_name("o.csv.partial").exists()))

    run(varied, path, out, chunk_size=8, after_chunk=look)
    assert [s[1:] for s in seen] == [(False, True)] * 4 and [s[0] for s in seen] == [8, 16, 24, 30]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "o.csv"]  # no partial, no state, no temp file left


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_streaming_resume_after_an_interrupt_gives_the_uninterrupted_output(varied, rows, tmp_path, suffix):
    path = write_rows(tmp_path / "in.jsonl", rows)
    whole = tmp_path / f"whole{suffix}"
    first = run(varied, path, whole, chunk_size=4)
    out = tmp_path / f"o{suffix}"

    def stop(done: int) -> None:
        if done >= 12:
            raise KeyboardInterrupt

    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run(varied, path, out, chunk_size=4, after_chunk=stop, say=said.append)
    partial = out.with_name(out.name + ".partial")
    assert not out.exists() and partial.exists() and len(records(partial)) == 12
    assert "12 predictions are kept" in said[-1] and "--resume" in said[-1]
    with open(partial, "a", encoding="utf-8") as fh:
        # what a crash in the middle of a write leaves after the last commit (longer than the rest, to be seen)
        fh.write('{"text": "half a rec' + "x" * whole.stat().st_size)
    with pytest.raises(BertctlError, match="holds 12 predictions of an unfinished run"):
        streaming.check_output(out, resume=False)
    streaming.check_output(out, resume=True)
    summary = run(varied, path, out, chunk_size=4, resume=True)
    # the notes after a resume count the whole output (issue 28): its empty inputs are those of an uninterrupted run
    assert summary.carried == 12 and summary.written == 30 and summary.tally.inputs == 30
    assert summary.tally.to_dict() == first.tally.to_dict()
    assert out.read_bytes() == whole.read_bytes()
    assert not partial.exists() and not out.with_name(out.name + ".partial.json").exists()


def test_streaming_disk_full_mid_file_keeps_the_committed_chunks_for_resume(varied, rows, tmp_path, monkeypatch):
    path = write_rows(tmp_path / "in.csv", rows)
    whole = tmp_path / "whole.jsonl"
    run(varied, path, whole, chunk_size=5)
    out = tmp_path / "deep" / "o.jsonl"
    state, real_fsync = out.with_name("o.jsonl.partial.json"), os.fsync

    def fills_up(fd: int) -> None:  # the disk fills once two chunks are committed
        if state.is_file() and json.loads(state.read_text())["records"] >= 10:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fills_up)
    result = invoke("predict", "--model", varied.location, "--file", path, "--chunk-size", 5, "--batch-size", 8, "-o", out)
    assert result.exit_code == 2 and "could not write predictions" in result.stderr and "No space left on device" in result.stderr
    assert "10 predictions are kept in" in result.stderr and "--resume" in result.stderr
    monkeypatch.setattr(os, "fsync", real_fsync)
    resumed = invoke("predict", "--model", varied.location, "--file", path, "--chunk-size", 5, "--batch-size", 8, "-o", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "wrote 30 predictions" in resumed.stderr and "(10 of them before the interruption)" in resumed.stderr
    assert out.read_bytes() == whole.read_bytes()


def test_streaming_resume_refusals_are_exit_2_with_a_fix(varied, rows, tmp_path):
    path = write_rows(tmp_path / "in.csv", rows)
    out = tmp_path / "o.jsonl"
    base = ["predict", "--model", varied.location, "--file", path, "-o", out, "--chunk-size", 4]

    nothing = invoke(*base, "--resume")
    assert nothing.exit_code == 2 and "nothing to resume" in nothing.stderr and "fix: run without --resume" in nothing.stderr
    no_file = invoke("predict", "--model", varied.location, "-o", out, "--resume", "a text")
    assert no_file.exit_code == 2 and "--resume continues an interrupted --output of a --file" in no_file.stderr

    def stop(done: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(varied, path, out, chunk_size=4, after_chunk=stop, say=lambda line: None)
    again = invoke(*base)
    assert again.exit_code == 2 and "holds 4 predictions of an unfinished run" in again.stderr and "--resume" in again.stderr and "rm " in again.stderr
    other_k = invoke(*base, "--resume", "--top-k", 2)
    assert other_k.exit_code == 2 and "written by another run" in other_k.stderr and "top_k was 1, now 2" in other_k.stderr
    other_text = invoke(*base, "--resume", "--text", "label")
    assert other_text.exit_code == 2 and "text was 'text', now 'label'" in other_text.stderr
    write_rows(path, rows[:-1])  # the input changed since
    changed = invoke(*base, "--resume")
    assert changed.exit_code == 2 and "input_bytes was" in changed.stderr and "fix: " in changed.stderr
    write_rows(path, rows)
    os.utime(path, ns=(json.loads(out.with_name("o.jsonl.partial.json").read_text())["identity"]["input_mtime_ns"],) * 2)
    partial = out.with_name("o.jsonl.partial")
    partial.write_text(partial.read_text()[:10])
    cut = invoke(*base, "--resume")
    assert cut.exit_code == 2 and "shorter" in cut.stderr and "last commit" in cut.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# the command line: progress, stdin


def test_streaming_plain_progress_lines_when_stderr_is_not_a_terminal(varied, rows, tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "PLAIN_PROGRESS_EVERY_S", 0.0)
    said: list[str] = []
    run(varied, write_rows(tmp_path / "in.csv", rows), tmp_path / "o.jsonl", chunk_size=10, live_progress=False, say=said.append)
    assert len(said) == 3 and said[-1].startswith("predicted 30 texts (") and "texts/s" in said[-1] and "100% of the input read" in said[-1]
    quiet: list[str] = []
    run(varied, tmp_path / "in.csv", tmp_path / "q.jsonl", chunk_size=10, live_progress=None, say=quiet.append)
    assert quiet == []
    live: list[str] = []
    run(varied, tmp_path / "in.csv", tmp_path / "l.jsonl", chunk_size=10, live_progress=True, say=live.append)
    assert live == [] and len(records(tmp_path / "l.jsonl")) == 30  # the bar draws on the console, not through say


def test_streaming_cli_stdin_and_json_stream_in_order(varied_classifier_dir, varied):
    lines = [r["text"] for r in agnews_rows("dev", 9)] + [""]
    result = invoke("predict", "--model", varied_classifier_dir, "--json", "--chunk-size", 3, "-", input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [g["text"] for g in got] == lines and got[-1]["label"] is None
    expected = inference.predict_texts(varied, lines[:-1]).predictions
    assert [g["label"] for g in got[:-1]] == [p.label for p in expected]
    table = invoke("predict", "--model", varied_classifier_dir, "--chunk-size", 4, "-", input="\n".join(lines) + "\n")
    numbers = [line.split()[0] for line in table.stdout.splitlines() if line.strip() and line.split()[0].isdigit()]
    assert numbers == [str(i) for i in range(1, 11)]  # one table per chunk, numbered through


# ---------------------------------------------------------------------------------------------
# crashes and processes (subprocesses: slow)


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


@pytest.mark.slow
def test_streaming_kill_9_mid_file_then_resume_loses_and_repeats_nothing(varied_classifier_dir, tmp_path):
    path = tmp_path / "in.txt"
    texts = [r["text"] for r in agnews_rows("train", 1000)]
    path.write_text("".join(f"{t}\n" for t in texts * 3), encoding="utf-8")
    command = [sys.executable, "-m", "bertctl", "predict", "--model", str(varied_classifier_dir), "--file", str(path), "--chunk-size", "50", "--batch-size", "1"]
    whole = tmp_path / "whole.csv"
    assert subprocess.run(command + ["-o", str(whole)], capture_output=True, env=_subprocess_env(), timeout=600).returncode == 0
    out = tmp_path / "o.csv"
    state = out.with_name("o.csv.partial.json")
    proc = subprocess.Popen(command + ["-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_subprocess_env())
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if state.is_file() and json.loads(state.read_text() or "{}").get("records", 0) >= 200:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    kept = json.loads(state.read_text())["records"]
    assert not out.exists() and 200 <= kept < 3000 and kept % 50 == 0
    resumed = subprocess.run(command + ["-o", str(out), "--resume"], capture_output=True, text=True, env=_subprocess_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({kept} of them before the interruption)" in resumed.stderr
    assert out.read_bytes() == whole.read_bytes()


@pytest.mark.slow
def test_streaming_two_cpu_processes_write_the_single_process_output(varied_classifier_dir, rows, tmp_path):
    path = write_rows(tmp_path / "in.csv", rows * 4)
    single, double = tmp_path / "one.csv", tmp_path / "two.csv"
    args = ["-m", "bertctl", "predict", "--model", str(varied_classifier_dir), "--file", str(path), "--chunk-size", "7", "--json"]
    one = subprocess.run([sys.executable, *args, "-o", str(single)], capture_output=True, text=True, env=_subprocess_env(), timeout=600)
    assert one.returncode == 0, one.stderr
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    two = subprocess.run([*launch, *args, "-o", str(double)], capture_output=True, text=True, env=_subprocess_env(), timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert double.read_bytes() == single.read_bytes() and len(records(double)) == 120
    assert two.stdout == one.stdout  # the JSON lines too, printed once, by the main process
    assert two.stderr.count("wrote 120 predictions") == 1 and two.stderr.count("note: 20 empty inputs") == 1


@pytest.mark.slow
def test_streaming_progress_bar_on_a_terminal_leaves_redirected_stdout_whole(varied_classifier_dir, tmp_path):
    import pty

    path = tmp_path / "in.txt"
    path.write_text("".join(f"{r['text']}\n" for r in agnews_rows("train", 600)), encoding="utf-8")
    master, terminal = pty.openpty()
    with open(tmp_path / "out.jsonl", "wb") as stdout:
        command = [sys.executable, "-m", "bertctl", "predict", "--model", str(varied_classifier_dir), "--file", str(path), "--chunk-size", "50", "--json"]
        proc = subprocess.Popen(command, stdout=stdout, stderr=terminal, env=_subprocess_env())
    os.close(terminal)
    shown = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed: the process exited
            break
        if not data:
            break
        shown += data
    assert proc.wait(timeout=300) == 0, shown[-2000:]
    assert b"texts/s" in shown and b"predicting" in shown  # the bar, drawn on the terminal
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["text"] for line in lines] == [r["text"] for r in agnews_rows("train", 600)]
