"""F1 as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/f1.py")        # a local file: nothing is fetched from the hub
"""

# the base classes stay behind `base.`: evaluate.load takes the first Metric class in the module's namespace
from bertctl.metrics import base


class F1(base.AveragedClassScore):
    _score = "f1"
    _summary = "Harmonic mean of precision and recall, 2 TP / (2 TP + FP + FN) per class (per class or averaged)."
