"""Evaluate a trained classifier on labelled data and gate CI on the scores.

    result = evaluate_run("runs/latest")                       # the run recipe's eval split (test, else validation)
    result = evaluate_run("runs/agnews", data=Path("new.csv"), thresholds={"accuracy": 0.9})
    json_path, png_path = write_eval_report(result)            # eval.json + eval_confusion_matrix.png
    failures = result.failed                                   # thresholds not met (bertctl eval exits 1)

Inference goes through bertctl.inference's forward pass, the same batched pass `bertctl predict` uses; the
metrics are the local evaluate modules in bertctl.metrics (offline, numpy).
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bertctl import inputs, labels, plots
from bertctl.data import load_data, tokenize_data
from bertctl.errors import BertctlError, DataError, GateFailed, Problem, RunError
from bertctl.inference import DEFAULT_BATCH_SIZE, Classifier, encode, encoded_logits, load_for_inference, run_as_windows
from bertctl.inference.forward import check_windows
from bertctl.metrics import ClassificationMetrics
from bertctl.problems import MULTI_LABEL, REGRESSION
from bertctl.recipe import METRICS, SPLITS, threshold_problem
from bertctl.runs import atomic_write_json, check_writable_path, load_run_recipe, removes_new_empty_dirs, resolve_run_dir, umask_modes
from bertctl.truncation import Encoded, check_chunk_options

REPORT_NAME = "eval.json"


# ---------------------------------------------------------------------------------------------
# thresholds


def parse_min_options(values: Sequence[str] | None) -> dict[str, float]:
    """`--min accuracy=0.9 --min f1_macro=0.85` -> {"accuracy": 0.9, "f1_macro": 0.85}; one error listing every bad one."""
    thresholds: dict[str, float] = {}
    problems = []
    for text in values or []:
        where = f"--min {text}"
        name, _, raw = (part.strip() for part in text.partition("="))
        if text.count("=") != 1 or not name or not raw:
            problems.append(Problem(where, "expected METRIC=VALUE", "e.g. --min accuracy=0.9 (log_loss and ece take a maximum: --min ece=0.05)"))
            continue
        try:
            value: Any = float(raw)
        except ValueError:
            value = raw
        problem = threshold_problem(where, name, value)
        if problem is not None:
            problems.append(problem)
        else:
            thresholds[name] = float(value)
    if problems:
        width = max(len(p.key) for p in problems)
        raise BertctlError("bad --min option" + ("s" if len(problems) > 1 else "") + ":\n" + "\n".join(p.render(width) for p in problems))
    return thresholds


@dataclass
class ThresholdCheck:
    metric: str
    threshold: float
    value: float
    kind: str  # "min": value must be >= threshold; "max" (log_loss, ece): value must be <= threshold
    source: str  # "--min" or "recipe"

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
        return f"{self.metric} = {self.value:.4f} {relation} {self.threshold:.4f} ({need}, from {self.source}; {rest})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "margin": self.margin}


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
class EvalResult:
    run_dir: str
    model: str
    source: str  # "test split (/abs/test.csv)" or the --data file
    split: str | None
    examples: int
    max_length: int
    truncated: int | None  # None when the data came tokenized from the recipe's cache
    metrics: "ClassificationMetrics"
    checks: list[ThresholdCheck]
    seconds: float
    notes: list[str] = field(default_factory=list)
    evaluated_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    report_path: str | None = None
    plot_path: str | None = None

    @property
    def failed(self) -> list[ThresholdCheck]:
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "model": self.model,
            "data": {"source": self.source, "split": self.split, "examples": self.examples, "max_length": self.max_length, "truncated": self.truncated},
            **self.metrics.to_dict(),
            "thresholds": [c.to_dict() for c in self.checks],
            "passed": self.passed,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "evaluated_at": self.evaluated_at,
            "report": self.report_path,
            "confusion_matrix_png": self.plot_path,
        }


@dataclass
class _EvalData:
    encoded: "Encoded"
    references: list  # class ids; multi-label: 0/1 rows in the model's label order; regression: numbers
    source: str
    split: str | None
    truncated: int | None
    notes: list[str]


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
    return _EvalData(encoded, references, source, wanted, truncated, notes), recipe


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
    return _EvalData(encoded, references, str(path), None, encoded.truncated, notes)


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
) -> EvalResult:
    """Score a run's model on its recipe's eval split (or on --data) and check the gate's thresholds."""
    import numpy as np

    if data is not None and split is not None:
        raise BertctlError("--split picks a split of the run's recipe; --data evaluates a file instead", fix="pass one of --split and --data")
    if data is None and any(v is not None for v in (text, text_pair, label)):
        raise BertctlError("--text/--text-pair/--label name columns of --data", fix="add --data FILE, or drop them to use the recipe's split")
    if split is not None and split not in SPLITS:
        raise BertctlError(f"--split {split!r} is not a split", fix=f"use one of: {', '.join(SPLITS)}")
    started = time.perf_counter()
    path = resolve_run_dir(run_dir)
    check_chunk_options(chunks, stride)
    classifier = load_for_inference(path, trust_pickle=trust_pickle)
    if chunks:
        run_as_windows(classifier, stride)
        check_windows(classifier, bool(classifier.settings.text_pair))
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
    # eval.metrics decides what is reported; a gated metric is always reported beside its gate
    problem = classifier.problem
    for metric in merged:
        if metric not in problem.metrics:
            raise BertctlError(f"--min {metric}: {metric!r} is not a metric of this {problem.title} model", fix=f"gate on one of: {', '.join(problem.metrics)}")
    wanted = (recipe.eval.metrics if recipe is not None else classifier.settings.metrics) or problem.default_metrics
    reported = [name for name in problem.metrics if name in wanted or name in merged]
    size = batch_size or (recipe.train.eval_batch_size if recipe is not None else classifier.settings.eval_batch_size) or DEFAULT_BATCH_SIZE
    logits = encoded_logits(classifier, loaded.encoded, batch_size=size)
    if loaded.encoded.owners is not None:
        windowed = sum(1 for n in loaded.encoded.n_tokens if n > classifier.max_length)
        loaded.notes.append(f"--chunks: {windowed} texts longer than {classifier.max_length} tokens ran as {len(loaded.encoded.owners) - len(loaded.references) + windowed} windows (stride {classifier.chunk_stride}), logits pooled by {problem.pool_name}")
    scores = problem.score(np.asarray(loaded.references), problem.scores(logits), classifier.labels, classifier.thresholds)
    checks = check_thresholds(scores.overall, merged)
    scores.overall = {name: scores.overall[name] for name in reported}
    return EvalResult(
        run_dir=str(path),
        model=classifier.location,
        source=loaded.source,
        split=loaded.split,
        examples=len(loaded.references),
        max_length=classifier.max_length,
        truncated=loaded.truncated,
        metrics=scores,
        checks=checks,
        seconds=time.perf_counter() - started,
        notes=loaded.notes,
    )


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
    lines = [f"eval gate failed: {len(failed)} of {len(result.checks)} threshold{'s' if len(result.checks) != 1 else ''} not met on {result.source}"]
    lines += [f"  {check.describe()}" for check in failed]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# `bertctl eval`: score, write the report, gate


def evaluate_and_write(
    run_dir: str | Path | None = None, *, minimums: Sequence[str] | None = None, report: Path | None = None, plot: bool = True, **options: Any
) -> EvalResult:
    """`bertctl eval` short of printing: --min options (METRIC=VALUE) parsed and the report path checked before
    anything loads, so usage errors come back at once; then the run scored (options are evaluate_run's) and its
    report (and confusion-matrix PNG) written, also when the gate fails: CI keeps the report of a failed run."""
    thresholds = parse_min_options(minimums)
    if report is not None:
        check_report_path(report)
    result = evaluate_run(run_dir, thresholds=thresholds, **options)
    write_eval_report(result, report, plot=plot)
    return result


def check_gate(result: EvalResult) -> None:
    """Raise GateFailed (exit 1, apart from bad input's 2) naming every threshold not met."""

    if not result.passed:
        raise GateFailed(gate_message(result), fix="improve the model, or change the threshold (--min METRIC=VALUE, or [eval.thresholds] in the recipe)")
