"""`bertctl fill-mask`: the tokens a masked-language model predicts behind each [MASK] (BERT's pre-training task).

    bertctl fill-mask --model runs/agnews-mlm "Stocks [MASK] as oil prices rose."
    bertctl fill-mask --model runs/agnews-mlm --top-k 10 --json "The [MASK] won the cup."
"""

from __future__ import annotations

from typing import Annotated

import typer

from bertctl.cli._options import JsonFlag, console, echo_json, handles_errors


@handles_errors
def fill_mask_cli(
    text: Annotated[str, typer.Argument(help="text with one or more [MASK] tokens", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", metavar="DIR|ID", help="a model dir with an MLM head, e.g. one written by bertctl pretrain", show_default=False)],
    top_k: Annotated[int, typer.Option("--top-k", "-k", metavar="K", help="candidates listed per [MASK]")] = 5,
    as_json: JsonFlag = False,
) -> None:
    """Predict the tokens behind each [MASK] with a masked-language model (BERT's pre-training task).

    bertctl fill-mask --model runs/agnews-mlm "Stocks [MASK] as oil prices rose."
    """
    from bertctl.pretraining import fill_mask
    from bertctl.reports import print_fill_mask

    result = fill_mask(model, text, top_k)
    if as_json:
        echo_json(result.to_dict())
    else:
        print_fill_mask(console(), result)
