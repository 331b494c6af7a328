"""Recipes: TOML files that hold every setting of a run, validated once, with all problems reported together.

    recipe = load_recipe("recipes/agnews.toml", ["train.epochs=1", "data.limit.train=200"])
    recipe.train.learning_rate          # typed, range-checked
    recipe.to_toml()                    # the resolved recipe, saved next to every run

Schema keys equal the names people know from transformers/accelerate (learning_rate, warmup_ratio,
gradient_accumulation_steps, mixed_precision) so a recipe reads like the code it configures.

Whatever a recipe file or an override holds, loading it either returns a valid Recipe or raises one
RecipeError that lists every problem (tests/test_recipe_fuzz.py holds the loader to that).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from bertctl import problems
from bertctl.errors import Problem, RecipeError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DATA_SUFFIXES = {".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt"}
SPLITS = ("train", "validation", "test")

PROBLEM_TYPES = problems.NAMES
TRUNCATIONS = ("head", "tail", "head+tail")

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
TIE_BREAK = {p.name: p.tie_break for p in problems.PROBLEM_TYPES.values()}

# accelerate's LoggerType values, listed here so validating a recipe doesn't import accelerate
TRACKERS = ["all", "aim", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml", "dvclive", "swanlab"]


def _meta(help: str, **checks: Any) -> dict[str, Any]:
    return {"help": help, **checks}


@dataclass
class ModelSection:
    name: str = field(
        default=DEFAULT_MODEL,
        metadata=_meta("hub id or local model dir (a relative dir is looked up in the working dir, then the recipe's folder)"),
    )
    max_length: int = field(default=128, metadata=_meta("tokens per input, [CLS] and [SEP] included", min=8, max=8192))
    problem_type: str = field(
        default="single_label_classification",
        metadata=_meta("what the head predicts: one class, any number of labels (sigmoid per label), or a number", choices=list(PROBLEM_TYPES)),
    )
    truncation: str = field(
        default="head",
        metadata=_meta("which tokens a too-long text keeps: the first, the last, or a quarter of max_length from the start and the rest from the end (head+tail, Sun et al. 2019)", choices=list(TRUNCATIONS)),
    )


@dataclass
class LimitSection:
    train: int | None = field(default=None, metadata=_meta("use a seeded random sample of this many rows", min=1))
    validation: int | None = field(default=None, metadata=_meta("likewise for validation", min=1))
    test: int | None = field(default=None, metadata=_meta("likewise for test", min=1))


@dataclass
class DataSection:
    dataset: str | None = field(default=None, metadata=_meta("a hub dataset id; then train/validation/test are split names"))
    subset: str | None = field(default=None, metadata=_meta("the hub dataset's config name (e.g. 'mrpc' of 'nyu-mll/glue')"))
    train: str | None = field(default=None, metadata=_meta("train file (csv, tsv, jsonl, parquet) or split name"))
    validation: str | None = field(default=None, metadata=_meta("validation file or split name"))
    test: str | None = field(default=None, metadata=_meta("test file or split name"))
    text: str = field(default="text", metadata=_meta("column with the (first) text"))
    text_pair: str | None = field(default=None, metadata=_meta("column with the second text: [CLS] A [SEP] B [SEP]"))
    label: str | list[str] = field(
        default="label",
        metadata=_meta("column with the label (a name or an integer id; multi-label: a list of names; regression: a number), or, multi-label, a list of 0/1 columns, one per label"),
    )
    label_separator: str | None = field(default=None, metadata=_meta("multi-label: the label column holds names joined by this, e.g. 'joy,surprise'"))
    labels: list[str] | None = field(default=None, metadata=_meta("label names in class-id order (default: inferred from train; regression: none)"))
    validation_fraction: float | None = field(
        default=None, metadata=_meta("carve this share of train into validation when there is none", gt=0.0, lt=1.0)
    )
    drop_empty: bool = field(default=False, metadata=_meta("drop rows with empty texts instead of refusing them"))
    limit: LimitSection = field(default_factory=LimitSection, metadata=_meta("sample limits per split"))


@dataclass
class TrainSection:
    epochs: int = field(default=3, metadata=_meta("passes over the training data", min=1))
    batch_size: int = field(default=32, metadata=_meta("examples per optimizer micro-batch, per process", min=1))
    eval_batch_size: int = field(default=128, metadata=_meta("examples per evaluation batch", min=1))
    learning_rate: float = field(default=5e-5, metadata=_meta("peak AdamW learning rate", gt=0.0, max=1.0))
    weight_decay: float = field(default=0.01, metadata=_meta("AdamW decay (not on bias/LayerNorm)", min=0.0, max=1.0))
    warmup_ratio: float = field(default=0.06, metadata=_meta("share of steps with linear warmup", min=0.0, lt=1.0))
    scheduler: str = field(default="linear", metadata=_meta("lr decay after warmup", choices=["linear", "cosine", "constant"]))
    gradient_accumulation_steps: int = field(default=1, metadata=_meta("micro-batches per optimizer step", min=1))
    max_grad_norm: float = field(default=1.0, metadata=_meta("clip gradients to this norm (0 = off)", min=0.0))
    layerwise_lr_decay: float = field(
        default=1.0,
        metadata=_meta("layer-wise lr decay (ULMFiT; Sun et al. 2019): encoder layer i of L gets lr x decay^(L-i), embeddings decay^(L+1), the head the full lr (1.0 = off)", gt=0.0, max=1.0),
    )
    reinit_layers: int = field(
        default=0,
        metadata=_meta("re-initialise the top K encoder layers and the pooler before training, seeded (Zhang et al. 2021, Revisiting Few-sample BERT Fine-tuning); at most the model's layers", min=0),
    )
    seed: int = field(default=42, metadata=_meta("seeds data order, head init, dropout", min=0))
    mixed_precision: str = field(default="no", metadata=_meta("accelerate mixed precision", choices=["no", "fp16", "bf16"]))
    early_stopping_patience: int = field(default=0, metadata=_meta("stop after this many evaluations without gain (0 = off)", min=0))
    metric_for_best: str | None = field(
        default=None,
        metadata=_meta("validation metric that picks the best checkpoint (default: accuracy; multi-label f1_macro; regression spearman)", choices=list(METRICS)),
    )
    class_weights: str | list[float] = field(
        default="none",
        metadata=_meta("weight the loss per class: 'none', 'balanced' (inverse train frequency; multi-label: BCE pos_weight per label), or one weight per label"),
    )
    eval_every_steps: int = field(default=0, metadata=_meta("also evaluate every N optimizer steps (0 = each epoch only)", min=0))
    log_every_steps: int = field(default=10, metadata=_meta("optimizer steps between log lines", min=1))
    save_total_limit: int = field(default=2, metadata=_meta("keep the newest K checkpoints", min=1))
    checkpoint_every_steps: int = field(default=0, metadata=_meta("also checkpoint every N optimizer steps (0 = each evaluation)", min=0))
    group_by_length: bool = field(default=True, metadata=_meta("batch similar lengths together (less padding)"))
    num_threads: int = field(default=0, metadata=_meta("torch CPU threads (0 = torch's default)", min=0))
    cpu_fast_path: bool = field(default=True, metadata=_meta("on CPU, run BERT's forward via bertctl.fastpath ([CLS]-only last layer, one-GEMM QKV, cheap dropout); false = stock transformers"))
    log_with: list[str] = field(default_factory=list, metadata=_meta("accelerate trackers, e.g. ['tensorboard']", each_choice=TRACKERS))


@dataclass
class EvalSection:
    metrics: list[str] | None = field(
        default=None,
        metadata=_meta("metrics to report (default: accuracy, f1_macro; multi-label f1_macro, f1_micro, subset_accuracy; regression pearson, spearman, rmse)", each_choice=list(METRICS), min_items=1),
    )
    thresholds: dict[str, float] = field(default_factory=dict, metadata=_meta("CI gate: metric = minimum (maximum for log_loss, ece, hamming_loss, mse, rmse, mae)"))
    split: str = field(default="test", metadata=_meta("split `bertctl eval` uses (validation when there is no test)", choices=list(SPLITS)))


@dataclass
class PretrainSection:
    """`bertctl pretrain`: continued masked-language-model pre-training (its flags override these keys)."""

    mlm_probability: float = field(default=0.15, metadata=_meta("share of real tokens selected for prediction (80% [MASK], 10% random, 10% kept)", gt=0.0, lt=1.0))
    whole_word_masking: bool = field(default=False, metadata=_meta("select whole words: a word's ## pieces are masked together"))
    nsp: bool = field(default=False, metadata=_meta("also train next-sentence prediction on texts cut at a sentence boundary (50% real next, 50% random)"))
    heldout_fraction: float = field(default=0.1, metadata=_meta("share of texts held out to score MLM loss/accuracy before and after", gt=0.0, max=0.5))
    epochs: int | None = field(default=None, metadata=_meta("passes over the texts (default: train.epochs)", min=1))
    max_steps: int | None = field(default=None, metadata=_meta("stop after this many optimizer steps; the schedule spans them (wins over epochs)", min=1))
    data: str | None = field(default=None, metadata=_meta("unlabeled texts (txt one per line, or csv/tsv/jsonl/parquet) instead of data.train's texts; relative to the recipe's folder"))
    text: str = field(default="text", metadata=_meta("text column of pretrain.data"))


PRUNERS = ("none", "median", "hyperband")


@dataclass
class SweepSection:
    """`bertctl sweep`: an optuna search over recipe keys (its flags override trials)."""

    trials: int = field(default=20, metadata=_meta("trials to finish (complete or pruned) in the study", min=1))
    metric: str | None = field(
        default=None,
        metadata=_meta("validation metric to optimise, its direction its own (log_loss, mse, ... minimised) (default: train.metric_for_best)", choices=list(METRICS)),
    )
    pruner: str = field(default="median", metadata=_meta("stop unpromising trials after an evaluation (optuna's pruners)", choices=list(PRUNERS)))
    space: dict[str, Any] = field(
        default_factory=dict,
        metadata=_meta("recipe key = { low = .., high = .., log = true } (a range of its type) or a list of values to choose from"),
    )


@dataclass
class OutputSection:
    dir: str | None = field(default=None, metadata=_meta("run directory (relative to the working dir); default runs/<recipe name>"))


@dataclass
class Recipe:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    sweep: SweepSection = field(default_factory=SweepSection)
    output: OutputSection = field(default_factory=OutputSection)
    # where the recipe came from; not part of the schema
    source: str = field(default="<recipe>", metadata={"internal": True})
    base_dir: str = field(default=".", metadata={"internal": True})
    overrides: list[str] = field(default_factory=list, metadata={"internal": True})  # as given, for resume hints

    @property
    def name(self) -> str:
        return Path(self.source).stem if self.source != "<recipe>" else "recipe"

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) if self.output.dir else Path("runs") / self.name

    @property
    def base_dir_path(self) -> Path:
        return Path(self.base_dir)

    @property
    def uses_hub_dataset(self) -> bool:
        return self.data.dataset is not None

    def data_path(self, split: str) -> Path | None:
        """The local file of a split (or of pretrain.data), resolved against the recipe's folder (None for hub splits)."""
        value = self.pretrain.data if split == "pretrain" else getattr(self.data, split)
        if value is None or (self.uses_hub_dataset and split != "pretrain"):
            return None
        path = _expand_user(Path(value))
        return path if path.is_absolute() else Path(self.base_dir) / path

    def to_dict(self) -> dict[str, Any]:
        """The schema part, with local paths made absolute so the saved copy works from any folder."""
        out: dict[str, Any] = {}
        for section in _schema_fields(Recipe):
            out[section.name] = _drop_none(dataclasses.asdict(getattr(self, section.name)))
        if not self.uses_hub_dataset:
            for split in SPLITS:
                path = self.data_path(split)
                if path is not None:
                    out["data"][split] = str(path.resolve())
        if self.pretrain.data is not None:
            out["pretrain"]["data"] = str(self.data_path("pretrain").resolve())
        local_model = self._local_model_dir()
        if local_model is not None:
            out["model"]["name"] = str(local_model.resolve())
        out["output"]["dir"] = str(self.run_dir)
        return out

    def _local_model_dir(self) -> Path | None:
        """The directory model.name names, looked up in the order `modeling.resolve_model` uses."""
        name = _expand_user(Path(self.model.name))
        candidates = [name] if name.is_absolute() else [name, Path(self.base_dir) / name]
        return next((c for c in candidates if c.is_dir()), None)

    def to_toml(self) -> str:
        import tomli_w

        return f"# resolved from {self.source}\n" + tomli_w.dumps(self.to_dict())


