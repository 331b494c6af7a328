"""Evaluate a trained classifier on labelled data and gate CI on the scores.

    result = evaluate_run("runs/latest")                       # the run recipe's eval split (test, else validation)
    result = evaluate_run("runs/agnews", data=Path("new.csv"), thresholds={"accuracy": 0.9})
    json_path, png_path = write_eval_report(result)            # eval.json + eval_confusion_matrix.png
    failures = result.failed                                   # gates not met (bertctl eval exits 1)
    result = evaluate_run("runs/new", baseline=Path("prod.jsonl"), max_drops={"accuracy": 2.0}, slice_by="length")
    result.intervals["accuracy"], result.overall.difference_intervals["accuracy"], result.slices
    result = evaluate_run("runs/agnews", checks=Path("recipes/checks/agnews.toml"))   # behavioural tests (bertctl.checks)
    result.behaviour[0].fail_rate, result.warnings    # a test over its max_fail_rate fails the eval like a gate

Every metric carries a 95% bootstrap CI (bertctl.metrics.bootstrap); a baseline (run dir, export dir, or a file
`--save-predictions` wrote) is scored on the same texts and resamples, so the CI of the difference is paired.

Inference goes through bertctl.inference's forward pass, the same batched pass `bertctl predict` uses; the
metrics are the local evaluate modules in bertctl.metrics (offline, numpy).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bertctl import checks as behaviour
from bertctl import inputs, labels, plots
from bertctl.data import load_data, tokenize_data
from bertctl.errors import BertctlError, DataError, GateFailed, Problem, RunError
from bertctl.inference import DEFAULT_BATCH_SIZE, Classifier, encode, encoded_logits, load_for_inference, run_as_windows
from bertctl.inference.forward import check_windows
from bertctl.metrics import ClassificationMetrics
from bertctl.metrics.bootstrap import Resamples, interval
from bertctl.problems import GREATER_IS_BETTER, MULTI_LABEL, REGRESSION, ProblemType, problem_type
from bertctl.recipe import METRICS, SPLITS, did_you_mean, threshold_problem
from bertctl.runs import atomic_write_json, atomic_write_text, check_writable_path, load_run_recipe, removes_new_empty_dirs, resolve_run_dir, umask_modes
from bertctl.truncation import Encoded, check_chunk_options

REPORT_NAME = "eval.json"


# ---------------------------------------------------------------------------------------------
# thresholds


GATE_SYNTAX = "METRIC=VALUE, or METRIC[COLUMN=SLICE]=VALUE for one slice of --slice-by COLUMN"
_GATE = re.compile(r"^\s*(?P<metric>[A-Za-z0-9_]+)\s*(?:\[\s*(?P<column>[^=\]]+?)\s*=\s*(?P<slice>[^\]]*?)\s*\])?\s*=\s*(?P<value>.*?)\s*$")


def gate_key(metric: str, where: tuple[str, str] | None) -> str:
    return metric if where is None else f"{metric}[{where[0]}={where[1]}]"


def split_gate_key(key: str) -> tuple[str, tuple[str, str] | None]:
    """"accuracy[length=q4]" -> ("accuracy", ("length", "q4")); "accuracy" -> ("accuracy", None)."""
    match = _GATE.match(key + "=0")
    if match is None or match["column"] is None:
        return key, None
    return match["metric"], (match["column"], match["slice"])


def _parse_gates(values: Sequence[str] | None, flag: str, example: str, *, points: bool = False) -> dict[str, float]:
    """`--min accuracy=0.9 --min "f1_macro[length=q4]=0.8"` -> {"accuracy": 0.9, "f1_macro[length=q4]": 0.8};
    one error listing every bad one."""
    thresholds: dict[str, float] = {}
    problems = []
    for text in values or []:
        where = f"{flag} {text}"
        match = _GATE.match(text)
        if match is None or not match["value"] or (match["column"] is not None and not match["slice"]):
            problems.append(Problem(where, f"expected {GATE_SYNTAX}", example))
            continue
        name, raw = match["metric"], match["value"]
        try:
            value: Any = float(raw)
        except ValueError:
            value = raw
        if points:
            problem = threshold_problem(where, name, 0.5)  # the metric's name only: a drop is in points, not the metric's range
            if problem is None and (not isinstance(value, float) or not 0 <= value <= 100):
                problem = Problem(where, f"{raw!r} is not a number of points from 0 to 100", example)
        else:
            problem = threshold_problem(where, name, value)
        if problem is not None:
            problems.append(problem)
        else:
            thresholds[gate_key(name, (match["column"], match["slice"]) if match["column"] is not None else None)] = float(value)
    if problems:
        width = max(len(p.key) for p in problems)
        raise BertctlError(f"bad {flag} option" + ("s" if len(problems) > 1 else "") + ":\n" + "\n".join(p.render(width) for p in problems))
    return thresholds


def parse_min_options(values: Sequence[str] | None) -> dict[str, float]:
    """`--min accuracy=0.9 --min "accuracy[length=q4]=0.85"` -> {"accuracy": 0.9, "accuracy[length=q4]": 0.85}."""
    return _parse_gates(values, "--min", "e.g. --min accuracy=0.9, --min \"accuracy[length=q4]=0.85\" (log_loss and ece take a maximum: --min ece=0.05)")


def parse_max_drop_options(values: Sequence[str] | None) -> dict[str, float]:
    """`--max-drop accuracy=0.5` (points: hundredths of the metric) -> {"accuracy": 0.5}."""
    return _parse_gates(values, "--max-drop", "e.g. --max-drop accuracy=0.5 (points: 0.5 = half a percentage point)", points=True)


@dataclass
class ThresholdCheck:
    metric: str
    threshold: float
    value: float
    kind: str  # "min": value must be >= threshold; "max" (log_loss, ece): value must be <= threshold
    source: str  # "--min" or "recipe"
    slice: str | None = None  # "length=q4": the gate holds on that slice of --slice-by
    on: str = "point"  # "point": the estimate; "lower-bound": the CI's pessimistic end (its upper end for a maximum)
    estimate: float | None = None  # the point estimate, when `value` is a bound

    @property
    def name(self) -> str:
        return gate_key(self.metric, tuple(self.slice.split("=", 1)) if self.slice else None)  # type: ignore[arg-type]

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.kind == "min" else self.value <= self.threshold

    @property
    def margin(self) -> float:
        """How far the value is on the good side of the threshold (negative: the shortfall)."""
        return self.value - self.threshold if self.kind == "min" else self.threshold - self.value

    def describe(self) -> str:
        if self.kind == "min":
            relation = ">=" if self.passed else "<"
            rest = f"short by {-self.margin:.4f}" if not self.passed else f"{self.margin:.4f} to spare"
            need = "required minimum"
        else:
            relation = "<=" if self.passed else ">"
            rest = f"over by {-self.margin:.4f}" if not self.passed else f"{self.margin:.4f} to spare"
            need = "allowed maximum"
        what = self.name if self.on == "point" else f"{self.name} {'lower' if self.kind == 'min' else 'upper'} 95% bound (estimate {self.estimate:.4f})"
        return f"{what} = {self.value:.4f} {relation} {self.threshold:.4f} ({need}, from {self.source}; {rest})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gate": "min" if self.kind == "min" else "max", "passed": self.passed, "margin": self.margin}


@dataclass
class DropCheck:
    """--max-drop METRIC=POINTS: non-inferiority. Fails when the 95% CI of (new - baseline) reaches further than
    POINTS (hundredths of the metric) in the worse direction, so noise alone rarely fails it (5% at most, by
    construction, when the new model is exactly as good and a drop of 0 is allowed)."""

    metric: str
    max_drop: float  # points
    difference: float  # new - baseline
    low: float  # the CI of the difference
    high: float
    greater_is_better: bool
    slice: str | None = None
    source: str = "--max-drop"
    kind: str = "max_drop"

    @property
    def name(self) -> str:
        return gate_key(self.metric, tuple(self.slice.split("=", 1)) if self.slice else None)  # type: ignore[arg-type]

    @property
    def worst(self) -> float:
        """The CI's end on the worse side, in the metric's units (negative: worse)."""
        return self.low if self.greater_is_better else -self.high

    @property
    def passed(self) -> bool:
        return self.worst >= -self.max_drop / 100.0

    @property
    def margin(self) -> float:
        return self.worst + self.max_drop / 100.0

    def describe(self) -> str:
        relation = ">=" if self.passed else "<"
        return (
            f"{self.name}: new - baseline = {100 * self.difference:+.2f} points, 95% CI [{100 * self.low:+.2f}, {100 * self.high:+.2f}];"
            f" its {'lower' if self.greater_is_better else 'upper'} end {relation} the allowed drop of {self.max_drop:g} points"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gate": "max_drop", "passed": self.passed, "margin": self.margin}


def merge_thresholds(recipe_thresholds: dict[str, Any] | None, cli_thresholds: dict[str, float] | None) -> dict[str, tuple[float, str]]:
    """metric -> (threshold, source); a --min value replaces the recipe's for that metric only. A run's saved
    recipe was validated when it ran, but may have been edited since: it is held to the same rule."""
    merged: dict[str, tuple[float, str]] = {}
    for name, value in (recipe_thresholds or {}).items():
        problem = threshold_problem(f"recipe.toml [eval.thresholds] {name}", name, value)
        if problem is not None:
            raise BertctlError(f"{problem.key}: {problem.message}", fix=problem.fix)
        merged[name] = (float(value), "recipe")
    for name, value in (cli_thresholds or {}).items():
        merged[name] = (float(value), "--min")
    return merged


def check_thresholds(overall: dict[str, float], thresholds: dict[str, tuple[float, str]]) -> list[ThresholdCheck]:
    return [
        ThresholdCheck(name, threshold, float(overall[name]), "min" if METRICS[name] else "max", source)
        for name, (threshold, source) in thresholds.items()
    ]


# ---------------------------------------------------------------------------------------------
# evaluating


@dataclass
class Paired:
    """Per text, right or wrong under both models (by the problem type's paired_metric), and McNemar's exact test."""

    metric: str
    fixed: list[int]  # positions the baseline got wrong and the new model right
    broken: list[int]  # the baseline right, the new model wrong
    p_value: float  # exact two-sided McNemar: a binomial test of fixed vs broken at 1/2

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "fixed": len(self.fixed), "broken": len(self.broken), "mcnemar_p": self.p_value}


@dataclass
class Measured:
    """One set of texts (all of them, or a slice): the metrics, their 95% CIs, and the comparison with a baseline."""

    examples: int
    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    baseline: dict[str, float] | None = None
    differences: dict[str, float] = field(default_factory=dict)  # new - baseline
    difference_intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # paired bootstrap
    paired: Paired | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"examples": self.examples, "metrics": self.values, "intervals": {k: list(v) for k, v in self.intervals.items()}}
        if self.baseline is not None:
            out["baseline"] = {
                "metrics": self.baseline, "differences": self.differences,
                "difference_intervals": {k: list(v) for k, v in self.difference_intervals.items()},
                **({"paired": self.paired.to_dict()} if self.paired else {}),
            }
        return out


@dataclass
class Slice:
    column: str
    value: str
    measured: Measured

    @property
    def name(self) -> str:
        return f"{self.column}={self.value}"


@dataclass
class Change:
    """A text the baseline and the new model disagree on being right (--show-changes)."""

    row: int
    text: str
    reference: str
    new: str
    baseline: str
    fixed: bool


@dataclass
class EvalResult:
    run_dir: str
    model: str
    source: str  # "test split (/abs/test.csv)" or the --data file
    split: str | None
    examples: int
    max_length: int
    truncated: int | None  # None when the data came tokenized from the recipe's cache
    metrics: "ClassificationMetrics"
    checks: list  # ThresholdCheck and DropCheck
    seconds: float
    notes: list[str] = field(default_factory=list)
    evaluated_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    report_path: str | None = None
    plot_path: str | None = None
    bootstrap: int = 0
    seed: int = 0
    overall: Measured | None = None
    baseline: str | None = None  # what --baseline named
    slices: list[Slice] = field(default_factory=list)
    slice_by: str | None = None
    changes: list[Change] = field(default_factory=list)
    predictions_path: str | None = None
    behaviour: list = field(default_factory=list)  # checks.CheckOutcome per --checks test
    checks_file: str | None = None
    warnings: list[str] = field(default_factory=list)  # also on stderr: e.g. scoring the split that picked the model

    @property
    def failed(self) -> list:
        """Gates not met, then behavioural tests over their max_fail_rate: both fail the eval (exit 1)."""
        return [c for c in self.checks if not c.passed] + [b for b in self.behaviour if not b.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    def slice_columns(self) -> list[str]:
        """The metrics a slice table shows: the gated ones, then the first reported, four at most (--json has all)."""
        names = list(self.slices[0].measured.values) if self.slices else []
        gated = [c.metric for c in self.checks if c.slice]
        return list(dict.fromkeys([*gated, *names]))[: max(4, len(set(gated)))]

    @property
    def intervals(self) -> dict[str, tuple[float, float]]:
        return self.overall.intervals if self.overall is not None else {}

    def to_dict(self) -> dict[str, Any]:
        out = {
            "run_dir": self.run_dir,
            "model": self.model,
            "data": {"source": self.source, "split": self.split, "examples": self.examples, "max_length": self.max_length, "truncated": self.truncated},
            **self.metrics.to_dict(),
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "bootstrap": {"resamples": self.bootstrap, "seed": self.seed, "confidence": 0.95},
            "thresholds": [c.to_dict() for c in self.checks],
            "passed": self.passed,
            "warnings": self.warnings,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "evaluated_at": self.evaluated_at,
            "report": self.report_path,
            "confusion_matrix_png": self.plot_path,
        }
        if self.baseline is not None and self.overall is not None and self.overall.baseline is not None:
            out["baseline"] = {"source": self.baseline, **self.overall.to_dict()["baseline"], "changes": [asdict(c) for c in self.changes]}
        if self.slice_by is not None:
            out["slices"] = {"by": self.slice_by, "slices": {s.value: s.measured.to_dict() for s in self.slices}}
        if self.predictions_path is not None:
            out["predictions"] = self.predictions_path
        if self.checks_file is not None:
            out["checks"] = {"file": self.checks_file, "passed": all(b.passed for b in self.behaviour), "tests": [b.to_dict() for b in self.behaviour]}
        return out


# ---------------------------------------------------------------------------------------------
# confidence intervals and the paired comparison


def mcnemar_p(fixed: int, broken: int) -> float:
    """McNemar's exact test: under "equally good", each discordant text is fixed or broken with probability 1/2.
    (evaluate's `mcnemar` comparison is fetched from the hub, so it fails offline, and it is the chi-squared
    approximation; scipy's exact binomial test is the one CI can run anywhere.)"""
    from scipy.stats import binomtest

    if fixed + broken == 0:
        return 1.0
    return float(binomtest(fixed, fixed + broken, 0.5).pvalue)


def measure(
    problem: ProblemType, references: Any, scores: Any, names: Sequence[str], *, resamples: int, seed: int,
    thresholds: Sequence[float] | None = None, baseline_scores: Any = None, baseline_thresholds: Sequence[float] | None = None,
    labels: Sequence[str] = (),
) -> Measured:
    """The metrics `names` of these texts with 95% bootstrap CIs; with baseline scores, both models on the same
    resamples, so the CI of their difference is a paired one."""
    import numpy as np

    references = np.asarray(references)
    n = len(references)
    # the estimate through the bootstrap's own formulas on the data itself (equal to problem.score's, as
    # tests/test_evaluation_ci.py checks), so a slice costs no evaluate-module calls
    itself = Resamples.identity(n)
    point = {name: float(v[0]) for name, v in problem.resampled(references, scores, itself, thresholds, names).items()}
    measured = Measured(n, {name: point[name] for name in names}, {})
    if baseline_scores is not None:
        base_point = {name: float(v[0]) for name, v in problem.resampled(references, baseline_scores, itself, baseline_thresholds, names).items()}
        measured.baseline = {name: float(base_point[name]) for name in names}
        measured.differences = {name: measured.values[name] - measured.baseline[name] for name in names}
    if resamples > 0 and n > 0:
        drawn = Resamples.draw(n, resamples, seed)
        values = problem.resampled(references, scores, drawn, thresholds, names)
        measured.intervals = {name: interval(values[name]) for name in names}
        if baseline_scores is not None:
            base = problem.resampled(references, baseline_scores, drawn, baseline_thresholds, names)
            measured.difference_intervals = {name: interval(values[name] - base[name]) for name in names}
    if baseline_scores is not None and problem.paired_metric is not None:
        new_right = problem.correct(references, scores, thresholds)
        old_right = problem.correct(references, baseline_scores, baseline_thresholds)
        fixed = [int(i) for i in np.flatnonzero(new_right & ~old_right)]
        broken = [int(i) for i in np.flatnonzero(~new_right & old_right)]
        measured.paired = Paired(problem.paired_metric, fixed, broken, mcnemar_p(len(fixed), len(broken)))
    return measured


# ---------------------------------------------------------------------------------------------
# the baseline: a run dir, an export dir, or a predictions file that `eval --save-predictions` wrote

PREDICTIONS_FORMAT = "bertctl-predictions/1"


@dataclass
class Baseline:
    source: str
    scores: Any  # (n, labels) in the new model's label order; regression: (n,)
    thresholds: list[float] | None


def _check_same_labels(theirs: Sequence[str], ours: Sequence[str], their_problem: ProblemType, our_problem: ProblemType, where: str) -> None:
    if their_problem != our_problem:
        raise DataError(
            f"--baseline {where} is a {their_problem.title} model, the new model is {our_problem.title}: their scores cannot be compared",
            fix="compare with a baseline of the same problem type",
        )
    if set(theirs) != set(ours) or len(theirs) != len(ours):
        missing, extra = [x for x in ours if x not in theirs], [x for x in theirs if x not in ours]
        detail = "; ".join(part for part in (f"only the new model has {', '.join(missing)}" if missing else "", f"only the baseline has {', '.join(extra)}" if extra else "") if part)
        raise DataError(
            f"--baseline {where} has labels {', '.join(map(str, theirs))}; the new model has {', '.join(map(str, ours))}" + (f" ({detail})" if detail else ""),
            fix="compare models trained on the same label set (rename the labels in one recipe and retrain)",
        )


def _reorder(scores: Any, theirs: Sequence[str], ours: Sequence[str], problem: ProblemType):
    """Their score columns in our label order (the same names, perhaps another order)."""
    if problem == REGRESSION:
        return scores
    position = {name: j for j, name in enumerate(theirs)}
    return scores[:, [position[name] for name in ours]]


def _check_same_texts(theirs: list[str], ours: list[str], where: str) -> None:
    if len(theirs) != len(ours):
        raise DataError(
            f"--baseline {where} holds predictions for {len(theirs)} texts; this eval has {len(ours)}: they were made on different data",
            fix="save the baseline's predictions on the same data (bertctl eval BASELINE --save-predictions FILE with the same --data/--split)",
        )
    for row, (a, b) in enumerate(zip(theirs, ours)):
        if a != b:
            raise DataError(
                f"--baseline {where}: text {row + 1} differs, so the predictions were made on different data:\n"
                f"  baseline: {_short(a)}\n  this eval: {_short(b)}",
                fix="save the baseline's predictions on the same data, in the same order",
            )


def _short(text: str, width: int = 100) -> str:
    flat = " ".join(str(text).split())
    return repr(flat if len(flat) <= width else flat[: width - 1] + "…")


def load_baseline(other: Path, classifier: Classifier, loaded: _EvalData, batch_size: int) -> Baseline:
    """The baseline's scores on the same texts, columns in the new model's label order."""
    import numpy as np

    other = Path(other).expanduser()
    problem = classifier.problem
    if other.is_file():
        header, rows = read_baseline_file(other, classifier)
        texts, _ = loaded.text_columns()
        _check_same_texts([r.get("text", "") for r in rows], texts, str(other))
        try:
            if problem == REGRESSION:
                scores = np.asarray([float(r["scores"]) for r in rows])
            else:
                scores = np.asarray([[float(r["scores"][name]) for name in classifier.labels] for r in rows])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"--baseline {other}: a row's scores are not one number per label ({type(exc).__name__}: {exc})", fix="use the file `bertctl eval --save-predictions` wrote, unchanged") from None
        return Baseline(str(other), scores, header.get("thresholds"))
    if not other.exists():
        raise DataError(f"--baseline {other} does not exist", fix="name a run dir, an export dir, or a file `bertctl eval --save-predictions FILE` wrote")
    base = load_for_inference(resolve_run_dir(other))
    _check_same_labels(base.labels, classifier.labels, base.problem, problem, str(other))
    texts, pairs = loaded.text_columns()
    if classifier.chunk_stride is not None:
        run_as_windows(base, classifier.chunk_stride)
    logits = encoded_logits(base, encode(base, texts, pairs), batch_size=batch_size)
    scores = _reorder(problem.scores(logits), base.labels, classifier.labels, problem)
    thresholds = None
    if base.thresholds is not None:
        position = {name: j for j, name in enumerate(base.labels)}
        thresholds = [base.thresholds[position[name]] for name in classifier.labels]
    return Baseline(str(other), scores, thresholds)


def read_baseline_file(path: Path, classifier: Classifier) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A predictions file as --baseline, its labels checked against the model's (before any data is read)."""
    header, rows = read_predictions(path)
    try:
        their_problem = problem_type(str(header.get("problem_type", "")))
    except BertctlError as exc:
        raise DataError(f"--baseline {path}: {exc.message}", fix="use the file `bertctl eval --save-predictions` wrote, unchanged") from None
    _check_same_labels(list(header.get("labels") or []), classifier.labels, their_problem, classifier.problem, str(path))
    return header, rows


def read_predictions(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A predictions file: its header line (model, problem type, labels, thresholds) and one record per text."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read --baseline {path}: {exc}", fix="name a readable predictions file") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if not records:
                break  # not even the header: the message below says what the file should be
            raise DataError(f"--baseline {path} line {number} is not JSON: {exc.msg}", fix="use the file `bertctl eval --save-predictions` wrote, unchanged") from None
    if not records or not isinstance(records[0], dict) or records[0].get("format") != PREDICTIONS_FORMAT:
        raise DataError(
            f"--baseline {path} is not a predictions file (its first line should be a {PREDICTIONS_FORMAT!r} header)",
            fix="write one with: bertctl eval BASELINE_RUN --save-predictions FILE",
        )
    return records[0], records[1:]


def write_predictions(path: Path, result: "EvalResult", classifier: Classifier, loaded: _EvalData, scores: Any) -> None:
    """--save-predictions: a header line, then per text its id, text, reference and the model's scores (atomic)."""
    problem = classifier.problem
    texts, pairs = loaded.text_columns()
    names = _label_names(loaded.references, classifier)
    header = {
        "format": PREDICTIONS_FORMAT, "model": result.model, "problem_type": problem.name, "labels": list(classifier.labels),
        "thresholds": list(classifier.thresholds) if classifier.thresholds is not None else None, "source": result.source, "examples": len(names),
    }
    lines = [json.dumps(header, ensure_ascii=False)]
    for i, text in enumerate(texts):
        record: dict[str, Any] = {"id": i, "text": text}
        if pairs is not None:
            record["text_pair"] = pairs[i]
        row = scores[i]
        record["reference"] = names[i]
        record["scores"] = float(row) if problem == REGRESSION else {name: float(p) for name, p in zip(classifier.labels, row)}
        lines.append(json.dumps(record, ensure_ascii=False))
    try:
        with removes_new_empty_dirs(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, "\n".join(lines) + "\n")
    except OSError as exc:
        raise RunError(f"cannot write --save-predictions {path}: {exc.strerror or exc}", fix="free disk space or make the folder writable") from None


# ---------------------------------------------------------------------------------------------
# slices

LENGTH = "length"  # --slice-by length: quartiles of token length, q1 (shortest) .. q4


def slice_values(loaded: _EvalData, column: str, classifier: Classifier) -> list[str]:
    """Each text's slice under --slice-by COLUMN, as text."""
    import numpy as np

    if column == LENGTH and LENGTH not in loaded.columns:
        lengths = loaded.encoded.n_tokens
        if lengths is None or loaded.encoded.owners is not None and len(lengths) != len(loaded.references):
            texts, pairs = loaded.text_columns()
            lengths = [len(ids) for ids in classifier.tokenizer(texts, pairs, truncation=False)["input_ids"]] if texts else []
        lengths = np.asarray(lengths, dtype=np.float64)
        # rank-based quartiles: ties go to the lower quartile, so a slice never depends on row order
        cuts = np.quantile(lengths, [0.25, 0.5, 0.75])
        return [f"q{int(np.searchsorted(cuts, n, side='left')) + 1}" for n in lengths]
    if column not in loaded.columns and loaded.load_columns is not None:
        loaded.columns = {**loaded.load_columns(), **loaded.columns}  # `label` stays the model's label names
        loaded.load_columns = None
    if column not in loaded.columns:
        choices = [LENGTH, *loaded.columns]
        raise DataError(
            f"--slice-by {column!r} is not a column of {loaded.source} (columns: {', '.join(choices)})",
            fix=did_you_mean(column, choices, f"use one of: {', '.join(choices)}") + (" (a split carved from train or cut by data.limit offers only text and label: pass --data FILE)" if loaded.split and len(loaded.columns) <= 2 else ""),
        )
    return ["" if inputs.is_blank(v) else str(v) for v in loaded.columns[column]]


def _slice_order(values: list[str]) -> list[str]:
    def key(v: str):
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)

    return sorted(set(values), key=key)


