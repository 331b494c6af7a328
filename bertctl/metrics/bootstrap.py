"""95% confidence intervals by the bootstrap, every resample at once in numpy.

    resamples = Resamples.draw(n_texts, 1000, seed=0)        # the (1000, n) index array, drawn once
    values = classification_resampled(refs, probs, resamples)  # metric -> (1000,) array, one value per resample
    lo, hi = interval(values["accuracy"])

A paired comparison scores both models on the *same* Resamples, so the interval of (new - baseline) keeps the
correlation between them (two models that err on the same hard texts differ far less than two independent
accuracies would suggest). Sums over a resample are `counts @ values` (counts: how often each text was drawn);
confusion matrices are one bincount; ranks (Spearman, ROC AUC) are ranks of tie groups weighted by the counts,
so no resample is ever materialised as a copy of the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CONFIDENCE = 0.95


@dataclass
class Resamples:
    indices: np.ndarray  # (B, n) ints: row b is the b-th resample's draw of text positions
    _counts: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def draw(cls, n: int, resamples: int, seed: int = 0) -> "Resamples":
        rng = np.random.default_rng(seed)
        return cls(rng.integers(0, n, size=(resamples, n), dtype=np.int64))

    @classmethod
    def identity(cls, n: int) -> "Resamples":
        """One 'resample' that is the data itself: the point estimate through the same code."""
        return cls(np.arange(n, dtype=np.int64)[None, :])

    @property
    def n(self) -> int:
        return self.indices.shape[1]

    @property
    def size(self) -> int:
        return self.indices.shape[0]

    @property
    def counts(self) -> np.ndarray:
        """(B, n) float: how many times each text is in each resample."""
        if self._counts is None:
            b, n = self.indices.shape
            self._counts = np.empty((b, n))
            # row by row: each bincount stays in cache, ~10x faster than one bincount over (B x n) offset codes
            for row, drawn in enumerate(self.indices):
                self._counts[row] = np.bincount(drawn, minlength=n)
        return self._counts

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per resample, the sum of `values` (n,) or (n, k) over the texts drawn: (B,) or (B, k)."""
        return self.counts @ np.asarray(values, dtype=np.float64)

    def bincounts(self, codes: np.ndarray, size: int) -> np.ndarray:
        """(B, size): per resample, how often each code 0..size-1 is drawn (a confusion matrix, flattened)."""
        codes = np.asarray(codes, dtype=np.int64)
        out = np.empty((self.size, size), dtype=np.int64)
        for row, drawn in enumerate(self.indices):
            out[row] = np.bincount(codes[drawn], minlength=size)
        return out


def interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile interval of a metric's resampled values (undefined resamples, NaN, left out)."""
    tail = (1.0 - confidence) / 2.0 * 100.0
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    lo, hi = np.nanpercentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _averages(name: str, per: np.ndarray, support: np.ndarray, present: np.ndarray, micro: np.ndarray) -> dict[str, np.ndarray]:
    """macro over `present` classes, micro as given, weighted by support; per: (B, K)."""
    kept = present.sum(axis=1)
    return {
        f"{name}_macro": _divide((per * present).sum(axis=1), kept),
        f"{name}_micro": micro,
        f"{name}_weighted": _divide((per * support).sum(axis=1), support.sum(axis=1)),
    }


