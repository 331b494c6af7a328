"""`bertctl distill`: train a smaller student from a finished run (the teacher) and the recipe's data.

    bertctl distill recipes/agnews.toml --teacher runs/agnews distill.num_layers=3
    bertctl distill recipes/agnews.toml --teacher runs/agnews distill.layers=[0,2,4] --resume
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bertctl.cli._options import OutputDir, Overrides, Overwrite, RecipeArg, Resume, handles_errors

Teacher = Annotated[Optional[Path], typer.Option("--teacher", "-t", metavar="RUN_DIR", help="the finished run to distil (default: the recipe's distill.teacher)", show_default=False)]


@handles_errors
def distill_cli(
    recipe: RecipeArg,
    overrides: Overrides = None,
    teacher: Teacher = None,
    output_dir: OutputDir = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Distil a trained run into a smaller student (the teacher's scores + the labels; the loop of train).

    bertctl distill recipes/agnews.toml --teacher runs/agnews distill.num_layers=3
    bertctl distill recipes/agnews.toml --teacher runs/agnews distill.unlabeled=more.csv
    """
    from bertctl import reports
    from bertctl.distillation import distill
    from bertctl.recipe import load_recipe

    result = distill(load_recipe(recipe, overrides), teacher, output_dir=output_dir, resume=resume, overwrite=overwrite)
    reports.print_train_summary(result)
