"""The recipe schema, declared once: every key's type, default, bounds, choices and help, as pydantic models.

    RecipeFile.model_validate(raw)      # what a recipe file may hold (loading.py turns its errors into Problems)
    describe_schema()                   # (key, type, default, help) rows: `bertctl schema`, the README table
    json_schema()                       # the same for editors: taplo / Even Better TOML complete and check recipes
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema

from bertctl.problems import SINGLE_LABEL
from bertctl.recipe import DEFAULT_MODEL, METRICS, PROBLEM_TYPES, PRUNERS, SPLITS, TRACKERS, TRUNCATIONS

Text = Annotated[str, StringConstraints(pattern=r"\S")]  # no recipe string may be empty or blank
Metric = Literal[tuple(METRICS)]


class Section(BaseModel):
    """A table of a recipe: unknown keys are errors, nan and inf are refused, and values keep their TOML type
    (strict: "3" is not an integer, 2.5 not an integer, 1 not a boolean; an integer is a number)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ModelSection(Section):
    """[model]: the pretrained BERT and how its inputs are cut."""

    name: Text = Field(DEFAULT_MODEL, description="hub id or local model dir (a relative dir is looked up in the working dir, then the recipe's folder)")
    max_length: int = Field(128, ge=8, le=8192, description="tokens per input, [CLS] and [SEP] included")
    problem_type: Literal[PROBLEM_TYPES] = Field(SINGLE_LABEL.name, description="what the head predicts: one class, any number of labels (sigmoid per label), or a number")
    truncation: Literal[TRUNCATIONS] = Field("head", description="which tokens a too-long text keeps: the first, the last, or a quarter of max_length from the start and the rest from the end (head+tail, Sun et al. 2019)")


class LimitSection(Section):
    """[data.limit]: seeded samples per split, for quick runs."""

    train: int | None = Field(None, ge=1, description="use a seeded random sample of this many rows")
    validation: int | None = Field(None, ge=1, description="likewise for validation")
    test: int | None = Field(None, ge=1, description="likewise for test")


class DataSection(Section):
    """[data]: where the texts and labels are (local files, or a hub dataset) and which columns hold them."""

    dataset: Text | None = Field(None, description="a hub dataset id; then train/validation/test are split names")
    subset: Text | None = Field(None, description="the hub dataset's config name (e.g. 'mrpc' of 'nyu-mll/glue')")
    train: Text | None = Field(None, description="train file (csv, tsv, jsonl, parquet) or split name")
    validation: Text | None = Field(None, description="validation file or split name")
    test: Text | None = Field(None, description="test file or split name")
    text: Text = Field("text", description="column with the (first) text")
    text_pair: Text | None = Field(None, description="column with the second text: [CLS] A [SEP] B [SEP]")
    label: Text | list[Text] = Field("label", description="column with the label (a name or an integer id; multi-label: a list of names; regression: a number), or, multi-label, a list of 0/1 columns, one per label")
    label_separator: Text | None = Field(None, description="multi-label: the label column holds names joined by this, e.g. 'joy,surprise'")
    labels: list[Text] | None = Field(None, min_length=2, description="label names in class-id order (default: inferred from train; regression: none)")
    validation_fraction: float | None = Field(None, gt=0.0, lt=1.0, description="carve this share of train into validation when there is none")
    drop_empty: bool = Field(False, description="drop rows with empty texts or labels instead of refusing them")
    limit: LimitSection = Field(default_factory=LimitSection, description="sample limits per split")


