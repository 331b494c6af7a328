"""Classification metrics in plain numpy, with scikit-learn's definitions (and its zero-division rules).

The evaluate modules beside this file wrap these functions; keeping the math here lets every module share one
confusion matrix routine and lets tests compare each function with scikit-learn directly.

Conventions, as in scikit-learn:
- `references`/`predictions` are integer class ids 0..num_labels-1.
- Averaged precision/recall/F1 use the classes present in references or predictions unless `labels` is given,
  so a class that the data never mentions does not drag a macro average to 0.
- A ratio whose denominator is 0 (no predictions of a class, no examples of it) is `zero_division` (0.0 or 1.0).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

AVERAGES = ("macro", "micro", "weighted")
ECE_BINS = 15


def _ids(values, name: str, num_labels: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-d sequence of class ids, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise ValueError(f"{name} must hold integer class ids")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_labels):
        raise ValueError(f"{name} holds class ids outside 0..{num_labels - 1}")
    return array


def _infer_num_labels(*arrays, num_labels: int | None) -> int:
    if num_labels is not None:
        return int(num_labels)
    highest = max((int(np.max(a)) for a in arrays if np.size(a)), default=-1)
    return highest + 1


def confusion_matrix(references, predictions, num_labels: int | None = None) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns (scikit-learn's layout)."""
    n = _infer_num_labels(np.asarray(references), np.asarray(predictions), num_labels=num_labels)
    refs = _ids(references, "references", n)
    preds = _ids(predictions, "predictions", n)
    if refs.shape != preds.shape:
        raise ValueError(f"references ({refs.size}) and predictions ({preds.size}) differ in length")
    return np.bincount(refs * n + preds, minlength=n * n).reshape(n, n)


def accuracy(references, predictions) -> float:
    refs, preds = np.asarray(references), np.asarray(predictions)
    if refs.shape != preds.shape:
        raise ValueError(f"references ({refs.size}) and predictions ({preds.size}) differ in length")
    return float(np.mean(refs == preds)) if refs.size else 0.0


def _divide(numerator: np.ndarray, denominator: np.ndarray, zero_division: float) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, float(zero_division))
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _check_zero_division(zero_division: float) -> float:
    if zero_division not in (0, 1):
        raise ValueError(f"zero_division must be 0 or 1, got {zero_division!r}")
    return float(zero_division)


def _present_labels(cm: np.ndarray) -> np.ndarray:
    return np.flatnonzero((cm.sum(axis=0) + cm.sum(axis=1)) > 0)


def precision_recall_f1(
    references,
    predictions,
    num_labels: int | None = None,
    *,
    average: str | None = "macro",
    labels: Iterable[int] | None = None,
    zero_division: float = 0.0,
) -> dict[str, float | np.ndarray]:
    """Precision, recall, F1 and support, per class (`average=None`) or averaged (macro, micro, weighted)."""
    zero_division = _check_zero_division(zero_division)
    if average is not None and average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES} or None, got {average!r}")
    cm = confusion_matrix(references, predictions, num_labels)
    tp = np.diag(cm).astype(np.float64)
    pred_sum = cm.sum(axis=0).astype(np.float64)
    true_sum = cm.sum(axis=1).astype(np.float64)
    if labels is None:
        # per-class rows cover every class; averages only those the data mentions (scikit-learn's default)
        chosen = np.arange(cm.shape[0]) if average is None else _present_labels(cm)
    else:
        chosen = np.asarray(list(labels), dtype=np.int64)
        if chosen.size and (chosen.min() < 0 or chosen.max() >= cm.shape[0]):
            raise ValueError(f"labels hold class ids outside 0..{cm.shape[0] - 1}")
    tp, pred_sum, true_sum = tp[chosen], pred_sum[chosen], true_sum[chosen]
    if average == "micro":
        tp, pred_sum, true_sum = tp.sum(keepdims=True), pred_sum.sum(keepdims=True), true_sum.sum(keepdims=True)
    precision = _divide(tp, pred_sum, zero_division)
    recall = _divide(tp, true_sum, zero_division)
    f1 = _divide(2 * tp, pred_sum + true_sum, zero_division)
    if average is None:
        return {"precision": precision, "recall": recall, "f1": f1, "support": true_sum.astype(np.int64)}
    if average == "weighted":
        if true_sum.sum() == 0:
            return {"precision": zero_division, "recall": zero_division, "f1": zero_division}
        weights = true_sum
    else:
        weights = None
    if precision.size == 0:
        return {"precision": zero_division, "recall": zero_division, "f1": zero_division}
    return {
        "precision": float(np.average(precision, weights=weights)),
        "recall": float(np.average(recall, weights=weights)),
        "f1": float(np.average(f1, weights=weights)),
    }


def matthews_corrcoef(references, predictions, num_labels: int | None = None) -> float:
    """Multiclass MCC (Gorodkin's R_K), 0.0 when either side has a single class."""
    cm = confusion_matrix(references, predictions, num_labels).astype(np.float64)
    t_sum, p_sum = cm.sum(axis=1), cm.sum(axis=0)
    n_correct, n = np.trace(cm), cm.sum()
    cov_ytyp = n_correct * n - np.dot(t_sum, p_sum)
    cov_ypyp = n**2 - np.dot(p_sum, p_sum)
    cov_ytyt = n**2 - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def _probabilities(probabilities, references) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be 2-d (examples x classes), got shape {probs.shape}")
    refs = _ids(references, "references", probs.shape[1])
    if refs.shape[0] != probs.shape[0]:
        raise ValueError(f"references ({refs.size}) and probabilities ({probs.shape[0]}) differ in length")
    if probs.size and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("each row of probabilities must sum to 1 (apply a softmax to logits first)")
    return probs, refs


def log_loss(references, probabilities) -> float:
    """Mean negative log-likelihood of the true class; probabilities clipped to [eps, 1-eps] like scikit-learn."""
    probs, refs = _probabilities(probabilities, references)
    if refs.size == 0:
        return 0.0
    eps = np.finfo(probs.dtype).eps
    true_prob = np.clip(probs[np.arange(refs.size), refs], eps, 1 - eps)
    return float(-np.mean(np.log(true_prob)))


def expected_calibration_error(references, probabilities, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE: sum over equal-width confidence bins (lo, hi] of |accuracy - mean confidence| x bin share."""
    probs, refs = _probabilities(probabilities, references)
    if refs.size == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == refs).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins as in Guo et al. (2017); a confidence of exactly 0 cannot be a top label
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    gap = np.abs(np.bincount(bins, weights=correct, minlength=n_bins) - np.bincount(bins, weights=confidence, minlength=n_bins))
    # sum_b |B|/n * |acc_b - conf_b| == sum_b |sum(correct) - sum(conf)| / n
    return float(gap.sum() / refs.size) if counts.sum() else 0.0
