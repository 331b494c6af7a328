"""Recipes: TOML files that hold every setting of a run, validated once, with all problems reported together.

    recipe = load_recipe("recipes/agnews.toml", ["train.epochs=1", "data.limit.train=200"])
    recipe.train.learning_rate          # typed, range-checked
    recipe.to_toml()                    # the resolved recipe, saved next to every run
    json_schema()                       # the same schema for editors (taplo, Even Better TOML)

The schema is declared once, as pydantic models (schema.py); loading.py reads, overrides and validates a file and
turns pydantic's errors into the rows users read. Whatever a recipe file or an override holds, loading it returns a
valid Recipe or raises one RecipeError that lists every problem (tests/test_recipe_fuzz.py holds it to that).

This module holds what is cheap to import (tables, suggestions, thresholds): pydantic takes 100-200 ms
to import, which `bertctl predict` and `--help` must not pay for its tables. The names in _LAZY load on first use.
"""

from __future__ import annotations

import difflib
import importlib
import math
from typing import TYPE_CHECKING, Any

from bertctl import problems
from bertctl.errors import Problem

if TYPE_CHECKING:
    from bertctl.recipe.schema import Recipe

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DATA_SUFFIXES = {".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt"}
SPLITS = ("train", "validation", "test")

PROBLEM_TYPES = problems.NAMES
TRUNCATIONS = ("head", "tail", "head+tail")
PRUNERS = ("none", "median", "hyperband")

# metric name -> greater is better; `evaluation` computes all of them offline
METRICS = problems.GREATER_IS_BETTER
# the values a metric can take, for checking thresholds; [0, 1] unless listed
METRIC_RANGES = {
    "mcc": (-1.0, 1.0), "log_loss": (0.0, math.inf), "pearson": (-1.0, 1.0), "spearman": (-1.0, 1.0),
    "mse": (0.0, math.inf), "rmse": (0.0, math.inf), "mae": (0.0, math.inf), "r2": (-math.inf, 1.0),
}
# the metrics each problem type has, and its defaults: what eval reports, and what picks the best checkpoint
PROBLEM_METRICS = {p.name: list(p.metrics) for p in problems.PROBLEM_TYPES.values()}
DEFAULT_METRICS = {p.name: list(p.default_metrics) for p in problems.PROBLEM_TYPES.values()}
DEFAULT_METRIC_FOR_BEST = {p.name: p.metric_for_best for p in problems.PROBLEM_TYPES.values()}
# the validation loss that breaks ties between equal best-metric values
TIE_BREAK = {p.name: p.tie_break for p in problems.PROBLEM_TYPES.values()}

# accelerate's LoggerType values, listed here so validating a recipe doesn't import accelerate
TRACKERS = ["all", "aim", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml", "dvclive", "swanlab"]


def suggest(name: str, choices: list[str]) -> str | None:
    """The choice a mistyped `name` most likely meant: the same but for case, a prefix (acc -> accuracy), then initials
    (lr -> learning_rate), then the closest spelling (postive -> positive); None when nothing is close."""
    name = name.strip()
    lowered = name.lower()
    if not lowered:
        return None
    same_but_case = [c for c in choices if c.strip().lower() == lowered]
    if same_but_case:
        return same_but_case[0]
    prefixed = [c for c in choices if c.lower().startswith(lowered)]
    if prefixed:
        return min(prefixed, key=len)
    initials = [c for c in choices if "_" in c and "".join(part[:1] for part in c.lower().split("_") if part) == lowered]
    if initials:
        return initials[0]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, choices: list[str], otherwise: str | None = None) -> str:
    guess = suggest(name, choices)
    return f"did you mean {guess!r}?" if guess else (otherwise or f"choose from {', '.join(choices)}")


def threshold_problem(key: str, metric: str, value: Any) -> Problem | None:
    """THE rule for a CI-gate threshold, whether it comes from [eval.thresholds] or `bertctl eval --min`:
    a known metric and a number within that metric's range."""
    if metric not in METRICS:
        return Problem(key, f"unknown metric {metric!r}", did_you_mean(metric, list(METRICS)))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return Problem(key, f"{value!r} is not a number", f"give a number: {metric} = 0.9 under [eval.thresholds], or --min {metric}=0.9")
    low, high = METRIC_RANGES.get(metric, (0.0, 1.0))
    if not low <= value <= high:
        span = f"between {low:g} and {high:g}" if math.isfinite(high) else f">= {low:g}"
        kind = "minimum" if METRICS[metric] else "maximum"
        return Problem(key, f"{value:g} is outside the metric's range", f"{metric} lies {span}: use a {kind} {span}")
    return None


def label_columns(recipe: Recipe) -> list[str]:
    """The column(s) labels come from: one, or one 0/1 column per label (multi-label, Jigsaw-style)."""
    return list(recipe.data.label) if isinstance(recipe.data.label, list) else [recipe.data.label]


def sweep_metric(recipe: Recipe) -> str:
    """The validation metric a sweep optimises; METRICS says its direction."""
    return recipe.sweep.metric or recipe.train.metric_for_best or DEFAULT_METRIC_FOR_BEST[recipe.model.problem_type]


_SCHEMA_NAMES = ("Recipe", "RecipeFile", "ModelSection", "DataSection", "LimitSection", "TrainSection", "EvalSection",
                 "PretrainSection", "SweepSection", "OutputSection", "describe_schema", "json_schema", "readme_table", "schema_field")
_LAZY = {**dict.fromkeys(_SCHEMA_NAMES, "schema"), **dict.fromkeys(("load_recipe", "recipe_from_dict", "parse_override", "apply_overrides"), "loading")}


def __getattr__(name: str) -> Any:
    """`from bertctl.recipe import Recipe` imports the schema (and pydantic) only when a caller asks for it."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
