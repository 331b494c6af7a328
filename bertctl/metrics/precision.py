"""Precision as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/precision.py")        # a local file: nothing is fetched from the hub
"""

# the base classes stay behind `base.`: evaluate.load takes the first Metric class in the module's namespace
from bertctl.metrics import base


class Precision(base.AveragedClassScore):
    _score = "precision"
    _summary = "Of the examples predicted as a class, the share that truly are that class (per class or averaged)."
