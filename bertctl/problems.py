"""What a problem type decides, in one place: one class each for single-label, multi-label and regression.

    problem = problem_type("multi_label_classification")   # or problem_of(model.config), recipe.problem
    scores = problem.scores(logits)                        # softmax, sigmoid, or the value itself
    fields = problem.decide(labels, scores[0], thresholds=problem.thresholds(config, labels))
    problem.metrics, problem.metric_for_best, problem.loss(weights)

Everything else asks the object, so a fourth problem type is one new class here. The HF `problem_type` strings
are written in this module alone. Nothing here imports torch or transformers at the top: the torch-free path
(an ONNX export) uses the same objects, and only `loss` and `class_weights` import torch, when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from bertctl.errors import BertctlError, Problem
from bertctl.metrics import bootstrap, functional
from bertctl.metrics import ClassificationMetrics, classification_metrics, multilabel_metrics, regression_metrics

if TYPE_CHECKING:
    import numpy as np

DEFAULT_THRESHOLD = 0.5  # a multi-label decision threshold where training had no validation data to tune one on
REGRESSION_TOLERANCE = 1e-3  # an export's value agrees with torch's within this (STS-B scores step by 0.2)
_AVERAGED = [f"{m}_{a}" for m in ("f1", "precision", "recall") for a in ("macro", "micro", "weighted")]


class ProblemType:
    """A head's problem type: how its logits become scores and decisions, how it is trained and scored."""

    name: ClassVar[str]  # transformers' config.problem_type
    title: ClassVar[str]  # how people say it
    metrics: ClassVar[tuple[str, ...]]  # every metric it has, in the order reports list them
    default_metrics: ClassVar[tuple[str, ...]]  # what eval reports when the recipe names none
    metric_for_best: ClassVar[str]
    tie_break: ClassVar[str]  # the validation loss that breaks ties between equal best-metric values
    fields: ClassVar[tuple[str, ...]]  # a prediction's fields in `predict --json` and serve, beside text and error
    shown_fields: ClassVar[tuple[str, ...]]  # the columns `predict --output x.csv` adds, before error
    pool_name: ClassVar[str] = "mean"
    pipeline_args: ClassVar[str] = ""  # what transformers.pipeline needs to give bertctl's answer
    card_note: ClassVar[str] = ""
    ranks: ClassVar[bool] = False  # top_k > 1 means something
    has_classes: ClassVar[bool] = True
    agrees_on: ClassVar[str] = "same labels"  # what an export's check compares with torch's answers

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProblemType) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    # -- from logits ------------------------------------------------------------------------------

    def scores(self, logits: "np.ndarray") -> "np.ndarray":
        """What people read off the logits: probabilities per class or label, or the predicted value."""
        raise NotImplementedError

    def pool(self, logits: "np.ndarray", owners: Sequence[int], n_texts: int) -> "np.ndarray":
        """One row of logits per text from its --chunks windows' rows: their mean."""
        import numpy as np

        owners = np.asarray(owners, dtype=np.int64)
        logits = np.asarray(logits, dtype=np.float64)
        pooled = np.zeros((n_texts, logits.shape[1]))
        np.add.at(pooled, owners, logits)
        pooled /= np.maximum(np.bincount(owners, minlength=n_texts), 1)[:, None]
        return pooled.astype(np.float32)

    def thresholds(self, config: Any, labels: Sequence[str]) -> list[float] | None:
        """The per-label decision thresholds a saved model carries; None where decisions need none."""
        return None

    def decide(self, labels: Sequence[str], scores: "np.ndarray", *, thresholds: Sequence[float] | None = None, top_k: int = 1) -> dict[str, Any]:
        """One text's prediction fields (`fields`) from its row of scores."""
        raise NotImplementedError

    def agreement(self, expected: "np.ndarray", got: "np.ndarray", thresholds: Sequence[float] | None = None) -> float:
        """The share of texts two models' logits (torch's and an ONNX export's) answer alike."""
        import numpy as np

        return float(np.mean(expected.argmax(1) == got.argmax(1))) if len(expected) else 1.0

    def shown(self, fields: dict[str, Any]) -> tuple[str, ...]:
        """A prediction as the text of the `shown_fields` columns: a table's cells, a csv's columns."""
        raise NotImplementedError

    def check_top_k(self, top_k: int, labels: Sequence[str], location: str, name: str = "--top-k") -> None:
        """`name`: how the caller spells the field (predict's flag, serve's JSON key)."""
        if top_k != 1 and not self.ranks:
            raise BertctlError(f"{name} ranks classes, but {location} is a {self.title} model: it predicts {self.predicts}", fix=f"drop {name}")
        if not 1 <= top_k <= len(labels):
            raise BertctlError(f"{name} {top_k} is out of range: the model has {len(labels)} labels ({', '.join(labels)})", fix=f"use {name} between 1 and {len(labels)}")

    predicts: ClassVar[str] = ""

    # -- training ---------------------------------------------------------------------------------

    def loss(self, weights: Any = None, target: tuple[float, float] | None = None):
        """The training criterion(logits, labels), with class weights where the type has classes."""
        raise NotImplementedError

    def distill_loss(self, logits: Any, teacher: Any, temperature: float, target: tuple[float, float] | None = None):
        """The teacher's term of a distillation loss (a tensor): the student's training-scale `logits` against the
        teacher's outputs as its saved model gives them (`teacher`, examples x outputs)."""
        raise NotImplementedError

    def class_weights(self, targets: Sequence[Any], labels: Sequence[str]) -> "np.ndarray":
        """train.class_weights = 'balanced': inverse frequency, n / (classes x count), as scikit-learn's."""
        import numpy as np

        counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(labels)).astype(np.float64)
        return len(targets) / (len(labels) * np.maximum(counts, 1.0))

    def tune_thresholds(self, references: Any, scores: "np.ndarray") -> list[float] | None:
        """Decision thresholds tuned on validation, saved with the model; None where there is nothing to tune."""
        return None

    def fit_temperature(self, logits: "np.ndarray", references: Any) -> "np.ndarray | None":
        """Temperature scaling (Guo et al. 2017): the T > 0 minimising validation NLL of logits / T; None where
        the output is not a probability."""
        return None

    def nothing_to_learn(self, targets: list, labels: Sequence[str], source: str) -> Problem | None:
        present = set(targets)
        if len(present) < 2:
            only = labels[next(iter(present))] if present else "(none)"
            return Problem("data.train", f"has a single class ({only!r}) in {source}: nothing to learn", "train on data with at least two classes")
        return None

    # -- scoring and describing -------------------------------------------------------------------

    def score(self, references: Any, scores: "np.ndarray", labels: Sequence[str], thresholds: Sequence[float] | None = None) -> ClassificationMetrics:
        """Every metric of this type, named as in `metrics`, with per-class rows where there are classes."""
        raise NotImplementedError

    # the per-text right/wrong metric a paired test (McNemar) compares; None where a text is not right or wrong
    paired_metric: ClassVar[str | None] = None

    def resampled(
        self, references: Any, scores: "np.ndarray", resamples: "bootstrap.Resamples", thresholds: Sequence[float] | None = None, names: Sequence[str] | None = None
    ) -> dict[str, "np.ndarray"]:
        """The metrics of `score` (at least `names`; None: all) on every bootstrap resample: metric -> (B,) array
        (bertctl.metrics.bootstrap)."""
        raise NotImplementedError

    def correct(self, references: Any, scores: "np.ndarray", thresholds: Sequence[float] | None = None) -> "np.ndarray | None":
        """Per text, whether the model got it right by `paired_metric`'s rule; None where that means nothing."""
        return None

    def describe(self, labels: Sequence[str]) -> str:
        """The labels as a summary line says them."""
        return f"labels: {', '.join(labels)}"

    def count(self, labels: Sequence[str]) -> str:
        return f"{len(labels)} labels"