class TrainSection(Section):
    """[train]: fine-tuning, keys named as in transformers and accelerate."""

    epochs: int = Field(3, ge=1, description="passes over the training data")
    batch_size: int = Field(32, ge=1, description="examples per optimizer micro-batch, per process")
    eval_batch_size: int = Field(128, ge=1, description="examples per evaluation batch")
    learning_rate: float = Field(5e-5, gt=0.0, le=1.0, description="peak AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0, description="AdamW decay (not on bias/LayerNorm)")
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0, description="share of steps with linear warmup")
    scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="lr decay after warmup")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_grad_norm: float = Field(1.0, ge=0.0, description="clip gradients to this norm (0 = off)")
    layerwise_lr_decay: float = Field(1.0, gt=0.0, le=1.0, description="layer-wise lr decay (ULMFiT; Sun et al. 2019): encoder layer i of L gets lr x decay^(L-i), embeddings decay^(L+1), the head the full lr (1.0 = off)")
    reinit_layers: int = Field(0, ge=0, description="re-initialise the top K encoder layers and the pooler before training, seeded (Zhang et al. 2021, Revisiting Few-sample BERT Fine-tuning); at most the model's layers")
    seed: int = Field(42, ge=0, description="seeds data order, head init, dropout")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("no", description="accelerate mixed precision")
    early_stopping_patience: int = Field(0, ge=0, description="stop after this many evaluations without gain (0 = off)")
    metric_for_best: Metric | None = Field(None, description="validation metric that picks the best checkpoint (default: accuracy; multi-label f1_macro; regression spearman)")
    # the weights' count and sign depend on the labels: loading.py checks them with the other cross-key rules
    class_weights: Literal["none", "balanced"] | list[float] = Field("none", description="weight the loss per class: 'none', 'balanced' (inverse train frequency; multi-label: BCE pos_weight per label), or one weight per label")
    eval_every_steps: int = Field(0, ge=0, description="also evaluate every N optimizer steps (0 = each epoch only)")
    log_every_steps: int = Field(10, ge=1, description="optimizer steps between log lines")
    save_total_limit: int = Field(2, ge=1, description="keep the newest K checkpoints")
    checkpoint_every_steps: int = Field(0, ge=0, description="also checkpoint every N optimizer steps (0 = each evaluation)")
    group_by_length: bool = Field(True, description="batch similar lengths together (less padding)")
    num_threads: int = Field(0, ge=0, description="torch CPU threads (0 = one per free CPU; more than are free only queue)")
    calibrate: bool = Field(False, description="fit temperature scaling on the validation split (one temperature; per label for multi-label) and fold it into the saved head, so every runtime and pipeline() get calibrated scores")
    cpu_fast_path: bool = Field(True, description="on CPU, run BERT's forward via bertctl.fastpath ([CLS]-only last layer, one-GEMM QKV, cheap dropout); false = stock transformers")
    log_with: list[Literal[tuple(TRACKERS)]] = Field(default_factory=list, description="accelerate trackers, e.g. ['tensorboard']")


class EvalSection(Section):
    """[eval]: what `bertctl eval` reports, on which split, and the CI gate."""

    metrics: list[Metric] | None = Field(None, min_length=1, description="metrics to report (default: accuracy, f1_macro; multi-label f1_macro, f1_micro, subset_accuracy; regression pearson, spearman, rmse)")
    # any key here; loading.py checks each against its metric's range (threshold_problem, shared with `eval --min`)
    thresholds: dict[str, float] = Field(default_factory=dict, description="CI gate: metric = minimum (maximum for log_loss, ece, hamming_loss, mse, rmse, mae)")
    split: Literal[SPLITS] = Field("test", description="split `bertctl eval` uses (validation when there is no test)")


class PretrainSection(Section):
    """`bertctl pretrain`: continued masked-language-model pre-training (its flags override these keys)."""

    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0, description="share of real tokens selected for prediction (80% [MASK], 10% random, 10% kept)")
    whole_word_masking: bool = Field(False, description="select whole words: a word's ## pieces are masked together")
    nsp: bool = Field(False, description="also train next-sentence prediction on texts cut at a sentence boundary (50% real next, 50% random)")
    heldout_fraction: float = Field(0.1, gt=0.0, le=0.5, description="share of texts held out to score MLM loss/accuracy before and after")
    epochs: int | None = Field(None, ge=1, description="passes over the texts (default: train.epochs)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps; the schedule spans them (wins over epochs)")
    data: Text | None = Field(None, description="unlabeled texts (txt one per line, or csv/tsv/jsonl/parquet) instead of data.train's texts; relative to the recipe's folder")
    text: Text = Field("text", description="text column of pretrain.data")


# an entry's value depends on the key it names, so loading.py checks it; editors still get the two shapes
_SPACE_ENTRY = {"anyOf": [{"type": "array", "minItems": 1}, {"type": "object", "required": ["low", "high"], "additionalProperties": False,
                                                              "properties": {"low": {"type": "number"}, "high": {"type": "number"}, "log": {"type": "boolean"}}}]}