# ---------------------------------------------------------------------------------------------
# gates


def build_checks(
    problem: ProblemType, overall: Measured, full_overall: dict[str, float], slices: list[Slice], merged: dict[str, tuple[float, str]],
    drops: dict[str, float], on: str,
) -> list:
    """--min/recipe thresholds (on the estimate or its CI bound) and --max-drop gates, overall and per slice."""
    by_name = {s.name: s for s in slices}
    checks: list = []
    for key, (threshold, source) in merged.items():
        metric, where = split_gate_key(key)
        kind = "min" if METRICS[metric] else "max"
        target = _gate_target(where, by_name, key, source)
        values = full_overall if target is None else target.values
        estimate = float(values[metric])
        value = estimate
        if on == "lower-bound":
            intervals = (overall if target is None else target).intervals
            if metric not in intervals:
                raise BertctlError(f"--on lower-bound gates on a 95% CI, but there is none for {key}", fix="drop --bootstrap 0, or gate on the estimate (--on point)")
            value = intervals[metric][0] if kind == "min" else intervals[metric][1]
        checks.append(ThresholdCheck(metric, threshold, value, kind, source, slice=where and f"{where[0]}={where[1]}", on=on, estimate=estimate))
    for key, points in drops.items():
        metric, where = split_gate_key(key)
        target = _gate_target(where, by_name, key, "--max-drop")
        measured = overall if target is None else target
        if measured.baseline is None:
            raise BertctlError(f"--max-drop {key} compares with a baseline", fix="add --baseline RUN_DIR, EXPORT_DIR or PREDICTIONS_FILE")
        if metric not in measured.difference_intervals:
            raise BertctlError(f"--max-drop {key} gates on the CI of the difference, and --bootstrap 0 turns CIs off", fix="use --bootstrap 1000 (the default)")
        low, high = measured.difference_intervals[metric]
        checks.append(DropCheck(metric, points, measured.differences[metric], low, high, GREATER_IS_BETTER[metric], slice=where and f"{where[0]}={where[1]}"))
    return checks


