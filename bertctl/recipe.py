"""Recipes: TOML files that hold every setting of a run, validated once, with all problems reported together.

    recipe = load_recipe("recipes/agnews.toml", ["train.epochs=1", "data.limit.train=200"])
    recipe.train.learning_rate          # typed, range-checked
    recipe.to_toml()                    # the resolved recipe, saved next to every run

Schema keys equal the names people know from transformers/accelerate (learning_rate, warmup_ratio,
gradient_accumulation_steps, mixed_precision) so a recipe reads like the code it configures.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from bertctl.errors import Problem, RecipeError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DATA_SUFFIXES = {".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt"}
SPLITS = ("train", "validation", "test")

# metric name -> greater is better; `evaluation` computes all of them offline
METRICS = {
    "accuracy": True,
    "f1_macro": True,
    "f1_micro": True,
    "f1_weighted": True,
    "precision_macro": True,
    "precision_micro": True,
    "precision_weighted": True,
    "recall_macro": True,
    "recall_micro": True,
    "recall_weighted": True,
    "mcc": True,
    "log_loss": False,
    "ece": False,
}


def _meta(help: str, **checks: Any) -> dict[str, Any]:
    return {"help": help, **checks}


@dataclass
class ModelSection:
    name: str = field(default=DEFAULT_MODEL, metadata=_meta("hub id or local model dir (relative to the recipe)"))
    max_length: int = field(default=128, metadata=_meta("tokens per input, [CLS] and [SEP] included", min=8, max=8192))


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
    label: str = field(default="label", metadata=_meta("column with the label (a name or an integer id)"))
    labels: list[str] | None = field(default=None, metadata=_meta("label names in class-id order"))
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
    seed: int = field(default=42, metadata=_meta("seeds data order, head init, dropout", min=0))
    mixed_precision: str = field(default="no", metadata=_meta("accelerate mixed precision", choices=["no", "fp16", "bf16"]))
    early_stopping_patience: int = field(default=0, metadata=_meta("stop after this many evaluations without gain (0 = off)", min=0))
    metric_for_best: str = field(default="accuracy", metadata=_meta("validation metric that picks the best checkpoint", choices=list(METRICS)))
    eval_every_steps: int = field(default=0, metadata=_meta("also evaluate every N optimizer steps (0 = each epoch only)", min=0))
    log_every_steps: int = field(default=10, metadata=_meta("optimizer steps between log lines", min=1))
    save_total_limit: int = field(default=2, metadata=_meta("keep the newest K checkpoints", min=1))
    checkpoint_every_steps: int = field(default=0, metadata=_meta("also checkpoint every N optimizer steps (0 = each evaluation)", min=0))
    group_by_length: bool = field(default=True, metadata=_meta("batch similar lengths together (less padding)"))
    num_threads: int = field(default=0, metadata=_meta("torch CPU threads (0 = torch's default)", min=0))
    log_with: list[str] = field(default_factory=list, metadata=_meta("accelerate trackers, e.g. ['tensorboard']"))


@dataclass
class EvalSection:
    metrics: list[str] = field(default_factory=lambda: ["accuracy", "f1_macro"], metadata=_meta("metrics to report", each_choice=list(METRICS)))
    thresholds: dict[str, float] = field(default_factory=dict, metadata=_meta("CI gate: metric = minimum (maximum for log_loss, ece)"))
    split: str = field(default="test", metadata=_meta("split `bertctl eval` uses (validation when there is no test)", choices=list(SPLITS)))


@dataclass
class OutputSection:
    dir: str | None = field(default=None, metadata=_meta("run directory (relative to the working dir); default runs/<recipe name>"))


@dataclass
class Recipe:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    output: OutputSection = field(default_factory=OutputSection)
    # where the recipe came from; not part of the schema
    source: str = field(default="<recipe>", metadata={"internal": True})
    base_dir: str = field(default=".", metadata={"internal": True})

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
        """The local file of a split, resolved against the recipe's folder (None for hub splits)."""
        value = getattr(self.data, split)
        if value is None or self.uses_hub_dataset:
            return None
        path = Path(value).expanduser()
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
        model_dir = Path(self.base_dir) / self.model.name
        if not Path(self.model.name).is_absolute() and model_dir.is_dir():
            out["model"]["name"] = str(model_dir.resolve())
        out["output"]["dir"] = str(self.run_dir)
        return out

    def to_toml(self) -> str:
        import tomli_w

        return f"# resolved from {self.source}\n" + tomli_w.dumps(self.to_dict())


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_drop_none(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}


