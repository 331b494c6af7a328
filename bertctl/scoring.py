"""Classification scores from gold ids and predicted probabilities, in numpy (offline, no hub scripts).

Every name in `bertctl.recipe.METRICS` is computed, so any of them can select the best checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are gold classes, columns predictions."""
    return np.bincount(gold * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # zero-division gives 0, as scikit-learn's default `zero_division="warn"` reports
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b != 0)


def classification_scores(gold: np.ndarray, probs: np.ndarray, n_classes: int, bins: int = 15) -> dict[str, Any]:
    gold = np.asarray(gold, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    cm = confusion(gold, pred, n_classes)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    # macro averages run over classes present in gold or predictions (scikit-learn's label set)
    seen = (support + predicted) > 0
    weights = support / max(1.0, support.sum())
    micro = float(tp.sum() / max(1.0, cm.sum()))
    scores: dict[str, Any] = {"accuracy": micro}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        scores[f"{name}_macro"] = float(values[seen].mean()) if seen.any() else 0.0
        scores[f"{name}_micro"] = micro
        scores[f"{name}_weighted"] = float((values * weights).sum())
    scores["mcc"] = _mcc(cm)
    clipped = np.clip(probs[np.arange(len(gold)), gold], 1e-15, 1.0)
    scores["log_loss"] = float(-np.log(clipped).mean()) if len(gold) else 0.0
    scores["ece"] = expected_calibration_error(gold, probs, bins)
    return scores


def _mcc(cm: np.ndarray) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K)."""
    t = cm.sum(axis=1).astype(float)
    p = cm.sum(axis=0).astype(float)
    c = float(np.trace(cm))
    s = float(cm.sum())
    denom = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denom) if denom else 0.0


def expected_calibration_error(gold: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by size."""
    if len(gold) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)
