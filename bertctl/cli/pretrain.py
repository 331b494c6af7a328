"""`bertctl pretrain`: continue BERT's masked-language-model pre-training on in-domain text.

The flags set keys of the recipe's pretrain table, as overrides such as pretrain.nsp=true do
(bertctl.pretraining.flag_overrides); the model dir it writes is one a recipe can fine-tune.

    bertctl pretrain recipes/agnews.toml --epochs 1
    bertctl pretrain recipes/agnews.toml train.learning_rate=5e-5 --whole-word-masking --data news.txt
    then fine-tune from it: set model.name = "runs/agnews-mlm" in a recipe
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bertctl.cli._options import OutputDir, Overrides, Overwrite, RecipeArg, Resume, TextColumn, handles_errors


@handles_errors
def pretrain_cli(
    recipe: RecipeArg,
    overrides: Overrides = None,
    output_dir: OutputDir = None,
    data: Annotated[Optional[Path], typer.Option(metavar="FILE", help="pretrain.data: unlabeled texts (txt one per line, or csv/tsv/jsonl/parquet with --text) instead of the recipe's train texts", show_default=False)] = None,
    text_column: TextColumn = None,
    epochs: Annotated[Optional[int], typer.Option(metavar="N", help="pretrain.epochs: passes over the texts (default: the recipe's train.epochs)", show_default=False)] = None,
    max_steps: Annotated[Optional[int], typer.Option(metavar="N", help="pretrain.max_steps: stop after this many optimizer steps", show_default=False)] = None,
    mlm_probability: Annotated[Optional[float], typer.Option(metavar="P", help="pretrain.mlm_probability: share of tokens selected for prediction (default 0.15)", show_default=False)] = None,
    whole_word_masking: Annotated[bool, typer.Option("--whole-word-masking", metavar="", help="pretrain.whole_word_masking=true: a word's ## pieces are masked together")] = False,
    next_sentence: Annotated[bool, typer.Option("--nsp", metavar="", help="pretrain.nsp=true: also train next-sentence prediction on texts cut at a sentence boundary")] = False,
    heldout_fraction: Annotated[Optional[float], typer.Option(metavar="F", help="pretrain.heldout_fraction: share of texts held out to score MLM loss/accuracy before and after (default 0.1)", show_default=False)] = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Continue BERT's masked-language-model pre-training on in-domain text; writes a model dir a recipe can fine-tune.

    The flags set keys of the recipe's pretrain table, as overrides such as pretrain.nsp=true do.

    bertctl pretrain recipes/agnews.toml --epochs 1
    bertctl pretrain recipes/agnews.toml train.learning_rate=5e-5 --whole-word-masking --data news.txt
    then fine-tune from it: set model.name = "runs/agnews-mlm" in a recipe
    """
    from bertctl import reports
    from bertctl.pretraining import flag_overrides, pretrain
    from bertctl.recipe import load_recipe

    flags = flag_overrides(
        data=data, text=text_column, epochs=epochs, max_steps=max_steps, mlm_probability=mlm_probability, heldout_fraction=heldout_fraction,
        whole_word_masking=whole_word_masking, nsp=next_sentence,
    )
    result = pretrain(load_recipe(recipe, [*(overrides or []), *flags]), output_dir=output_dir, resume=resume, overwrite=overwrite)
    reports.print_pretrain_summary(result)