class DistillSection(Section):
    """[distill]: `bertctl distill`: a smaller student trained on a finished run's scores (its teacher's) and the labels."""

    teacher: Text | None = Field(None, description="the teacher: a finished run dir trained on this recipe's labels and problem type (--teacher overrides); a relative dir is looked up in the working dir, then the recipe's folder")
    teacher_export: Text | None = Field(None, description="an ONNX export of the teacher (bertctl export) to score the transfer set with, faster on a CPU (default: the teacher's own weights)")
    layers: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1, description="the student is the teacher keeping these encoder layers (0-based, ascending), embeddings and head copied")
    num_layers: int | None = Field(None, ge=1, description="the student is the teacher keeping this many evenly spaced encoder layers from the first (3 of 6: 0, 2, 4, as DistilBERT takes every other one); without layers or num_layers the student is model.name")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="the teacher's share of the loss; the labels get 1 - alpha")
    temperature: float = Field(2.0, gt=0.0, le=100.0, description="single-label: both softmaxes of the teacher term at this temperature, the term scaled by T^2 (Hinton et al. 2015)")
    unlabeled: Text | None = Field(None, description="extra texts for the teacher to score (csv, tsv, jsonl, parquet or txt, with data.text and data.text_pair columns); relative to the recipe's folder; refused where they overlap validation or test")


class SweepSection(Section):
    """`bertctl sweep`: an optuna search over recipe keys (its flags override trials)."""

    trials: int = Field(20, ge=1, description="trials to finish (complete or pruned) in the study")
    metric: Metric | None = Field(None, description="validation metric to optimise, its direction its own (log_loss, mse, ... minimised) (default: train.metric_for_best)")
    pruner: Literal[PRUNERS] = Field("median", description="stop unpromising trials after an evaluation (optuna's pruners)")
    space: dict[str, Any] = Field(default_factory=dict, description="recipe key = { low = .., high = .., log = true } (a range of its type) or a list of values to choose from", json_schema_extra={"additionalProperties": _SPACE_ENTRY})


class OutputSection(Section):
    """[output]: where the run goes."""

    dir: Text | None = Field(None, description="run directory (relative to the working dir); default runs/<recipe name>")


class RecipeFile(Section):
    """A bertctl recipe: every setting of a run (`bertctl schema` lists the keys)."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    distill: DistillSection = Field(default_factory=DistillSection)
    sweep: SweepSection = Field(default_factory=SweepSection)
    output: OutputSection = Field(default_factory=OutputSection)


class Recipe(RecipeFile):
    """A validated recipe and where it came from (these three are not keys a file may hold)."""

    source: str = "<recipe>"
    base_dir: str = "."
    overrides: list[str] = Field(default_factory=list)  # as given, for resume hints

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
        value = {"pretrain": self.pretrain.data, "distill": self.distill.unlabeled}.get(split) or getattr(self.data, split, None)
        if value is None or (self.uses_hub_dataset and split in SPLITS):
            return None
        path = _expand_user(Path(value))
        return path if path.is_absolute() else Path(self.base_dir) / path

    def to_dict(self) -> dict[str, Any]:
        """The schema part, with local paths made absolute so the saved copy works from any folder."""
        out = self.model_dump(include=set(RecipeFile.model_fields), exclude_none=True)  # TOML has no null
        out["data"].update({split: str(path.resolve()) for split in SPLITS if (path := self.data_path(split)) is not None})  # hub splits: None
        if self.pretrain.data is not None:
            out["pretrain"]["data"] = str(self.data_path("pretrain").resolve())
        if self.distill.unlabeled is not None:
            out["distill"]["unlabeled"] = str(self.data_path("distill").resolve())
        if (local_model := self.local_dir(self.model.name)) is not None:
            out["model"]["name"] = str(local_model.resolve())
        for key in ("teacher", "teacher_export"):
            if (local := self.local_dir(getattr(self.distill, key))) is not None:
                out["distill"][key] = str(local.resolve())
        out["output"]["dir"] = str(self.run_dir)
        return out

    def local_dir(self, value: str | None) -> Path | None:
        """The directory a model-valued key names, looked up in the order `modeling.resolve_model` uses: the working
        dir first, then the recipe's folder (None: no such dir)."""
        if value is None:
            return None
        name = _expand_user(Path(value))
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