class SingleLabel(ProblemType):
    name = "single_label_classification"
    title = "single-label classification"
    metrics = ("accuracy", *_AVERAGED, "mcc", "log_loss", "ece")
    default_metrics = ("accuracy", "f1_macro")
    metric_for_best = "accuracy"
    tie_break = "log_loss"
    fields = ("label", "score", "top_k", "scores")
    shown_fields = ("label", "score")
    ranks = True

    def scores(self, logits):
        import numpy as np

        shifted = np.asarray(logits, dtype=np.float64)
        shifted = shifted - shifted.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    def decide(self, labels, scores, *, thresholds=None, top_k=1):
        import numpy as np

        # a tie keeps class-id order
        ranked = [(labels[j], float(scores[j])) for j in np.argsort(-scores, kind="stable")[:top_k]]
        return {
            "label": ranked[0][0], "score": ranked[0][1], "top_k": [{"label": label, "score": score} for label, score in ranked],
            "scores": {label: float(p) for label, p in zip(labels, scores)},
        }

    def shown(self, fields):
        return fields["label"], f"{fields['score']:.6f}"

    def fit_temperature(self, logits, references):
        import numpy as np

        rows, gold = np.arange(len(references)), np.asarray(references, dtype=np.int64)
        return np.array([_minimise(lambda t: -np.log(self.scores(logits / t)[rows, gold] + 1e-12).mean())])

    def loss(self, weights=None, target=None):
        import torch

        return torch.nn.CrossEntropyLoss(weight=weights)

    def distill_loss(self, logits, teacher, temperature, target=None):
        """KL(teacher || student), both softmaxes at temperature T, times T^2 so its gradients keep their scale as T
        changes (Hinton et al. 2015); DistilBERT's soft-target loss."""
        import torch.nn.functional as F

        t = temperature
        return F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(teacher / t, dim=-1), reduction="batchmean", log_target=True) * t * t

    def score(self, references, scores, labels, thresholds=None):
        return classification_metrics(references, scores, labels, order=self.metrics, problem_type=self.name)

    paired_metric = "accuracy"

    def resampled(self, references, scores, resamples, thresholds=None, names=None):
        return bootstrap.classification_resampled(references, scores, resamples)

    def correct(self, references, scores, thresholds=None):
        import numpy as np

        return np.asarray(scores).argmax(axis=1) == np.asarray(references, dtype=np.int64)