def classification_resampled(references: np.ndarray, probabilities: np.ndarray, resamples: Resamples, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Single-label: every metric of bertctl.metrics.classification_metrics on every resample, from one confusion
    matrix per resample (B, K, K) plus resampled sums for log loss and ECE."""
    refs = np.asarray(references, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    k = probs.shape[1]
    preds = probs.argmax(axis=1)
    n = resamples.n
    cm = resamples.bincounts(refs * k + preds, k * k).reshape(-1, k, k).astype(np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    true_sum, pred_sum = cm.sum(axis=2), cm.sum(axis=1)
    present = (true_sum + pred_sum) > 0  # scikit-learn averages over the classes the data mentions
    out = {"accuracy": tp.sum(axis=1) / n}
    micro = _divide(tp.sum(axis=1), pred_sum.sum(axis=1))
    out.update(_averages("precision", _divide(tp, pred_sum), true_sum, present, micro))
    out.update(_averages("recall", _divide(tp, true_sum), true_sum, present, micro))
    out.update(_averages("f1", _divide(2 * tp, pred_sum + true_sum), true_sum, present, micro))
    s = float(n)
    cov_tp = tp.sum(axis=1) * s - (true_sum * pred_sum).sum(axis=1)
    cov_pp = s * s - (pred_sum * pred_sum).sum(axis=1)
    cov_tt = s * s - (true_sum * true_sum).sum(axis=1)
    out["mcc"] = _divide(cov_tp, np.sqrt(cov_tt * cov_pp))
    eps = np.finfo(np.float64).eps
    true_prob = np.clip(probs[np.arange(refs.size), refs], eps, 1 - eps)
    out["log_loss"] = resamples.sums(-np.log(true_prob)) / n
    confidence = probs.max(axis=1)
    correct = (preds == refs).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    onehot = np.zeros((refs.size, n_bins))
    onehot[np.arange(refs.size), bins] = 1.0
    gap = resamples.sums(onehot * correct[:, None]) - resamples.sums(onehot * confidence[:, None])
    out["ece"] = np.abs(gap).sum(axis=1) / n
    return out


def _sorted_groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort `values` once into tie groups: (order, start of each group, each sorted position's group); a
    resample's weight per group is then np.add.reduceat(counts[:, order], starts, axis=1)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    new_group = np.r_[True, ordered[1:] != ordered[:-1]]
    return order, np.flatnonzero(new_group), np.cumsum(new_group) - 1


BLOCK = 32  # resamples at a time in the rank code: (32 x n) blocks stay in cache where (B x n) passes do not


def _blocks(b: int):
    for first in range(0, b, BLOCK):
        yield slice(first, min(first + BLOCK, b))


def _group_weights(ordered: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per resample, the weight of each tie group from counts in sorted order (no ties: the counts themselves)."""
    return ordered if starts.size == ordered.shape[1] else np.add.reduceat(ordered, starts, axis=1)


def _ranks_of(order: np.ndarray, starts: np.ndarray, of_text: np.ndarray, counts: np.ndarray) -> np.ndarray:
    weight = _group_weights(counts[:, order], starts)
    rank_of_group = np.cumsum(weight, axis=1) - weight + (weight + 1.0) / 2.0
    return rank_of_group[:, of_text]


def _tie_groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order, starts, group = _sorted_groups(np.asarray(values, dtype=np.float64))
    of_text = np.empty_like(group)
    of_text[order] = group  # each text's tie group
    return order, starts, of_text


def weighted_ranks(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B, n): each text's average rank inside each resample (ties share their mean rank, as scipy's rankdata)."""
    order, starts, of_text = _tie_groups(values)
    ranks = np.empty_like(counts)
    for rows in _blocks(counts.shape[0]):
        ranks[rows] = _ranks_of(order, starts, of_text, counts[rows])
    return ranks


def weighted_auc(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B,) ROC AUC of one label on each resample (Mann-Whitney, ties count half); NaN where a class is absent."""
    positive = np.asarray(labels) > 0.5
    order, starts, _ = _sorted_groups(np.asarray(scores, dtype=np.float64))
    is_positive = positive[order]
    wins = np.empty(counts.shape[0])
    pairs = np.empty(counts.shape[0])
    for rows in _blocks(counts.shape[0]):
        ordered = counts[rows][:, order]
        pos = _group_weights(ordered * is_positive, starts)
        neg = _group_weights(ordered, starts) - pos
        below = np.cumsum(neg, axis=1) - neg
        wins[rows] = np.einsum("ij,ij->i", pos, below + 0.5 * neg)
        pairs[rows] = pos.sum(axis=1) * neg.sum(axis=1)
    return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1.0), np.nan)