# ---------------------------------------------------------------------------------------------
# reading the declaration: keys, type names, bounds, choices


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Section)


def schema_field(key: str) -> tuple[FieldInfo, Any] | None:
    """The field and type of a dotted recipe key (train.learning_rate), or None when the schema has no such key."""
    info = dict(_fields()).get(key)
    return None if info is None else (info, info.annotation)


def members(tp: Any) -> list[Any]:
    """The types a value of `tp` may have: Annotated unwrapped, None left out (TOML has no null)."""
    if get_origin(tp) is Annotated:
        return members(get_args(tp)[0])
    if get_origin(tp) in (Union, types.UnionType):
        return [m for arg in get_args(tp) if arg is not type(None) for m in members(arg)]
    return [tp]


def type_name(tp: Any) -> str:
    """'integer', 'list of strings', 'string or list of numbers': a type as the docs and messages name it."""
    names = []
    for member in members(tp):
        origin = get_origin(member)
        if origin is list:
            names.append(f"list of {type_name(get_args(member)[0])}s")
        elif origin is dict:
            names.append(f"table of {type_name(get_args(member)[1])}s")
        elif origin is Literal:
            names.append("string")
        else:
            names.append({str: "string", int: "integer", float: "number", bool: "true/false", Any: "value"}[member])
    return " or ".join(names)


def choices(tp: Any) -> tuple[list[str], bool]:
    """The allowed values of a key, or of each entry of a list key (then True)."""
    for member in members(tp):
        if get_origin(member) is Literal:
            return list(get_args(member)), False
        if get_origin(member) is list and get_origin(get_args(member)[0]) is Literal:
            return list(get_args(get_args(member)[0])), True
    return [], False


BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}  # lower bounds first, as the help shows them: [> 0, <= 1]


def _fields(model: type[Section] = RecipeFile, prefix: str = "") -> typing.Iterator[tuple[str, FieldInfo]]:
    """(dotted key, field) of every leaf key, in declaration order."""
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        if is_section(info.annotation):
            yield from _fields(info.annotation, key + ".")
        else:
            yield key, info


def describe_schema() -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) rows for `bertctl schema` and the README's key table."""
    rows = []
    for key, info in _fields():
        default = info.get_default(call_default_factory=True)
        text = info.description or ""
        bounds = [(symbol, getattr(m, name)) for name, symbol in BOUNDS.items() for m in info.metadata if getattr(m, name, None) is not None]
        shown = [f"{symbol} {bound:g}" if isinstance(bound, float) else f"{symbol} {bound}" for symbol, bound in bounds]
        if shown:
            text += f" [{', '.join(shown)}]"
        allowed, each = choices(info.annotation)
        if allowed and len(members(info.annotation)) == 1:  # class_weights' help says what else it takes
            text += f" [{'each one' if each else 'one'} of: {', '.join(allowed)}]"
        rows.append((key, type_name(info.annotation), "(unset)" if default is None else as_toml(default), text))
    return rows


def as_toml(value: Any) -> str:
    """A default as a recipe would spell it."""
    return str(value).lower() if isinstance(value, bool) else json.dumps(value)


def readme_table() -> str:
    """The README's "Every key" table (tests/test_recipe.py keeps the README equal to it)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default, help in describe_schema():
        lines.append(f"| `{key}` | {tp} | {default if default == '(unset)' else f'`{default}`'} | {help} |")
    return "\n".join(lines) + "\n"


class _EditorSchema(GenerateJsonSchema):
    """JSON Schema as a TOML editor reads it: TOML has no null, so an unset key is simply absent, and the
    description (not a title made from the key's name) is the hover text."""

    def nullable_schema(self, schema):
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema):
        out = super().default_schema(schema)
        if out.get("default", "") is None:
            del out["default"]
        return out

    def field_title_should_be_set(self, schema) -> bool:
        return False


def json_schema() -> dict[str, Any]:
    """The recipe schema as JSON Schema (draft 2020-12), for `bertctl schema --json` and recipes/recipe.schema.json."""
    schema = RecipeFile.model_json_schema(schema_generator=_EditorSchema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "bertctl recipe"}
