"""THE label rule: what a label value means, for training, validation, `eval --data` and doctor alike.

    labels = infer_labels(frame["topic"].tolist())                     # classes from the training values
    ids, problems = encode_labels(frame["topic"].tolist(), labels, "data.label", "news.csv", path=path)
    targets, problems = encode_multi_labels(cells, labels, "data.label", "x.jsonl", separator=",")
    values, problems = encode_numbers(frame["score"].tolist(), "data.label", "stsb.tsv")   # regression

A class name matches after trimming spaces, an integer matches as a class id 0..N-1 unless the class names are
themselves integers, and every bad value is a problem naming its rows. Reading the file is bertctl.inputs' job.
"""

from __future__ import annotations

import numbers
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertctl.errors import Problem
from bertctl.inputs import MAX_ROWS_SHOWN, _count, is_blank, row_name, rows_named

if TYPE_CHECKING:
    import pandas as pd

# what tools write for "no value" (pandas' NaN, JSON's null, pandas' NA): a missing label, never a class. Not "NA",
# "none" or "N/A": those are real class names in some datasets. A class list that names one of these keeps it.
MISSING_MARKERS = frozenset({"nan", "-nan", "null", "<na>"})
# difflib's ratio a did-you-mean needs: 'postive' -> 'positive' is 0.93, 'Sprots' -> 'Sports' 0.83, 'wrld' ->
# 'world' 0.89, but 'sadness' -> 'business' is 0.67: no suggestion beats a wrong one
SUGGEST_CUTOFF = 0.75
EMPTY_FIX = "fill in or remove those rows"


def is_missing(value: Any, labels: list[str] | None = None) -> bool:
    """No label: None, NaN, an empty or whitespace string, or a written marker of one ('NaN', 'null'), unless
    `labels` (the class names) names that marker itself."""
    if is_blank(value):
        return True
    if not isinstance(value, str) or value.strip().casefold() not in MISSING_MARKERS:
        return False
    return labels is None or value.strip() not in {name.strip() for name in labels}


def missing_rows(frame: "pd.DataFrame", column: str | list[str], labels: list[str] | None = None) -> list[int]:
    """The index labels of rows without a label (with one 0/1 column per label: without a value in any of them).
    A multi-label row's empty list is a row with no labels, not a missing one."""
    columns = [column] if isinstance(column, str) else list(column)
    cells = zip(*(frame[c].tolist() for c in columns))
    return [int(i) for i, row in zip(frame.index, cells) if any(is_missing(v, labels) for v in row)]


def _as_int(value: Any) -> int | None:
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):  # numpy integers too
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?[0-9]+(\.0*)?", text):  # ASCII digits only: int('²') fails
            return int(text.split(".")[0])
    return None


def infer_labels(values: list[Any]) -> list[str]:
    """Class names from training values: integer ids keep their numeric order, names sort alphabetically."""
    distinct = {v if not isinstance(v, str) else v.strip() for v in values if not is_missing(v)}
    ints = {_as_int(v) for v in distinct}
    if None not in ints:
        return [str(i) for i in sorted(ints)]  # type: ignore[type-var]
    return sorted({str(v).strip() for v in distinct})


def suggest_label(name: str, labels: list[str]) -> str | None:
    """The class a mistyped label most likely meant: the same but for case, else the closest spelling at least
    SUGGEST_CUTOFF alike (case ignored); None when nothing is that close."""
    import difflib

    folded = {label.strip().casefold(): label for label in labels}
    key = name.strip().casefold()
    if key in folded:
        return folded[key]
    close = difflib.get_close_matches(key, list(folded), n=1, cutoff=SUGGEST_CUTOFF)
    return folded[close[0]] if close else None


def _did_you_mean(unknown: list[str], labels: list[str]) -> str:
    shown = ", ".join(f"{guess!r} for {name!r}" for name in unknown if (guess := suggest_label(name, labels)) is not None)
    return f"did you mean {shown}? " if shown else ""


