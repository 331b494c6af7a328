"""`bertctl doctor`: check a recipe's data before training (leaks, duplicates, conflicting labels, balance, length, label errors).

Exit 0: no leakage and no conflicting labels; 1: some found; 2: bad input.

    bertctl doctor recipes/agnews.toml --folds 0
    bertctl doctor recipes/agnews.toml --epochs 1 --fix cleaned/
    bertctl doctor recipes/agnews.toml --json > doctor.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bertctl.cli._options import JsonFlag, Overrides, RecipeArg, console, echo_json, handles_errors


@handles_errors
def doctor_cli(
    recipe: RecipeArg,
    overrides: Overrides = None,
    folds: Annotated[int, typer.Option("--folds", "-k", metavar="K", help="trainings for the out-of-fold label-error check (0 skips it)")] = 3,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, metavar="N", help="epochs of each fold's training (default: the recipe's train.epochs)", show_default=False)] = None,
    near_threshold: Annotated[Optional[float], typer.Option("--near-threshold", metavar="J", help="Jaccard similarity of word 1+2-grams that makes a near-duplicate (default 0.8)", show_default=False)] = None,
    min_count: Annotated[Optional[int], typer.Option("--min-count", min=1, metavar="N", help="labels with fewer examples in a split are reported (default 10)", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="DIR", help="report dir (default: the recipe's run dir + '-doctor')", show_default=False)] = None,
    fix: Annotated[Optional[Path], typer.Option("--fix", metavar="OUTDIR", help="write cleaned copies of the data files and a recipe over them here", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar="", help="replace an earlier doctor report (and --fix folder)")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check a recipe's data before training: leaks, duplicates, conflicting labels, balance, length, label errors.

    Exit 0: no leakage and no conflicting labels; 1: some found; 2: bad input.

    bertctl doctor recipes/agnews.toml --folds 0
    bertctl doctor recipes/agnews.toml --epochs 1 --fix cleaned/
    """
    from bertctl.doctor import doctor
    from bertctl.doctor_report import print_doctor_report, verdict
    from bertctl.errors import GateFailed
    from bertctl.recipe import load_recipe

    loaded = load_recipe(recipe, overrides)
    tuned = {k: v for k, v in {"near_threshold": near_threshold, "min_count": min_count}.items() if v is not None}
    report = doctor(loaded, output=output, overwrite=overwrite, fix=fix, folds=folds, epochs=epochs, **tuned)
    if as_json:
        echo_json(report.to_dict())
    else:
        print_doctor_report(console(), report)
    if report.serious:
        raise GateFailed(f"bertctl doctor found {verdict(report)}", fix=f"see {report.output_dir}/doctor.html; --fix DIR writes cleaned copies")