def tight_drop_note(check: DropCheck) -> str | None:
    """A --max-drop allowance that noise alone breaks more than 5% of the time for an equally good model: say so.
    With the difference's standard error se (the CI's half-width / 1.96), an equally good model fails when
    its estimate falls below 1.96 se - allowance: probability Phi((1.96 se - allowance) / se)."""
    se = (check.high - check.low) / 2 / 1.959963984540054
    allowance = check.max_drop / 100.0
    if se <= 0:
        return None
    chance = 0.5 * (1 + math.erf((1.959963984540054 * se - allowance) / se / math.sqrt(2)))
    if chance <= 0.05:
        return None
    return (
        f"--max-drop {check.name}={check.max_drop:g}: the 95% CI of the difference is about ±{100 * 1.96 * se:.2f} points here, so a model"
        f" exactly as good as the baseline fails this gate about {chance:.0%} of the time; an allowance of {100 * 3.605 * se:.1f} points"
        f" keeps that under 5% (or evaluate on more texts)"
    )


def _gate_target(where: tuple[str, str] | None, by_name: dict[str, Slice], key: str, source: str) -> Measured | None:
    if where is None:
        return None
    name = f"{where[0]}={where[1]}"
    if name not in by_name:
        if not by_name or next(iter(by_name.values())).column != where[0]:
            raise BertctlError(f"{source} {key} gates a slice of {where[0]!r}, but the eval is not sliced by it", fix=f"add --slice-by {where[0]}")
        values = [s.value for s in by_name.values()]
        raise BertctlError(f"{source} {key}: no slice {name!r} (slices: {', '.join(values)})", fix=did_you_mean(where[1], values, f"use one of: {', '.join(values)}"))
    return by_name[name].measured


