"""Expected calibration error as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/expected_calibration_error.py")        # a local file: nothing is fetched from the hub
    metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 0])
"""

import datasets
import evaluate

from bertctl.metrics import functional


_DESCRIPTION = """Top-label expected calibration error over equal-width confidence bins: how far the model's confidence is from its accuracy; lower is better."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: class probabilities per example (rows sum to 1), e.g. a softmax of the logits.
    references: true class ids.
    n_bins: number of equal-width bins over (0, 1] (default 15).
Returns:
    ece: a float in [0, 1].
"""


class ExpectedCalibrationError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, n_bins=functional.ECE_BINS):
        return {"ece": functional.expected_calibration_error(references, predictions, n_bins)}
