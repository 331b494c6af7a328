"""Expected calibration error as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/expected_calibration_error.py")        # a local file: nothing is fetched from the hub
"""

from bertctl.metrics import functional
# the base classes stay behind `base.`: evaluate.load takes the first Metric class in the module's namespace
from bertctl.metrics import base


class ExpectedCalibrationError(base.LocalMetric):
    _summary = "Top-label expected calibration error over equal-width confidence bins: how far the model's confidence is from its accuracy; lower is better."
    _arguments = (
        "\nArgs:\n" + base.PROBABILITIES + "    n_bins: number of equal-width bins over (0, 1] (default 15).\n"
        "Returns:\n    ece: a float in [0, 1].\n"
    )
    _probabilistic = True

    def _compute(self, predictions, references, n_bins=functional.ECE_BINS):
        return {"ece": functional.expected_calibration_error(references, predictions, n_bins)}