def multilabel_resampled(references: np.ndarray, probabilities: np.ndarray, thresholds, resamples: Resamples, names=None) -> dict[str, np.ndarray]:
    """Multi-label: bertctl.metrics.multilabel_metrics's metrics on every resample, from resampled per-label counts
    (roc_auc_macro, a rank statistic per label and the one slow metric, only when `names` is None or has it)."""
    refs = np.asarray(references, dtype=np.float64) > 0.5
    probs = np.asarray(probabilities, dtype=np.float64).reshape(refs.shape)
    preds = probs >= np.asarray(thresholds, dtype=np.float64)[None, :]
    n = resamples.n
    tp = resamples.sums(refs & preds)
    fp = resamples.sums(~refs & preds)
    fn = resamples.sums(refs & ~preds)
    support = tp + fn
    every = np.ones_like(tp, dtype=bool)  # multi-label macro averages count every label
    out: dict[str, np.ndarray] = {}
    sums = {"tp": tp.sum(axis=1), "fp": fp.sum(axis=1), "fn": fn.sum(axis=1)}
    out.update(_averages("precision", _divide(tp, tp + fp), support, every, _divide(sums["tp"], sums["tp"] + sums["fp"])))
    out.update(_averages("recall", _divide(tp, tp + fn), support, every, _divide(sums["tp"], sums["tp"] + sums["fn"])))
    out.update(_averages("f1", _divide(2 * tp, 2 * tp + fp + fn), support, every, _divide(2 * sums["tp"], 2 * sums["tp"] + sums["fp"] + sums["fn"])))
    out["subset_accuracy"] = resamples.sums((preds == refs).all(axis=1)) / n
    out["hamming_loss"] = resamples.sums((preds != refs).mean(axis=1)) / n
    if names is None or "roc_auc_macro" in names:
        counts = resamples.counts
        aucs = np.stack([weighted_auc(refs[:, j], probs[:, j], counts) for j in range(refs.shape[1])], axis=1)
        defined = np.isfinite(aucs)
        out["roc_auc_macro"] = _divide(np.where(defined, aucs, 0.0).sum(axis=1), defined.sum(axis=1))
    eps = np.finfo(np.float64).eps
    clipped = np.clip(probs, eps, 1 - eps)
    out["log_loss"] = resamples.sums(-(refs * np.log(clipped) + (~refs) * np.log(1 - clipped)).mean(axis=1)) / n
    return out


def regression_resampled(references: np.ndarray, predictions: np.ndarray, resamples: Resamples) -> dict[str, np.ndarray]:
    """Regression: pearson, spearman, mse, rmse, mae, r2 on every resample, from resampled sums (and ranks)."""
    y = np.asarray(references, dtype=np.float64).reshape(-1)
    p = np.asarray(predictions, dtype=np.float64).reshape(-1)
    n = float(resamples.n)
    # centre first: the sums of squares then lose no digits to a large mean
    yc, pc = y - y.mean(), p - p.mean()
    error = p - y
    s = resamples.sums(np.stack([yc, pc, yc * yc, pc * pc, yc * pc, error * error, np.abs(error)], axis=1))
    sy, sp, syy, spp, syp, see, sae = s.T

    def pearson(sa, sb, saa, sbb, sab):
        var_a, var_b = n * saa - sa * sa, n * sbb - sb * sb
        denominator = np.sqrt(np.clip(var_a, 0, None) * np.clip(var_b, 0, None))
        return _divide(n * sab - sa * sb, denominator)

    counts = resamples.counts
    by_y, by_p = _tie_groups(y), _tie_groups(p)
    rank_sums = np.empty((5, counts.shape[0]))
    for rows in _blocks(counts.shape[0]):
        w = counts[rows]
        ry, rp = _ranks_of(*by_y, w), _ranks_of(*by_p, w)
        wy, wp = w * ry, w * rp
        # sum w*ry, w*rp, w*ry^2, w*rp^2, w*ry*rp
        rank_sums[:, rows] = [wy.sum(axis=1), wp.sum(axis=1), np.einsum("ij,ij->i", wy, ry), np.einsum("ij,ij->i", wp, rp), np.einsum("ij,ij->i", wy, rp)]
    mse = see / n
    total = syy - sy * sy / n
    return {
        "pearson": pearson(sy, sp, syy, spp, syp),
        "spearman": pearson(*rank_sums),
        "mse": mse,
        "rmse": np.sqrt(mse),
        "mae": sae / n,
        "r2": np.where(total > 1e-12 * max(1.0, float(syy.max(initial=0.0))), 1.0 - see / np.where(total > 0, total, 1.0), 0.0),
    }