def _expand_user(path: Path) -> Path:
    try:
        return path.expanduser()
    except RuntimeError:  # '~someone' with no such user: leave it, it is then simply not found
        return path


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_drop_none(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}


def _schema_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


# ---------------------------------------------------------------------------------------------
# type checking of one value against a field's annotation


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if _is_union(tp):
        args = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}s"
    if origin is dict:
        return f"table of {_type_name(get_args(tp)[1])}s"
    return {str: "string", int: "integer", float: "number", bool: "true/false", Any: "value"}.get(tp, getattr(tp, "__name__", str(tp)))


def _with_article(name: str) -> str:
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _show(value: Any, limit: int = 60) -> str:
    """A value as the message shows it: type and repr, cut short so a huge value can't flood the terminal."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


class _Mismatch(Exception):
    def __init__(self, detail: str = ""):
        super().__init__(detail)
        self.detail = detail


def _coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp` or raise _Mismatch. Integers are accepted where numbers are."""
    origin = get_origin(tp)
    if tp is Any:  # checked by its own rule (sweep.space)
        return value
    if _is_union(tp):
        args = [a for a in get_args(tp) if a is not type(None)]
        detail = ""
        for arg in args:
            try:
                return _coerce(value, arg)
            except _Mismatch as exc:
                detail = detail or exc.detail
        raise _Mismatch(detail)
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_coerce(item, get_args(tp)[0]))
            except _Mismatch:
                raise _Mismatch(f"item {i + 1} is {_show(item)}") from None
        return out
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return {str(k): _coerce(v, get_args(tp)[1]) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _Mismatch("nan and inf are not allowed")
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise _Mismatch


def _check_range(key: str, value: Any, meta: dict[str, Any]) -> Problem | None:
    if value is None:
        return None
    if isinstance(value, str) and not value.strip():
        return Problem(key, "is empty", "give it a value, or remove the key to use the default")
    if isinstance(value, list) and any(isinstance(v, str) and not v.strip() for v in value):
        return Problem(key, f"has an empty entry: {_show(value)}", "remove the empty entry")
    if "choices" in meta and value not in meta["choices"]:
        return Problem(key, f"must be one of {', '.join(map(repr, meta['choices']))}, got {value!r}", did_you_mean(str(value), meta["choices"]))
    if "each_choice" in meta:
        bad = [v for v in value if v not in meta["each_choice"]]
        if bad:
            guess = suggest(str(bad[0]), meta["each_choice"])
            hint = f"did you mean {guess!r}? " if guess else ""
            return Problem(key, f"unknown {', '.join(map(repr, bad))}", f"{hint}choose from {', '.join(meta['each_choice'])}")
    if "min_items" in meta and len(value) < meta["min_items"]:
        return Problem(key, f"needs at least {meta['min_items']} entry, got {value!r}", "list what you want, or remove the key to use the default")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for check, holds, words in (
            ("min", lambda v, b: v >= b, ">="),
            ("max", lambda v, b: v <= b, "<="),
            ("gt", lambda v, b: v > b, ">"),
            ("lt", lambda v, b: v < b, "<"),
        ):
            if check in meta and not holds(value, meta[check]):
                return Problem(key, f"must be {words} {meta[check]}, got {value!r}", f"set {key} to a value {words} {meta[check]}")
    return None


def _type_fix(name: str, tp: Any, spec: dataclasses.Field) -> str:
    """'write it like: epochs = 3', using the key's default as the example when it has one."""
    default = spec.default if spec.default is not dataclasses.MISSING else (spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
    if default in (None, [], {}):
        kind = _type_name(tp).split(" or ")[0]
        default = {"string": "text", "integer": 1, "number": 0.5, "true/false": True}.get(kind, ["a", "b"] if kind.startswith("list") else "text")
    if isinstance(default, bool):
        shown = str(default).lower()
    elif isinstance(default, (int, float)):
        shown = repr(default)
    elif isinstance(default, list):
        shown = "[" + ", ".join(f'"{v}"' for v in default) + "]"
    else:
        shown = f'"{default}"'
    return f"write it like: {name} = {shown}"


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


def _unknown_key(key: str, name: str, known: list[str]) -> Problem:
    return Problem(key, "unknown key", did_you_mean(name, known, f"known keys here: {', '.join(known)}"))


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


def _build(cls: type, raw: Any, prefix: str, problems: list[Problem], failed: set[str]) -> Any:
    """Instantiate dataclass `cls` from a TOML table, appending every problem instead of stopping.

    Keys whose values were rejected go into `failed` (they keep their defaults), so checks that span
    keys can stay quiet about them instead of reporting the same mistake twice.
    """
    if not isinstance(raw, dict):
        problems.append(Problem(prefix, f"must be a table ([{prefix}]), got {_show(raw)}", f"write it as a [{prefix}] section with keys under it"))
        failed.add(prefix)
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in _schema_fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            problems.append(_unknown_key(key, name, list(fields)))
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key, problems, failed)
            continue
        if get_origin(tp) is dict and isinstance(value, dict):
            # one problem per bad entry, named by its own key (eval.thresholds.accuracy); good entries stay
            entries = {}
            for sub, item in value.items():
                try:
                    entries[str(sub)] = _coerce(item, get_args(tp)[1])
                except _Mismatch as exc:
                    extra = f" ({exc.detail})" if exc.detail else ""
                    problems.append(Problem(f"{key}.{sub}", f"must be {_with_article(_type_name(get_args(tp)[1]))}, got {_show(item)}{extra}"))
                    failed.add(f"{key}.{sub}")
            coerced: Any = entries
        else:
            try:
                coerced = _coerce(value, tp)
            except _Mismatch as exc:
                extra = f" ({exc.detail})" if exc.detail else ""
                problems.append(Problem(key, f"must be {_with_article(_type_name(tp))}, got {_show(value)}{extra}", _type_fix(name, tp, fields[name])))
                failed.add(key)
                continue
        problem = _check_range(key, coerced, dict(fields[name].metadata))
        if problem:
            problems.append(problem)
            failed.add(key)
            continue
        kwargs[name] = coerced
    return cls(**kwargs)


def _has_failed(key: str, failed: set[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in failed for i in range(1, len(parts) + 1))


def _data_file_problem(key: str, path: Path | None) -> Problem | None:
    if path is None:
        return None
    if path.suffix.lower() not in DATA_SUFFIXES:
        return Problem(key, f"unsupported file type {path.suffix or '(none)'!r} for {path}", f"use one of {', '.join(sorted(DATA_SUFFIXES))}")
    if not path.exists():
        return Problem(key, f"file not found: {path}", "check the path; relative paths resolve against the recipe's folder")
    if path.is_dir():
        return Problem(key, f"{path} is a directory, not a file", "name the data file itself")
    return None


def _check_recipe(recipe: Recipe, problems: list[Problem], failed: set[str] | None = None) -> None:
    """Rules that span keys; each adds a problem rather than stopping.

    A rule is skipped when one of the keys it reads was already rejected: that key holds its default,
    not what the user wrote, so the rule would only report a consequence of the first problem.
    """
    failed = failed or set()

    def ok(*keys: str) -> bool:
        return not any(_has_failed(k, failed) for k in keys)

    d = recipe.data
    if d.dataset is None and ok("data.dataset"):
        if d.train is None and ok("data.train"):
            problems.append(Problem("data.train", "missing: no training data", "set data.train to a csv/tsv/jsonl/parquet file, or data.dataset to a hub dataset"))
        for split in SPLITS:
            if ok(f"data.{split}") and (problem := _data_file_problem(f"data.{split}", recipe.data_path(split))):
                problems.append(problem)
        if d.subset is not None and ok("data.subset"):
            problems.append(Problem("data.subset", f"is set ({d.subset!r}) but data.dataset is not", "set data.dataset to the hub dataset the subset belongs to, or remove data.subset"))
    elif d.dataset is not None and d.train is None and ok("data.train"):
        d.train = "train"
    if ok("pretrain.data") and (problem := _data_file_problem("pretrain.data", recipe.data_path("pretrain"))):
        problems.append(problem)
    if d.validation is not None and d.validation_fraction is not None:
        problems.append(Problem("data.validation_fraction", "set, but data.validation is set too", "remove one of the two"))
    if d.labels is not None:
        if len(d.labels) < 2:
            problems.append(Problem("data.labels", f"needs at least 2 classes, got {d.labels!r}", "list every class name"))
        stripped = [x.strip() for x in d.labels]
        dupes = sorted({x for x in stripped if stripped.count(x) > 1})
        if dupes:
            problems.append(Problem("data.labels", f"repeated names {dupes!r}", "list each class once"))
    if d.text_pair is not None and d.text_pair == d.text and ok("data.text", "data.text_pair"):
        problems.append(Problem("data.text_pair", f"is the same column as data.text ({d.text!r})", "name the second text column"))
    for column in label_columns(recipe):
        if column in {d.text, d.text_pair} and ok("data.label", "data.text", "data.text_pair"):
            problems.append(Problem("data.label", f"{column!r} is also a text column", "name the label column"))
    has_validation = d.validation is not None or d.validation_fraction is not None
    if recipe.train.early_stopping_patience > 0 and not has_validation and ok("data.validation", "data.validation_fraction"):
        problems.append(
            Problem(
                "train.early_stopping_patience",
                f"is {recipe.train.early_stopping_patience}, but there is no validation data to stop on",
                "set data.validation (or data.validation_fraction), or early_stopping_patience = 0",
            )
        )
    if recipe.eval.split == "validation" and not has_validation and ok("eval.split", "data.validation", "data.validation_fraction"):
        problems.append(Problem("eval.split", "is 'validation', but there is no validation data", "set data.validation (or data.validation_fraction), or eval.split = 'test'"))
    for metric, value in recipe.eval.thresholds.items():
        problem = threshold_problem(f"eval.thresholds.{metric}", metric, value)
        if problem is not None:
            problems.append(problem)
    _check_problem_type(recipe, problems, ok)
    _check_sweep(recipe, problems, ok)


def label_columns(recipe: Recipe) -> list[str]:
    """The column(s) labels come from: one, or one 0/1 column per label (multi-label, Jigsaw-style)."""
    return list(recipe.data.label) if isinstance(recipe.data.label, list) else [recipe.data.label]


def _check_problem_type(recipe: Recipe, problems: list[Problem], ok) -> None:
    """Keys that only some problem types have; then the per-type defaults of eval.metrics and metric_for_best."""
    d, t, kind = recipe.data, recipe.train, recipe.model.problem_type
    if not ok("model.problem_type"):
        return
    multi, regression = kind == "multi_label_classification", kind == "regression"
    set_multi = "set model.problem_type = 'multi_label_classification'"
    if isinstance(d.label, list) and ok("data.label"):
        if not multi:
            problems.append(Problem("data.label", f"lists {len(d.label)} columns, one per label, which only multi-label data has", f"{set_multi}, or name one label column"))
        elif len(d.label) < 2:
            problems.append(Problem("data.label", f"lists a single 0/1 column {d.label!r}", "list one column per label, or name one label column"))
        elif len(set(d.label)) < len(d.label):
            problems.append(Problem("data.label", f"repeats columns: {sorted({c for c in d.label if d.label.count(c) > 1})!r}", "list each label column once"))
        elif d.labels is not None and ok("data.labels") and list(d.labels) != list(d.label):
            problems.append(Problem("data.labels", f"is {d.labels!r}, but the labels are the columns data.label lists ({d.label!r})", "remove data.labels: the 0/1 columns name the labels, in their order"))
        if d.label_separator is not None and ok("data.label_separator"):
            problems.append(Problem("data.label_separator", "is set, but data.label lists one 0/1 column per label", "remove data.label_separator (it splits one column of joined names)"))
    if d.label_separator is not None and not multi and ok("data.label_separator"):
        problems.append(Problem("data.label_separator", f"is set ({d.label_separator!r}), but model.problem_type is {kind!r}", f"{set_multi}, or remove data.label_separator"))
    if regression and d.labels is not None and ok("data.labels"):
        problems.append(Problem("data.labels", "is set, but regression predicts a number, not a class", "remove data.labels"))
    weights = t.class_weights
    if ok("train.class_weights"):
        if isinstance(weights, str) and weights not in ("none", "balanced"):
            problems.append(Problem("train.class_weights", f"must be 'none', 'balanced' or a list of weights, got {weights!r}", did_you_mean(weights, ["none", "balanced"], "write it like: class_weights = \"balanced\"")))
        elif regression and weights != "none":
            problems.append(Problem("train.class_weights", "is set, but regression has no classes to weight", "remove train.class_weights"))
        elif isinstance(weights, list):
            if any(not math.isfinite(w) or w <= 0 for w in weights):
                problems.append(Problem("train.class_weights", f"has a weight that is not > 0: {weights!r}", "give every label a positive weight"))
            names = d.labels if d.labels is not None else (d.label if isinstance(d.label, list) else None)
            if names is not None and len(weights) != len(names):
                problems.append(Problem("train.class_weights", f"has {len(weights)} weights for {len(names)} labels ({', '.join(names)})", "give one weight per label, in the labels' order"))
    if d.text_pair is not None and recipe.model.truncation != "head" and ok("model.truncation", "data.text_pair"):
        problems.append(
            Problem("model.truncation", f"is {recipe.model.truncation!r}, but the inputs are pairs (data.text_pair)", "pairs are cut longest-first from their ends: use truncation = 'head'")
        )
    allowed = PROBLEM_METRICS[kind]
    kind_words = kind.replace("_", "-").replace("-classification", "")

    def wrong_kind(key: str, metric: str) -> None:
        if metric in METRICS and metric not in allowed:
            problems.append(Problem(key, f"{metric!r} is not a {kind_words} metric", did_you_mean(metric, allowed, f"choose from {', '.join(allowed)}")))

    if recipe.eval.metrics is not None and ok("eval.metrics"):
        for metric in recipe.eval.metrics:
            wrong_kind("eval.metrics", metric)
    if t.metric_for_best is not None and ok("train.metric_for_best"):
        wrong_kind("train.metric_for_best", t.metric_for_best)
    for metric in recipe.eval.thresholds:
        wrong_kind(f"eval.thresholds.{metric}", metric)
    if recipe.eval.metrics is None:
        recipe.eval.metrics = list(DEFAULT_METRICS[kind])
    if t.metric_for_best is None:
        t.metric_for_best = DEFAULT_METRIC_FOR_BEST[kind]


def sweep_metric(recipe: Recipe) -> str:
    """The validation metric a sweep optimises; METRICS says its direction."""
    return recipe.sweep.metric or recipe.train.metric_for_best or DEFAULT_METRIC_FOR_BEST[recipe.model.problem_type]


def schema_field(key: str) -> tuple[dataclasses.Field, Any] | None:
    """The field and type of a dotted recipe key (train.learning_rate), or None when the schema has no such key."""
    cls, found = Recipe, None
    for part in key.split("."):
        if cls is None or not dataclasses.is_dataclass(cls):
            return None
        fields = {f.name: f for f in _schema_fields(cls)}
        if part not in fields:
            return None
        found = (fields[part], typing.get_type_hints(cls)[part])
        cls = found[1] if dataclasses.is_dataclass(found[1]) else None
    return None if found is None or dataclasses.is_dataclass(found[1]) else found


RANGE_KEYS = ("low", "high", "log")


def _check_sweep(recipe: Recipe, problems: list[Problem], ok) -> None:
    """[sweep]: a metric of the problem type, and a space whose keys are recipe keys and whose values each are."""
    s, kind = recipe.sweep, recipe.model.problem_type
    if s.metric is not None and ok("sweep.metric", "model.problem_type") and s.metric not in PROBLEM_METRICS[kind]:
        allowed = PROBLEM_METRICS[kind]
        kind_words = kind.replace("_", "-").replace("-classification", "")
        problems.append(Problem("sweep.metric", f"{s.metric!r} is not a {kind_words} metric", did_you_mean(s.metric, allowed, f"choose from {', '.join(allowed)}")))
    if not ok("sweep.space"):
        return
    keys = [row[0] for row in describe_schema()]
    for key, spec in s.space.items():
        where = f"sweep.space.{key}"
        found = schema_field(key)
        if found is None:
            # guess within the key's own section first: "train.lr" -> train.learning_rate
            section, _, name = str(key).rpartition(".")
            guess = suggest(name, [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == section]) if section else None
            fix = f"did you mean '{section}.{guess}'?" if guess else did_you_mean(key, keys, 'name recipe keys, e.g. "train.learning_rate" (bertctl schema lists them)')
            problems.append(Problem(where, f"{key!r} is not a recipe key", fix))
            continue
        if key.startswith("sweep.") or key == "output.dir":
            problems.append(Problem(where, f"{key} can't be searched: the sweep itself sets it", "remove it from [sweep.space]"))
            continue
        spec_field, tp = found
        meta = dict(spec_field.metadata)
        if isinstance(spec, list):
            _check_space_list(where, key, spec, tp, meta, problems)
        elif isinstance(spec, dict):
            _check_space_range(where, key, spec, tp, meta, problems)
        else:
            problems.append(Problem(where, f"must be a range {{ low = .., high = .. }} or a list of values, got {_show(spec)}", f'write it like: "{key}" = {{ low = 1e-5, high = 1e-4, log = true }} or "{key}" = [2, 3]'))


def _check_space_list(where: str, key: str, spec: list, tp: Any, meta: dict[str, Any], problems: list[Problem]) -> None:
    """Each value of a list must be a value the key itself accepts."""
    if not spec:
        problems.append(Problem(where, "is an empty list", "list the values to try, e.g. [2, 3, 4]"))
    for i, value in enumerate(spec):
        try:
            coerced = _coerce(value, tp)
        except _Mismatch:
            problems.append(Problem(where, f"value {i + 1} must be {_with_article(_type_name(tp))} like {key} itself, got {_show(value)}"))
            continue
        problem = _check_range(key, coerced, meta)
        if problem is not None:
            problems.append(Problem(where, f"value {i + 1}: {key} {problem.message}", problem.fix))


def _check_space_range(where: str, key: str, spec: dict, tp: Any, meta: dict[str, Any], problems: list[Problem]) -> None:
    """A range is of the key's own type (int keys: int bounds), within the key's bounds, low <= high, log only above 0."""
    base = next((a for a in get_args(tp) if a is not type(None)), tp) if _is_union(tp) else tp
    if base not in (int, float):
        problems.append(Problem(where, f"is a range, but {key} is {_with_article(_type_name(tp))}", f'list the values to try: "{key}" = [..]'))
        return
    for name in spec:
        if name not in RANGE_KEYS:
            problems.append(Problem(f"{where}.{name}", "unknown key", did_you_mean(str(name), list(RANGE_KEYS), f"a range has {', '.join(RANGE_KEYS)}")))
    bounds = {}
    for name in ("low", "high"):
        if name not in spec:
            problems.append(Problem(where, f"has no {name}", f'write it like: "{key}" = {{ low = .., high = .. }}'))
            continue
        value = spec[name]
        try:
            bounds[name] = _coerce(value, base)
        except _Mismatch:
            problems.append(Problem(f"{where}.{name}", f"must be {_with_article(_type_name(base))}, as {key} is, got {_show(value)}"))
            continue
        problem = _check_range(key, bounds[name], meta)
        if problem is not None:
            problems.append(Problem(f"{where}.{name}", f"{key} {problem.message}", problem.fix))
            del bounds[name]
    log = spec.get("log", False)
    if not isinstance(log, bool):
        problems.append(Problem(f"{where}.log", f"must be true or false, got {_show(log)}"))
        log = False
    if len(bounds) == 2:
        if bounds["low"] > bounds["high"]:
            problems.append(Problem(where, f"low {bounds['low']!r} is above high {bounds['high']!r}", "swap them"))
        if log and bounds["low"] <= 0:
            problems.append(Problem(where, f"log = true needs low > 0, got {bounds['low']!r}", "raise low above 0, or set log = false"))


# ---------------------------------------------------------------------------------------------
# overrides: dotted keys on the command line, typed like the file


def _parse_override(text: str) -> tuple[list[str], Any] | Problem:
    if "=" not in text:
        return Problem(text, "is not an override (no '=')", "write key=value, e.g. train.epochs=1")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = [p.strip() for p in key.split(".")]
    if not key or any(not p for p in parts):
        return Problem(text, f"bad key {key!r}", "write dotted keys like train.epochs=1")
    return parts, _override_value(raw)


def _override_value(raw: str) -> Any:
    """The TOML value `raw` spells (1, 2e-5, true, "x", [..]), else the bare word itself."""
    if "\n" in raw or "\r" in raw:
        return raw  # TOML would read the next line as more keys; keep it as text
    if not raw.strip():
        return ""
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except (tomllib.TOMLDecodeError, RecursionError):
        return raw.strip()  # bare words such as model.name=bert-base-uncased
    if list(parsed) != ["v"]:
        return raw.strip()
    return parsed["v"]


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.epochs=1' -> (['train', 'epochs'], 1). Values are TOML; bare words are strings."""
    parsed = _parse_override(text)
    if isinstance(parsed, Problem):
        raise RecipeError("command line", [parsed])
    return parsed


def _apply_overrides(raw: dict[str, Any], overrides: list[str], problems: list[Problem]) -> dict[str, str]:
    """Set each override in `raw`, adding a problem per bad one; returns dotted key -> override text."""
    applied: dict[str, str] = {}
    for text in overrides:
        parsed = _parse_override(text)
        if isinstance(parsed, Problem):
            problems.append(parsed)
            continue
        parts, value = parsed
        table = raw
        for i, part in enumerate(parts[:-1]):
            nxt = table.setdefault(part, {})
            if not isinstance(nxt, dict):
                where = ".".join(parts[: i + 1])
                problems.append(Problem(text, f"{where!r} is a value, not a table", f"override {where} itself"))
                break
            table = nxt
        else:
            table[parts[-1]] = value
            applied[".".join(parts)] = text
    return applied


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> list[str]:
    """Set each override in the raw table; returns the dotted keys it set. RecipeError lists every bad override."""
    problems: list[Problem] = []
    applied = _apply_overrides(raw, overrides, problems)
    if problems:
        raise RecipeError("command line", problems)
    return list(applied)


def _validate(raw: dict[str, Any], source: str, base_dir: str | Path, problems: list[Problem]) -> Recipe:
    failed: set[str] = set()
    built = _build(Recipe, raw, "", problems, failed)
    built.source = source
    built.base_dir = str(base_dir)
    _check_recipe(built, problems, failed)
    return built


def recipe_from_dict(raw: dict[str, Any], *, source: str = "<recipe>", base_dir: str | Path = ".") -> Recipe:
    problems: list[Problem] = []
    built = _validate(raw, source, base_dir, problems)
    if problems:
        raise RecipeError(source, problems)
    return built


def _mark_overridden(problems: list[Problem], applied: dict[str, str]) -> list[Problem]:
    """Say which problems came from the command line: the recipe file itself is fine there."""
    out = []
    for p in problems:
        text = applied.get(p.key) or next((t for k, t in applied.items() if p.key.startswith(k + ".")), None)
        if text is None:
            out.append(p)
            continue
        fix = p.fix
        value = text.split("=", 1)[1].strip()
        if "must be" in p.message and value.startswith(("[", "{")):
            fix = 'override values are TOML: quote strings inside lists and tables, e.g. data.labels=\'["a", "b"]\''
        out.append(Problem(p.key, f"{p.message} (from the command line: {text})", fix))
    return out


def _toml_error_message(exc: tomllib.TOMLDecodeError, text: str) -> str:
    """tomllib's message plus the offending line, so the user sees what the parser saw."""
    import re

    match = re.search(r"line (\d+)", str(exc))
    lines = text.splitlines()
    if match and 1 <= int(match.group(1)) <= len(lines):
        shown = lines[int(match.group(1)) - 1].strip()
        if shown:
            return f"{exc}: {shown[:80]!r}"
    return str(exc)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file; raises RecipeError listing every problem."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise RecipeError(source, [Problem("(file)", "not found", "check the path, e.g. bertctl train recipes/agnews.toml")])
    if path.is_dir():
        raise RecipeError(source, [Problem("(file)", "is a directory", "name a .toml recipe file in it")])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecipeError(source, [Problem("(file)", f"cannot be read: {exc.strerror}", "check its permissions")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecipeError(
            source, [Problem("(file)", f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})", "save the recipe as UTF-8")]
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        fix = "fix the TOML syntax at that line"
        if path.suffix.lower() in DATA_SUFFIXES:
            fix = f"this looks like a data file; pass the .toml recipe that names it ({fix})"
        raise RecipeError(source, [Problem("(toml)", _toml_error_message(exc, text), fix)]) from None
    except RecursionError:
        raise RecipeError(source, [Problem("(toml)", "nested too deeply to read", "flatten the nested arrays/tables")]) from None
    problems: list[Problem] = []
    applied = _apply_overrides(raw, overrides or [], problems)
    built = _validate(raw, source, path.parent, problems)
    if problems:
        raise RecipeError(source, _mark_overridden(problems, applied))
    built.overrides = list(overrides or [])
    return built


def describe_schema() -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) rows for docs and `bertctl validate --schema`."""
    rows = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in _schema_fields(cls):
            key = f"{prefix}.{f.name}" if prefix else f.name
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, key)
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((key, _type_name(tp), _as_toml(default), _describe_checks(f.metadata)))

    walk(Recipe, "")
    return rows


def _as_toml(value: Any) -> str:
    """A default as a recipe would spell it; (unset) for keys that have no value unless given one."""
    import json

    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value)


def _describe_checks(meta: Any) -> str:
    """A field's help plus its allowed values, so the docs and the checks can't drift apart."""
    text = meta.get("help", "")
    bounds = []
    for name, symbol in (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<")):
        if name in meta:
            bounds.append(f"{symbol} {meta[name]:g}" if isinstance(meta[name], float) else f"{symbol} {meta[name]}")
    if bounds:
        text += f" [{', '.join(bounds)}]"
    if "choices" in meta:
        text += f" [one of: {', '.join(meta['choices'])}]"
    if "each_choice" in meta:
        text += f" [each one of: {', '.join(meta['each_choice'])}]"
    return text
