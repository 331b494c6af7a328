"""`bertctl predict` on inputs of any size: a chunk is read, labelled and written before the next one is read.

    summary = predict_command(file=Path("news.csv"), text_column="headline", output=Path("preds.csv"))   # the CLI's
    stream = open_inputs(file=Path("news.csv"), text_column="headline").for_model(classifier.settings)
    summary = predict_stream(classifier, stream, output=Path("preds.csv"))      # resume=True after a crash
    accelerate launch --num_processes 4 -m bertctl predict --file news.csv -o preds.jsonl

Memory stays flat: a chunk (--chunk-size inputs, sorted by length inside classify so batches pad little) is
all that is held. --output grows as OUTPUT.partial; after each chunk is on disk, OUTPUT.partial.json commits
it (records, bytes, and the input and settings that made them). --resume cuts the partial back to its last
commit and skips that many inputs; the final rename makes OUTPUT appear whole. Under `accelerate launch` (or
torchrun) process r labels chunks r, r+W, ... and the main process writes them in input order: each chunk is
batched exactly as one process batches it, so the output is the single-process output byte for byte.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from bertctl.errors import BertctlError, DataError
from bertctl.inference.classifier import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE, Classifier, read_run_settings
from bertctl.inference.forward import run_as_windows
from bertctl.inference.loading import load_for_inference
from bertctl.inference.predict import Prediction, Tally, check_request, label_items, score_items
from bertctl.inference.requests import InputStream, open_inputs
from bertctl.problems import ProblemType
from bertctl.progress import Progress
from bertctl.runs import atomic_write_json, check_writable_path, removes_new_empty_dirs, resolve_model_dir
from bertctl.truncation import check_chunk_options

OUTPUT_SUFFIXES = {".jsonl", ".json", ".csv", ".tsv"}
PLAIN_PROGRESS_EVERY_S = 30.0


# ---------------------------------------------------------------------------------------------
# output formats


@dataclass
class RecordFormat:
    """JSON lines (.jsonl/.json, stdout), or a table (.csv/.tsv) that keeps every column of an input table, in
    order, and adds label, score and error; a name the input already uses gets a `predicted_` prefix (a gold
    `label` column stays as it was)."""

    suffix: str
    columns: list[str]  # the input's: a table's columns, else text (and text_pair)
    from_table: bool
    problem: ProblemType

    @classmethod
    def of(cls, suffix: str, stream: InputStream, problem: ProblemType) -> "RecordFormat":
        columns = stream.table or ["text"] + (["text_pair"] if stream.has_pairs else [])
        return cls(suffix.lower(), list(columns), stream.table is not None, problem)

    @property
    def added(self) -> tuple[str, ...]:
        """The columns a table gets: what Prediction.shown gives, then the error."""
        return (*self.problem.shown_fields, "error")

    @property
    def is_json(self) -> bool:
        return self.suffix in {".jsonl", ".json"}

    def header(self) -> str:
        if self.is_json:
            return ""
        added = [name if name not in self.columns else f"predicted_{name}" for name in self.added]
        return self._rows([self.columns + added])

    def records(self, predictions: list[Prediction]) -> str:
        if self.is_json:
            return "".join(json.dumps(p.to_dict(), ensure_ascii=False, default=str) + "\n" for p in predictions)
        rows = []
        for p in predictions:
            cells = ["" if v is None else str(v) for v in p.row.values()] if self.from_table and p.row is not None else [p.text] + [p.pair or ""] * (len(self.columns) - 1)
            shown = list(p.shown())[: len(self.added) - 1]
            rows.append(cells + shown + [p.error or ""])
        return self._rows(rows)

    def _rows(self, rows: list[list[str]]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter="\t" if self.suffix == ".tsv" else ",", lineterminator="\n").writerows(rows)
        return buffer.getvalue()


def check_output_path(path: Path) -> None:
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise BertctlError(f"--output {path}: unsupported file type {path.suffix or '(none)'!r}", fix="use .jsonl (one JSON object per text) or .csv/.tsv")
    check_writable_path(path, "--output", example="predictions.jsonl")


# ---------------------------------------------------------------------------------------------
# --output: written a chunk at a time, committed, resumable, renamed whole at the end


def _partial(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".partial"), path.with_name(path.name + ".partial.json")


def check_output(path: Path, *, resume: bool) -> None:
    """--output and --resume make sense together (before any model loads): a partial to continue, or none in the way."""
    check_output_path(path)
    partial, state = _partial(path)
    if resume and not state.is_file():
        done = f" ({path} is complete)" if path.is_file() else ""
        raise BertctlError(f"--resume: nothing to resume, no {state.name} beside {path}{done}", fix="run without --resume to predict from the start")
    if not resume and state.is_file():
        records = _read_state(state)["records"]
        raise BertctlError(
            f"{partial} holds {records} predictions of an unfinished run",
            fix=f"continue it: the same command with --resume; or start over: rm {partial} {state}",
        )


def _read_state(state: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(state.read_text(encoding="utf-8"))
        if not (isinstance(loaded["records"], int) and isinstance(loaded["bytes"], int) and isinstance(loaded["identity"], dict)):
            raise ValueError("records, bytes or identity of the wrong type")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BertctlError(f"{state}: cannot read the resume state ({exc})", fix=f"start over: rm {state.with_suffix('')} {state}") from None
    return loaded


class PartialOutput:
    """OUTPUT.partial, appended a chunk at a time; OUTPUT.partial.json says how much of it is committed."""

    def __init__(self, path: Path, fmt: RecordFormat, identity: dict[str, Any]):
        self.path, self.fmt, self.identity = Path(path), fmt, identity
        self.partial, self.state = _partial(self.path)
        self.records, self.bytes, self.handle = 0, 0, None
        self.tally: dict[str, Any] = {}  # the Tally of what is committed, so a resumed run's notes count the whole output

    def open(self, resume: bool) -> int:
        """Start (or, resuming, cut back to the last commit and continue); returns the inputs already written."""
        if resume:
            self._continue()
        else:
            with self._writing():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.handle = open(self.partial, "w", encoding="utf-8", newline="")
            self.write_text(self.fmt.header(), 0)
        return self.records

    def _continue(self) -> None:
        state = _read_state(self.state)
        then = state["identity"]
        changed = [f"{key} was {then.get(key)!r}, now {value!r}" for key, value in self.identity.items() if then.get(key) != value]
        fix = f"rerun the command that started it with --resume, or start over: rm {self.partial} {self.state}"
        if changed:
            raise BertctlError(f"{self.partial} was written by another run: " + "; ".join(changed), fix=fix)
        size = self.partial.stat().st_size if self.partial.is_file() else -1
        if size < state["bytes"]:
            raise BertctlError(f"{self.partial} is shorter ({max(size, 0)} bytes) than its last commit ({state['bytes']} bytes): it was changed or lost", fix=fix)
        self.records, self.bytes, self.tally = state["records"], state["bytes"], state.get("tally") or {}
        with self._writing():
            self.handle = open(self.partial, "r+", encoding="utf-8", newline="")
            self.handle.truncate(self.bytes)  # what a crash left after the last commit is written again
            self.handle.seek(self.bytes)

    def write(self, predictions: list[Prediction], tally: Tally | None = None) -> None:
        if tally is not None:
            self.tally = tally.to_dict()
        self.write_text(self.fmt.records(predictions), len(predictions))

    def write_text(self, text: str, records: int) -> None:
        with self._writing():
            self.handle.write(text)
            self.handle.flush()
            os.fsync(self.handle.fileno())  # on disk before the commit below says so
            self.records += records
            self.bytes = self.handle.tell()
            atomic_write_json(self.state, {"records": self.records, "bytes": self.bytes, "identity": self.identity, "tally": self.tally})

    def finish(self) -> None:
        with self._writing():
            self.handle.close()
            os.replace(self.partial, self.path)
            self.state.unlink()
        self._remove_stray_temp_files()

    def abandon(self) -> str | None:
        """After an error: keep what is committed, for --resume, and say so; with nothing committed leave no trace."""
        if self.handle is None:
            return None  # refused before writing (a --resume that does not match): the partial stays as it was
        try:
            self.handle.close()  # flushes what the failed write left in the buffer, if it can
        except OSError:
            pass
        if self.records:
            return f"{self.records} predictions are kept in {self.partial}: continue with the same command and --resume"
        self.partial.unlink(missing_ok=True)
        self.state.unlink(missing_ok=True)
        self._remove_stray_temp_files()
        return None

    def _remove_stray_temp_files(self) -> None:
        # atomic_write_json's temp file survives a kill -9 between its write and its rename
        for stray in self.state.parent.glob(f".{self.state.name}.*.tmp"):
            stray.unlink(missing_ok=True)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise BertctlError(
                f"could not write predictions to {self.path}: {exc.strerror or exc}",
                fix="free disk space, or choose a writable place: --output DIR/predictions.jsonl",
            ) from None


def run_identity(classifier: Classifier, stream: InputStream, top_k: int) -> dict[str, Any]:
    """What made a partial output: --resume refuses to append to it from another input, model or setting."""
    stat = stream.file.stat() if stream.file is not None else None
    return {
        "input": str(stream.file.resolve()) if stream.file is not None else stream.source,
        "input_bytes": stat.st_size if stat else None,
        "input_mtime_ns": stat.st_mtime_ns if stat else None,
        "model": classifier.location,
        "labels": list(classifier.labels),
        "max_length": classifier.max_length,
        "quantize": classifier.quantized,
        "text": stream.text_column,
        "text_pair": stream.pair_column,
        "top_k": top_k,
    }


# ---------------------------------------------------------------------------------------------
# progress


class PredictProgress:
    """Streaming predict's view of THE progress display: texts/s and how much of the input is read, as a bar
    (live=True), a plain line every PLAIN_PROGRESS_EVERY_S seconds (False), or nothing (None)."""

    def __init__(self, fraction: Callable[[], float] | None, *, live: bool | None, say: Callable[[str], None]):
        self.fraction, self.say, self.quiet = fraction, say, live is None
        self.started = self.last = time.perf_counter()
        self.texts = 0
        self.display = Progress("predicting", total=1.0 if fraction else None, live=bool(live))

    def __enter__(self) -> "PredictProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.display.close()

    def advance(self, texts: int) -> None:
        self.texts += texts
        if self.quiet:
            return
        now = time.perf_counter()
        rate = self.texts / max(now - self.started, 1e-9)
        if self.display.live:
            self.display.update(completed=self.fraction() if self.fraction else None, status=f"{self.texts:,} texts, {rate:,.0f} texts/s")
        elif now - self.last >= PLAIN_PROGRESS_EVERY_S:
            self.last = now
            share = f", {self.fraction():.0%} of the input read" if self.fraction else ""
            self.say(f"predicted {self.texts:,} texts ({rate:,.0f} texts/s{share})")


# ---------------------------------------------------------------------------------------------
# many processes


@dataclass
class Shard:
    """This process's place among those `accelerate launch` (or torchrun) started."""

    rank: int
    world: int
    device: str

    def gather(self, value: Any) -> list[Any]:
        from accelerate.utils import gather_object

        return gather_object([value])

    def broadcast(self, value: Any) -> Any:
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]

    def close(self) -> None:
        """Take the process group down before the interpreter does: gloo's threads alive at exit can abort a
        finished rank ("terminate called without an active exception", seen once in CI after all output was written)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def launched_shard() -> Shard | None:
    """The process group of `accelerate launch -m bertctl predict ...`; None in a plain process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    # gloo on CPU: under a torchrun-style launcher nothing else tells accelerate there is no GPU (training.build_accelerator)
    state = PartialState(cpu=not torch.cuda.is_available())
    # "cpu", not accelerate's "cpu:0": load_for_inference sets threads and the fast path for "cpu", which one process uses too
    return Shard(state.process_index, state.num_processes, "cpu" if state.device.type == "cpu" else str(state.device))


