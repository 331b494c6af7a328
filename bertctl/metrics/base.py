"""What every local metric module shares: evaluate's plumbing around one numpy function.

A module file holds one small `LocalMetric` subclass, so `evaluate.load("bertctl/metrics/f1.py")` still finds a
self-contained module, while the `MetricInfo` boilerplate lives here once.
"""

import sys

import datasets

if "transformers" in sys.modules:
    import evaluate
else:
    # evaluate's Evaluator classes (unused here) try to import transformers.pipelines, which imports torch: ~5 s
    # and no torch-free `bertctl eval` of an ONNX export. A None entry makes that import fail for this once.
    sys.modules["transformers"] = None
    try:
        import evaluate
    finally:
        del sys.modules["transformers"]

from bertctl.metrics import functional

CLASS_IDS = """    predictions: predicted class ids (0..num_labels-1).
    references: true class ids.
"""
PROBABILITIES = """    predictions: class probabilities per example (rows sum to 1), e.g. a softmax of the logits.
    references: true class ids.
"""
NUM_LABELS = "    num_labels: number of classes (default: 1 + the highest id seen).\n"


class LocalMetric(evaluate.Metric):
    """Subclasses set `_summary`, `_arguments` (the Args/Returns text) and `_probabilistic`."""

    _summary = ""
    _arguments = ""
    _probabilistic = False  # predictions are probability rows, not class ids

    def _info(self):
        predictions = datasets.Sequence(datasets.Value("float64")) if self._probabilistic else datasets.Value("int64")
        return evaluate.MetricInfo(
            description=self._summary,
            citation="",
            inputs_description=self._arguments,
            features=datasets.Features({"predictions": predictions, "references": datasets.Value("int64")}),
            **({} if self._probabilistic else {"format": "numpy"}),
        )


class AveragedClassScore(LocalMetric):
    """Precision, recall or F1: per class, or macro/micro/weighted averaged like scikit-learn."""

    _score = ""  # "precision" | "recall" | "f1"

    @classmethod
    def arguments(cls) -> str:
        return (
            "\nArgs:\n" + CLASS_IDS + NUM_LABELS
            + '    average: "macro" (default), "micro", "weighted", or None for one value per class.\n'
            + "    labels: class ids to average over (default: those in references or predictions, like scikit-learn).\n"
            + "    zero_division: value of a ratio whose denominator is 0 (0.0 or 1.0; default 0.0).\n"
            + f"Returns:\n    {cls._score}: a float, or a list of floats per class when average is None.\n"
        )

    def _info(self):
        self._arguments = self.arguments()
        return super()._info()

    def _compute(self, predictions, references, num_labels=None, average="macro", labels=None, zero_division=0.0):
        scores = functional.precision_recall_f1(
            references, predictions, num_labels, average=average, labels=labels, zero_division=zero_division
        )
        value = scores[self._score]
        return {self._score: value.tolist() if average is None else float(value)}