@dataclass
class _EvalData:
    encoded: "Encoded"
    references: list  # class ids; multi-label: 0/1 rows in the model's label order; regression: numbers
    source: str
    split: str | None
    truncated: int | None
    notes: list[str]
    texts: list[str] | None = None  # None until needed: the recipe's split comes tokenized from its cache
    pairs: list[str] | None = None
    columns: dict[str, list] = field(default_factory=dict)  # what --slice-by may name, besides length
    load_texts: Any = None  # () -> (texts, pairs), for a recipe split
    load_columns: Any = None  # () -> the split file's columns, for a recipe split's --slice-by COLUMN
    warnings: list[str] = field(default_factory=list)

    def text_columns(self) -> tuple[list[str], list[str] | None]:
        if self.texts is None and self.load_texts is not None:
            self.texts, self.pairs = self.load_texts()
        return self.texts or [], self.pairs


def _recipe_split(run_dir: Path, classifier: Classifier, split: str | None) -> tuple[_EvalData, Any]:
    recipe = load_run_recipe(run_dir)
    if recipe is None:
        raise RunError(
            f"{run_dir} has no recipe.toml, so there is no eval split to use",
            fix=f"pass labelled data: bertctl eval {run_dir} --data test.csv [--text COL --label COL]",
        )
    notes: list[str] = []
    available = [s for s in SPLITS if (getattr(recipe.data, s) is not None if recipe.uses_hub_dataset else recipe.data_path(s) is not None)]
    if recipe.data.validation_fraction is not None and "validation" not in available:
        available.append("validation")
    wanted = split or recipe.eval.split
    if wanted not in available:
        if split is None and wanted == "test" and "validation" in available:
            notes.append("the recipe has no test split: evaluating on validation")
            wanted = "validation"
        else:
            raise DataError(
                f"{run_dir / 'recipe.toml'}: the recipe has no {wanted} split (it has: {', '.join(available)})",
                fix=f"use --split {'validation' if 'validation' in available else available[0]}, or pass --data FILE",
            )
    if classifier.chunk_stride is None:
        # tokenize with the run's own tokenizer, max_length and truncation, through the same Arrow cache training used
        tokenized = tokenize_data(recipe, classifier.tokenizer)
        dataset = tokenized.splits[wanted]
        wanted_columns = [name for name in (*classifier.input_names, "label", "n_tokens") if name in dataset.column_names]
        # one bulk read into Python lists: indexing a datasets Column row by row costs ~0.2 ms a row
        table = dataset.with_format(None).select_columns(wanted_columns)[:]
        columns = {name: table[name] for name in classifier.input_names if name in table}
        truncated = sum(1 for n in table["n_tokens"] if n > recipe.model.max_length) if "n_tokens" in table else None
        encoded = Encoded(columns, truncated or 0, table.get("n_tokens"))
    else:
        # --chunks windows the raw texts: the split's rows as training loaded them, before any truncation
        tokenized = load_data(recipe)
        table = tokenized.splits[wanted].with_format(None)[:]
        encoded = encode(classifier, table["text"])
        truncated = 0
    where = f"{tokenized.sources.get(wanted, wanted)} ({wanted} split)"
    # the recipe's ids index its own label list; the model's ids may be ordered differently
    problem = classifier.problem
    if problem == REGRESSION:
        references = [float(v) for v in table["label"]]
    elif problem == MULTI_LABEL:
        names = [[tokenized.labels[j] for j, on in enumerate(row) if on] for row in table["label"]]
        references = _model_targets(names, classifier, "--split", where)
    else:
        references = _model_ids([tokenized.labels[i] for i in table["label"]], classifier, "--split", where)
    source = f"{wanted} split ({tokenized.sources.get(wanted, wanted)})"

    raw: list = []  # load_data's result, once, for whichever of the two below asks first

    def split_data():
        if not raw:
            raw.append(load_data(recipe))
        return raw[0]

    def load_texts():
        # the raw rows, in the order tokenize_data mapped them (it maps load_data's splits one to one)
        rows = split_data().splits[wanted].with_format(None)[:]
        return rows["text"], rows.get("text_pair")

    def load_columns() -> dict[str, list]:
        """Every column of the split's own file, its kept rows in order, for --slice-by COLUMN. A split carved
        from train, or cut by data.limit (a seeded sample), has no file whose rows line up with it."""
        path = recipe.data_path(wanted)
        carved = wanted == "train" and recipe.data.validation is None and recipe.data.validation_fraction is not None
        if path is None or carved or getattr(recipe.data.limit, wanted, None) is not None:
            return {}
        rows = split_data().kept_rows.get(wanted)
        if rows is None or len(rows) != len(references):
            return {}
        frame = inputs.read_table(path).iloc[rows]
        return {str(name): frame[name].tolist() for name in frame.columns}

    loaded = _EvalData(encoded, references, source, wanted, truncated, notes, load_texts=load_texts, load_columns=load_columns)
    if wanted == "validation":
        loaded.warnings.append(selection_warning(recipe.train.metric_for_best or problem.metric_for_best))
    if "text" in table:
        loaded.texts, loaded.pairs = table["text"], table.get("text_pair")
    loaded.columns["label"] = _label_names(references, classifier)
    return loaded, recipe


