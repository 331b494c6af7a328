"""Recall as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/recall.py")        # a local file: nothing is fetched from the hub
"""

# the base classes stay behind `base.`: evaluate.load takes the first Metric class in the module's namespace
from bertctl.metrics import base


class Recall(base.AveragedClassScore):
    _score = "recall"
    _summary = "Of the examples of a class, the share predicted as that class (per class or averaged)."
