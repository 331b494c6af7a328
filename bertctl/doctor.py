"""Find what is wrong with a recipe's data before training on it (issue 15): leaks, duplicates, conflicting
labels, class balance, token lengths and likely label errors.

    bertctl doctor recipes/agnews.toml                         # all checks, 3-fold label-error check
    bertctl doctor recipes/agnews.toml --folds 0               # skip the trainings: leaks, duplicates, balance, length
    bertctl doctor recipes/agnews.toml --epochs 1 data.limit.train=1000 --fix cleaned/

    report = diagnose(load_recipe("recipes/agnews.toml"), folds=3)   # a DoctorReport; report.to_dict() is doctor.json

Checks 1-4 read the data files whole: data.limit does not apply (a leak among the rows a sample skips is still in
the file) and a validation_fraction carve does not either (a duplicate inside train leaks into any carve of it, so
it is reported as a duplicate of train). Check 5 trains K ordinary bertctl trainings on a stratified K-fold split
of train (data.limit.train rows of it, the seeded sample load_data draws) and hands the out-of-fold probabilities
to cleanlab's confident learning.

Every example keeps its record index in the file (carried next to it from loading on), so each row is reported
with the file and line a person opens; `_name_rows` is the one place that turns an index into a line.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
import tempfile
import time
import unicodedata
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bertctl.data import load_data
from bertctl.doctor_report import write_html
from bertctl.errors import BertctlError, DataError, RunError
from bertctl.inference import classify, load_for_inference
from bertctl.inputs import cell_text, read_table, row_name
from bertctl.modeling import quiet_transformers
from bertctl.problems import SINGLE_LABEL
from bertctl.recipe import SPLITS, LimitSection, Recipe, recipe_from_dict
from bertctl.runs import atomic_write_json, replace_dir, writing
from bertctl.tokenization import tokenize_report
from bertctl.training import train

if TYPE_CHECKING:
    import numpy as np

EXTRA_FIX = 'pip install -e ".[doctor]"   (or: pip install "bertctl[doctor]")'
NEAR_THRESHOLD = 0.8  # Jaccard of word 1+2-gram sets: one word changed in a 10-word text still scores 0.73-0.8
MIN_COUNT = 10
IMBALANCE_RATIO = 10.0
TRUNCATED_WARN = 0.05
NUM_PERM = 128
FIX_CONFIDENCE = 0.5  # --fix drops a suspected label error when its suggested label is the models' majority view
REPORT_FILES = ("doctor.json", "doctor.html")


def require_extra(folds: int) -> None:
    """datasketch (near-duplicates) and, for the label-error check (`folds` > 0), cleanlab and scikit-learn come
    with the `doctor` extra; say how to get them before any work starts."""
    import importlib.util

    needed = ("datasketch", "cleanlab", "sklearn") if folds else ("datasketch",)
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise BertctlError(f"bertctl doctor needs {', '.join(missing)}, which are not installed", fix=EXTRA_FIX)


# ---------------------------------------------------------------------------------------------
# the data, every example with its place in the file


@dataclass
class Split:
    name: str
    file: str  # the data file (or hub split) the rows come from
    path: Path | None  # the local file; None for a hub split
    texts: list[str]
    pairs: list[str] | None
    labels: list[int]  # class ids into DoctorData.labels
    rows: list[int]  # each example's record index in the file (0 = the first record after the header)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class DoctorData:
    splits: dict[str, Split]
    labels: list[str]
    carved: bool  # the recipe carves validation out of train
    # rows without a text or a label: (split, record index in the file, why), in file order
    empty: list[tuple[str, int, str]] = field(default_factory=list)


def whole_files(recipe: Recipe) -> Recipe:
    """The recipe with its samples and carve undone, so loading it yields every record of every file, in order;
    rows without a text or label are set aside (data.drop_empty), so doctor lists them instead of stopping at them."""
    whole = copy.deepcopy(recipe)
    whole.data.limit = LimitSection()
    whole.data.validation_fraction = None
    whole.data.drop_empty = True
    return whole


def load_files(recipe: Recipe) -> DoctorData:

    whole = whole_files(recipe)
    data = load_data(whole)
    splits = {}
    for name, ds in data.splits.items():
        texts = list(ds["text"])
        pairs = list(ds["text_pair"]) if data.is_pair else None
        splits[name] = Split(name, data.sources[name], whole.data_path(name), texts, pairs, list(ds["label"]), data.kept_rows[name])
    empty = sorted(((name, row, why) for name, reasons in data.dropped_rows.items() for why, rows in reasons.items() for row in rows), key=lambda e: (SPLITS.index(e[0]), e[1]))
    return DoctorData(splits, data.labels, recipe.data.validation_fraction is not None, empty)


def _named_empty(data: DoctorData, recipe: Recipe) -> list[dict[str, Any]]:
    """The rows load_data set aside, each with its file, line and text (as far as it has one), and what training
    does with it: data.drop_empty drops it, else training refuses the file."""

    d = recipe.data
    frames: dict[str, Any] = {}
    out = []
    for name, record, why in data.empty:
        path = recipe.data_path(name)
        if path is not None and name not in frames:
            frames[name] = read_table(path)
        frame = frames.get(name)
        where = row_name(path, record)
        kind, _, number = where.partition(" ")
        row = {"split": name, "file": str(path) if path is not None else name, "line": int(number) if kind == "line" else None, "where": where,
               "row": record, "why": why, "training": "dropped (data.drop_empty)" if d.drop_empty else "refused: fill in or remove it, or set data.drop_empty = true"}
        if frame is not None:
            row["text"] = cell_text(frame[d.text].iloc[record])
            if d.text_pair:
                row["text_pair"] = cell_text(frame[d.text_pair].iloc[record])
            if isinstance(d.label, str):
                row["label"] = cell_text(frame[d.label].iloc[record])
        out.append(row)
    return out


def _name_rows(split: Split, indices) -> dict[int, tuple[int | None, str]]:
    """(line, where) of examples of one split: where is 'line 12' (csv/tsv/txt), 'record 3' (jsonl) or 'row 5',
    line the number when it is a file line, as bertctl.inputs names rows everywhere."""

    out = {}
    for i in indices:  # one split at a time: row_name keeps one file's record lines cached
        where = row_name(split.path, split.rows[i])
        kind, _, number = where.partition(" ")
        out[i] = (int(number) if kind == "line" else None, where)
    return out


# ---------------------------------------------------------------------------------------------
# exact and near duplicates, conflicts

_INSIDE_WORD = re.compile(r"(?<=\w)['’.,](?=\w)")  # don't, 3,500, U.S: the same word without them
_NOT_WORD = re.compile(r"[^\w\s]|_")


def normalize_text(text: str) -> str:
    """What 'the same text' means here: Unicode NFKC, case folded, apostrophes and digit/abbreviation marks inside
    a word dropped, other punctuation and symbols as spaces, one space between words. A text of nothing but
    punctuation keeps its characters, so '!!!' and '???' stay different."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    words = _NOT_WORD.sub(" ", _INSIDE_WORD.sub("", folded)).split()
    return " ".join(words) if words else " ".join(folded.split())