def selection_warning(metric: str) -> str:
    """Training kept the checkpoint with the best validation `metric`: scoring that same split again is optimistic."""
    return (
        f"the validation split picked this run's best checkpoint (train.metric_for_best = {metric}), so its scores here are optimistic;"
        " for an unbiased figure score a held-out split: give the recipe data.test (README: 'A held-out test split') and retrain, or pass --data FILE"
    )


def _label_names(references: list, classifier: "Classifier") -> list:
    """What a person calls each reference: its class name, its labels joined by ',', or the number."""
    if classifier.problem == REGRESSION:
        return list(references)
    if classifier.problem == MULTI_LABEL:
        return [",".join(name for name, on in zip(classifier.labels, row) if on) for row in references]
    return [classifier.labels[i] for i in references]


def _model_ids(values: list, classifier: "Classifier", key: str, where: str, path: Path | None = None) -> list[int]:
    """Labels -> the model's class ids by training's rule; one it doesn't know is an error (scoring it as a
    new class would hide a label-set mismatch between the data and the model)."""
    fix = "use the model's label names, drop those rows, or evaluate a model trained with these labels"
    ids, problems = labels.encode_labels(values, classifier.labels, key, where, path=path, owner="the model", fix=fix)
    if problems:
        raise inputs.problems_error(problems)
    return ids


def _model_targets(values: list, classifier: "Classifier", key: str, where: str, path: Path | None = None, separator: str | None = None) -> list[list[float]]:
    """Multi-label cells -> 0/1 rows in the model's label order, by training's rule (an unknown name is an error)."""
    fix = "use the model's label names, drop those rows, or evaluate a model trained with these labels"
    targets, problems = labels.encode_multi_labels(values, classifier.labels, key, where, separator=separator, path=path, owner="the model", fix=fix)
    if problems:
        raise inputs.problems_error(problems)
    return targets


def _references(frame, classifier: "Classifier", label: str | list[str], path: Path) -> list:
    """--data's labels as the model's problem type reads them: class ids, 0/1 rows, or numbers."""
    problem = classifier.problem
    where = f"{path} (column {label!r})"
    if problem == REGRESSION:
        values, problems = labels.encode_numbers(frame[label].tolist(), "--label", where, path=path)
    elif problem == MULTI_LABEL and isinstance(label, list):
        if list(label) != list(classifier.labels):
            raise BertctlError(f"--label columns {label!r} are not the model's labels ({', '.join(classifier.labels)})", fix="name one 0/1 column per model label, in the model's order")
        values, problems = labels.encode_indicators(frame, list(label), "--label", str(path), path=path)
    elif problem == MULTI_LABEL:
        return _model_targets(frame[label].tolist(), classifier, "--label", where, path, classifier.settings.label_separator)
    else:
        return _model_ids(frame[label].tolist(), classifier, "--label", where, path)
    if problems:
        raise inputs.problems_error(problems)
    return values


