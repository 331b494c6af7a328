"""Recall as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/recall.py")        # a local file: nothing is fetched from the hub
    metric.compute(predictions=[0, 1, 2], references=[0, 2, 2], average="macro")
"""

import datasets
import evaluate

from bertctl.metrics import functional


_DESCRIPTION = """Of the examples of a class, the share predicted as that class (per class or averaged)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids (0..num_labels-1).
    references: true class ids.
    num_labels: number of classes (default: 1 + the highest id seen).
    average: "macro" (default), "micro", "weighted", or None for one value per class.
    labels: class ids to average over (default: those in references or predictions, like scikit-learn).
    zero_division: value of a ratio whose denominator is 0 (0.0 or 1.0; default 0.0).
Returns:
    recall: a float, or a list of floats per class when average is None.
"""


class Recall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            format="numpy",
        )

    def _compute(self, predictions, references, num_labels=None, average="macro", labels=None, zero_division=0.0):
        scores = functional.precision_recall_f1(
            references, predictions, num_labels, average=average, labels=labels, zero_division=zero_division
        )
        value = scores["recall"]
        return {"recall": value.tolist() if average is None else float(value)}
