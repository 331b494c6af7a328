"""From a request to predictions: the one path `predict`, streaming predict, eval, serve and doctor call.

    check_request(classifier, top_k=2, has_pairs=False)          # what predict refuses, serve answers with a 422
    result = predict_texts(classifier, ["Stocks fell", "Late goal wins the cup"], top_k=2)
    result.predictions[0].label, result.predictions[0].score

A request is checked once (`check_request`), the texts that have text are scored (`score_items`: the forward
pass), and each item gets its prediction from the problem type (`label_items`); an empty text gets an error
instead of a label, so one blank line never fails a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from bertctl.errors import BertctlError, DataError
from bertctl.inference.classifier import DEFAULT_BATCH_SIZE, Classifier
from bertctl.inference.forward import check_windows, classify
from bertctl.inference.requests import InputText, is_empty
from bertctl.problems import ProblemType

if TYPE_CHECKING:
    import numpy as np

EMPTY_TEXT = "empty text: nothing to classify"
NOTES_SHOWN = 10
# how a request's fields are spelled where they come from: predict's flags, serve's JSON body
CLI_NAMES = {"top_k": "--top-k", "pairs": "--pair"}
API_NAMES = {"top_k": "top_k", "pairs": "pairs"}


class RequestError(BertctlError):
    """A request the model can't answer as asked; `field` names what to change (serve's 422 points at it)."""

    def __init__(self, message: str, *, field: str, fix: str | None = None):
        super().__init__(message, fix=fix)
        self.field = field


def check_request(classifier: Classifier, top_k: int, has_pairs: bool, names: dict[str, str] = CLI_NAMES) -> None:
    """The checks every request passes before a text is tokenized: top_k for this problem type and label count,
    and a second text exactly where the model was trained on pairs. `names` spells the fields for the caller."""
    top, pair = names["top_k"], names["pairs"]
    try:
        classifier.problem.check_top_k(top_k, classifier.labels, classifier.location, top)
    except BertctlError as error:
        raise RequestError(error.message, field="top_k", fix=error.fix) from None
    pair_fix = 'bertctl predict "first text" --pair "second text", or --file FILE --text COL --text-pair COL' if pair == CLI_NAMES["pairs"] else 'send "pairs": one second text per text'
    if classifier.takes_pairs and not has_pairs:
        raise RequestError(
            f"{classifier.location} was trained on sentence pairs (data.text_pair = {classifier.settings.text_pair!r}): each input needs its second text",
            field="pairs", fix=pair_fix,
        )
    if classifier.takes_pairs is False and has_pairs:
        # a second text would be read as segment B by a model that never saw one: a confident, meaningless answer
        raise RequestError(
            f"{classifier.location} was trained on single texts (its recipe has no data.text_pair): it takes no second text, but {pair} gave one",
            field="pairs", fix=f"drop {pair}, or use a model trained on sentence pairs",
        )
    try:
        check_windows(classifier, has_pairs)
    except BertctlError as error:
        raise RequestError(error.message, field="chunks", fix=error.fix) from None


@dataclass
class Prediction:
    text: str
    pair: str | None
    where: str  # "text 2", "line 7", "record 3": how the user finds it
    problem: ProblemType
    fields: dict[str, Any]  # the problem type's prediction fields (ProblemType.decide); empty for an error
    error: str | None = None
    row: dict[str, Any] | None = None  # the input table's row (InputText.row)

    @property
    def label(self) -> str | None:
        return self.fields.get("label")

    @property
    def score(self) -> float | None:
        return self.fields.get("score")

    @property
    def top_k(self) -> list[tuple[str, float]]:
        return [(ranked["label"], ranked["score"]) for ranked in self.fields.get("top_k") or []]

    @property
    def scores(self) -> dict[str, float] | None:
        return self.fields.get("scores")

    @property
    def labels(self) -> list[str] | None:
        return self.fields.get("labels")

    @property
    def value(self) -> float | None:
        return self.fields.get("value")

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"text": self.text}
        if self.pair is not None:
            record["text_pair"] = self.pair
        record.update({name: self.fields.get(name, [] if name == "top_k" else None) for name in self.problem.fields})
        if self.error is not None:
            record["error"] = self.error
        if self.row is not None:
            record["input"] = self.row  # the whole row, so a gold column can be compared
        return record

    def shown(self) -> tuple[str, ...]:
        """What was predicted as one line of text per column (ProblemType.shown_fields): a table's cells."""
        if self.error is not None:
            return ("",) * len(self.problem.shown_fields)
        return self.problem.shown(self.fields)