def _keys(split: Split) -> list[str]:
    if split.pairs is None:
        return [normalize_text(t) for t in split.texts]
    # '||' can't survive normalisation, so it can't be part of either text
    return [f"{normalize_text(a)} || {normalize_text(b)}" for a, b in zip(split.texts, split.pairs)]


def _shingles(key: str) -> "np.ndarray":
    """The key's words and word pairs, hashed to sorted unique uint32 (a 100k-row split stays a few MB)."""
    import numpy as np

    words = key.split()
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return np.unique(np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint32, count=len(grams)))


def _jaccard(a: "np.ndarray", b: "np.ndarray") -> float:
    import numpy as np

    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / (len(a) + len(b) - shared) if len(a) + len(b) else 1.0


Ref = tuple[str, int]  # (split, example index)


@dataclass
class Findings:
    """What the checks found, as references to examples; DoctorReport names the rows."""

    leaks: list[dict[str, Any]] = field(default_factory=list)  # kind, similarity, rows: [earlier split ref, later split ref]
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # split, rows
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # labels, rows


def _split_pairs(names: list[str]) -> list[tuple[str, str]]:
    order = [s for s in SPLITS if s in names]
    return [(a, b) for i, a in enumerate(order) for b in order[i + 1 :]]


def find_exact(splits: dict[str, Split], keys: dict[str, list[str]], labels: list[str], findings: Findings) -> None:
    """Exact duplicates after normalisation: within each split, across splits (leaks), and with different labels."""
    groups: dict[str, list[Ref]] = {}
    for name, split_keys in keys.items():
        for i, key in enumerate(split_keys):
            groups.setdefault(key, []).append((name, i))
    for refs in groups.values():
        if len(refs) < 2:
            continue
        by_split: dict[str, list[Ref]] = {}
        for ref in refs:
            by_split.setdefault(ref[0], []).append(ref)
        for name, inside in by_split.items():
            if len(inside) > 1:
                findings.duplicates.append({"split": name, "rows": inside})
        for a, b in _split_pairs(list(by_split)):
            for left in by_split[a]:
                for right in by_split[b]:
                    findings.leaks.append({"kind": "exact", "similarity": 1.0, "rows": [left, right]})
        counts: dict[str, int] = {}
        for name, i in refs:
            label = labels[splits[name].labels[i]]
            counts[label] = counts.get(label, 0) + 1
        if len(counts) > 1:
            findings.conflicts.append({"labels": counts, "rows": refs})


