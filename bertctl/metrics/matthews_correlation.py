"""Matthews correlation as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/matthews_correlation.py")        # a local file: nothing is fetched from the hub
"""

from bertctl.metrics import functional
# the base classes stay behind `base.`: evaluate.load takes the first Metric class in the module's namespace
from bertctl.metrics import base


class MatthewsCorrelation(base.LocalMetric):
    _summary = "Multiclass Matthews correlation coefficient (Gorodkin's R_K): 1 perfect, 0 no better than chance, -1 inverse."
    _arguments = "\nArgs:\n" + base.CLASS_IDS + base.NUM_LABELS + "Returns:\n    matthews_correlation: a float in [-1, 1].\n"

    def _compute(self, predictions, references, num_labels=None):
        return {"matthews_correlation": functional.matthews_corrcoef(references, predictions, num_labels)}
