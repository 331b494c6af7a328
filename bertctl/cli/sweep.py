"""`bertctl sweep`: search hyper-parameters with optuna (TPE, pruning); each trial is an ordinary run, the best kept as DIR/best.

    bertctl sweep recipes/agnews.toml --trials 12
    bertctl sweep recipes/agnews.toml --resume
    bertctl sweep recipes/agnews.toml --storage postgresql://me@db.example/sweeps
    bertctl sweep --show runs/agnews-sweep
    bertctl sweep --best postgresql://me@db.example/sweeps
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bertctl.cli._options import JsonFlag, Overrides, console, echo_json, handles_errors


@handles_errors
def sweep_cli(
    recipe: Annotated[Optional[Path], typer.Argument(metavar="RECIPE", help="TOML recipe with a sweep.space table, e.g. recipes/agnews.toml", show_default=False)] = None,
    overrides: Overrides = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, metavar="N", help="trials to finish, complete or pruned, in the study (default: the recipe's sweep.trials)", show_default=False)] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=1, metavar="S", help="start no trial after S seconds of this run", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="DIR", help="sweep dir: study, trials/NNN run dirs, best/ (default: the recipe's output.dir + '-sweep')", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", metavar="", help="continue the study in DIR; a trial cut by Ctrl-C or kill -9 is marked failed and run again")] = False,
    storage: Annotated[Optional[str], typer.Option("--storage", metavar="URL", help="optuna database URL (default sqlite in DIR); one postgresql:// URL lets many machines share a study", show_default=False)] = None,
    show: Annotated[Optional[Path], typer.Option("--show", metavar="DIR", help="print the trials table of a sweep dir and write its PNGs; runs nothing", show_default=False)] = None,
    best: Annotated[Optional[str], typer.Option("--best", metavar="URL|DIR", help="the study's best trial, whichever worker ran it: which sweep dir holds its model and the command that copies it; runs nothing", show_default=False)] = None,
    study: Annotated[Optional[str], typer.Option("--study", metavar="NAME", help="with --best URL: the study, where the database holds several (default: its only one)", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Search hyper-parameters with optuna (TPE, pruning); each trial is an ordinary run, the best kept as DIR/best.

    bertctl sweep recipes/agnews.toml --trials 12
    bertctl sweep recipes/agnews.toml --resume
    bertctl sweep recipes/agnews.toml --storage postgresql://me@db.example/sweeps
    bertctl sweep --show runs/agnews-sweep
    bertctl sweep --best postgresql://me@db.example/sweeps
    """
    from bertctl import reports, sweeping

    sweeping.check_sweep_arguments(recipe, show=show, trials=trials, timeout=timeout, output=output, resume=resume, best=best, study=study)
    if best is not None:
        found = sweeping.find_study_best(best, study_name=study, storage=storage)
        if as_json:
            echo_json(found.to_dict())
        else:
            _print_study_best(found)
        return
    if show is not None:
        summary = sweeping.show_sweep(show, storage=storage)
    else:
        from bertctl.recipe import load_recipe

        summary = sweeping.run_sweep(load_recipe(recipe, overrides), output=output, trials=trials, timeout=timeout, resume=resume, storage=storage, progress=not as_json)
    if as_json:
        echo_json(summary.to_dict())
    else:
        reports.print_sweep_summary(console(), summary, next_steps=show is None)


def _print_study_best(found) -> None:
    metric = found.metric or "value"
    typer.echo(f"study {found.study_name!r} in {found.storage}: best trial {found.trial}, {metric} {found.value:.4f} ({found.direction})")
    typer.echo("  params: " + (" ".join(f"{key}={value}" for key, value in found.params.items()) or "-"))
    typer.echo(f"  ran on {found.host or '?'} in {found.sweep_dir or '? (a trial from before bertctl recorded its worker)'}")
    if found.held is False:
        typer.echo(f"  note: {found.sweep_dir}/best.json does not name trial {found.trial}: run `bertctl sweep ... --output {found.sweep_dir} --resume` there to copy it to best/")
    if found.copy:
        typer.echo(f"copy it: {found.copy}")
    typer.echo("complete trials per worker: " + ", ".join(f"{name} {count}" for name, count in found.workers.items()))
