"""`bertctl tokenize`: a recipe's data as BERT will see it (lengths, truncation, [UNK]s, labels), or one input's WordPieces.

    bertctl tokenize recipes/agnews.toml
    bertctl tokenize --json recipes/agnews.toml data.limit.train=500
    bertctl tokenize --model sentence-transformers/all-MiniLM-L6-v2 "tokenization" "a second sentence"
    bertctl tokenize --model runs/agnews --max-length 16 "a long headline cut like training would cut it"
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bertctl.cli._options import JsonFlag, console, echo_json, handles_errors
from bertctl.errors import BertctlError


@handles_errors
def tokenize_cli(
    args: Annotated[Optional[list[str]], typer.Argument(help="RECIPE [key=value ...], or with --model: TEXT [SECOND_TEXT]", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", metavar="DIR|ID", help="show how this model's tokenizer reads TEXT", show_default=False)] = None,
    max_length: Annotated[Optional[int], typer.Option(metavar="N", help="truncate TEXT like training would", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Tokenize a recipe's data and report lengths, truncation, [UNK]s and labels; or show one input's WordPieces.

    bertctl tokenize recipes/agnews.toml
    bertctl tokenize --model sentence-transformers/all-MiniLM-L6-v2 "tokenization" "a second sentence"
    """
    from bertctl import reports

    args = args or []
    if model is not None:
        from bertctl.tokenization import explain_texts

        rows = explain_texts(model, args, max_length)
        if as_json:
            echo_json([row.__dict__ for row in rows])
        else:
            reports.print_input_rows(console(), rows)
        return
    if not args:
        raise BertctlError("tokenize needs a recipe, or --model NAME and a text", fix="bertctl tokenize recipes/agnews.toml")
    from bertctl.recipe import load_recipe
    from bertctl.tokenization import tokenize_report

    report = tokenize_report(load_recipe(Path(args[0]), args[1:]))
    if as_json:
        echo_json(report.to_dict())
    else:
        reports.print_tokenize_report(console(), report)