def find_near(keys: dict[str, list[str]], threshold: float, findings: Findings) -> float:
    """Near-duplicates across splits: MinHash LSH (datasketch) over word 1+2-gram shingles proposes candidates in
    linear time, and each candidate's exact Jaccard decides. Pairs equal after normalisation are exact leaks
    already. Returns the seconds taken."""
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    names = [s for s in SPLITS if s in keys]
    shingles = {name: [_shingles(k) for k in keys[name]] for name in names}
    # hashvalues seeded from the shingles' own crc32s: `int` is the identity on them
    sketches = {name: MinHash.bulk(shingles[name], num_perm=NUM_PERM, hashfunc=int) for name in names}
    for a in names[:-1]:
        # a lower LSH threshold than the verdict's: LSH only proposes, so it should miss (almost) nothing above it
        index = MinHashLSH(threshold=max(0.3, threshold - 0.2), num_perm=NUM_PERM)
        with index.insertion_session() as session:
            for i, sketch in enumerate(sketches[a]):
                session.insert(i, sketch, check_duplication=False)
        for b in names[names.index(a) + 1 :]:
            for j, sketch in enumerate(sketches[b]):
                for i in sorted(index.query(sketch)):
                    if keys[a][i] == keys[b][j]:
                        continue
                    similarity = _jaccard(shingles[a][i], shingles[b][j])
                    if similarity >= threshold:
                        findings.leaks.append({"kind": "near", "similarity": round(similarity, 4), "rows": [(a, i), (b, j)]})
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# balance and length


def check_balance(splits: dict[str, Split], labels: list[str], min_count: int) -> dict[str, Any]:
    counts = {name: {label: 0 for label in labels} for name in splits}
    for name, split in splits.items():
        for label_id in split.labels:
            counts[name][labels[label_id]] += 1
    under = [{"split": name, "label": label, "count": n} for name, c in counts.items() for label, n in c.items() if 0 < n < min_count]
    missing = [{"split": name, "label": label} for name, c in counts.items() for label, n in c.items() if n == 0]
    train = counts.get("train", {})
    rare_in_train = [
        {"label": label, "train": train.get(label, 0), "split": name, "count": n}
        for name, c in counts.items() if name != "train" for label, n in c.items() if n and train.get(label, 0) < min_count
    ]
    ratios = {}
    for name, c in counts.items():
        present = [n for n in c.values() if n]
        ratios[name] = round(max(present) / min(present), 2) if present else None
    imbalanced = [name for name, r in ratios.items() if r is not None and r >= IMBALANCE_RATIO]
    return {
        "counts": counts, "min_count": min_count, "under_min_count": under, "missing": missing, "rare_in_train": rare_in_train,
        "imbalance_ratio": ratios, "imbalance_warn_ratio": IMBALANCE_RATIO, "imbalanced": imbalanced,
    }


def check_length(recipe: Recipe) -> dict[str, Any]:
    """Token lengths per file split and the share cut at model.max_length: the tokenize report's own numbers."""

    report = tokenize_report(whole_files(recipe))
    splits = {
        s.name: {"examples": s.examples, "p50": s.length_p50, "p90": s.length_p90, "p99": s.length_p99, "max": s.length_max,
                 "truncated_share": round(s.truncated_share, 4), "unk_share": round(s.unk_share, 4)}
        for s in report.splits
    }
    warned = [name for name, s in splits.items() if s["truncated_share"] > TRUNCATED_WARN]
    return {"model": report.model, "max_length": report.max_length, "splits": splits, "truncated_warn_share": TRUNCATED_WARN, "truncated": warned}


