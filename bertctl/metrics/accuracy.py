"""Accuracy as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/accuracy.py")        # a local file: nothing is fetched from the hub
"""

from bertctl.metrics import functional
# the base classes stay behind `base.`: evaluate.load takes the first Metric class in the module's namespace
from bertctl.metrics import base


class Accuracy(base.LocalMetric):
    _summary = "Share of examples whose predicted class equals the true class."
    _arguments = "\nArgs:\n" + base.CLASS_IDS + "Returns:\n    accuracy: a float in [0, 1].\n"

    def _compute(self, predictions, references):
        return {"accuracy": functional.accuracy(references, predictions)}
