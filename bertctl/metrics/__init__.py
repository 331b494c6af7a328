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
    from bertctl.data import cache_root

    module = importlib.import_module(f"bertctl.metrics.{name}")
    # keep_in_memory: no Arrow staging files; evaluate still makes a (then empty) data dir, so keep it in
    # bertctl's own cache rather than ~/.cache/huggingface
    return getattr(module, MODULES[name])(keep_in_memory=True, cache_dir=str(cache_root() / "metrics"))


@dataclass
class ClassificationMetrics:
    """What `bertctl eval` reports: overall scores named as in bertctl.recipe.METRICS, per-class rows, counts."""

    overall: dict[str, float]
    per_class: dict[str, dict[str, float]]  # label -> precision, recall, f1, support
    confusion_matrix: list[list[int]]  # rows: true label, columns: predicted label, in `labels` order
    labels: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.overall, "per_class": self.per_class, "confusion_matrix": self.confusion_matrix, "labels": self.labels}


def classification_metrics(references: Sequence[int], probabilities: "np.ndarray", labels: list[str]) -> ClassificationMetrics:
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
    from bertctl.recipe import PROBLEM_METRICS

    overall = {name: float(overall[name]) for name in PROBLEM_METRICS["single_label_classification"]}  # the recipe's order, which people read in
    return ClassificationMetrics(overall, per_class, [[int(c) for c in row] for row in matrix], list(labels))