def _groups(chunks: Iterable[list], size: int) -> Iterator[list[list]]:
    group: list[list] = []
    for chunk in chunks:
        group.append(chunk)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


# ---------------------------------------------------------------------------------------------
# the loop


@dataclass
class StreamSummary:
    tally: Tally  # every input of the output, those of an interrupted run included
    written: int  # records in --output, those of an interrupted run included
    carried: int  # of which an interrupted run wrote


def predict_stream(
    classifier: Classifier,
    stream: InputStream,
    *,
    output: Path | None = None,
    resume: bool = False,
    echo: Callable[[list[Prediction], int], None] | None = None,
    top_k: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    shard: Shard | None = None,
    live_progress: bool | None = None,
    say: Callable[[str], None] | None = None,
    after_chunk: Callable[[int], None] | None = None,
) -> StreamSummary:
    """Label every input of `stream` in order, a chunk at a time, handing each chunk's predictions to `output`
    and `echo(predictions, index of the first)` before the next is read.

    live_progress: a bar (True), plain lines every 30 s (False), or nothing (None). `after_chunk(inputs done)`
    runs after each chunk is written (tests stop a run there).
    """
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    check_request(classifier, top_k, stream.has_pairs)
    if chunk_size < 1:
        raise BertctlError(f"--chunk-size must be at least 1, got {chunk_size}", fix="pass --chunk-size 2048, for example")
    main = shard is None or shard.rank == 0
    out = PartialOutput(output, RecordFormat.of(output.suffix, stream, classifier.problem), run_identity(classifier, stream, top_k)) if output is not None and main else None
    # a run that fails before anything is committed leaves the folder tree as it found it
    with removes_new_empty_dirs(output.parent) if out is not None else nullcontext(), _kept_on_error(out, say):
        skip = out.open(resume) if out is not None else 0
        if shard is not None:
            skip = shard.broadcast(skip)
        tally = Tally.from_dict(classifier.max_length, out.tally if out is not None else {})
        held: list[list[Prediction]] = []  # leading chunks of only empty inputs: an input with no text at all is an error, not output
        written = skip
        with PredictProgress(stream.fraction, live=live_progress if main else None, say=say) as progress:
            for predictions, truncated in _labelled(classifier, stream, skip, top_k, batch_size, chunk_size, shard):
                tally.add(predictions, truncated)
                held.append(predictions)
                while tally.empty < tally.inputs and held:
                    block = held.pop(0)
                    if out is not None:
                        out.write(block, tally if not held else None)
                    if echo is not None:
                        echo(block, written)
                    written += len(block)
                progress.advance(len(predictions))
                if after_chunk is not None:
                    after_chunk(written)
        if main and not skip and tally.inputs and tally.empty == tally.inputs:
            raise DataError(f"{stream.source}: every input is empty ({tally.inputs} blank)", fix="give non-empty texts")
        if out is not None:
            out.finish()
    return StreamSummary(tally, written, skip)