def _schema_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


# ---------------------------------------------------------------------------------------------
# type checking of one value against a field's annotation


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, getattr(__import__("types"), "UnionType")):
        args = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"table of {_type_name(get_args(tp)[1])}"
    return {str: "string", int: "integer", float: "number", bool: "true/false"}.get(tp, getattr(tp, "__name__", str(tp)))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp` or raise _Mismatch. Integers are accepted where numbers are."""
    origin = get_origin(tp)
    if origin in (Union, getattr(__import__("types"), "UnionType")):
        args = [a for a in get_args(tp) if a is not type(None)]
        for arg in args:
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch
        return [_coerce(v, get_args(tp)[0]) for v in value]
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
            if isinstance(value, float) and not math.isfinite(value):
                raise _Mismatch
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
    if "choices" in meta and value not in meta["choices"]:
        close = difflib.get_close_matches(str(value), meta["choices"], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return Problem(key, f"must be one of {', '.join(map(repr, meta['choices']))}, got {value!r}", f"{hint}".strip() or None)
    if "each_choice" in meta:
        bad = [v for v in value if v not in meta["each_choice"]]
        if bad:
            return Problem(key, f"unknown {', '.join(map(repr, bad))}", f"choose from {', '.join(meta['each_choice'])}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            return Problem(key, f"must be >= {meta['min']}, got {value!r}")
        if "max" in meta and value > meta["max"]:
            return Problem(key, f"must be <= {meta['max']}, got {value!r}")
        if "gt" in meta and not value > meta["gt"]:
            return Problem(key, f"must be > {meta['gt']}, got {value!r}")
        if "lt" in meta and not value < meta["lt"]:
            return Problem(key, f"must be < {meta['lt']}, got {value!r}")
    return None


def _unknown_key(key: str, name: str, known: list[str]) -> Problem:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    fix = f"did you mean {close[0]!r}?" if close else f"known keys here: {', '.join(known)}"
    return Problem(key, "unknown key", fix)


def _build(cls: type, raw: Any, prefix: str, problems: list[Problem]) -> Any:
    """Instantiate dataclass `cls` from a TOML table, appending every problem instead of stopping."""
    if not isinstance(raw, dict):
        problems.append(Problem(prefix, f"must be a table ([{prefix}]), got {type(raw).__name__} {raw!r}"))
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
            kwargs[name] = _build(tp, value, key, problems)
            continue
        try:
            coerced = _coerce(value, tp)
        except _Mismatch:
            name_of_type = _type_name(tp)
            article = "an" if name_of_type[0] in "aeiou" else "a"
            problems.append(Problem(key, f"must be {article} {name_of_type}, got {type(value).__name__} {value!r}"))
            continue
        problem = _check_range(key, coerced, dict(fields[name].metadata))
        if problem:
            problems.append(problem)
            continue
        kwargs[name] = coerced
    return cls(**kwargs)


def _check_recipe(recipe: Recipe, problems: list[Problem]) -> None:
    """Rules that span keys; each adds a problem rather than stopping."""
    d = recipe.data
    if d.dataset is None:
        if d.train is None:
            problems.append(Problem("data.train", "missing: no training data", "set data.train to a csv/tsv/jsonl/parquet file, or data.dataset to a hub dataset"))
        for split in SPLITS:
            path = recipe.data_path(split)
            if path is None:
                continue
            if path.suffix.lower() not in DATA_SUFFIXES:
                problems.append(Problem(f"data.{split}", f"unsupported file type {path.suffix or '(none)'!r} for {path}", f"use one of {', '.join(sorted(DATA_SUFFIXES))}"))
            elif not path.exists():
                problems.append(Problem(f"data.{split}", f"file not found: {path}", "check the path; relative paths resolve against the recipe's folder"))
            elif path.is_dir():
                problems.append(Problem(f"data.{split}", f"{path} is a directory, not a file", "name the data file itself"))
    elif d.train is None:
        d.train = "train"
    if d.validation is not None and d.validation_fraction is not None:
        problems.append(Problem("data.validation_fraction", "set, but data.validation is set too", "remove one of the two"))
    if d.labels is not None:
        if len(d.labels) < 2:
            problems.append(Problem("data.labels", f"needs at least 2 classes, got {d.labels!r}", "list every class name"))
        dupes = sorted({x for x in d.labels if d.labels.count(x) > 1})
        if dupes:
            problems.append(Problem("data.labels", f"repeated names {dupes!r}", "list each class once"))
    if d.text_pair is not None and d.text_pair == d.text:
        problems.append(Problem("data.text_pair", f"is the same column as data.text ({d.text!r})", "name the second text column"))
    if d.label in {d.text, d.text_pair}:
        problems.append(Problem("data.label", f"{d.label!r} is also a text column", "name the label column"))
    for metric in recipe.eval.thresholds:
        if metric not in METRICS:
            close = difflib.get_close_matches(metric, list(METRICS), n=1)
            problems.append(Problem(f"eval.thresholds.{metric}", "unknown metric", f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(METRICS)}"))
    for metric, value in recipe.eval.thresholds.items():
        if metric in METRICS and not 0.0 <= value <= (1.0 if METRICS[metric] else math.inf):
            problems.append(Problem(f"eval.thresholds.{metric}", f"{value} is outside the metric's range", "use a value between 0 and 1"))
    if recipe.output.dir is not None and recipe.output.dir.strip() == "":
        problems.append(Problem("output.dir", "is empty", "name a run directory, e.g. runs/my-run"))


# ---------------------------------------------------------------------------------------------
# overrides: dotted keys on the command line, typed like the file


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.epochs=1' -> (['train', 'epochs'], 1). Values are TOML; bare words are strings."""
    if "=" not in text:
        raise RecipeError("command line", [Problem(text, "is not an override", "write key=value, e.g. train.epochs=1")])
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p.strip() for p in parts):
        raise RecipeError("command line", [Problem(text, f"bad key {key!r}", "write dotted keys like train.epochs=1")])
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words such as model.name=bert-base-uncased
    return [p.strip() for p in parts], value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> list[str]:
    """Set each override in the raw table; returns the dotted keys it set (for messages)."""
    keys = []
    for text in overrides:
        parts, value = parse_override(text)
        table = raw
        for part in parts[:-1]:
            nxt = table.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise RecipeError("command line", [Problem(text, f"{part!r} is a value, not a table", "override the value itself")])
            table = nxt
        table[parts[-1]] = value
        keys.append(".".join(parts))
    return keys


def recipe_from_dict(raw: dict[str, Any], *, source: str = "<recipe>", base_dir: str | Path = ".") -> Recipe:
    problems: list[Problem] = []
    built = _build(Recipe, raw, "", problems)
    built.source = source
    built.base_dir = str(base_dir)
    _check_recipe(built, problems)
    if problems:
        raise RecipeError(source, problems)
    return built


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file; raises RecipeError listing every problem."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise RecipeError(source, [Problem("(file)", "not found", "check the path, e.g. bertctl train recipes/agnews.toml")])
    if path.is_dir():
        raise RecipeError(source, [Problem("(file)", "is a directory", "name a .toml recipe file in it")])
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecipeError(source, [Problem("(file)", f"is not UTF-8 text (byte {exc.start})", "save the recipe as UTF-8")]) from None
    except OSError as exc:
        raise RecipeError(source, [Problem("(file)", f"cannot be read: {exc.strerror}", "check its permissions")]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(source, [Problem("(toml)", str(exc), "fix the TOML syntax at that line")]) from None
    apply_overrides(raw, overrides or [])
    return recipe_from_dict(raw, source=source, base_dir=path.parent)


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
            rows.append((key, _type_name(tp), repr(default), f.metadata.get("help", "")))

    walk(Recipe, "")
    return rows
