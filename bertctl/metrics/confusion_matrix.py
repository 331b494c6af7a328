"""Confusion matrix as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/confusion_matrix.py")        # a local file: nothing is fetched from the hub
"""

from bertctl.metrics import functional
# the base classes stay behind `base.`: evaluate.load takes the first Metric class in the module's namespace
from bertctl.metrics import base


class ConfusionMatrix(base.LocalMetric):
    _summary = "Counts of (true class, predicted class) pairs; rows are true classes, columns predicted ones."
    _arguments = "\nArgs:\n" + base.CLASS_IDS + base.NUM_LABELS + "Returns:\n    confusion_matrix: a list of num_labels lists of counts.\n"

    def _compute(self, predictions, references, num_labels=None):
        return {"confusion_matrix": functional.confusion_matrix(references, predictions, num_labels).tolist()}