class MultiLabel(ProblemType):
    name = "multi_label_classification"
    title = "multi-label classification"
    metrics = (*_AVERAGED, "subset_accuracy", "hamming_loss", "roc_auc_macro", "log_loss")
    default_metrics = ("f1_macro", "f1_micro", "subset_accuracy")
    metric_for_best = "f1_macro"
    tie_break = "log_loss"
    fields = ("labels", "scores")
    shown_fields = ("labels", "scores")
    pool_name = "max"
    predicts = "every label at or above its threshold, with every label's score"
    pipeline_args = ', function_to_apply="sigmoid", top_k=None'
    card_note = (
        "\nMulti-label: a label applies when its sigmoid probability reaches its threshold, tuned on validation to maximise"
        " that label's F1 and saved as `label_thresholds` in `config.json`.\n"
    )

    def scores(self, logits):
        import numpy as np

        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))

    def pool(self, logits, owners, n_texts):
        """The max over windows: a label found in any window is found in the text."""
        import numpy as np

        pooled = np.full((n_texts, np.shape(logits)[1]), -np.inf)
        np.maximum.at(pooled, np.asarray(owners, dtype=np.int64), np.asarray(logits, dtype=np.float64))
        return pooled.astype(np.float32)

    def thresholds(self, config, labels):
        saved = getattr(config, "label_thresholds", None)
        saved = saved if isinstance(saved, dict) else {}
        return [float(saved.get(label, DEFAULT_THRESHOLD)) for label in labels]

    def decide(self, labels, scores, *, thresholds=None, top_k=1):
        import numpy as np

        cut = thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * len(labels)
        order = np.argsort(-scores, kind="stable")  # most likely first
        return {"labels": [labels[j] for j in order if scores[j] >= cut[j]], "scores": {label: float(p) for label, p in zip(labels, scores)}}

    def agreement(self, expected, got, thresholds=None):
        import numpy as np

        cut = np.asarray(thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * expected.shape[1])
        return float(np.mean(((self.scores(expected) >= cut) == (self.scores(got) >= cut)).all(axis=1))) if len(expected) else 1.0

    def shown(self, fields):
        return ",".join(fields["labels"]), ",".join(f"{fields['scores'][label]:.6f}" for label in fields["labels"])

    def fit_temperature(self, logits, references):
        """One temperature per label: each label's sigmoid is its own binary classifier."""
        import numpy as np

        gold = np.asarray(references, dtype=np.float64)

        def nll(j: int, t: float) -> float:
            p = np.clip(self.scores(logits[:, j] / t), 1e-12, 1 - 1e-12)
            return float(-(gold[:, j] * np.log(p) + (1 - gold[:, j]) * np.log(1 - p)).mean())

        return np.array([_minimise(lambda t, j=j: nll(j, t)) for j in range(logits.shape[1])])

    def loss(self, weights=None, target=None):
        import torch

        return torch.nn.BCEWithLogitsLoss(pos_weight=weights)

    def distill_loss(self, logits, teacher, temperature, target=None):
        """BCE against the teacher's sigmoids: each label is its own two-class problem with a soft target."""
        import torch
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(logits, torch.sigmoid(teacher))

    def class_weights(self, targets, labels):
        """BCE's per-label pos_weight: negatives / positives (PyTorch's pos_weight)."""
        import numpy as np

        matrix = np.asarray(targets, dtype=np.float64)
        positives = matrix.sum(axis=0)
        return (len(matrix) - positives) / np.maximum(positives, 1.0)

    def tune_thresholds(self, references, scores):
        return functional.best_f1_thresholds(references, scores)

    def nothing_to_learn(self, targets, labels, source):
        if not any(any(row) for row in targets):
            return Problem("data.train", f"no row of {source} has any label: nothing to learn", "train on rows with labels")
        return None

    def score(self, references, scores, labels, thresholds=None):
        cut = thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * len(labels)
        return multilabel_metrics(references, scores, labels, cut, order=self.metrics, problem_type=self.name)

    paired_metric = "subset_accuracy"  # a text is right when every one of its labels is

    def resampled(self, references, scores, resamples, thresholds=None, names=None):
        cut = thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * scores.shape[1]
        return bootstrap.multilabel_resampled(references, scores, cut, resamples, names)

    def correct(self, references, scores, thresholds=None):
        import numpy as np

        cut = np.asarray(thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * scores.shape[1])
        return ((np.asarray(scores) >= cut) == (np.asarray(references) > 0.5)).all(axis=1)

    def describe(self, labels):
        return f"multi-label: {', '.join(labels)}"

    def count(self, labels):
        return f"{len(labels)} labels (multi-label)"


