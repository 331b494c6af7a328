"""Matthews correlation as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/matthews_correlation.py")        # a local file: nothing is fetched from the hub
    metric.compute(predictions=[0, 1, 2], references=[0, 2, 2])
"""

import datasets
import evaluate

from bertctl.metrics import functional


_DESCRIPTION = """Multiclass Matthews correlation coefficient (Gorodkin's R_K): 1 perfect, 0 no better than chance, -1 inverse."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids (0..num_labels-1).
    references: true class ids.
    num_labels: number of classes (default: 1 + the highest id seen).
Returns:
    matthews_correlation: a float in [-1, 1].
"""


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            format="numpy",
        )

    def _compute(self, predictions, references, num_labels=None):
        return {"matthews_correlation": functional.matthews_corrcoef(references, predictions, num_labels)}
