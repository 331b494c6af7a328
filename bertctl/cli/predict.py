"""`bertctl predict`: label texts with a trained classifier or an export; output keeps the input order.

    bertctl predict "Stocks fell as oil prices rose" "Late goal wins the cup"
    bertctl predict --model runs/agnews --file headlines.txt --top-k 2 --json
    cat headlines.txt | bertctl predict - --output predictions.jsonl
    bertctl predict --file news.csv --output predictions.csv --resume
    bertctl predict --model runs/reviews --file reviews.txt --chunks   # long texts whole: windows, pooled logits
    accelerate launch --num_processes 2 -m bertctl predict --file news.csv --output predictions.csv
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bertctl.cli._options import Chunks, ModelOption, Quantize, Stride, TextColumn, TextPairColumn, Threads, TrustPickle, console, handles_errors
from bertctl.errors import BertctlError


@handles_errors
def predict_cli(
    texts: Annotated[Optional[list[str]], typer.Argument(help="texts to classify; - reads them from stdin, one per line", show_default=False)] = None,
    model: ModelOption = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", metavar="FILE", help="texts from a file: .txt one per line, or csv/tsv/jsonl/parquet with --text COL", show_default=False)] = None,
    text_column: TextColumn = None,
    text_pair_column: TextPairColumn = None,
    pair: Annotated[Optional[str], typer.Option("--pair", metavar="TEXT", help="second text of a single TEXT, for sentence-pair models", show_default=False)] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", metavar="K", help="also list the K most likely labels")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, metavar="N", help="texts per forward pass")] = 64,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, metavar="N", help="inputs read, sorted by length and written together: memory grows with N, not with the file")] = 2048,
    quantize: Quantize = None,
    threads: Threads = None,
    chunks: Chunks = False,
    stride: Stride = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="write predictions to a .jsonl or .csv/.tsv file, which appears whole at the end (FILE.partial until then)", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", metavar="", help="continue the interrupted --output FILE from FILE.partial: no line lost, none twice")] = False,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="one JSON object per text on stdout: text, label, score, top_k, scores (multi-label: labels, scores; regression: value)")] = False,
    trust_pickle: TrustPickle = False,
    fast_path: Annotated[bool, typer.Option("--fast-path/--no-fast-path", metavar="", help="CPU: compute only [CLS] in the last layer (same labels); --no-fast-path runs the stock transformers forward")] = True,
) -> None:
    """Label texts with a trained classifier; output keeps the input order.

    A file or stdin streams in chunks (memory stays flat at any size) with a progress bar on a terminal; under
    `accelerate launch` (or torchrun) the processes share the chunks and the main one writes one ordered output.

    bertctl predict "Stocks fell as oil prices rose" "Late goal wins the cup"
    bertctl predict --model runs/agnews --file headlines.txt --top-k 2 --json
    cat headlines.txt | bertctl predict - --output predictions.jsonl
    bertctl predict --file news.csv --output predictions.csv --resume
    bertctl predict --model runs/reviews --file reviews.txt --chunks   # long texts whole: windows, pooled logits
    accelerate launch --num_processes 2 -m bertctl predict --file news.csv --output predictions.csv
    """
    _predict(
        texts, model=model, file=file, text_column=text_column, text_pair_column=text_pair_column, pair=pair, top_k=top_k,
        batch_size=batch_size, chunk_size=chunk_size, quantize=quantize, threads=threads, chunks=chunks, stride=stride, output=output,
        resume=resume, as_json=as_json, trust_pickle=trust_pickle, fast_path=fast_path,
    )


# the command's logic as it was in cli.py, a plain function until it moves into the inference package
# (inputs -> classifier -> stream); the command above only hands it its options
def _predict(
    texts: list[str] | None, *, model: str | None, file: Path | None, text_column: str | None, text_pair_column: str | None, pair: str | None,
    top_k: int, batch_size: int, chunk_size: int, quantize: str | None, threads: int | None, chunks: bool, stride: int | None,
    output: Path | None, resume: bool, as_json: bool, trust_pickle: bool, fast_path: bool,
) -> None:
    from bertctl import prediction, reports, streaming

    shard = streaming.launched_shard()
    main = shard is None or shard.rank == 0
    if resume and (output is None or file is None or str(file) == "-"):
        raise BertctlError("--resume continues an interrupted --output of a --file", fix="rerun the interrupted command, --file FILE --output OUT included, with --resume added")
    from bertctl.truncation import check_chunk_options

    check_chunk_options(chunks, stride)
    if output is not None and main:
        streaming.check_output(output, resume=resume)
    stream = prediction.open_inputs(texts or [], file=file, text_column=text_column, pair_column=text_pair_column, pair=pair, chunk_size=chunk_size)
    if shard is not None and stream.source == "stdin":
        raise BertctlError("under accelerate launch every process reads the input, and stdin reaches one of them", fix="give the texts as a file: --file texts.txt")
    classifier = prediction.load_for_inference(
        model, quantize=quantize, threads=threads, trust_pickle=trust_pickle, fast_path=fast_path, device=shard.device if shard else None
    )
    if chunks:
        prediction.run_as_windows(classifier, stride)
    stream.for_model(classifier.settings)
    echo = None
    if as_json:
        lines = streaming.RecordFormat.of(".jsonl", stream)
        echo = lambda block, first: typer.echo(lines.records(block), nl=False)  # noqa: E731
    elif output is None:
        echo = lambda block, first: reports.print_predictions(console(), block, top_k, start=first + 1)  # noqa: E731
    live = None  # command-line texts: one quick chunk, no progress to show
    if stream.file is not None or stream.source == "stdin":
        # a bar where it can't garble the results on the same terminal (they show the progress there); a log gets a line every 30 s
        live = (None if echo and sys.stdout.isatty() else True) if sys.stderr.isatty() else False
    summary = streaming.predict_stream(
        classifier, stream, output=output, resume=resume, echo=echo if main else None, top_k=top_k, batch_size=batch_size,
        chunk_size=chunk_size, shard=shard, live_progress=live,
    )
    if not main:
        return
    for note in summary.tally.notes():
        typer.echo(note, err=True)
    if output is not None:
        carried = f" ({summary.carried} of them before the interruption)" if summary.carried else ""
        typer.echo(f"wrote {summary.written} predictions to {output}{carried}", err=True)

