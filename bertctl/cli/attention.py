"""`bertctl attention`: draw a model's attention maps and per-head statistics, or its position embeddings.

    bertctl attention --model runs/agnews "The man went to the store." "He bought milk."
    bertctl attention --model runs/agnews --layer 3 --head 7 "The man went to the store."
    bertctl attention --model runs/agnews --data recipes/agnews.toml --limit 200
    bertctl attention --model sentence-transformers/all-MiniLM-L6-v2 --positions
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bertctl.cli._options import JsonFlag, ModelOption, TextColumn, TrustPickle, console, echo_json, handles_errors


@handles_errors
def attention_cli(
    texts: Annotated[Optional[list[str]], typer.Argument(help="TEXT [SECOND_TEXT] whose attention maps to draw", show_default=False)] = None,
    model: ModelOption = None,
    layer: Annotated[Optional[int], typer.Option(metavar="N", help="only this layer (0-based); draws one PNG per head", show_default=False)] = None,
    head: Annotated[Optional[int], typer.Option(metavar="N", help="only this head (0-based); draws one PNG per head", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="report dir (default attention/<slug of the text>)", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option(metavar="FILE", help="average head statistics over a recipe's train texts or a data file", show_default=False)] = None,
    text_column: TextColumn = None,
    limit: Annotated[int, typer.Option(metavar="N", help="texts sampled from --data")] = 100,
    positions: Annotated[bool, typer.Option("--positions", metavar="", help="plot the learned position embeddings")] = False,
    max_length: Annotated[Optional[int], typer.Option(metavar="N", help="truncate texts to this many tokens (default 128); with --positions, analyse positions 0..N-1 (default all)", show_default=False)] = None,
    as_json: JsonFlag = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """Draw a model's attention maps and per-head statistics (Clark et al. 2019), or its position embeddings.

    bertctl attention --model runs/agnews "The man went to the store." "He bought milk."
    bertctl attention --model runs/agnews --layer 3 --head 7 "The man went to the store."
    bertctl attention --model runs/agnews --data recipes/agnews.toml --limit 200
    bertctl attention --model sentence-transformers/all-MiniLM-L6-v2 --positions
    """
    from bertctl import reports
    from bertctl.attention import attention_command

    report = attention_command(
        model, texts or [], layer=layer, head=head, out=out, data=data, text_column=text_column or "text",
        limit=limit, positions=positions, max_length=max_length, trust_pickle=trust_pickle,
    )
    if as_json:
        echo_json(report.to_dict())
    else:
        reports.print_attention_report(console(), report)
