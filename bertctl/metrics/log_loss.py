"""Log loss as a local `evaluate` module: runs offline, numpy only (see bertctl/metrics/functional.py).

    import evaluate
    metric = evaluate.load("bertctl/metrics/log_loss.py")        # a local file: nothing is fetched from the hub
    metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 0])
"""

import datasets
import evaluate

from bertctl.metrics import functional


_DESCRIPTION = """Mean negative log-probability of the true class (cross-entropy); lower is better."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: class probabilities per example (rows sum to 1), e.g. a softmax of the logits.
    references: true class ids.
Returns:
    log_loss: a float >= 0.
"""


class LogLoss(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {"log_loss": functional.log_loss(references, predictions)}