def encode_labels(
    values: list[Any],
    labels: list[str],
    key: str,
    where: str,
    rows: list[int] | None = None,
    *,
    path: Path | None = None,
    owner: str = "the recipe",
    fix: str = "add them to data.labels, or fix those rows",
    empty_fix: str = EMPTY_FIX,
) -> tuple[list[int], list[Problem]]:
    """Map label values (names, or integer ids 0..N-1) to class ids; one problem per kind of bad value.

    When the label names are themselves integers ("1".."4"), a value only ever matches by name: reading 0
    as class id 0 (name "1") would silently shift every class. A missing value (is_missing: empty, NaN, 'null')
    is never a class. `rows`: the values' rows in the file at `path` when some were dropped; `owner` ("the
    recipe", "the model") and `fix`: whose labels, what to do; `empty_fix`: what to do about missing ones.
    """
    index = {name.strip(): i for i, name in enumerate(labels)}
    ids_allowed = any(_as_int(name) is None for name in labels)
    rows = list(range(len(values))) if rows is None else rows
    ids: list[int] = []
    unknown: dict[str, list[int]] = {}
    out_of_range: dict[int, list[int]] = {}
    empty: list[int] = []
    for row, value in zip(rows, values):
        missing = is_missing(value, labels)
        as_int = None if missing else _as_int(value)
        name = str(as_int) if as_int is not None and not ids_allowed else str(value).strip()
        if missing:
            empty.append(row)
        elif name in index:
            ids.append(index[name])
            continue
        elif as_int is not None and ids_allowed:
            if 0 <= as_int < len(labels):
                ids.append(as_int)
                continue
            out_of_range.setdefault(as_int, []).append(row)
        else:
            unknown.setdefault(name, []).append(row)
        ids.append(-1)

    def shown(groups: dict) -> str:
        text = ", ".join(f"{v!r} ({row_name(path, r[0])}, {_count(len(r), 'row')})" for v, r in list(groups.items())[:MAX_ROWS_SHOWN])
        return text + (f" and {len(groups) - MAX_ROWS_SHOWN} more" if len(groups) > MAX_ROWS_SHOWN else "")

    problems = []
    known = ", ".join(labels)
    if unknown:
        by_name = "" if ids_allowed else "; they are integers, so a value matches one by name, never as a class id"
        message = f"labels {owner} does not know: {shown(unknown)} in {where} ({owner}'s labels: {known}{by_name})"
        problems.append(Problem(key, message, _did_you_mean(list(unknown), labels) + fix))
    if out_of_range:
        problems.append(
            Problem(
                key,
                f"integer labels outside 0..{len(labels) - 1}: {shown(out_of_range)} in {where}",
                f"integer labels are class ids into {owner}'s labels ({len(labels)} classes: {known}); "
                "-1 usually marks an unlabeled (test) split: evaluate on a labeled split",
            )
        )
    if empty:
        problems.append(Problem(key, f"{_count(len(empty), 'row')} with an empty or NaN label in {where}: {rows_named(path, empty)}", empty_fix))
    return ids, problems


def _split_names(value: Any, separator: str | None, labels: list[str] | None = None) -> list[Any] | None:
    """One multi-label cell as its label values; None when the cell is missing (an empty list is no labels).
    A missing name inside a cell (an empty part, a NaN) names no class, so it is left out."""
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist") and not isinstance(value, str) and not isinstance(value, numbers.Number):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        return [item.strip() if isinstance(item, str) else item for item in items if not is_missing(item, labels)]
    if is_missing(value, labels):
        return None
    if isinstance(value, str) and separator:
        return [part.strip() for part in value.split(separator) if not is_missing(part, labels)]
    return [value]


def infer_multi_labels(values: list[Any], separator: str | None) -> list[str]:
    """Label names from multi-label training cells, by infer_labels' rule applied to every name in them."""
    return infer_labels([item for value in values for item in (_split_names(value, separator) or [])])


