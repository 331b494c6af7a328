"""Confusion matrix as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/confusion_matrix.py")        # a local file: nothing is fetched from the hub
    metric.compute(predictions=[0, 1, 2], references=[0, 2, 2], num_labels=3)
"""

import datasets
import evaluate

from bertctl.metrics import functional


_DESCRIPTION = """Counts of (true class, predicted class) pairs; rows are true classes, columns predicted ones."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids (0..num_labels-1).
    references: true class ids.
    num_labels: number of classes (default: 1 + the highest id seen).
Returns:
    confusion_matrix: a list of num_labels lists of counts.
"""


class ConfusionMatrix(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            format="numpy",
        )

    def _compute(self, predictions, references, num_labels=None):
        return {"confusion_matrix": functional.confusion_matrix(references, predictions, num_labels).tolist()}
