"""Load a classifier for inference: a torch run dir (any HF classifier dir or cached hub id), or an export dir.

    classifier = load_for_inference("runs/latest")                    # torch, on GPU when there is one
    classifier = load_for_inference("runs/agnews/onnx")               # onnxruntime: torch is never imported
    classifier = load_for_inference("runs/agnews", quantize="int8")   # dynamic int8 Linear layers, CPU

Cold start matters (`bertctl predict "text"` should answer in seconds): torch and transformers are imported
inside functions, and datasets, evaluate, accelerate or matplotlib never.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bertctl.errors import BertctlError, ModelError
from bertctl.cpus import configure_training_threads
from bertctl.inference.classifier import Classifier, model_max_length, read_run_settings
from bertctl.inference.onnx import is_export_dir, load_export
from bertctl.modeling import check_is_sequence_classifier, labels_of, load_classifier, load_tokenizer
from bertctl.runs import resolve_model_dir

QUANTIZE_CHOICES = ("int8",)


def _quantize_int8(model):
    """int8 dynamic quantization of every nn.Linear (weights int8, activations quantized per batch): CPU only."""
    import warnings

    import torch

    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        raise ModelError(
            f"--quantize int8 needs torch.ao.quantization.quantize_dynamic, which torch {torch.__version__} no longer has",
            fix="run without --quantize, or use a torch release that still ships torch.ao.quantization (its successor is torchao's quantize_)",
        ) from None
    with warnings.catch_warnings():
        # torch marks eager-mode quantization deprecated in favour of torchao; it still works and is the
        # one int8 path that needs no extra package
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def load_for_inference(
    model: str | Path | None = None,
    *,
    quantize: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    max_length: int | None = None,
    trust_pickle: bool = False,
    fast_path: bool = True,
) -> Classifier:
    """A classifier ready for `Classifier.logits`: eval mode, on GPU when there is one (CPU when quantized); an
    export dir (model.onnx + export.json) runs on onnxruntime instead, without importing torch."""
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise BertctlError(f"--quantize {quantize!r} is not supported", fix=f"use one of: {', '.join(QUANTIZE_CHOICES)}")
    location, run_dir = resolve_model_dir(model)
    if is_export_dir(run_dir):
        if quantize is not None:
            raise BertctlError(f"{run_dir} is an ONNX export: --quantize applies to torch run dirs", fix="export an int8 copy instead: bertctl export RUN_DIR --quantize int8")
        if device not in (None, "cpu"):
            raise BertctlError(f"{run_dir} is an ONNX export, run on CPU by onnxruntime; device {device!r} is for torch run dirs", fix="use device='cpu', or the run dir it was exported from")
        return load_export(run_dir, threads=threads, max_length=max_length)
    check_is_sequence_classifier(location)
    settings = read_run_settings(run_dir)
    tokenizer = load_tokenizer(location)
    loaded = load_classifier(location, trust_pickle=trust_pickle, trained=True)

    import torch

    config = loaded.config
    labels = labels_of(config)
    limit = model_max_length(tokenizer, config, max_length or settings.max_length)

    if quantize is not None:
        device = "cpu"
    elif device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        # the training rule: one thread per free CPU; --threads above the free CPUs is kept, with a warning
        choice = configure_training_threads(threads, setting="--threads", sample_s=0.05)
        if choice.warning:
            print(f"warning: {choice.warning}", file=sys.stderr)
    loaded.eval()
    if quantize == "int8":
        loaded = _quantize_int8(loaded)
    loaded.to(device)
    applied = []
    if fast_path and device == "cpu":
        from bertctl.fastpath import use_fast_path  # imports torch and transformers: an export dir never gets here

        # a classifier reads only [CLS] of the last layer; labels equal the stock forward's (benchmarks/README.md)
        applied = use_fast_path(loaded, fused_qkv=quantize is None)
    return Classifier(loaded, tokenizer, labels, limit, device, location, run_dir, settings, quantize, applied)