class Regression(ProblemType):
    name = "regression"
    title = "regression"
    metrics = ("pearson", "spearman", "mse", "rmse", "mae", "r2")
    default_metrics = ("pearson", "spearman", "rmse")
    metric_for_best = "spearman"
    tie_break = "mse"
    fields = ("value",)
    shown_fields = ("value",)
    predicts = "one value"
    has_classes = False
    agrees_on = "values within 1e-3 of torch"
    pipeline_args = ', function_to_apply="none"'
    card_note = (
        "\nRegression: the model outputs the label's own units (the training targets' standardisation is folded into the"
        " classifier's weight and bias; `regression_target` in `config.json` records it).\n"
    )

    def scores(self, logits):
        """The value itself: regression models are saved with the target scaling folded in."""
        import numpy as np

        return np.asarray(logits, dtype=np.float64)[:, 0]

    def decide(self, labels, scores, *, thresholds=None, top_k=1):
        return {"value": float(scores)}

    def agreement(self, expected, got, thresholds=None):
        """A value has no label to agree on: the share of values within REGRESSION_TOLERANCE of torch's."""
        import numpy as np

        return float(np.mean(np.abs(expected - got).max(axis=1) <= REGRESSION_TOLERANCE)) if len(expected) else 1.0

    def shown(self, fields):
        return (f"{fields['value']:.6g}",)

    def check_top_k(self, top_k, labels, location, name="--top-k"):
        if top_k != 1:
            raise BertctlError(f"{name} ranks classes, but {location} is a {self.title} model: it predicts {self.predicts}", fix=f"drop {name}")

    def loss(self, weights=None, target=None):
        """MSE on standardised targets: the head learns at the scale of its init whatever the label's units."""
        import torch

        mean, std = target if target is not None else (0.0, 1.0)
        return lambda logits, labels: torch.nn.functional.mse_loss(logits.squeeze(-1), (labels - mean) / std)

    def distill_loss(self, logits, teacher, temperature, target=None):
        """MSE against the teacher's values, standardised as the labels are (the teacher outputs the label's units)."""
        import torch.nn.functional as F

        mean, std = target if target is not None else (0.0, 1.0)
        return F.mse_loss(logits.squeeze(-1), (teacher[:, 0] - mean) / std)

    def class_weights(self, targets, labels):
        raise BertctlError("regression has no classes to weight", fix="remove train.class_weights")

    def nothing_to_learn(self, targets, labels, source):
        if min(targets) == max(targets):
            return Problem("data.train", f"every label in {source} is {targets[0]:g}: nothing to learn", "train on data whose labels vary")
        return None

    def score(self, references, scores, labels, thresholds=None):
        return regression_metrics(references, scores, labels, problem_type=self.name)

    def resampled(self, references, scores, resamples, thresholds=None, names=None):
        return bootstrap.regression_resampled(references, scores, resamples)

    def describe(self, labels):
        return f"regression of {labels[0]!r}"

    def count(self, labels):
        return self.describe(labels)


