"""`bertctl train`: fine-tune a BERT classifier from a TOML recipe into an HF-format run dir.

    bertctl train recipes/agnews.toml
    bertctl train recipes/agnews.toml train.epochs=1 data.limit.train=500
    bertctl train recipes/agnews.toml --resume            # from the newest checkpoint in the run dir
    accelerate launch --num_processes 2 -m bertctl train recipes/agnews.toml
"""

from __future__ import annotations

from bertctl.cli._options import OutputDir, Overrides, Overwrite, RecipeArg, Resume, handles_errors


@handles_errors
def train_cli(
    recipe: RecipeArg,
    overrides: Overrides = None,
    output_dir: OutputDir = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Fine-tune a BERT classifier from a TOML recipe (Accelerate loop; resumable; HF-native run dir).

    bertctl train recipes/agnews.toml
    bertctl train recipes/agnews.toml train.epochs=1 data.limit.train=500
    accelerate launch --num_processes 2 -m bertctl train recipes/agnews.toml
    """
    from bertctl import reports
    from bertctl.recipe import load_recipe
    from bertctl.training import train

    result = train(load_recipe(recipe, overrides), output_dir=output_dir, resume=resume, overwrite=overwrite)
    reports.print_train_summary(result)
