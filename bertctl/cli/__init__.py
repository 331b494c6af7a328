"""The `bertctl` command line: one module per command, each a thin Typer wrapper over plain functions.

    bertctl validate recipes/agnews.toml train.epochs=1
    bertctl tokenize recipes/agnews.toml
    bertctl tokenize --model bert-base-uncased "tokenization" "second text"
    bertctl train recipes/agnews.toml
    bertctl distill recipes/agnews.toml --teacher runs/agnews distill.num_layers=3
    bertctl eval --min accuracy=0.85
    bertctl predict "Stocks fell as oil prices rose"
    bertctl doctor recipes/agnews.toml --folds 0
    bertctl export runs/agnews && bertctl predict --model runs/agnews/onnx "Stocks fell"
    bertctl serve runs/agnews
    bertctl sweep recipes/agnews.toml --trials 12 && bertctl sweep --show runs/agnews-sweep

This package holds the Typer app and registers the commands; bertctl/cli/_options.py holds what they share (the
Annotated options, `handles_errors`, the only place errors become exit codes: 2 bad input, 1 a failed gate).
bertctl/cli/<command>.py holds one command; what a test would want to call lives in the domain modules.

The lazy boundary sits here: a command module imports only Typer, the standard library and bertctl/cli/_options.py
at its top, and the domain modules (which pull in torch, transformers, datasets, pandas, onnxruntime, fastapi,
optuna) inside the command function, so `bertctl --help` imports none of them and stays under 0.3 s
(tests/test_cli_foundation.py checks the imports, benchmarks/cold_start.sh times it).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from bertctl.cli import attention, distill, doctor, eval, explain, export, fill_mask, predict, pretrain, schema, serve, sweep, tokenize, train, validate

app = typer.Typer(
    name="bertctl",
    help="Fine-tune, evaluate and serve BERT text classifiers from TOML recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"bertctl {version('bertctl')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", metavar="", callback=_version, is_eager=True, help="print the version and exit")] = False,
) -> None:
    """Fine-tune, evaluate and serve BERT text classifiers from TOML recipes."""


# in this order in `bertctl --help`
app.command("validate")(validate.validate_cli)
app.command("schema")(schema.schema_cli)
app.command("tokenize")(tokenize.tokenize_cli)
app.command("train")(train.train_cli)
app.command("distill")(distill.distill_cli)
app.command("attention")(attention.attention_cli)
app.command("eval")(eval.eval_cli)
app.command("predict")(predict.predict_cli)
app.command("explain")(explain.explain_cli)
app.command("doctor")(doctor.doctor_cli)
app.command("export")(export.export_cli)
app.command("serve")(serve.serve_cli)
app.command("fill-mask")(fill_mask.fill_mask_cli)
app.command("pretrain")(pretrain.pretrain_cli)
app.command("sweep")(sweep.sweep_cli)


def main() -> None:
    import os

    if not sys.stdout.isatty():  # typer's help reads this when it first renders: same reason as PIPE_WIDTH
        os.environ.setdefault("TERMINAL_WIDTH", "120")
    app()


__all__ = ["app", "main"]