def _minimise(nll, low: float = 0.05, high: float = 20.0, steps: int = 60) -> float:
    """Golden-section search for the temperature on a log scale: NLL in T is unimodal for these losses."""
    import math

    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(steps):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if nll(math.exp(c)) <= nll(math.exp(d)):
            b = d
        else:
            a = c
    return math.exp((a + b) / 2)


SINGLE_LABEL, MULTI_LABEL, REGRESSION = SingleLabel(), MultiLabel(), Regression()
PROBLEM_TYPES: dict[str, ProblemType] = {p.name: p for p in (SINGLE_LABEL, MULTI_LABEL, REGRESSION)}
NAMES = tuple(PROBLEM_TYPES)
# metric name -> greater is better; every problem type's metrics are here
GREATER_IS_BETTER = {
    **{name: True for p in PROBLEM_TYPES.values() for name in p.metrics},
    **{name: False for name in ("log_loss", "ece", "hamming_loss", "mse", "rmse", "mae")},
}


def problem_type(name: str) -> ProblemType:
    """The object for a transformers problem_type string (a recipe's model.problem_type, a config's)."""
    try:
        return PROBLEM_TYPES[name]
    except KeyError:
        raise BertctlError(f"unknown problem type {name!r}", fix=f"use one of: {', '.join(PROBLEM_TYPES)}") from None


def problem_of(config: Any) -> ProblemType:
    """config.problem_type as transformers reads it: unset means regression for one output, else single-label."""
    name = getattr(config, "problem_type", None)
    if name:
        return problem_type(name)
    return REGRESSION if int(getattr(config, "num_labels", 2)) == 1 else SINGLE_LABEL
