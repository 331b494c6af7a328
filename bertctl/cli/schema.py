"""`bertctl schema`: every recipe key with its type, default and meaning; or the JSON Schema editors read.

    bertctl schema                       # a table on a terminal
    bertctl schema | grep '^train\.'     # one key per line, tab-separated, on a pipe
    bertctl schema --json > recipe.schema.json   # for taplo / Even Better TOML (see README, Editors)
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from bertctl.cli._options import console, handles_errors


@handles_errors
def schema_cli(
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="print the recipe's JSON Schema (draft 2020-12), which editors use to complete and check recipes")] = False,
) -> None:
    """List every recipe key with its type, default and meaning."""
    from rich.table import Table

    from bertctl.recipe import describe_schema, json_schema

    if as_json:
        typer.echo(json.dumps(json_schema(), indent=2))
        return
    if not sys.stdout.isatty():  # one key per line, tab-separated: greppable, never wrapped
        for row in describe_schema():
            typer.echo("\t".join(row))
        return
    table = Table("key", "type", "default", "meaning", box=None)
    table.columns[0].no_wrap = True  # a wrapped dotted key can't be copied into a recipe
    for row in describe_schema():
        table.add_row(*row)
    console().print(table)
