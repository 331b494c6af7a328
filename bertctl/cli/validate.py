"""`bertctl validate`: check a recipe (schema, types, ranges, files, columns, labels) without loading a model.

    bertctl validate recipes/agnews.toml
    bertctl validate recipes/agnews.toml train.epochs=1 data.limit.train=200
    bertctl validate --no-data recipes/agnews.toml      # the schema only: no data file is read
"""

from __future__ import annotations

from typing import Annotated

import typer

from bertctl.cli._options import Overrides, RecipeArg, handles_errors


@handles_errors
def validate_cli(
    recipe: RecipeArg,
    overrides: Overrides = None,
    data: Annotated[bool, typer.Option("--data/--no-data", metavar="", help="also read the data files: columns, empty texts, labels")] = True,
) -> None:
    """Check a recipe (schema, types, ranges, files, columns, labels) without loading a model. Exit 2 if invalid."""
    from bertctl.data import validate_recipe

    typer.echo(validate_recipe(recipe, overrides, data=data))
