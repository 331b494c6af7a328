"""The forward pass: texts to token ids (cut by the run's truncation, or as --chunks windows), then logits in
length-sorted batches, each padded to its own longest text.

    encoded = encode(classifier, texts, pairs)            # no padding: batches pad themselves
    logits = encoded_logits(classifier, encoded)          # windows pooled back into their texts
    scores, truncated = classify(classifier, texts)       # both, and the problem type's scores

Predict, streaming predict, eval, serve, the export check and doctor all run this; torch is imported only for
a torch model, so an export dir runs on onnxruntime alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from bertctl.errors import BertctlError
from bertctl.inference.classifier import DEFAULT_BATCH_SIZE, Classifier
from bertctl.truncation import Encoded, check_stride, default_stride, encode_texts, encode_windows

if TYPE_CHECKING:
    import numpy as np

INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")  # what a BERT classifier's forward takes


def logits(classifier: Classifier, columns: dict[str, Sequence[Sequence[int]]], batch_size: int = DEFAULT_BATCH_SIZE) -> "np.ndarray":
    """Logits (float32, examples x classes) in input order for tokenized columns (`encode(...).columns`)."""
    return infer_logits(classifier.model, columns, batch_size=batch_size, device=classifier.device, pad_token_id=classifier.pad_token_id)


def encode(classifier: Classifier, texts: Sequence[str], pairs: Sequence[str] | None = None) -> Encoded:
    """Tokenize without padding (batches pad themselves): cut at the classifier's max_length by the run's
    truncation, or (run_as_windows) one row per overlapping window, `owners` saying whose."""
    if classifier.chunk_stride is not None:
        check_windows(classifier, pairs is not None)  # pairs never fall back to truncation silently
        return encode_windows(classifier.tokenizer, texts, max_length=classifier.max_length, stride=classifier.chunk_stride)
    return encode_texts(classifier.tokenizer, texts, pairs, max_length=classifier.max_length, truncation=classifier.truncation)


def run_as_windows(classifier: Classifier, stride: int | None = None) -> None:
    """--chunks: from now on a text longer than max_length runs as windows overlapping by `stride` tokens (default a
    quarter of max_length), their logits pooled into one row, instead of being truncated."""
    stride = default_stride(classifier.max_length) if stride is None else stride
    check_stride(stride, classifier.max_length)
    classifier.chunk_stride = stride


def encoded_logits(classifier: Classifier, encoded: Encoded, batch_size: int = DEFAULT_BATCH_SIZE) -> "np.ndarray":
    """Logits in input order, one row per text: windows (encode under run_as_windows) pooled back into their text."""
    window_logits = logits(classifier, encoded.columns, batch_size)
    if encoded.owners is None:
        return window_logits
    return classifier.problem.pool(window_logits, encoded.owners, len(encoded.n_tokens or []))


def _torch_forward(model, device: str):
    import torch

    @torch.inference_mode()
    def forward(batch: dict[str, "np.ndarray"]) -> "np.ndarray":
        return model(**{name: torch.from_numpy(rows).to(device) for name, rows in batch.items()}).logits.float().cpu().numpy()

    return forward


def infer_logits(model, columns: dict[str, Sequence[Sequence[int]]], *, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu", pad_token_id: int = 0) -> "np.ndarray":
    """Logits (float32, examples x classes) in input order, from a torch classifier or a runtime.OnnxModel.

    Examples run longest first in batches of `batch_size`, each padded only to its own longest example,
    so a few long texts don't make every batch pay for their length (and an out-of-memory shows at once).
    """
    import numpy as np

    if batch_size < 1:
        raise BertctlError(f"batch size must be at least 1, got {batch_size}", fix="pass --batch-size 64, for example")
    input_ids = columns["input_ids"]
    n = len(input_ids)
    num_labels = int(model.config.num_labels)
    if n == 0:
        return np.zeros((0, num_labels), dtype=np.float32)
    lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")
    names = [name for name in INPUT_NAMES if name in columns]
    forward = model.run if getattr(model, "backend", "torch") == "onnxruntime" else _torch_forward(model, device)
    out = np.empty((n, num_labels), dtype=np.float32)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        width = int(lengths[index[0]])
        batch: dict[str, np.ndarray] = {}
        for name in names:
            fill = pad_token_id if name == "input_ids" else 0
            rows = np.full((len(index), width), fill, dtype=np.int64)
            for row, i in enumerate(index):
                values = columns[name][i]
                rows[row, : len(values)] = values
            batch[name] = rows
        if "attention_mask" not in batch:
            batch["attention_mask"] = (np.arange(width)[None, :] < lengths[index][:, None]).astype(np.int64)
        out[index] = forward(batch)
    return out


def classify(classifier: Classifier, texts: Sequence[str], pairs: Sequence[str] | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE) -> tuple["np.ndarray", int]:
    """The model's outputs for texts, in input order (class or label probabilities, or values: its problem type's scores),
    plus how many texts were truncated."""
    encoded = encode(classifier, texts, pairs)
    return classifier.problem.scores(encoded_logits(classifier, encoded, batch_size)), encoded.truncated


def check_windows(classifier: Classifier, has_pairs: bool) -> None:
    if classifier.chunk_stride is not None and has_pairs:
        raise BertctlError(
            "--chunks runs one long text as overlapping windows; sentence pairs are cut longest-first from their ends instead",
            fix="drop --chunks (and --stride) for a sentence-pair model",
        )
