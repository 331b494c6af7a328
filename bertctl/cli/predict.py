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
    from bertctl import reports
    from bertctl.inference import predict_command

    summary = predict_command(
        texts, model=model, file=file, text_column=text_column, pair_column=text_pair_column, pair=pair, top_k=top_k, batch_size=batch_size,
        chunk_size=chunk_size, quantize=quantize, threads=threads, chunks=chunks, stride=stride, output=output, resume=resume, as_json=as_json,
        trust_pickle=trust_pickle, fast_path=fast_path, show=lambda block, first: reports.print_predictions(console(), block, top_k, start=first + 1),
        write=lambda text: typer.echo(text, nl=False), terminal=(sys.stdout.isatty(), sys.stderr.isatty()),
    )
    if summary is None:
        return  # a process of `accelerate launch` other than the main one: the main one writes and reports
    for note in summary.tally.notes():
        typer.echo(note, err=True)
    if output is not None:
        carried = f" ({summary.carried} of them before the interruption)" if summary.carried else ""
        typer.echo(f"wrote {summary.written} predictions to {output}{carried}", err=True)