def encode_multi_labels(
    values: list[Any],
    labels: list[str],
    key: str,
    where: str,
    rows: list[int] | None = None,
    *,
    separator: str | None = None,
    path: Path | None = None,
    owner: str = "the recipe",
    fix: str = "add them to data.labels, or fix those rows",
    empty_fix: str = "remove those rows",
) -> tuple[list[list[float]], list[Problem]]:
    """Multi-label cells (a list, or names joined by `separator`) -> one 0/1 row per cell, in `labels` order.

    Every name goes through encode_labels, the single-label rule, so names and ids match the same way.
    An empty list is a row with no labels; a missing cell is an error naming the row.
    """
    rows = list(range(len(values))) if rows is None else rows
    flat, flat_rows, missing, split = [], [], [], []
    for row, value in zip(rows, values):
        names = _split_names(value, separator, labels)
        if names is None:
            missing.append(row)
            names = []
        split.append(names)
        flat += names
        flat_rows += [row] * len(names)
    ids, problems = encode_labels(flat, labels, key, where, flat_rows, path=path, owner=owner, fix=fix)
    targets: list[list[float]] = []
    position = 0
    for names in split:
        target = [0.0] * len(labels)
        for class_id in ids[position : position + len(names)]:
            if class_id >= 0:
                target[class_id] = 1.0
        position += len(names)
        targets.append(target)
    if missing:
        how = f"names joined by {separator!r}" if separator else "a list of names (an empty list [] for a row with none)"
        problems.append(Problem(key, f"{_count(len(missing), 'row')} with an empty or NaN label in {where}: {rows_named(path, missing)}", f"give each row {how}, or {empty_fix}"))
    return targets, problems


def encode_indicators(frame: "pd.DataFrame", columns: list[str], key: str, where: str, *, path: Path | None = None) -> tuple[list[list[float]], list[Problem]]:
    """Jigsaw-style labels, one 0/1 column per label -> one 0/1 row per row; anything else is an error naming rows."""
    problems = []
    matrix = []
    for column in columns:
        bad: list[int] = []
        out = []
        for row, value in zip(frame.index, frame[column].tolist()):
            as_int = None if is_blank(value) else (int(value) if isinstance(value, bool) else _as_int(value))
            if as_int not in (0, 1):
                bad.append(int(row))
                as_int = 0
            out.append(float(as_int))
        if bad:
            shown = ", ".join(f"{row_name(path, r)} ({frame[column][r]!r})" for r in bad[:MAX_ROWS_SHOWN]) + (" ..." if len(bad) > MAX_ROWS_SHOWN else "")
            problems.append(Problem(key, f"column {column!r} holds values other than 0 and 1 in {where}: {shown}", "one 0/1 column per label: 1 where the row has the label, 0 where not"))
        matrix.append(out)
    return [list(row) for row in zip(*matrix)] if matrix else [], problems


def encode_numbers(
    values: list[Any], key: str, where: str, rows: list[int] | None = None, *, path: Path | None = None, empty_fix: str = EMPTY_FIX
) -> tuple[list[float], list[Problem]]:
    """Regression targets: finite numbers (or numeric strings); empty, NaN and non-numeric values are errors naming rows."""
    import math

    rows = list(range(len(values))) if rows is None else rows
    out: list[float] = []
    empty: list[int] = []
    bad: list[tuple[int, Any]] = []  # (row, value)
    for row, value in zip(rows, values):
        number = None
        if is_missing(value):
            empty.append(row)
        elif isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
            bad.append((row, value))
        else:
            try:
                number = float(value.strip() if isinstance(value, str) else value)
            except ValueError:
                bad.append((row, value))
            else:
                if math.isnan(number):
                    empty.append(row)
                    number = None
                elif math.isinf(number):
                    bad.append((row, value))
                    number = None
        out.append(number if number is not None else 0.0)
    problems = []
    if empty:
        problems.append(Problem(key, f"{_count(len(empty), 'row')} with an empty or NaN label in {where}: {rows_named(path, empty)}", f"a regression label is a number: {empty_fix}"))
    if bad:
        shown = ", ".join(f"{row_name(path, r)} ({v!r})" for r, v in bad[:MAX_ROWS_SHOWN]) + (" ..." if len(bad) > MAX_ROWS_SHOWN else "")
        problems.append(Problem(key, f"{_count(len(bad), 'row')} with a label that is not a finite number in {where}: {shown}", "a regression label is a number such as 3.8: fix or remove those rows"))
    return out, problems
