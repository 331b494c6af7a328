"""Accuracy as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/accuracy.py")        # a local file: nothing is fetched from the hub
    metric.compute(predictions=[0, 1, 2], references=[0, 2, 2])
"""

import datasets
import evaluate

from bertctl.metrics import functional


_DESCRIPTION = """Share of examples whose predicted class equals the true class."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids (0..num_labels-1).
    references: true class ids.
Returns:
    accuracy: a float in [0, 1].
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            format="numpy",
        )

    def _compute(self, predictions, references):
        return {"accuracy": functional.accuracy(references, predictions)}