@dataclass
class Tally:
    """What the user should hear about the inputs: how many were empty (and where the first are), how many truncated."""

    max_length: int
    inputs: int = 0
    empty: int = 0
    empty_where: list[str] = field(default_factory=list)
    truncated: int = 0

    def add(self, predictions: list[Prediction], truncated: int) -> None:
        self.inputs += len(predictions)
        self.truncated += truncated
        for p in predictions:
            if p.error is not None:
                self.empty += 1
                if len(self.empty_where) < NOTES_SHOWN:
                    self.empty_where.append(p.where)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "empty": self.empty, "empty_where": self.empty_where, "truncated": self.truncated}

    @classmethod
    def from_dict(cls, max_length: int, counts: dict[str, Any]) -> "Tally":
        return cls(max_length, **{key: counts[key] for key in ("inputs", "empty", "empty_where", "truncated") if key in counts})

    def notes(self) -> list[str]:
        out = []
        if self.empty:
            more = f" and {self.empty - NOTES_SHOWN} more" if self.empty > NOTES_SHOWN else ""
            s = "s" if self.empty != 1 else ""
            out.append(f"note: {self.empty} empty input{s} not classified ({', '.join(self.empty_where[:NOTES_SHOWN])}{more}); --json marks them with label null and an \"error\"")
        if self.truncated:
            s = "s" if self.truncated != 1 else ""
            out.append(f"note: {self.truncated} text{s} longer than {self.max_length} tokens truncated to the model's max_length ({self.max_length}); --chunks reads them whole")
        return out


@dataclass
class PredictResult:
    predictions: list[Prediction]
    tally: Tally
    labels: list[str]


def score_items(classifier: Classifier, items: Sequence[InputText], *, has_pairs: bool, batch_size: int = DEFAULT_BATCH_SIZE) -> tuple["np.ndarray", int]:
    """The scores (ProblemType.scores) of the items that have text, in order (empty ones are skipped), and how many were truncated."""
    kept = [item for item in items if not is_empty(item, has_pairs)]
    return classify(classifier, [item.text for item in kept], [item.pair or "" for item in kept] if has_pairs else None, batch_size=batch_size)


def label_items(classifier: Classifier, items: Sequence[InputText], scores: "np.ndarray", *, has_pairs: bool, top_k: int = 1) -> list[Prediction]:
    """One Prediction per item, in order, from score_items' scores; an empty item gets an error instead of a label."""
    rows = iter(scores)
    problem, labels, thresholds = classifier.problem, classifier.labels, classifier.thresholds
    predictions = []
    for item in items:
        if is_empty(item, has_pairs):
            predictions.append(Prediction(item.text, item.pair, item.where, problem, {}, EMPTY_TEXT, item.row))
            continue
        fields = problem.decide(labels, next(rows), thresholds=thresholds, top_k=top_k)
        predictions.append(Prediction(item.text, item.pair, item.where, problem, fields, None, item.row))
    return predictions


def predict_texts(
    classifier: Classifier,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    *,
    top_k: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    names: dict[str, str] = CLI_NAMES,
) -> PredictResult:
    """One Prediction per text (and pair), in input order; empty inputs get an error instead of a label.

    `bertctl predict` goes through inference.streaming, which runs score_items and label_items a chunk at a time.
    """
    items = [InputText(t, None if pairs is None else pairs[i], f"text {i + 1}") for i, t in enumerate(texts)]
    check_request(classifier, top_k, pairs is not None, names)
    scores, truncated = score_items(classifier, items, has_pairs=pairs is not None, batch_size=batch_size)
    predictions = label_items(classifier, items, scores, has_pairs=pairs is not None, top_k=top_k)
    tally = Tally(classifier.max_length)
    tally.add(predictions, truncated)
    if items and tally.empty == len(items):
        raise DataError(f"the input: every input is empty ({len(items)} blank)", fix="give non-empty texts")
    return PredictResult(predictions, tally, list(classifier.labels))