def _data_file(path: Path, classifier: Classifier, text: str | None, text_pair: str | None, label: str | None) -> _EvalData:
    settings = classifier.settings
    text = text or settings.text or "text"
    text_pair = text_pair or settings.text_pair
    label = label or settings.label or "label"
    frame = inputs.read_table(path)
    note = "\n(unset, --text/--text-pair/--label are the run's data.text/text_pair/label)" if (settings.text or settings.text_pair or settings.label) else ""
    inputs.require_columns(list(frame.columns), {"--text": text, "--text-pair": text_pair}, str(path), note=note)
    for column in label if isinstance(label, list) else [label]:
        inputs.require_columns(list(frame.columns), {"--label": column}, str(path), note=note)
    text_columns = [text] + ([text_pair] if text_pair else [])
    _, blank = inputs.blank_text_problem(frame, text_columns, "--text", str(path), path, "fill in or remove those rows: an empty text has nothing to score")
    if blank is not None:
        raise inputs.problems_error([blank])
    references = _references(frame, classifier, label, path)
    texts = [inputs.cell_text(v) for v in frame[text].tolist()]
    pairs = [inputs.cell_text(v) for v in frame[text_pair].tolist()] if text_pair else None
    encoded = encode(classifier, texts, pairs)
    notes = []
    if encoded.truncated:
        notes.append(f"{encoded.truncated} texts longer than {classifier.max_length} tokens were truncated ({classifier.truncation}); --chunks reads them whole")
    loaded = _EvalData(encoded, references, str(path), None, encoded.truncated, notes, texts=texts, pairs=pairs)
    loaded.columns = {str(name): frame[name].tolist() for name in frame.columns}
    if isinstance(label, str):
        loaded.columns[label] = _label_names(references, classifier)  # "Sports", never 1 and "1" apart
    return loaded


def evaluate_run(
    run_dir: str | Path | None = None,
    *,
    split: str | None = None,
    data: Path | None = None,
    text: str | None = None,
    text_pair: str | None = None,
    label: str | None = None,
    thresholds: dict[str, float] | None = None,
    batch_size: int | None = None,
    trust_pickle: bool = False,
    chunks: bool = False,
    stride: int | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    baseline: Path | None = None,
    max_drops: dict[str, float] | None = None,
    on: str = "point",
    slice_by: str | None = None,
    show_changes: int = 0,
    save_predictions: Path | None = None,
    checks: Path | None = None,
) -> EvalResult:
    """Score a run's model on its recipe's eval split (or on --data), with 95% bootstrap CIs; compare it with a
    baseline on the same texts; slice; and check the gate's thresholds."""
    import numpy as np

    if data is not None and split is not None:
        raise BertctlError("--split picks a split of the run's recipe; --data evaluates a file instead", fix="pass one of --split and --data")
    if data is None and any(v is not None for v in (text, text_pair, label)):
        raise BertctlError("--text/--text-pair/--label name columns of --data", fix="add --data FILE, or drop them to use the recipe's split")
    if split is not None and split not in SPLITS:
        raise BertctlError(f"--split {split!r} is not a split", fix=f"use one of: {', '.join(SPLITS)}")
    check_eval_options(bootstrap, on, baseline, max_drops, show_changes, slice_by, thresholds)
    checks_file = Path(checks) if checks is not None else None  # `checks` is the gates' name further down
    suite = behaviour.load_checks(checks_file) if checks_file is not None else None  # TOML and schema errors come before any model loads
    started = time.perf_counter()
    path = resolve_run_dir(run_dir)
    check_chunk_options(chunks, stride)
    classifier = load_for_inference(path, trust_pickle=trust_pickle)
    if chunks:
        run_as_windows(classifier, stride)
        check_windows(classifier, bool(classifier.settings.text_pair))
    if suite is not None:
        if classifier.takes_pairs:
            raise BertctlError(f"--checks {checks_file}: behavioural tests change single texts, but {classifier.location} was trained on sentence pairs", fix="drop --checks for a sentence-pair model")
        behaviour.check_against_model(suite, classifier)  # unknown labels, before the forward pass
    if baseline is not None and Path(baseline).expanduser().is_file():
        read_baseline_file(Path(baseline).expanduser(), classifier)  # a label-set mismatch is known before any data loads
    recipe = None
    if data is not None:
        loaded = _data_file(Path(data).expanduser(), classifier, text, text_pair, label)
        recipe_thresholds = classifier.settings.thresholds
    else:
        loaded, recipe = _recipe_split(path, classifier, split)
        recipe_thresholds = recipe.eval.thresholds
    if not loaded.references:
        raise DataError(f"{loaded.source}: no examples to evaluate", fix="point --data or the recipe's split at labelled rows")
    merged = merge_thresholds(recipe_thresholds, thresholds)
    drops = dict(max_drops or {})
    # eval.metrics decides what is reported; a gated metric is always reported beside its gate
    problem = classifier.problem
    gated = {split_gate_key(key)[0] for key in (*merged, *drops)}
    for metric in sorted(gated):
        if metric not in problem.metrics:
            raise BertctlError(f"--min {metric}: {metric!r} is not a metric of this {problem.title} model", fix=f"gate on one of: {', '.join(problem.metrics)}")
    wanted = (recipe.eval.metrics if recipe is not None else classifier.settings.metrics) or problem.default_metrics
    reported = [name for name in problem.metrics if name in wanted or name in gated]
    groups = slice_values(loaded, slice_by, classifier) if slice_by is not None else None  # a bad column fails before the forward pass
    size = batch_size or (recipe.train.eval_batch_size if recipe is not None else classifier.settings.eval_batch_size) or DEFAULT_BATCH_SIZE
    base = load_baseline(baseline, classifier, loaded, size) if baseline is not None else None
    logits = encoded_logits(classifier, loaded.encoded, batch_size=size)
    if loaded.encoded.owners is not None:
        windowed = sum(1 for n in loaded.encoded.n_tokens if n > classifier.max_length)
        loaded.notes.append(f"--chunks: {windowed} texts longer than {classifier.max_length} tokens ran as {len(loaded.encoded.owners) - len(loaded.references) + windowed} windows (stride {classifier.chunk_stride}), logits pooled by {problem.pool_name}")
    references = np.asarray(loaded.references)
    scores = problem.scores(logits)
    full = problem.score(references, scores, classifier.labels, classifier.thresholds)
    common = dict(resamples=bootstrap, thresholds=classifier.thresholds, labels=classifier.labels)
    if base is not None:
        common.update(baseline_scores=base.scores, baseline_thresholds=base.thresholds)
    overall = measure(problem, references, scores, reported, seed=seed, **common)
    slices = []
    if groups is not None:
        members = np.asarray(groups, dtype=object)
        for k, value in enumerate(_slice_order(groups)):
            rows = np.flatnonzero(members == value)
            part = dict(common)
            if base is not None:
                part["baseline_scores"] = base.scores[rows]
            # each slice draws its own resamples (seeded apart), so its CI is that of its own size
            slices.append(Slice(slice_by, value, measure(problem, references[rows], scores[rows], reported, seed=seed + 1 + k, **part)))
    checks = build_checks(problem, overall, full.overall, slices, merged, drops, on)
    loaded.notes += [note for check in checks if isinstance(check, DropCheck) and (note := tight_drop_note(check))]
    full.overall = {name: full.overall[name] for name in reported}
    result = EvalResult(
        run_dir=str(path),
        model=classifier.location,
        source=loaded.source,
        split=loaded.split,
        examples=len(loaded.references),
        max_length=classifier.max_length,
        truncated=loaded.truncated,
        metrics=full,
        checks=checks,
        seconds=0.0,
        notes=loaded.notes,
        bootstrap=bootstrap,
        seed=seed,
        overall=overall,
        baseline=str(baseline) if baseline is not None else None,
        slices=slices,
        slice_by=slice_by,
        warnings=loaded.warnings,
    )
    if suite is not None:
        result.behaviour = behaviour.run_checks(suite, classifier, loaded.text_columns()[0], batch_size=size)
        result.checks_file = str(checks_file)
    if base is not None and overall.paired is not None and show_changes:
        result.changes = _changes(overall.paired, loaded, classifier, scores, base, show_changes)
    if save_predictions is not None:
        write_predictions(Path(save_predictions), result, classifier, loaded, scores)
        result.predictions_path = str(save_predictions)
    result.seconds = time.perf_counter() - started
    return result