@contextmanager
def _kept_on_error(out: PartialOutput | None, say: Callable[[str], None]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        kept = out.abandon() if out is not None else None
        if kept:
            say(f"note: {kept}")
        raise


def _labelled(classifier, stream: InputStream, skip: int, top_k: int, batch_size: int, chunk_size: int, shard: Shard | None) -> Iterator[tuple[list[Prediction], int]]:
    """Each chunk's predictions and truncated count, in input order, on the main process; the others label
    their share (chunks rank, rank + world, ...) and yield nothing."""
    rank, world = (shard.rank, shard.world) if shard is not None else (0, 1)
    for group in _groups(stream.items(chunk_size, skip), world):
        mine = group[rank] if rank < len(group) else None
        scored = score_items(classifier, mine, has_pairs=stream.has_pairs, batch_size=batch_size) if mine is not None else None
        results = shard.gather(scored) if shard is not None else [scored]
        if rank == 0:
            for items, (probs, truncated) in zip(group, results):
                yield label_items(classifier, items, probs, has_pairs=stream.has_pairs, top_k=top_k), truncated


# ---------------------------------------------------------------------------------------------
# `bertctl predict`


def predict_command(
    texts: list[str] | None = None,
    *,
    model: str | None = None,
    file: Path | None = None,
    text_column: str | None = None,
    pair_column: str | None = None,
    pair: str | None = None,
    top_k: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    quantize: str | None = None,
    threads: int | None = None,
    chunks: bool = False,
    stride: int | None = None,
    output: Path | None = None,
    resume: bool = False,
    as_json: bool = False,
    trust_pickle: bool = False,
    fast_path: bool = True,
    show: Callable[[list[Prediction], int], None] | None = None,
    write: Callable[[str], None] | None = None,
    terminal: tuple[bool, bool] = (False, False),
) -> StreamSummary | None:
    """`bertctl predict`: every check that needs no model first, then load, label and write in input order.

    `show(block, index of the first)` prints a table where neither --json nor --output is given; `write` takes
    --json's lines (stdout). `terminal` is (stdout, stderr) being terminals: it picks the progress display.
    Returns None on a process of `accelerate launch` other than the main one.
    """
    shard = launched_shard()
    main = shard is None or shard.rank == 0
    if resume and (output is None or file is None or str(file) == "-"):
        raise BertctlError("--resume continues an interrupted --output of a --file", fix="rerun the interrupted command, --file FILE --output OUT included, with --resume added")
    check_chunk_options(chunks, stride)
    if output is not None and main:
        check_output(output, resume=resume)
    stream = open_inputs(texts or [], file=file, text_column=text_column, pair_column=pair_column, pair=pair, chunk_size=chunk_size)
    if shard is not None and stream.source == "stdin":
        raise BertctlError("under accelerate launch every process reads the input, and stdin reaches one of them", fix="give the texts as a file: --file texts.txt")
    # the run's default columns are checked before the model loads: a missing column is an error in a second
    stream.for_model(read_run_settings(resolve_model_dir(model)[1]))
    classifier = load_for_inference(model, quantize=quantize, threads=threads, trust_pickle=trust_pickle, fast_path=fast_path, device=shard.device if shard else None)
    if chunks:
        run_as_windows(classifier, stride)
    echo = None
    if as_json:
        lines = RecordFormat.of(".jsonl", stream, classifier.problem)
        say_json = write or (lambda text: print(text, end=""))
        echo = lambda block, first: say_json(lines.records(block))  # noqa: E731
    elif output is None:
        echo = show
    stdout_tty, stderr_tty = terminal
    live = None  # command-line texts: one quick chunk, no progress to show
    if stream.file is not None or stream.source == "stdin":
        # a bar where it can't garble the results on the same terminal (they show the progress there); a log gets a line every 30 s
        live = (None if echo and stdout_tty else True) if stderr_tty else False
    try:
        summary = predict_stream(
            classifier, stream, output=output, resume=resume, echo=echo if main else None, top_k=top_k, batch_size=batch_size,
            chunk_size=chunk_size, shard=shard, live_progress=live,
        )
    finally:
        if shard is not None:
            shard.close()
    return summary if main else None
