"""`bertctl schema`: every recipe key with its type, default and meaning.

    bertctl schema                       # a table on a terminal
    bertctl schema | grep '^train\.'     # one key per line, tab-separated, on a pipe
"""

from __future__ import annotations

import sys

import typer

from bertctl.cli._options import console, handles_errors


@handles_errors
def schema_cli() -> None:
    """List every recipe key with its type, default and meaning."""
    from rich.table import Table

    from bertctl.recipe import describe_schema

    if not sys.stdout.isatty():  # one key per line, tab-separated: greppable, never wrapped
        for row in describe_schema():
            typer.echo("\t".join(row))
        return
    table = Table("key", "type", "default", "meaning", box=None)
    table.columns[0].no_wrap = True  # a wrapped dotted key can't be copied into a recipe
    for row in describe_schema():
        table.add_row(*row)
    console().print(table)