def _changes(paired: Paired, loaded: _EvalData, classifier: Classifier, scores: Any, base: Baseline, limit: int) -> list[Change]:
    """The first `limit` fixed and the first `limit` broken texts, with what each model answered."""
    problem = classifier.problem
    texts, _ = loaded.text_columns()
    references = _label_names(loaded.references, classifier)

    def answer(row, thresholds) -> str:
        return problem.shown(problem.decide(classifier.labels, row, thresholds=thresholds))[0]

    out = []
    for rows, fixed in ((paired.fixed[:limit], True), (paired.broken[:limit], False)):
        for i in rows:
            out.append(Change(i + 1, texts[i] if i < len(texts) else "", str(references[i]), answer(scores[i], classifier.thresholds), answer(base.scores[i], base.thresholds), fixed))
    return out


def check_eval_options(bootstrap: int, on: str, baseline: Path | None, max_drops: dict | None, show_changes: int, slice_by: str | None, thresholds: dict | None) -> None:
    """Usage errors among the CI options, before anything loads."""
    if bootstrap < 0:
        raise BertctlError(f"--bootstrap {bootstrap}: the number of resamples cannot be negative", fix="use --bootstrap 1000 (the default), or 0 to turn CIs off")
    if on not in ("point", "lower-bound"):
        raise BertctlError(f"--on {on!r} is not a gate basis", fix="use --on point (the estimate) or --on lower-bound (the 95% CI's pessimistic end)")
    if on == "lower-bound" and bootstrap == 0:
        raise BertctlError("--on lower-bound gates on the 95% CI, and --bootstrap 0 turns CIs off", fix="drop --bootstrap 0")
    if max_drops and baseline is None:
        raise BertctlError("--max-drop compares the new model with a baseline", fix="add --baseline RUN_DIR, EXPORT_DIR or PREDICTIONS_FILE")
    if max_drops and bootstrap == 0:
        raise BertctlError("--max-drop gates on the CI of the difference, and --bootstrap 0 turns CIs off", fix="drop --bootstrap 0")
    if show_changes and baseline is None:
        raise BertctlError("--show-changes lists texts the new model and the baseline disagree on", fix="add --baseline RUN_DIR, EXPORT_DIR or PREDICTIONS_FILE")
    for key in [*(thresholds or {}), *(max_drops or {})]:
        _, where = split_gate_key(key)
        if where is not None and where[0] != slice_by:
            raise BertctlError(f"the gate {key} holds on a slice of {where[0]!r}, but the eval is not sliced by it", fix=f"add --slice-by {where[0]}")


# ---------------------------------------------------------------------------------------------
# reports


def default_report_path(result: EvalResult) -> Path:
    return Path(result.run_dir) / REPORT_NAME


def plot_path_for(report: Path) -> Path:
    return report.with_name(f"{report.stem}_confusion_matrix.png")


def check_report_path(path: Path) -> None:
    check_writable_path(path, "--report", example="reports/eval.json")


