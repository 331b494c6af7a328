"""Log loss as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/log_loss.py")        # a local file: nothing is fetched from the hub
"""

from bertctl.metrics import functional
# the base classes stay behind `base.`: evaluate.load takes the first Metric class in the module's namespace
from bertctl.metrics import base


class LogLoss(base.LocalMetric):
    _summary = "Mean negative log-probability of the true class (cross-entropy); lower is better."
    _arguments = "\nArgs:\n" + base.PROBABILITIES + "Returns:\n    log_loss: a float >= 0.\n"
    _probabilistic = True

    def _compute(self, predictions, references):
        return {"log_loss": functional.log_loss(references, predictions)}
