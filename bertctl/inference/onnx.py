"""Run an exported classifier (`bertctl export`) on onnxruntime and `tokenizers` alone: torch and transformers are
never imported, so `bertctl predict --model runs/agnews/onnx "text"` starts in a fraction of a second.

    classifier = load_export("runs/agnews/onnx")     # an inference Classifier, as load_for_inference returns
    forward.logits(classifier, columns)              # the forward pass predict, eval and serve call

`inference.loading.load_for_inference` hands any dir holding model.onnx + export.json here, so every command that takes a run dir
takes an export dir too. `ExportTokenizer` answers the calls bertctl makes of a transformers fast tokenizer
(`encode`, `tokenize_data`) from the same tokenizer.json, so both paths see the same token ids.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Sequence

from bertctl import errors
from bertctl.errors import ModelError
from bertctl.cpus import busy_cpus, choose_threads, usable_cpus
from bertctl.inference.classifier import Classifier, model_max_length, read_run_settings
from bertctl.modeling import check_is_sequence_classifier, labels_of

MODEL_FILE = "model.onnx"
EXPORT_FILE = "export.json"
INSTALL_FIX = 'install the ONNX extra: pip install -e ".[onnx]" (or pip install onnxruntime onnx)'
DEFAULT_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def is_export_dir(path: str | Path | None) -> bool:
    return path is not None and (Path(path) / MODEL_FILE).is_file() and (Path(path) / EXPORT_FILE).is_file()


def require(module: str, what: str, fix: str = INSTALL_FIX):
    """Import a package of the [onnx] extra, or say how to install it."""
    return errors.require(module, what, fix)


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read {what} ({exc})", fix="export the run again: bertctl export RUN_DIR --overwrite") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: {what} is not a JSON object", fix="export the run again: bertctl export RUN_DIR --overwrite")
    return value


class TokenizerOutput(dict):
    """Column name -> one id list per text, plus the `encodings` (a transformers BatchEncoding offers both)."""

    encodings: list


class ExportTokenizer:
    """tokenizer.json through `tokenizers`, called like a transformers fast tokenizer (`tok(texts, pairs,
    truncation=True, max_length=N)`), with the special tokens and input names of tokenizer_config.json."""

    def __init__(self, directory: Path):
        from tokenizers import Tokenizer

        self.backend_tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # batches pad themselves (to their own longest text); a padding set in the file would pad every text
        self.backend_tokenizer.no_padding()
        config = read_json(directory / "tokenizer_config.json", "the tokenizer config") if (directory / "tokenizer_config.json").is_file() else {}
        self.model_input_names = list(config.get("model_input_names") or DEFAULT_INPUTS)
        self.model_max_length = config.get("model_max_length")
        # the transformers class this stands in for (the tokenize cache key names it: same ids, same cache entry)
        self.tokenizer_class = config.get("tokenizer_class")
        for name, default in (("cls", "[CLS]"), ("sep", "[SEP]"), ("pad", "[PAD]"), ("unk", "[UNK]"), ("mask", "[MASK]")):
            token = config.get(f"{name}_token", default)
            setattr(self, f"{name}_token", token.get("content") if isinstance(token, dict) else token)
        for name in ("pad", "unk", "cls", "sep"):
            token = getattr(self, f"{name}_token")
            setattr(self, f"{name}_token_id", self.backend_tokenizer.token_to_id(token) if token else None)

    def get_vocab(self) -> dict[str, int]:
        return self.backend_tokenizer.get_vocab()

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        truncation: bool = False,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        return_attention_mask: bool = True,
        return_token_type_ids: bool = True,
    ) -> TokenizerOutput:
        texts = [text] if isinstance(text, str) else list(text)
        pairs = None if text_pair is None else ([text_pair] if isinstance(text_pair, str) else list(text_pair))
        backend = self.backend_tokenizer
        if truncation and max_length:
            # transformers' defaults: cut the longer of a pair first, from the right, no overlap
            if (backend.truncation or {}).get("max_length") != max_length:
                backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction="right")
        elif backend.truncation is not None:
            backend.no_truncation()
        encodings = backend.encode_batch(list(zip(texts, pairs)) if pairs is not None else texts, add_special_tokens=add_special_tokens)
        out = TokenizerOutput(input_ids=[e.ids for e in encodings])
        if return_token_type_ids and "token_type_ids" in self.model_input_names:
            out["token_type_ids"] = [e.type_ids for e in encodings]
        if return_attention_mask:
            out["attention_mask"] = [e.attention_mask for e in encodings]
        out.encodings = encodings
        return out


class OnnxModel:
    """An onnxruntime session over model.onnx with the model's config.json: `run` turns a padded batch into logits."""

    backend = "onnxruntime"

    def __init__(self, path: Path, config: types.SimpleNamespace, threads: int):
        ort = require("onnxruntime", "running an ONNX export")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one batch at a time: more would only add idle threads
        options.log_severity_level = 3  # warnings about unused initializers etc. are not the user's to act on
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", fix="export the run again: bertctl export RUN_DIR --overwrite") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config = config

    def run(self, batch: dict[str, Any]):
        # the fused graph may have dropped an input it never reads; feed only what it takes
        return self.session.run(["logits"], {name: batch[name] for name in self.input_names})[0]


def export_config(directory: Path) -> types.SimpleNamespace:
    """config.json read the way bertctl reads a transformers config (num_labels, id2label, pad_token_id...)."""
    raw = read_json(directory / "config.json", "the model config")
    id2label = raw.get("id2label") or {}
    raw.setdefault("num_labels", len(id2label) or 2)
    return types.SimpleNamespace(**raw)


def load_export(directory: str | Path, *, threads: int | None = None, max_length: int | None = None):
    """A `Classifier` over an export dir; the fields mean what they mean for a torch run dir."""
    directory = Path(directory)
    check_is_sequence_classifier(directory)
    info = read_json(directory / EXPORT_FILE, "the export's description")
    config = export_config(directory)
    settings = read_run_settings(directory)
    tokenizer = ExportTokenizer(directory)
    # the training rule, without torch: one thread per free CPU; --threads above them is kept, with a warning
    choice = choose_threads(usable_cpus(), busy_cpus(sample_s=0.05), threads, host_cpus=os.cpu_count(), setting="--threads")
    if choice.warning:
        print(f"warning: {choice.warning}", file=sys.stderr)
    model = OnnxModel(directory / MODEL_FILE, config, choice.threads)
    limit = model_max_length(tokenizer, config, max_length or settings.max_length or info.get("max_length"))
    applied = [f"onnxruntime: {', '.join(info.get('fusions', {})) or 'no fusions'}"]
    return Classifier(model, tokenizer, labels_of(config), limit, "cpu", str(directory), directory, settings, info.get("quantize"), applied)