def write_eval_report(result: EvalResult, report: Path | None = None, *, plot: bool = True) -> tuple[Path, Path | None]:
    """eval.json (atomic) in the run dir or at `report`, and the confusion-matrix PNG beside it.

    The PNG is drawn into a temp file and moved into place only after eval.json is written, so a failed
    write (disk full, read-only) leaves the previous report and PNG as a matching pair, and no new files.
    """
    path = Path(report) if report is not None else default_report_path(result)
    check_report_path(path)
    png = plot_path_for(path) if plot and result.metrics.confusion_matrix is not None else None
    result.report_path = str(path)
    result.plot_path = str(png) if png else None
    drawn: Path | None = None
    try:
        with removes_new_empty_dirs(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
            if png is not None:
                fd, name = tempfile.mkstemp(prefix=f".{png.name}.", suffix=".pending", dir=png.parent)
                os.close(fd)
                drawn = Path(name)
                first, value = next(iter(result.metrics.overall.items()))
                title = f"{Path(result.run_dir).name}: {result.split or Path(result.source).name}, {first} {value:.3f}"
                draw = plots.plot_label_confusions if result.metrics.problem_type == MULTI_LABEL.name else plots.plot_confusion_matrix
                draw(result.metrics.confusion_matrix, result.metrics.labels, drawn, title)
            atomic_write_json(path, result.to_dict())
            if drawn is not None:
                os.replace(umask_modes(drawn), png)  # mkstemp's 0600 would hide the PNG from other users
                drawn = None
    except OSError as exc:
        raise RunError(f"cannot write the eval report {path}: {exc.strerror or exc}", fix="free disk space or make the folder writable, or pass --report FILE elsewhere") from None
    finally:
        if drawn is not None:
            drawn.unlink(missing_ok=True)
    return path, png


def gate_message(result: EvalResult) -> str:
    failed = result.failed
    total = len(result.checks) + len(result.behaviour)
    lines = [f"eval gate failed: {len(failed)} of {total} gate{'s' if total != 1 else ''} not met on {result.source}"
             + (f" (behavioural tests from {result.checks_file} included)" if result.checks_file else "")]
    lines += [f"  {check.describe()}" for check in failed]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# `bertctl eval`: score, write the report, gate


def evaluate_and_write(
    run_dir: str | Path | None = None, *, minimums: Sequence[str] | None = None, drops: Sequence[str] | None = None, report: Path | None = None,
    plot: bool = True, junit: Path | None = None, markdown: Path | None = None, **options: Any
) -> EvalResult:
    """`bertctl eval` short of printing: --min/--max-drop options parsed and the output paths checked before
    anything loads, so usage errors come back at once; then the run scored (options are evaluate_run's) and its
    report (and confusion-matrix PNG, JUnit XML, Markdown summary) written, also when the gate fails: CI keeps
    the report of a failed run."""
    thresholds = parse_min_options(minimums)
    max_drops = parse_max_drop_options(drops)
    if report is not None:
        check_report_path(report)
    for flag, target in (("--junit", junit), ("--markdown", markdown), ("--save-predictions", options.get("save_predictions"))):
        if target is not None:
            check_writable_path(Path(target), flag, example=f"reports/{Path(str(target)).name}")
    result = evaluate_run(run_dir, thresholds=thresholds, max_drops=max_drops, **options)
    write_eval_report(result, report, plot=plot)
    if junit is not None:
        _write_text(Path(junit), junit_xml(result), "--junit")
    if markdown is not None:
        _write_text(Path(markdown), markdown_summary(result), "--markdown")
    return result


def _write_text(path: Path, text: str, flag: str) -> None:
    try:
        with removes_new_empty_dirs(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
    except OSError as exc:
        raise RunError(f"cannot write {flag} {path}: {exc.strerror or exc}", fix="free disk space or make the folder writable") from None


# ---------------------------------------------------------------------------------------------
# CI files: JUnit XML (GitHub, GitLab and Jenkins read it) and a Markdown summary ($GITHUB_STEP_SUMMARY)


def _ci(interval: tuple[float, float] | None, sign: str = "") -> str:
    return f"[{interval[0]:{sign}.4f}, {interval[1]:{sign}.4f}]" if interval else ""


def _metric_lines(measured: Measured) -> str:
    lines = []
    for name, value in measured.values.items():
        line = f"{name} {value:.4f} {_ci(measured.intervals.get(name))}".rstrip()
        if measured.baseline is not None:
            diff_ci = measured.difference_intervals.get(name)
            line += f"; baseline {measured.baseline[name]:.4f}, difference {measured.differences[name]:+.4f}" + (f" {_ci(diff_ci, '+')}" if diff_ci else "")
        lines.append(line)
    return "\n".join(lines)


def junit_xml(result: EvalResult) -> str:
    """One testsuite; a testcase per gate (a failing gate is a <failure> with the numbers) and per slice (failing
    when a gate on it fails), and one for the overall metrics."""
    import xml.etree.ElementTree as ET

    cases: list[tuple[str, str, str | None, str]] = []  # (classname, name, failure message or None, system-out)
    if result.overall is not None:
        cases.append(("bertctl.eval.metrics", "overall", None, _metric_lines(result.overall)))
    for check in result.checks:
        cases.append(("bertctl.eval.gates", f"{check.source} {check.name}", None if check.passed else check.describe(), check.describe()))
    failed_slices = {c.slice for c in result.checks if not c.passed and c.slice}
    for s in result.slices:
        gates = [c.describe() for c in result.checks if not c.passed and c.slice == s.name]
        cases.append(("bertctl.eval.slices", s.name, "; ".join(gates) if s.name in failed_slices else None, f"{s.measured.examples} texts\n" + _metric_lines(s.measured)))
    for b in result.behaviour:
        cases.append(("bertctl.eval.checks", f"{b.title} {b.name}", None if b.passed else b.describe(), _check_lines(b)))
    suite = ET.Element("testsuite", name="bertctl eval", tests=str(len(cases)), failures=str(sum(1 for c in cases if c[2])), errors="0", skipped="0",
                       time=f"{result.seconds:.3f}", timestamp=result.evaluated_at)
    properties = ET.SubElement(suite, "properties")
    for key, value in (("model", result.model), ("data", result.source), ("examples", result.examples), ("baseline", result.baseline or ""), ("bootstrap", result.bootstrap),
                       ("checks", result.checks_file or "")):
        ET.SubElement(properties, "property", name=key, value=str(value))
    for classname, name, failure, out in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
        if failure:
            ET.SubElement(case, "failure", message=failure, type="GateFailed").text = failure
        ET.SubElement(case, "system-out").text = out
    suites = ET.Element("testsuites", name="bertctl eval", tests=suite.get("tests"), failures=suite.get("failures"))
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _check_lines(outcome: "behaviour.CheckOutcome") -> str:
    lines = [outcome.describe()] + ([outcome.description] if outcome.description else [])
    if outcome.skipped:
        lines.append(f"{outcome.skipped} texts skipped: the perturbation leaves them unchanged")
    for e in outcome.examples:
        lines.append(f"failed: {e.text!r}" + (f" -> {e.changed!r}" if e.changed is not None else "") + f": expected {e.expected}, got {e.got}")
    return "\n".join(lines)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_summary(result: EvalResult) -> str:
    """A GitHub-flavoured Markdown summary: the verdict, a metric table (with the baseline diff), slices, gates."""
    status = "passed" if result.passed else "FAILED"
    lines = [f"### bertctl eval: {status}", "", f"`{_cell(result.model)}` on {_cell(result.source)}: {result.examples} texts"
             + (f", 95% CIs from {result.bootstrap} bootstrap resamples" if result.bootstrap else ""), ""]
    lines += [f"> **warning**: {_cell(w)}\n" for w in result.warnings]
    overall = result.overall
    if overall is not None:
        if overall.baseline is not None:
            lines += [f"Baseline: `{_cell(result.baseline)}`", "", "| metric | new | 95% CI | baseline | difference | 95% CI of the difference |", "|---|---:|---|---:|---:|---|"]
            for name, value in overall.values.items():
                lines.append(f"| {name} | {value:.4f} | {_ci(overall.intervals.get(name))} | {overall.baseline[name]:.4f} | {overall.differences[name]:+.4f} | {_ci(overall.difference_intervals.get(name), '+')} |")
            if overall.paired is not None:
                p = overall.paired
                lines += ["", f"{p.metric}: {len(p.fixed)} texts fixed, {len(p.broken)} broken; McNemar exact p = {p.p_value:.4g}"]
        else:
            lines += ["| metric | value | 95% CI |", "|---|---:|---|"]
            lines += [f"| {name} | {value:.4f} | {_ci(overall.intervals.get(name))} |" for name, value in overall.values.items()]
    if result.slices:
        names = result.slice_columns()
        lines += ["", f"Slices by `{_cell(result.slice_by)}`:", "", "| slice | texts | " + " | ".join(names) + " |", "|---|---:|" + "---|" * len(names)]
        for s in result.slices:
            m = s.measured
            cells = [f"{m.values[n]:.4f} {_ci(m.intervals.get(n))}".rstrip() + (f" ({m.differences[n]:+.4f})" if m.baseline is not None else "") for n in names]
            lines.append(f"| {_cell(s.value)} | {m.examples} | " + " | ".join(cells) + " |")
    if result.checks:
        lines += ["", "| gate | result |", "|---|---|"]
        lines += [f"| {_cell(c.source + ' ' + c.name)} | {'ok' if c.passed else '**FAIL**'}: {_cell(c.describe())} |" for c in result.checks]
    if result.behaviour:
        lines += ["", f"Behavioural tests (`{_cell(result.checks_file)}`):", "", "| test | kind | failed | fail rate | max | result |", "|---|---|---:|---:|---:|---|"]
        for b in result.behaviour:
            lines.append(f"| {_cell(b.name)} | {_cell(b.title)} | {b.failures} / {b.tested} | {100 * b.fail_rate:.1f}% | {100 * b.max_fail_rate:g}% | {'ok' if b.passed else '**FAIL**'} |")
        failing = [(b, e) for b in result.behaviour for e in b.examples]
        if failing:
            lines += ["", "<details><summary>failing examples</summary>", "", "| test | text | changed | expected | got |", "|---|---|---|---|---|"]
            lines += [f"| {_cell(b.name)} | {_cell(e.text)} | {_cell(e.changed or '')} | {_cell(e.expected)} | {_cell(e.got)} |" for b, e in failing]
            lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def check_gate(result: EvalResult) -> None:
    """Raise GateFailed (exit 1, apart from bad input's 2) naming every gate not met."""

    if not result.passed:
        drops = any(isinstance(c, DropCheck) for c in result.failed)
        fix = "improve the model, or change the threshold (--min METRIC=VALUE, or [eval.thresholds] in the recipe)"
        if drops:
            fix += "; a --max-drop allowance is in points of the metric, and the CI narrows with more texts"
        if any(isinstance(c, behaviour.CheckOutcome) for c in result.failed):
            fix += f"; a behavioural test's max_fail_rate is set in {result.checks_file}"
        raise GateFailed(gate_message(result), fix=fix)
