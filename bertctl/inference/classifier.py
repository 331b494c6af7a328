"""A loaded classifier, whatever its backend: a torch run dir or an ONNX export dir (bertctl.inference.onnx).

    classifier.logits(columns)     # the one batched forward pass (bertctl.inference.forward)
    classifier.problem.scores(...) # what its problem type reads off logits
    classifier.settings            # what the run's recipe.toml says about inputs (RunSettings)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertctl.errors import ModelError
from bertctl.problems import ProblemType, problem_of
from bertctl.recipe import TRUNCATIONS

DEFAULT_BATCH_SIZE = 64
DEFAULT_CHUNK_SIZE = 2048  # texts read, sorted by length and written together: plenty to batch 64 at a time with little padding
FALLBACK_MAX_LENGTH = 512


# ---------------------------------------------------------------------------------------------
# what a run dir says about its model, read leniently: predicting must not need the training data files


@dataclass
class RunSettings:
    """The few recipe.toml values inference needs; None where the dir has no recipe or no such key."""

    max_length: int | None = None
    truncation: str | None = None  # model.truncation: which tokens of a too-long text the model was trained on
    text: str | None = None
    text_pair: str | None = None
    label: str | list[str] | None = None  # a list: one 0/1 column per label (multi-label)
    label_separator: str | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] | None = None  # eval.metrics: what `bertctl eval` reports
    eval_batch_size: int | None = None
    from_recipe: bool = False  # the dir has a recipe.toml: then "no data.text_pair" means the model takes one text


def read_run_settings(model_dir: Path | None) -> RunSettings:
    path = Path(model_dir) / "recipe.toml" if model_dir is not None else None
    if path is None or not path.is_file():
        return RunSettings()
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"{path}: cannot read the run's recipe ({exc})", fix="restore recipe.toml from the run, or delete it to use the model's own settings") from None

    def get(section: str, key: str, kind: type) -> Any:
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    thresholds = raw.get("eval", {}).get("thresholds", {}) if isinstance(raw.get("eval"), dict) else {}
    label = raw["data"].get("label") if isinstance(raw.get("data"), dict) else None
    label_columns = [v for v in label if isinstance(v, str)] if isinstance(label, list) else None  # one 0/1 column per label
    return RunSettings(
        from_recipe=True,
        max_length=get("model", "max_length", int),
        truncation=get("model", "truncation", str),
        text=get("data", "text", str),
        text_pair=get("data", "text_pair", str),
        label=get("data", "label", str) or label_columns,
        label_separator=get("data", "label_separator", str),
        thresholds=thresholds if isinstance(thresholds, dict) else {},
        metrics=[m for m in raw["eval"]["metrics"] if isinstance(m, str)] if isinstance(raw.get("eval"), dict) and isinstance(raw["eval"].get("metrics"), list) else None,
        eval_batch_size=get("train", "eval_batch_size", int),
    )


# ---------------------------------------------------------------------------------------------


@dataclass
class Classifier:
    model: Any  # a transformers PreTrainedModel (or its int8 dynamic-quantized copy), or an inference.onnx.OnnxModel
    tokenizer: Any
    labels: list[str]  # class names in class-id order (config.id2label)
    max_length: int
    device: str
    location: str  # the directory the weights came from
    run_dir: Path | None  # set when the model is a local dir (a run dir or any save_pretrained dir)
    settings: RunSettings
    quantized: str | None = None
    fast_path: list[str] = field(default_factory=list)  # what bertctl.fastpath changed (CPU only)
    chunk_stride: int | None = None  # set by forward.run_as_windows (--chunks): long texts run as overlapping windows

    @property
    def truncation(self) -> str:
        """What a too-long text keeps: the run's model.truncation (the tokens it was trained on), else the head."""
        return self.settings.truncation if self.settings.truncation in TRUNCATIONS else "head"

    @property
    def input_names(self) -> list[str]:
        return list(getattr(self.tokenizer, "model_input_names", ["input_ids", "token_type_ids", "attention_mask"]))

    @property
    def backend(self) -> str:
        return getattr(self.model, "backend", "torch")

    @property
    def problem(self) -> ProblemType:
        return problem_of(self.model.config)

    @property
    def thresholds(self) -> list[float] | None:
        """The decision thresholds saved with the model (multi-label: tuned on validation), else None."""
        return self.problem.thresholds(self.model.config, self.labels)

    @property
    def pad_token_id(self) -> int:
        value = getattr(self.tokenizer, "pad_token_id", None)
        if value is None:
            value = getattr(self.model.config, "pad_token_id", None)
        return int(value or 0)

    @property
    def takes_pairs(self) -> bool | None:
        """Whether the model reads sentence pairs: known from the run's recipe, None for a bare model dir."""
        if self.settings.text_pair:
            return True
        return False if self.settings.from_recipe else None


def model_max_length(tokenizer, config, recipe_max_length: int | None) -> int:
    """The run's model.max_length, else the tokenizer's limit, never past the model's position embeddings."""
    limit = getattr(config, "max_position_embeddings", None)
    if recipe_max_length:
        return min(recipe_max_length, limit) if limit else recipe_max_length
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    # an unset tokenizer limit is a huge sentinel (int(1e30)), not a length
    if not tokenizer_limit or tokenizer_limit > 1_000_000:
        tokenizer_limit = None
    candidates = [v for v in (tokenizer_limit, limit) if v]
    return min(candidates) if candidates else FALLBACK_MAX_LENGTH