# ---------------------------------------------------------------------------------------------
# likely label errors: K-fold out-of-fold probabilities, then confident learning


def check_single_label(recipe: Recipe) -> None:
    # every check compares class labels (conflicting duplicates, label errors); cleanlab's multi_label=True path
    # would take multi-label data, regression has no label errors of this kind
    if recipe.model.problem_type != SINGLE_LABEL.name:
        raise BertctlError(
            f"bertctl doctor checks single-label data so far ({recipe.source} is {recipe.model.problem_type})",
            fix="`bertctl tokenize RECIPE` reports the label distribution and inputs repeated across splits for every problem type",
        )


def train_sample(recipe: Recipe, n: int) -> list[int]:
    """The train examples the label check covers: data.limit.train of them, the seeded sample load_data draws."""
    limit = recipe.data.limit.train
    if limit is None or limit >= n:
        return list(range(n))
    from datasets import Dataset

    return list(Dataset.from_dict({"i": list(range(n))}).shuffle(seed=recipe.train.seed).select(range(limit))["i"])


def _write_jsonl(path: Path, split: Split, indices, labels: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i in indices:
            record = {"text": split.texts[i], "label": labels[split.labels[i]]}
            if split.pairs is not None:
                record["text_pair"] = split.pairs[i]
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _fold_recipe(recipe: Recipe, train_file: Path, validation_file: Path | None, labels: list[str], epochs: int | None, run_dir: Path, is_pair: bool) -> Recipe:
    """The recipe's own settings on one fold's rows: same model, lengths, optimizer, seed, validation."""

    raw = recipe.to_dict()
    data: dict[str, Any] = {"train": str(train_file), "text": "text", "label": "label", "labels": labels}
    if is_pair:
        data["text_pair"] = "text_pair"
    if validation_file is not None:
        data["validation"] = str(validation_file)
        if recipe.data.limit.validation is not None:
            data["limit"] = {"validation": recipe.data.limit.validation}
    elif recipe.data.validation_fraction is not None:
        data["validation_fraction"] = recipe.data.validation_fraction
    raw["data"] = data
    if epochs is not None:
        raw["train"]["epochs"] = epochs
    raw["train"]["log_with"] = []
    raw["eval"]["thresholds"] = {}
    if validation_file is None and recipe.data.validation_fraction is None:
        raw["eval"]["split"] = "test"
    raw["output"]["dir"] = str(run_dir)
    return recipe_from_dict(raw, source=str(run_dir.parent / "fold.toml"), base_dir=run_dir.parent)


def out_of_fold_probabilities(
    recipe: Recipe, data: DoctorData, sample: list[int], folds: int, epochs: int | None, workdir: Path, say: Callable[[str], None]
) -> "np.ndarray":
    """Probabilities for each sampled train example from a model that never saw it: K stratified folds (seeded by
    train.seed), each an ordinary `bertctl train` on the other K-1 folds."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold


    split = data.splits["train"]
    given = np.asarray([split.labels[i] for i in sample])
    counts = np.bincount(given, minlength=len(data.labels))
    if folds > len(sample) or counts.max() < folds:
        raise DataError(f"--folds {folds} needs at least {folds} train examples of some label; {len(sample)} sampled, largest label {counts.max()}", fix="use fewer folds or more rows (data.limit.train)")
    validation = data.splits.get("validation")
    validation_file = _write_jsonl(workdir / "validation.jsonl", validation, range(len(validation)), data.labels) if validation is not None else None
    probs = np.zeros((len(sample), len(data.labels)))
    kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=recipe.train.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        parts = list(kfold.split(np.zeros(len(given)), given))
    for k, (fit, held) in enumerate(parts, start=1):
        start = time.perf_counter()
        fold_dir = workdir / f"fold-{k}"
        train_file = _write_jsonl(fold_dir / "train.jsonl", split, [sample[i] for i in fit], data.labels)
        fold = _fold_recipe(recipe, train_file, validation_file, data.labels, epochs, fold_dir / "run", split.pairs is not None)
        say(f"fold {k}/{folds}: training on {len(fit)} examples ({fold.train.epochs} epochs), scoring {len(held)}")
        with quiet_transformers():  # a fold's save_pretrained bars would bury doctor's own lines
            train(fold, output_dir=fold_dir / "run", overwrite=True, progress=False)
        classifier = load_for_inference(fold_dir / "run")
        texts = [split.texts[sample[i]] for i in held]
        pairs = [split.pairs[sample[i]] for i in held] if split.pairs is not None else None
        fold_probs, _ = classify(classifier, texts, pairs)
        order = [classifier.labels.index(label) for label in data.labels]  # the head's classes are data.labels; be sure
        probs[held] = fold_probs[:, order]
        del classifier
        shutil.rmtree(fold_dir, ignore_errors=True)  # a model, an optimizer state: gone once scored
        say(f"fold {k}/{folds}: done in {time.perf_counter() - start:.0f} s")
    return probs


def rank_label_issues(given: "np.ndarray", probs: "np.ndarray") -> list[dict[str, Any]]:
    """cleanlab's confident learning on out-of-fold probabilities: the flagged examples, most likely wrong first,
    each with the most likely other label and that label's probability."""
    import numpy as np
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    given = np.asarray(given)
    present = np.unique(given)
    # cleanlab wants labels 0..K-1 all present: score on the classes this sample has
    local = np.searchsorted(present, given)
    local_probs = probs[:, present]
    local_probs = local_probs / np.clip(local_probs.sum(axis=1, keepdims=True), 1e-12, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about small classes; the report says what it found
        ranked = find_label_issues(local, local_probs, return_indices_ranked_by="self_confidence", n_jobs=1)
        quality = get_label_quality_scores(local, local_probs, method="self_confidence")
    others = probs.copy()
    others[np.arange(len(given)), given] = -1.0
    suggested = others.argmax(axis=1)
    return [
        {"index": int(i), "given": int(given[i]), "suggested": int(suggested[i]), "confidence": round(float(probs[i, suggested[i]]), 4), "label_quality": round(float(quality[i]), 4)}
        for i in ranked
    ]


# ---------------------------------------------------------------------------------------------
# the report


@dataclass
class DoctorReport:
    recipe: str
    labels: list[str]
    splits: dict[str, dict[str, Any]]
    leaks: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    conflicts: list[dict[str, Any]]
    balance: dict[str, Any]
    length: dict[str, Any] | None
    label_issues: list[dict[str, Any]]
    label_check: dict[str, Any]
    near_threshold: float
    timings: dict[str, float]
    output_dir: str | None = None
    fix: dict[str, Any] | None = None
    empty: list[dict[str, Any]] = field(default_factory=list)  # rows without a text or label, with their lines

    @property
    def serious(self) -> bool:
        """Leakage or conflicting labels: what fails a CI gate (exit 1)."""
        return bool(self.leaks or self.conflicts)

    def summary(self) -> dict[str, Any]:
        exact = [leak for leak in self.leaks if leak["kind"] == "exact"]
        return {
            "leaks_exact": len(exact),
            "leaks_near": len(self.leaks) - len(exact),
            "leaked_rows": {kind: _leaked_rows([x for x in self.leaks if x["kind"] == kind]) for kind in ("exact", "near")},
            "duplicate_groups": len(self.duplicates),
            "duplicate_extra_rows": sum(len(d["rows"]) - 1 for d in self.duplicates),
            "conflict_groups": len(self.conflicts),
            "conflict_rows": sum(len(c["rows"]) for c in self.conflicts),
            "label_issues": len(self.label_issues),
            "labels_under_min_count": len(self.balance["under_min_count"]),
            "imbalanced_splits": self.balance["imbalanced"],
            "truncated_splits": (self.length or {}).get("truncated", []),
            "empty_rows": len(self.empty),
            "serious": self.serious,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe, "labels": self.labels, "splits": self.splits, "summary": self.summary(),
            "empty": self.empty, "leaks": self.leaks, "duplicates": self.duplicates, "conflicts": self.conflicts, "balance": self.balance,
            "length": self.length, "label_issues": self.label_issues, "label_check": self.label_check,
            "near_threshold": self.near_threshold, "timings_s": self.timings, "output_dir": self.output_dir, "fix": self.fix,
        }


def _leaked_rows(leaks: list[dict[str, Any]]) -> dict[str, int]:
    """Per 'later~earlier' split pair, how many rows of the later split have a copy in the earlier one."""
    seen: dict[str, set[tuple[str, int]]] = {}
    for leak in leaks:
        earlier, later = leak["rows"]
        seen.setdefault(f"{later['split']}~{earlier['split']}", set()).add((later["split"], later["row"]))
    return {pair: len(rows) for pair, rows in seen.items()}


def _named(data: DoctorData, findings: Findings, issues: list[dict[str, Any]], sample: list[int]) -> tuple[list, list, list, list]:
    """Replace example references by rows {split, file, line, where, row, text, [text_pair], label}."""
    wanted: dict[str, set[int]] = {}
    for item in [*findings.leaks, *findings.duplicates, *findings.conflicts]:
        for name, i in item["rows"]:
            wanted.setdefault(name, set()).add(i)
    for issue in issues:
        wanted.setdefault("train", set()).add(sample[issue["index"]])
    places = {name: _name_rows(data.splits[name], sorted(indices)) for name, indices in wanted.items()}

    def row(ref: Ref) -> dict[str, Any]:
        name, i = ref
        split = data.splits[name]
        line, where = places[name][i]
        out = {"split": name, "file": split.file, "line": line, "where": where, "row": split.rows[i], "text": split.texts[i]}
        if split.pairs is not None:
            out["text_pair"] = split.pairs[i]
        out["label"] = data.labels[split.labels[i]]
        return out

    leaks = [{**leak, "rows": [row(r) for r in leak["rows"]]} for leak in sorted(findings.leaks, key=lambda x: (x["kind"] != "exact", -x["similarity"]))]
    duplicates = [{**d, "rows": [row(r) for r in d["rows"]]} for d in findings.duplicates]
    conflicts = [{**c, "rows": [row(r) for r in c["rows"]]} for c in findings.conflicts]
    named_issues = []
    for issue in issues:
        base = row(("train", sample[issue["index"]]))
        base.pop("label")
        named_issues.append({**base, "given": data.labels[issue["given"]], "suggested": data.labels[issue["suggested"]],
                             "confidence": issue["confidence"], "label_quality": issue["label_quality"]})
    return leaks, duplicates, conflicts, named_issues


# ---------------------------------------------------------------------------------------------
# --fix: cleaned copies of the files and a recipe over them


def _fix_drops(report: DoctorReport) -> dict[tuple[str, int], dict[str, Any]]:
    """(file, record) -> what happens to it and why. A leak drops the copy in the earlier split (train before
    validation before test), so evaluation sets stay whole; a duplicate keeps its first row; a conflict drops every
    row of its group (no one knows which label is right). A suspected label error is dropped when the models
    gave its suggested label at least FIX_CONFIDENCE, and otherwise kept and listed for review. A row without a
    text or label is dropped: training would refuse it."""
    drops: dict[tuple[str, int], dict[str, Any]] = {}

    def drop(row: dict[str, Any], why: str, action: str = "dropped") -> None:
        entry = drops.setdefault((row["file"], row["row"]), {"split": row["split"], "where": row["where"], "text": row["text"], "action": action, "reasons": []})
        if action == "dropped":
            entry["action"] = action
        if why not in entry["reasons"]:
            entry["reasons"].append(why)

    for row in report.empty:
        drop(row, f"{row['why']}: training refuses it unless data.drop_empty = true")
    for leak in report.leaks:
        earlier, later = leak["rows"]
        drop(earlier, f"{leak['kind']} leak: also in {later['split']} ({later['where']})")
    for dup in report.duplicates:
        first = dup["rows"][0]
        for row in dup["rows"][1:]:
            drop(row, f"duplicate of {first['where']}")
    for conflict in report.conflicts:
        labels = ", ".join(f"{k} x{v}" for k, v in conflict["labels"].items())
        for row in conflict["rows"]:
            drop(row, f"conflicting labels ({labels})")
    for issue in report.label_issues:
        action = "dropped" if issue["confidence"] >= FIX_CONFIDENCE else "review"
        drop(issue, f"likely label error: given {issue['given']}, suggested {issue['suggested']} ({issue['confidence']:.2f})", action)
    return drops


def check_target_dir(target: Path, recipe: Recipe, flag: str, marker: str, overwrite: bool) -> None:
    """Before any work: a dir doctor writes is replaced whole, so it must not hold the originals (data files or
    the recipe), and one that exists must be empty or an earlier doctor output (its `marker` file) replaced by
    --overwrite."""
    resolved = target.resolve()
    originals = [p for p in (recipe.data_path(s) for s in SPLITS) if p is not None]
    if recipe.source != "<recipe>":
        originals.append(Path(recipe.source))
    for path in originals:
        if resolved == path.resolve() or resolved in path.resolve().parents:
            raise RunError(f"{flag} {target} holds {path}, which doctor only reads: its output goes elsewhere", fix=f"choose a new folder, e.g. {flag} {recipe.name}-doctor-out/")
    if not target.exists():
        return
    if not target.is_dir():
        raise RunError(f"{flag} {target} is a file", fix="name a folder")
    if any(target.iterdir()):
        if not (target / marker).is_file():
            raise RunError(f"{flag} {target} is not empty and holds no {marker}: it is not an earlier doctor output", fix="choose a new or empty folder")
        if not overwrite:
            raise RunError(f"{flag} {target} already holds a doctor output ({marker})", fix="add --overwrite to replace it, or choose another folder")


def _write_table(frame, path: Path) -> None:
    """A data file in the format of its original (csv, tsv, jsonl, json, parquet, txt)."""
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv"}:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".json":
        frame.to_json(path, orient="records", force_ascii=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        path.write_text("".join(f"{t}\n" for t in frame["text"]), encoding="utf-8")


def write_fix(report: DoctorReport, recipe: Recipe, fix_dir: Path) -> dict[str, Any]:
    """Cleaned copies of the recipe's data files, review.csv (every dropped row and why) and a recipe over them;
    written in a temp folder and moved into place whole. The originals are only read."""
    import csv

    import tomli_w


    drops = _fix_drops(report)
    fix_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fix_dir.name}-", dir=fix_dir.parent))
    try:
        names: dict[str, str] = {}  # original path -> cleaned file name
        files: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            path = recipe.data_path(split)
            if path is None or str(path) in names:
                continue
            name = path.name if path.name not in names.values() else f"{split}-{path.name}"
            names[str(path)] = name
            frame = read_table(path)
            gone = sorted(record for (file, record), entry in drops.items() if file == str(path) and entry["action"] == "dropped")
            _write_table(frame.drop(index=gone).reset_index(drop=True), tmp / name)
            files[name] = {"rows": len(frame), "dropped": len(gone), "kept": len(frame) - len(gone), "from": str(path)}
        with open(tmp / "review.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["action", "split", "file", "where", "row", "text", "reason"])
            for (file, record), entry in sorted(drops.items()):
                writer.writerow([entry["action"], entry["split"], file, entry["where"], record, entry["text"], "; ".join(entry["reasons"])])
        raw = recipe.to_dict()
        for split in SPLITS:
            path = recipe.data_path(split)
            if path is not None:
                raw["data"][split] = names[str(path)]
        raw["output"]["dir"] = f"{raw['output']['dir']}-fixed"
        recipe_path = tmp / f"{recipe.name}-fixed.toml"
        dropped = sum(1 for entry in drops.values() if entry["action"] == "dropped")
        header = f"# bertctl train {fix_dir / recipe_path.name}\n# cleaned by bertctl doctor from {recipe.source}: {dropped} rows dropped, {len(drops) - dropped} kept for review (review.csv)\n"
        recipe_path.write_text(header + tomli_w.dumps(raw), encoding="utf-8")
        replace_dir(tmp, fix_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"dir": str(fix_dir), "recipe": str(fix_dir / recipe_path.name), "files": files, "dropped": dropped, "to_review": len(drops) - dropped,
            "drop_confidence": FIX_CONFIDENCE, "review": str(fix_dir / "review.csv")}


# ---------------------------------------------------------------------------------------------
# the whole check


def default_output_dir(recipe: Recipe) -> Path:
    return Path(f"{recipe.run_dir}-doctor")


def diagnose(
    recipe: Recipe,
    *,
    folds: int = 3,
    epochs: int | None = None,
    near_threshold: float = NEAR_THRESHOLD,
    min_count: int = MIN_COUNT,
    length: bool = True,
    say: Callable[[str], None] | None = None,
) -> DoctorReport:
    """Run every check on a recipe's data; nothing is written (see `doctor` for the files)."""
    say = say or (lambda text: print(text, file=sys.stderr))
    if folds == 1 or folds < 0:
        raise BertctlError(f"--folds {folds}: out-of-fold probabilities need at least 2 folds", fix="use --folds 3 (or 0 to skip the label-error check)")
    if not 0.0 < near_threshold <= 1.0:
        raise BertctlError(f"--near-threshold {near_threshold} is not a similarity", fix="use a Jaccard similarity in (0, 1], e.g. --near-threshold 0.8")
    require_extra(folds)
    check_single_label(recipe)
    import numpy as np

    timings: dict[str, float] = {}
    start = time.perf_counter()
    data = load_files(recipe)
    keys = {name: _keys(split) for name, split in data.splits.items()}
    findings = Findings()
    find_exact(data.splits, keys, data.labels, findings)
    timings["load_and_exact_s"] = round(time.perf_counter() - start, 2)
    timings["near_s"] = round(find_near(keys, near_threshold, findings), 2)
    balance = check_balance(data.splits, data.labels, min_count)
    lengths = None
    if length:
        start = time.perf_counter()
        lengths = check_length(recipe)
        timings["length_s"] = round(time.perf_counter() - start, 2)

    issues: list[dict[str, Any]] = []
    sample: list[int] = []
    label_check: dict[str, Any] = {"folds": folds, "skipped": "--folds 0"} if not folds else {}
    if folds:
        start = time.perf_counter()
        sample = train_sample(recipe, len(data.splits["train"]))
        with tempfile.TemporaryDirectory(prefix="bertctl-doctor-") as workdir:
            probs = out_of_fold_probabilities(recipe, data, sample, folds, epochs, Path(workdir), say)
        given = np.asarray([data.splits["train"].labels[i] for i in sample])
        issues = rank_label_issues(given, probs)
        timings["label_check_s"] = round(time.perf_counter() - start, 2)
        label_check = {
            "folds": folds, "epochs": epochs or recipe.train.epochs, "examples": len(sample), "flagged": len(issues),
            "out_of_fold_accuracy": round(float((probs.argmax(axis=1) == given).mean()), 4),
            "method": "cleanlab.filter.find_label_issues (prune_by_noise_rate), ranked by self_confidence",
        }

    leaks, duplicates, conflicts, named_issues = _named(data, findings, issues, sample)
    empty = _named_empty(data, recipe)
    splits = {name: {"file": s.file, "rows": len(s)} for name, s in data.splits.items()}
    if data.carved:
        splits["train"]["note"] = "validation is carved from this file: its duplicates leak into validation"
    return DoctorReport(
        recipe=recipe.source, labels=data.labels, splits=splits, leaks=leaks, duplicates=duplicates, conflicts=conflicts,
        balance=balance, length=lengths, label_issues=named_issues, label_check=label_check, near_threshold=near_threshold,
        timings=timings, empty=empty,
    )


def doctor(
    recipe: Recipe,
    *,
    output: Path | None = None,
    overwrite: bool = False,
    fix: Path | None = None,
    **options: Any,
) -> DoctorReport:
    """`bertctl doctor`: diagnose, then write doctor.json, doctor.html and its PNGs into the doctor dir (atomically:
    a temp dir moved into place), and with `fix` the cleaned copies."""

    output = Path(output) if output is not None else default_output_dir(recipe)
    check_target_dir(output, recipe, "--output", "doctor.json", overwrite)  # usage errors before any work
    if fix is not None:
        if recipe.uses_hub_dataset:
            raise BertctlError("--fix writes cleaned copies of data files, and a hub dataset has none here", fix="export the splits to csv/jsonl files and point data.train/validation/test at them")
        if Path(fix).resolve() == output.resolve():
            raise BertctlError(f"--fix and --output are the same folder ({fix})", fix="give the cleaned copies their own folder")
        check_target_dir(Path(fix), recipe, "--fix", "review.csv", overwrite)
    report = diagnose(recipe, **options)
    report.output_dir = str(output)
    with writing("the doctor report", output):
        if fix is not None:
            report.fix = write_fix(report, recipe, Path(fix))
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
        try:
            atomic_write_json(tmp / "doctor.json", report.to_dict())
            write_html(report, tmp)
            replace_dir(tmp, output)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return report
