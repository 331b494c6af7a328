"""Offline classification metrics as local `evaluate` modules, plus the one call `bertctl eval` makes.

`evaluate.load("accuracy")` downloads the metric's code from the hub. The modules in this folder are
`evaluate.Metric` subclasses that compute with numpy (bertctl/metrics/functional.py) and never touch the network:

    from bertctl import metrics
    metrics.load("f1").compute(predictions=[0, 1], references=[0, 0], average="macro")
    evaluate.load(str(metrics.module_path("f1")))       # the same module through evaluate's own loader

    scores = metrics.classification_metrics(references, probabilities, labels)   # everything eval reports

This package imports neither `evaluate` nor `datasets` until a module is loaded, so `functional` stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from bertctl.cache import cache_root
from bertctl.metrics import functional as F

if TYPE_CHECKING:
    import evaluate
    import numpy as np

# evaluate module file (stem) -> its Metric subclass
MODULES = {
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "matthews_correlation": "MatthewsCorrelation",
    "confusion_matrix": "ConfusionMatrix",
    "log_loss": "LogLoss",
    "expected_calibration_error": "ExpectedCalibrationError",
}


def module_path(name: str) -> Path:
    """The file of a local metric module, for `evaluate.load(str(path))`."""
    if name not in MODULES:
        raise KeyError(f"no local metric module {name!r}; known: {', '.join(MODULES)}")
    return Path(__file__).with_name(f"{name}.py")


def load(name: str) -> "evaluate.EvaluationModule":
    """Instantiate a local metric directly: no copy into the HF modules cache, results kept in memory."""
    if name not in MODULES:
        raise KeyError(f"no local metric module {name!r}; known: {', '.join(MODULES)}")
    module = importlib.import_module(f"bertctl.metrics.{name}")
    # keep_in_memory: no Arrow staging files; evaluate still makes a (then empty) data dir, so keep it in
    # bertctl's own cache rather than ~/.cache/huggingface
    return getattr(module, MODULES[name])(keep_in_memory=True, cache_dir=str(cache_root() / "metrics"))


@dataclass
class ClassificationMetrics:
    """What `bertctl eval` reports: overall scores named as in bertctl.recipe.METRICS, per-class rows, counts."""

    overall: dict[str, float]
    per_class: dict[str, dict[str, Any]]  # label -> precision, recall, f1, support (multi-label: also threshold, confusion)
    # single-label: rows true label, columns predicted label, in `labels` order; multi-label: per label
    # [[tn, fp], [fn, tp]]; regression: None
    confusion_matrix: list | None
    labels: list[str]
    problem_type: str  # bertctl.problems' name for it

    def to_dict(self) -> dict[str, Any]:
        return {"problem_type": self.problem_type, "metrics": self.overall, "per_class": self.per_class, "confusion_matrix": self.confusion_matrix, "labels": self.labels}


def multilabel_metrics(
    references: Any, probabilities: "np.ndarray", labels: list[str], thresholds: Sequence[float], *, order: Sequence[str], problem_type: str
) -> ClassificationMetrics:
    """Per-label probabilities decided at `thresholds` (bertctl.problems.MultiLabel owns their default)."""
    import numpy as np

    refs = np.asarray(references, dtype=np.float64).reshape(len(references), len(labels)) if len(references) else np.zeros((0, len(labels)))
    probs = np.asarray(probabilities, dtype=np.float64).reshape(refs.shape)
    cut = np.asarray(thresholds, dtype=np.float64)
    preds = (probs >= cut[None, :]).astype(np.float64)
    scores = F.multilabel_precision_recall_f1(refs, preds)
    tp, fp, fn, tn = F.multilabel_counts(refs, preds)
    overall: dict[str, float] = {f"{name}_{average}": float(scores[f"{name}_{average}"]) for name in ("f1", "precision", "recall") for average in ("macro", "micro", "weighted")}
    overall["subset_accuracy"] = float((preds == refs).all(axis=1).mean()) if refs.size else 0.0
    overall["hamming_loss"] = float((preds != refs).mean()) if refs.size else 0.0
    overall["roc_auc_macro"] = F.roc_auc_macro(refs, probs)
    overall["log_loss"] = F.binary_log_loss(refs, probs)
    per_class = {
        label: {
            "precision": float(scores["precision"][j]), "recall": float(scores["recall"][j]), "f1": float(scores["f1"][j]),
            "support": int(scores["support"][j]), "threshold": float(cut[j]),
        }
        for j, label in enumerate(labels)
    }
    confusion = [[[int(tn[j]), int(fp[j])], [int(fn[j]), int(tp[j])]] for j in range(len(labels))]
    overall = {name: overall[name] for name in order}
    return ClassificationMetrics(overall, per_class, confusion, list(labels), problem_type)


def regression_metrics(references: Any, predictions: "np.ndarray", labels: list[str], *, problem_type: str) -> ClassificationMetrics:
    return ClassificationMetrics(F.regression_scores(references, predictions), {}, None, list(labels), problem_type)


def classification_metrics(references: Sequence[int], probabilities: "np.ndarray", labels: list[str], *, order: Sequence[str], problem_type: str) -> ClassificationMetrics:
    """Every metric in bertctl.recipe.METRICS, each computed by its local evaluate module."""
    import numpy as np

    probs = np.asarray(probabilities, dtype=np.float64)
    refs = np.asarray(references, dtype=np.int64)
    preds = probs.argmax(axis=1)
    n = len(labels)
    ids = {"predictions": preds, "references": refs}
    overall: dict[str, float] = {"accuracy": load("accuracy").compute(**ids)["accuracy"]}
    per_class_scores: dict[str, list[float]] = {}
    for name in ("precision", "recall", "f1"):
        module = load(name)
        for average in ("macro", "micro", "weighted"):
            overall[f"{name}_{average}"] = module.compute(**ids, num_labels=n, average=average)[name]
        per_class_scores[name] = module.compute(**ids, num_labels=n, average=None)[name]
    overall["mcc"] = load("matthews_correlation").compute(**ids, num_labels=n)["matthews_correlation"]
    overall["log_loss"] = load("log_loss").compute(predictions=probs, references=refs)["log_loss"]
    overall["ece"] = load("expected_calibration_error").compute(predictions=probs, references=refs)["ece"]
    matrix = load("confusion_matrix").compute(**ids, num_labels=n)["confusion_matrix"]
    support = [int(sum(row)) for row in matrix]
    per_class = {
        label: {
            "precision": per_class_scores["precision"][i],
            "recall": per_class_scores["recall"][i],
            "f1": per_class_scores["f1"][i],
            "support": support[i],
        }
        for i, label in enumerate(labels)
    }
    overall = {name: float(overall[name]) for name in order}  # the problem type's order, which people read in
    return ClassificationMetrics(overall, per_class, [[int(c) for c in row] for row in matrix], list(labels), problem_type)
