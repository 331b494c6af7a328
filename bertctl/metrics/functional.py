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


# ---------------------------------------------------------------------------------------------
# multi-label (references and predictions: examples x labels, 0/1) and regression, as scikit-learn defines them


def _indicators(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-d (examples x labels), got shape {array.shape}")
    return array


def multilabel_counts(references, predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-label (tp, fp, fn, tn) of 0/1 indicator matrices."""
    refs, preds = _indicators(references, "references") > 0.5, _indicators(predictions, "predictions") > 0.5
    if refs.shape != preds.shape:
        raise ValueError(f"references {refs.shape} and predictions {preds.shape} differ in shape")
    tp = (refs & preds).sum(axis=0)
    fp = (~refs & preds).sum(axis=0)
    fn = (refs & ~preds).sum(axis=0)
    tn = (~refs & ~preds).sum(axis=0)
    return tp, fp, fn, tn


def multilabel_precision_recall_f1(references, predictions, zero_division: float = 0.0) -> dict[str, np.ndarray | float]:
    """Per-label precision/recall/F1 and their macro, micro and support-weighted averages (every label counts)."""
    tp, fp, fn, _ = (c.astype(np.float64) for c in multilabel_counts(references, predictions))
    support = tp + fn
    out: dict[str, np.ndarray | float] = {}
    per = {
        "precision": _divide(tp, tp + fp, zero_division),
        "recall": _divide(tp, tp + fn, zero_division),
        "f1": _divide(2 * tp, 2 * tp + fp + fn, zero_division),
    }
    micro = {
        "precision": float(_divide(tp.sum(keepdims=True), (tp + fp).sum(keepdims=True), zero_division)[0]),
        "recall": float(_divide(tp.sum(keepdims=True), (tp + fn).sum(keepdims=True), zero_division)[0]),
        "f1": float(_divide(2 * tp.sum(keepdims=True), (2 * tp + fp + fn).sum(keepdims=True), zero_division)[0]),
    }
    for name, values in per.items():
        out[name] = values
        out[f"{name}_macro"] = float(values.mean()) if values.size else 0.0
        out[f"{name}_micro"] = micro[name]
        out[f"{name}_weighted"] = float((values * support).sum() / support.sum()) if support.sum() else 0.0
    out["support"] = support
    return out


def rankdata(values) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata's 'average')."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], values.size] - 1
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = (first[group] + last[group]) / 2.0 + 1.0
    return ranks


def roc_auc(references, scores) -> float | None:
    """Area under the ROC curve of one label (the Mann-Whitney U statistic); None when only one class is present."""
    refs = np.asarray(references, dtype=np.float64) > 0.5
    positives, negatives = int(refs.sum()), int((~refs).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[refs].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def roc_auc_macro(references, scores) -> float:
    """Mean per-label ROC AUC over the labels that have both classes in `references` (0.0 if none has)."""
    refs, scores = _indicators(references, "references"), _indicators(scores, "scores")
    aucs = [auc for j in range(refs.shape[1]) if (auc := roc_auc(refs[:, j], scores[:, j])) is not None]
    return float(np.mean(aucs)) if aucs else 0.0


def binary_log_loss(references, probabilities) -> float:
    """Mean binary cross-entropy over every (example, label) cell, probabilities clipped like scikit-learn's."""
    refs, probs = _indicators(references, "references"), _indicators(probabilities, "probabilities")
    if refs.size == 0:
        return 0.0
    eps = np.finfo(np.float64).eps
    probs = np.clip(probs, eps, 1 - eps)
    return float(-np.mean(refs * np.log(probs) + (1 - refs) * np.log(1 - probs)))


def best_f1_thresholds(references, probabilities, default: float = 0.5) -> np.ndarray:
    """Per label, the decision threshold that maximises that label's F1 on (references, probabilities).

    Candidates are the label's own probabilities (predict positive when p >= t); the midpoint between the chosen
    probability and the next lower one is returned, so nearby unseen scores fall on the side they fell in
    validation. A label with no positive example keeps `default`.
    """
    refs, probs = _indicators(references, "references") > 0.5, _indicators(probabilities, "probabilities")
    out = np.full(refs.shape[1], default, dtype=np.float64)
    for j in range(refs.shape[1]):
        positives = int(refs[:, j].sum())
        if positives == 0:
            continue
        order = np.argsort(-probs[:, j], kind="mergesort")
        p, y = probs[order, j], refs[order, j]
        tp = np.cumsum(y)
        predicted = np.arange(1, p.size + 1)
        # a threshold can only sit between distinct scores: evaluate at the last index of each run of equal scores
        last_of_run = np.r_[p[1:] != p[:-1], True]
        f1 = np.where(last_of_run, 2 * tp / (predicted + positives), -1.0)
        k = int(np.argmax(f1))
        below = p[k + 1] if k + 1 < p.size else 0.0
        out[j] = float((p[k] + below) / 2.0)
    return out


def regression_scores(references, predictions) -> dict[str, float]:
    """pearson, spearman, mse, rmse, mae, r2 (scipy's / scikit-learn's definitions); correlations of a constant are 0."""
    y = np.asarray(references, dtype=np.float64).reshape(-1)
    p = np.asarray(predictions, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"references ({y.size}) and predictions ({p.size}) differ in length")
    if y.size == 0:
        return {name: 0.0 for name in ("pearson", "spearman", "mse", "rmse", "mae", "r2")}

    def correlation(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        denominator = np.sqrt((a * a).sum() * (b * b).sum())
        return float((a * b).sum() / denominator) if denominator > 0 else 0.0

    error = p - y
    mse = float(np.mean(error**2))
    total = float(((y - y.mean()) ** 2).sum())
    return {
        "pearson": correlation(y, p),
        "spearman": correlation(rankdata(y), rankdata(p)),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - float((error**2).sum()) / total if total > 0 else 0.0,
    }
