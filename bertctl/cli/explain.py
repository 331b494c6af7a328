"""`bertctl explain`: which words made the label, by integrated gradients on the word embeddings.

    bertctl explain runs/agnews "Stocks fell as oil prices rose"
    bertctl explain runs/agnews "Late goal wins the cup" --target Business --steps 200
    bertctl explain runs/agnews --file headlines.txt --json > why.jsonl
    bertctl explain runs/agnews --file headlines.txt --html why.html
    bertctl explain runs/reviews --file reviews.txt --chunks   # long texts whole: each window explained
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bertctl.cli._options import Chunks, JsonFlag, Stride, TextColumn, TextPairColumn, Threads, TrustPickle, console, echo_json, handles_errors


@handles_errors
def explain_cli(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="run dir (a torch model: an export has no gradients)", show_default=False)],
    texts: Annotated[Optional[list[str]], typer.Argument(help="texts to explain; - reads them from stdin, one per line", show_default=False)] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", metavar="FILE", help="texts from a file: .txt one per line, or csv/tsv/jsonl/parquet with --text COL", show_default=False)] = None,
    text_column: TextColumn = None,
    text_pair_column: TextPairColumn = None,
    pair: Annotated[Optional[str], typer.Option("--pair", metavar="TEXT", help="second text of a single TEXT, for sentence-pair models", show_default=False)] = None,
    target: Annotated[Optional[str], typer.Option("--target", metavar="LABEL", help="explain this label instead of the predicted one(s)", show_default=False)] = None,
    steps: Annotated[int, typer.Option("--steps", metavar="N", help="integration steps; more when the completeness delta is over 5%")] = 50,
    chunks: Chunks = False,
    stride: Stride = None,
    html: Annotated[Optional[Path], typer.Option("--html", metavar="FILE", help="also write one standalone HTML page highlighting the words", show_default=False)] = None,
    as_json: JsonFlag = False,
    threads: Threads = None,
    trust_pickle: TrustPickle = False,
) -> None:
    """Show which words made the label: integrated gradients on the word embeddings, summed per word.

    The baseline keeps [CLS] and [SEP] and puts [PAD] in place of every word; each text's completeness delta
    (sum of attributions against f(x) - f(baseline)) is reported, with a warning over 5%.

    bertctl explain runs/agnews "Stocks fell as oil prices rose"
    bertctl explain runs/agnews "Late goal wins the cup" --target Business --steps 200
    bertctl explain runs/agnews --file headlines.txt --json > why.jsonl
    bertctl explain runs/agnews --file headlines.txt --html why.html
    """
    from bertctl import explaining

    def show(block: explaining.ExplainResult) -> None:
        if as_json:
            for explanation in block.explanations:
                echo_json(explanation.to_dict())
        else:
            explaining.print_result(console(), block)

    result = explaining.explain_command(
        model, texts or [], file=file, text_column=text_column, pair_column=text_pair_column, pair=pair, target=target, steps=steps,
        chunks=chunks, stride=stride, html_path=html, threads=threads, trust_pickle=trust_pickle, show=show,
    )
    explaining.warn(result, sys.stderr)
    if html is not None:
        typer.echo(f"wrote {len(result.explanations)} explanation(s) to {html}", err=True)
