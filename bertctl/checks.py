"""Behavioural tests (CheckList, Ribeiro et al. 2020) for `bertctl eval --checks FILE`: load, validate, run.

    suite = load_checks(Path("recipes/checks/agnews.toml"))     # TOML and schema errors: ChecksError, exit 2
    check_against_model(suite, classifier)                       # unknown labels, keys that don't fit the problem type
    outcomes = run_checks(suite, classifier, eval_texts)         # one CheckOutcome per test: failure rate, examples

A checks file holds named tests, each with a `max_fail_rate`:

    seed = 0                                   # typos, whitespace, swaps and `sample` draw from it

    [tests.sports_results]                     # MFT: these texts must get this answer
    kind = "mft"
    label = "Sports"                           # multi-label: labels = ["a", "b"]; regression: range = [lo, hi]
    texts = ["Late goal wins the cup", "..."]
    examples = [{ text = "Stocks fell", label = "Business" }]   # texts with an answer of their own
    max_fail_rate = 0.1

    [tests.typos]                              # INV: a perturbation must not change the answer
    kind = "inv"
    perturb = "typos"                          # typos lowercase uppercase punctuation whitespace names numbers replace
    sample = 200                               # texts drawn (seeded) from the eval data, and/or texts = [...]
    max_fail_rate = 0.05                       # regression: tolerance = 0.3 (how far the value may move)

    [tests.earnings]                           # DIR: adding a phrase must move a label's score up (or down)
    kind = "dir"
    suffix = ", the company said in its quarterly earnings report"   # or prefix; a list tries each
    label = "Business"                         # regression: no label, the value moves
    direction = "up"
    texts = ["..."]
    max_fail_rate = 0.2

Predictions go through bertctl.inference.predict_texts, so a check sees exactly what `bertctl predict` says.
"""

from __future__ import annotations

import random
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bertctl.errors import ChecksError, Problem
from bertctl.inference import DEFAULT_BATCH_SIZE, predict_texts
from bertctl.problems import MULTI_LABEL, REGRESSION
from bertctl.recipe import did_you_mean

KINDS = {"mft": "minimum functionality", "inv": "invariance", "dir": "directional expectation"}
PERTURBATIONS = ("typos", "lowercase", "uppercase", "punctuation", "whitespace", "names", "numbers", "replace")
EXAMPLES_KEPT = 3  # failing examples a report shows per test

COMMON_KEYS = {"kind", "description", "max_fail_rate", "texts", "sample"}
KEYS = {
    "mft": COMMON_KEYS - {"sample"} | {"label", "labels", "range", "examples"},
    "inv": COMMON_KEYS | {"perturb", "names", "replace", "tolerance"},
    "dir": COMMON_KEYS | {"prefix", "suffix", "label", "direction", "tolerance"},
}

# person names for perturb = "names" (a text's names are swapped among these, or among the test's own `names`)
NAMES = (
    "John", "Mary", "James", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David", "Elizabeth", "William",
    "Susan", "Richard", "Jessica", "Thomas", "Sarah", "Charles", "Karen", "Daniel", "Nancy", "Matthew", "Lisa",
    "Anthony", "Emily", "Mark", "Maria", "Paul", "Anna", "Peter", "Laura", "George", "Helen", "Ahmed", "Fatima",
    "Wei", "Mei", "Hiroshi", "Yuki", "Carlos", "Sofia", "Ivan", "Olga", "Raj", "Priya", "Kwame", "Amara",
)


@dataclass
class Expect:
    """What an MFT text must get: a label (single-label), a label set (multi-label) or a range (regression)."""

    label: str | None = None
    labels: list[str] | None = None
    range: tuple[float, float] | None = None


@dataclass
class CheckTest:
    name: str
    kind: str  # mft | inv | dir
    max_fail_rate: float
    line: int  # where [tests.NAME] starts in the file
    description: str = ""
    texts: list[str] = field(default_factory=list)
    sample: int | None = None
    label: str | None = None  # mft single-label expectation; dir: whose score
    labels: list[str] | None = None  # mft multi-label expectation
    range: tuple[float, float] | None = None  # mft regression expectation
    examples: list[tuple[str, Expect]] = field(default_factory=list)  # mft: texts with expectations of their own
    perturb: str | None = None
    names: list[str] | None = None
    replace: dict[str, list[str]] | None = None
    tolerance: float | None = None
    phrases: list[str] = field(default_factory=list)  # dir: what is added
    where: str = "suffix"  # dir: prefix | suffix
    direction: str | None = None  # dir: up | down

    @property
    def title(self) -> str:
        if self.kind == "inv":
            return f"INV {self.perturb}"
        if self.kind == "dir":
            return f"DIR {self.where} {self.direction}"
        return "MFT"


@dataclass
class CheckSuite:
    path: Path
    seed: int
    tests: list[CheckTest]


@dataclass
class CheckExample:
    text: str
    changed: str | None  # the perturbed or extended text (INV, DIR)
    expected: str
    got: str

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "changed": self.changed, "expected": self.expected, "got": self.got}


@dataclass
class CheckOutcome:
    """One test's result: how many of its cases failed, and the first few failures."""

    name: str
    kind: str
    title: str
    description: str
    max_fail_rate: float
    tested: int  # cases run
    failures: int
    skipped: int = 0  # texts the perturbation leaves unchanged (no name, no number, nothing to replace)
    examples: list[CheckExample] = field(default_factory=list)

    @property
    def fail_rate(self) -> float:
        return self.failures / self.tested if self.tested else 1.0

    @property
    def passed(self) -> bool:
        # a test that tested nothing proves nothing: it fails rather than passing silently
        return self.tested > 0 and self.fail_rate <= self.max_fail_rate

    def describe(self) -> str:
        if not self.tested:
            return f"check {self.name} ({self.title}): nothing tested: the perturbation changed none of its {self.skipped} texts"
        relation = "<=" if self.passed else ">"
        line = f"check {self.name} ({self.title}): {self.failures} of {self.tested} failed, {100 * self.fail_rate:.1f}% {relation} max_fail_rate {100 * self.max_fail_rate:g}%"
        if not self.passed and self.examples:
            e = self.examples[0]
            line += f"; e.g. {_short(e.text)}" + (f" -> {_short(e.changed)}" if e.changed is not None else "") + f": expected {e.expected}, got {e.got}"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "test": self.title, "description": self.description, "tested": self.tested, "failures": self.failures,
            "skipped": self.skipped, "fail_rate": self.fail_rate, "max_fail_rate": self.max_fail_rate, "passed": self.passed,
            "examples": [e.to_dict() for e in self.examples],
        }


def _short(text: str, width: int = 70) -> str:
    flat = " ".join(str(text).split())
    return repr(flat if len(flat) <= width else flat[: width - 1] + "…")


# ---------------------------------------------------------------------------------------------
# loading and validating


def load_checks(path: Path) -> CheckSuite:
    """Read and validate a checks file on its own (no model needed): every problem at once, each with its line."""
    path = Path(path).expanduser()
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ChecksError(source, [Problem("(file)", "does not exist", "pass the path of a checks TOML file, e.g. --checks recipes/checks/agnews.toml")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ChecksError(source, [Problem("(file)", f"cannot be read as UTF-8 text ({exc})", "save the checks file as UTF-8 TOML")]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        lines = text.splitlines()
        shown = lines[int(match.group(1)) - 1].strip() if match and 1 <= int(match.group(1)) <= len(lines) else ""
        raise ChecksError(source, [Problem("(toml)", f"{exc}" + (f": {shown[:80]!r}" if shown else ""), "fix the TOML syntax at that line")]) from None
    problems: list[Problem] = []
    for key in raw:
        if key not in ("seed", "tests"):
            problems.append(Problem(key, f"unknown key (line {_top_line(text, key)})", did_you_mean(key, ["seed", "tests"], "the file holds seed = N and [tests.NAME] tables")))
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(Problem("seed", f"must be an integer, got {seed!r}", "e.g. seed = 0"))
        seed = 0
    tests_raw = raw.get("tests")
    if not isinstance(tests_raw, dict) or not tests_raw:
        problems.append(Problem("tests", "no tests: the file needs at least one [tests.NAME] table", "add e.g. [tests.sports] kind = \"mft\" ..."))
        tests_raw = {}
    tests = []
    for name, spec in tests_raw.items():
        test = _parse_test(name, spec, text, problems)
        if test is not None:
            tests.append(test)
    if problems:
        raise ChecksError(source, problems)
    return CheckSuite(path, seed, tests)


def _top_line(text: str, key: str) -> int | None:
    """The line of a top-level `key =` (or [key] table)."""
    pattern = re.compile(r"^\s*(\[\s*)?\"?" + re.escape(key) + r"\"?\s*[=\].]")
    return next((i + 1 for i, line in enumerate(text.splitlines()) if pattern.match(line)), None)


def _line(text: str, name: str, key: str | None = None) -> int | None:
    """The line of [tests.NAME] (or of `key =` inside it), so a problem points into the file."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\s*tests\s*\.\s*[\"']?" + re.escape(name) + r"[\"']?\s*\]")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None or key is None:
        return None if start is None else start + 1
    for i in range(start + 1, len(lines)):
        if lines[i].lstrip().startswith("["):
            break
        if re.match(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=", lines[i]):
            return i + 1
    return start + 1


def _parse_test(name: str, spec: Any, text: str, problems: list[Problem]) -> CheckTest | None:
    at = f"tests.{name}"
    line = _line(text, name, None) or 0

    def problem(key: str | None, message: str, fix: str | None = None) -> None:
        where = at if key is None else f"{at}.{key}"
        number = _line(text, name, key) if key is not None else line
        problems.append(Problem(where, message + (f" (line {number})" if number else ""), fix))

    if not isinstance(spec, dict):
        problem(None, f"must be a table ([{at}]), got {spec!r}", f"write [{at}] with kind, max_fail_rate and texts under it")
        return None
    kind = spec.get("kind")
    if kind not in KINDS:
        problem("kind", f"must be one of mft, inv, dir, got {kind!r}" if kind is not None else "missing: which kind of test (mft, inv or dir)",
                did_you_mean(str(kind), list(KINDS), 'kind = "mft" (expected answers), "inv" (a perturbation changes nothing) or "dir" (a phrase moves a score)'))
        return None
    for key in spec:
        if key not in KEYS[kind]:
            known = sorted(KEYS[kind])
            problem(key, f"unknown key for a {kind} test", did_you_mean(key, known, f"keys of a {kind} test: {', '.join(known)}"))
    test = CheckTest(name=name, kind=kind, max_fail_rate=0.0, line=line)
    rate = spec.get("max_fail_rate")
    if rate is None:
        problem(None, "has no max_fail_rate: the share of cases allowed to fail", "add e.g. max_fail_rate = 0.1 (0 allows no failure)")
    elif not _number(rate) or not 0 <= rate <= 1:
        problem("max_fail_rate", f"must be a number from 0 to 1, got {rate!r}", "e.g. max_fail_rate = 0.1 (10% of the cases may fail)")
    else:
        test.max_fail_rate = float(rate)
    description = spec.get("description", "")
    if not isinstance(description, str):
        problem("description", f"must be a string, got {description!r}")
    test.description = description if isinstance(description, str) else ""
    texts = spec.get("texts", [])
    if not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
        problem("texts", "must be a list of non-empty strings", 'e.g. texts = ["Late goal wins the cup", "Stocks fell"]')
    else:
        test.texts = list(texts)
    sample = spec.get("sample")
    if sample is not None and (not isinstance(sample, int) or isinstance(sample, bool) or sample < 1):
        problem("sample", f"must be a whole number >= 1, got {sample!r}", "e.g. sample = 200 (texts drawn from the eval data)")
    else:
        test.sample = sample
    if not test.texts and test.sample is None and isinstance(texts, list) and not (kind == "mft" and spec.get("examples")):
        fix = 'add texts = ["..."]' + (", or sample = N (texts drawn from the eval data)" if kind != "mft" else ', or examples = [{ text = "...", label = "..." }]')
        problem(None, "has no texts to test", fix)
    if "tolerance" in spec:
        tol = spec["tolerance"]
        if not _number(tol) or tol < 0:
            problem("tolerance", f"must be a number >= 0, got {tol!r}", "e.g. tolerance = 0.1")
        else:
            test.tolerance = float(tol)
    if kind == "mft":
        given = [k for k in ("label", "labels", "range") if k in spec]
        if len(given) > 1 or (test.texts and not given):
            problem(None, "needs exactly one expectation for its texts: label (single-label), labels (multi-label) or range (regression)" + (f", got {', '.join(given)}" if given else ""),
                    'e.g. label = "Sports", labels = ["toxic"], range = [3.5, 5.0]')
        _expectation(spec, test, problem)
        _examples(spec.get("examples"), test, problem)
    elif kind == "inv":
        perturb = spec.get("perturb")
        if perturb not in PERTURBATIONS:
            problem("perturb", f"unknown perturbation {perturb!r}" if perturb is not None else "missing: which perturbation",
                    did_you_mean(str(perturb), list(PERTURBATIONS), f"use one of: {', '.join(PERTURBATIONS)}"))
        else:
            test.perturb = perturb
        if "names" in spec:
            names = spec["names"]
            if perturb != "names":
                problem("names", 'is only for perturb = "names"', "drop it, or set perturb = \"names\"")
            elif not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) and n.strip() for n in names):
                problem("names", "must be a list of at least two names", 'e.g. names = ["Alice", "Bob", "Chen"]')
            else:
                test.names = list(names)
        if perturb == "replace" or "replace" in spec:
            table = spec.get("replace")
            if perturb != "replace":
                problem("replace", 'is only for perturb = "replace"', "drop it, or set perturb = \"replace\"")
            elif not isinstance(table, dict) or not table:
                problem("replace" if "replace" in spec else None, 'perturb = "replace" needs a replace table of from -> to lists',
                        'e.g. replace = { "U.S." = ["America", "the United States"] }')
            else:
                parsed = {}
                for source, targets in table.items():
                    targets = [targets] if isinstance(targets, str) else targets
                    if not source.strip() or not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
                        problem("replace", f"entry {source!r} must map to a string or a list of strings", 'e.g. replace = { "U.S." = ["America"] }')
                    else:
                        parsed[source] = list(targets)
                test.replace = parsed
    else:
        phrases = [k for k in ("prefix", "suffix") if k in spec]
        if len(phrases) != 1:
            problem(None, "needs exactly one of prefix or suffix: the phrase added to each text", 'e.g. suffix = ", the company said in its earnings report"')
        else:
            test.where = phrases[0]
            value = spec[test.where]
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                problem(test.where, "must be a non-empty string or a list of them")
            else:
                test.phrases = list(value)
        direction = spec.get("direction")
        if direction not in ("up", "down"):
            problem("direction" if direction is not None else None, f"direction must be up or down, got {direction!r}" if direction is not None else "has no direction",
                    'direction = "up" (the score must not fall) or "down" (it must not rise)')
        else:
            test.direction = direction
        if "label" in spec:
            if not isinstance(spec["label"], str):
                problem("label", f"must be a label name, got {spec['label']!r}")
            else:
                test.label = spec["label"]
    return test


def _examples(value: Any, test: CheckTest, problem: Callable) -> None:
    """MFT `examples = [{ text = "...", label = "..." }, ...]`: texts that each carry their own expectation."""
    if value is None:
        return
    example = 'e.g. examples = [{ text = "Late goal wins the cup", label = "Sports" }]'
    if not isinstance(value, list) or not value:
        problem("examples", "must be a list of { text = ..., label = ... } tables", example)
        return
    for k, spec in enumerate(value, start=1):
        if not isinstance(spec, dict) or not isinstance(spec.get("text"), str) or not spec["text"].strip():
            problem("examples", f"example {k} needs a non-empty text = \"...\"", example)
            continue
        for key in spec:
            if key not in ("text", "label", "labels", "range"):
                problem("examples", f"example {k}: unknown key {key!r}", did_you_mean(key, ["text", "label", "labels", "range"], "an example has text and one of label, labels, range"))
        given = [key for key in ("label", "labels", "range") if key in spec]
        if len(given) != 1:
            problem("examples", f"example {k} needs exactly one of label, labels or range" + (f", got {', '.join(given)}" if given else ""), example)
        expect = Expect()
        _expectation(spec, expect, lambda key, message, fix=None, k=k: problem("examples", f"example {k}: {key} {message}", fix))
        test.examples.append((spec["text"], expect))


def _expectation(spec: dict, test: "CheckTest | Expect", problem: Callable) -> None:
    if "label" in spec:
        if not isinstance(spec["label"], str):
            problem("label", f"must be a label name, got {spec['label']!r}", 'e.g. label = "Sports"')
        else:
            test.label = spec["label"]
    if "labels" in spec:
        value = spec["labels"]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problem("labels", "must be a list of label names (empty: no label applies)", 'e.g. labels = ["toxic", "insult"]')
        else:
            test.labels = list(value)
    if "range" in spec:
        value = spec["range"]
        if not isinstance(value, list) or len(value) != 2 or not all(_number(v) for v in value) or value[0] > value[1]:
            problem("range", f"must be [low, high] with low <= high, got {value!r}", "e.g. range = [3.5, 5.0]")
        else:
            test.range = (float(value[0]), float(value[1]))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def check_against_model(suite: CheckSuite, classifier: Any) -> None:
    """What only the model can say: the labels exist, and each test's expectation fits its problem type."""
    problem_type, labels = classifier.problem, list(classifier.labels)
    problems: list[Problem] = []

    def add(test: CheckTest, key: str, message: str, fix: str | None = None) -> None:
        problems.append(Problem(f"tests.{test.name}.{key}", f"{message} (test at line {test.line})", fix))

    def known(test: CheckTest, key: str, name: str) -> None:
        if name not in labels:
            add(test, key, f"unknown label {name!r}: the model's labels are {', '.join(labels)}", did_you_mean(name, labels, f"use one of: {', '.join(labels)}"))

    regression, multi = problem_type == REGRESSION, problem_type == MULTI_LABEL
    for test in suite.tests:
        if test.kind == "mft":
            targets = ([("", test)] if test.texts else []) + [(f"examples[{k}].", e) for k, (_, e) in enumerate(test.examples, start=1)]
            for at, expect in targets:
                if regression and expect.range is None:
                    add(test, at + "range", f"a {problem_type.title} model predicts a value: expect range = [low, high]", "replace label/labels with range = [low, high]")
                elif multi and expect.labels is None:
                    add(test, at + "labels", f"a {problem_type.title} model predicts a set of labels: expect labels = [...]", f'e.g. labels = ["{labels[0]}"]')
                elif not regression and not multi and expect.label is None:
                    add(test, at + "label", f"a {problem_type.title} model predicts one label: expect label = \"...\"", f'e.g. label = "{labels[0]}"')
                for name in ([expect.label] if expect.label is not None and not regression and not multi else []) + (expect.labels or [] if multi else []):
                    known(test, at + ("labels" if multi else "label"), name)
        if test.kind == "dir":
            if regression and test.label is not None:
                add(test, "label", "a regression model has one value, which DIR moves: there is no label to name", "drop label")
            elif not regression and test.label is None:
                add(test, "label", "DIR needs the label whose score must move", f'e.g. label = "{labels[0]}"')
            elif test.label is not None:
                known(test, "label", test.label)
        if test.kind == "inv":
            if regression and test.tolerance is None:
                add(test, "tolerance", "INV on a regression model needs how far the value may move", "e.g. tolerance = 0.25 (in the label's units)")
            elif not regression and test.tolerance is not None:
                add(test, "tolerance", f"INV on a {problem_type.title} model compares labels, not values", "drop tolerance")
    if problems:
        raise ChecksError(str(suite.path), problems)


# ---------------------------------------------------------------------------------------------
# perturbations: each returns the variants of a text (none when it does not apply)

_WORD = re.compile(r"[A-Za-z]{4,}")
_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w])")


def _typos(text: str, rng: random.Random, test: CheckTest) -> list[str]:
    """Swap two neighbouring letters inside one word of 4+ letters (the first and last letters stay)."""
    words = list(_WORD.finditer(text))
    if not words:
        return []
    word = rng.choice(words)
    i = rng.randrange(word.start() + 1, word.end() - 2)
    if text[i] == text[i + 1]:
        i = next((j for j in range(word.start() + 1, word.end() - 2) if text[j] != text[j + 1]), None)
        if i is None:
            return []
    return [text[:i] + text[i + 1] + text[i] + text[i + 2 :]]


def _punctuation(text: str, rng: random.Random, test: CheckTest) -> list[str]:
    """Every punctuation mark dropped."""
    return [" ".join(re.sub(r"[^\w\s]", "", text).split())]


def _whitespace(text: str, rng: random.Random, test: CheckTest) -> list[str]:
    """A space doubled at one seeded place, and a trailing space."""
    spaces = [m.start() for m in re.finditer(" ", text)]
    if not spaces:
        return [text + " "]
    i = rng.choice(spaces)
    return [text[:i] + "  " + text[i + 1 :] + " "]


def _names(text: str, rng: random.Random, test: CheckTest) -> list[str]:
    """Each person name the list knows, replaced by another from the list (the same one throughout the text)."""
    pool = test.names or list(NAMES)
    found = [n for n in dict.fromkeys(re.findall(r"\b[A-Z][a-z]+\b", text)) if n in pool]
    if not found:
        return []
    # one regex pass, so a name swapped in is never swapped again; two names never become the same one
    swap: dict[str, str] = {}
    for name in found:
        choices = [n for n in pool if n != name and n not in swap.values()]
        if not choices:
            return []
        swap[name] = rng.choice(choices)
    return [re.sub(r"\b(" + "|".join(re.escape(n) for n in found) + r")\b", lambda m: swap[m.group()], text)]


def _numbers(text: str, rng: random.Random, test: CheckTest) -> list[str]:
    """Each whole number replaced by another of as many digits."""
    if not _NUMBER.search(text):
        return []

    def swap(match: re.Match) -> str:
        digits = len(match.group())
        low = 0 if digits == 1 else 10 ** (digits - 1)
        value = int(match.group())
        choices = [v for v in (rng.randrange(low, 10**digits) for _ in range(5)) if v != value]
        return str(choices[0] if choices else (value + 1) % 10**digits)

    return [_NUMBER.sub(swap, text)]


def _replace(text: str, rng: random.Random, test: CheckTest) -> list[str]:
    """One variant per (from, to) pair whose `from` occurs in the text as a whole word."""
    out = []
    for source, targets in (test.replace or {}).items():
        pattern = re.compile(rf"(?<!\w){re.escape(source)}(?!\w)")
        if pattern.search(text):
            out += [pattern.sub(lambda _m, t=target: t, text) for target in targets]
    return out


PERTURB: dict[str, Callable[[str, random.Random, CheckTest], list[str]]] = {
    "typos": _typos,
    "lowercase": lambda text, rng, test: [text.lower()],
    "uppercase": lambda text, rng, test: [text.upper()],
    "punctuation": _punctuation,
    "whitespace": _whitespace,
    "names": _names,
    "numbers": _numbers,
    "replace": _replace,
}


def perturb(test: CheckTest, text: str, seed: int, index: int) -> list[str]:
    """The variants of one text under the test's perturbation; seeded by the file's seed, the test and the text's
    position, so a test's cases stay the same when other tests are added."""
    rng = random.Random(f"{seed}/{test.name}/{index}")
    return [v for v in dict.fromkeys(PERTURB[test.perturb](text, rng, test)) if v != text and v.strip()]


def case_texts(test: CheckTest, seed: int, data_texts: Sequence[str]) -> list[str]:
    """The test's own texts, then `sample` texts drawn (seeded) from the eval data, in data order."""
    texts = list(test.texts)
    if test.sample is not None:
        pool = [t for t in data_texts if isinstance(t, str) and t.strip()]
        picked = sorted(random.Random(f"{seed}/{test.name}/sample").sample(range(len(pool)), min(test.sample, len(pool))))
        texts += [pool[i] for i in picked]
    return texts


# ---------------------------------------------------------------------------------------------
# running


def run_checks(suite: CheckSuite, classifier: Any, data_texts: Sequence[str] = (), *, batch_size: int | None = None) -> list[CheckOutcome]:
    """Every test of the suite on the model: all texts (originals and variants) predicted in one predict_texts
    call, so each is scored once, in the same batched pass `bertctl predict` uses."""
    plans = []  # (test, [(text, [variants])], skipped)
    for test in suite.tests:
        cases, skipped = [], 0
        for i, text in enumerate(case_texts(test, suite.seed, data_texts)):
            if test.kind == "mft":
                cases.append((text, [], test))  # the test's own label/labels/range
                continue
            if test.kind == "inv":
                variants = perturb(test, text, suite.seed, i)
            else:
                variants = [f"{p}{text}" if test.where == "prefix" else f"{text}{p}" for p in test.phrases]
            if variants:
                cases.append((text, variants, test))
            else:
                skipped += 1
        cases += [(text, [], expect) for text, expect in test.examples]
        plans.append((test, cases, skipped))
    unique = list(dict.fromkeys(t for _, cases, _ in plans for text, variants, _ in cases for t in (text, *variants)))
    predicted = {}
    if unique:
        result = predict_texts(classifier, unique, batch_size=batch_size or DEFAULT_BATCH_SIZE)
        predicted = dict(zip(unique, result.predictions))
    problem = classifier.problem
    return [_outcome(test, cases, skipped, predicted, problem) for test, cases, skipped in plans]


def _answer(prediction: Any, problem: Any) -> Any:
    if problem == REGRESSION:
        return prediction.value
    if problem == MULTI_LABEL:
        return frozenset(prediction.labels or [])
    return prediction.label


def _shown(answer: Any) -> str:
    if isinstance(answer, frozenset):
        return "{" + ", ".join(sorted(answer)) + "}"
    if isinstance(answer, float):
        return f"{answer:.4g}"
    return str(answer)


def _score(prediction: Any, test: CheckTest, problem: Any) -> float:
    return float(prediction.value) if problem == REGRESSION else float(prediction.scores[test.label])


def _outcome(test: CheckTest, cases: list, skipped: int, predicted: dict, problem: Any) -> CheckOutcome:
    failures, examples = 0, []
    for text, variants, expect in cases:
        base = predicted[text]
        failed: CheckExample | None = None
        if test.kind == "mft":
            got = _answer(base, problem)
            if problem == REGRESSION:
                ok = expect.range[0] <= got <= expect.range[1]
                expected = f"in [{expect.range[0]:g}, {expect.range[1]:g}]"
            elif problem == MULTI_LABEL:
                ok, expected = got == frozenset(expect.labels or []), _shown(frozenset(expect.labels or []))
            else:
                ok, expected = got == expect.label, str(expect.label)
            if not ok:
                failed = CheckExample(text, None, expected, _shown(got))
        elif test.kind == "inv":
            before = _answer(base, problem)
            for variant in variants:
                after = _answer(predicted[variant], problem)
                moved = abs(after - before) > test.tolerance if problem == REGRESSION else after != before
                if moved:
                    expected = f"{before:.4g} ± {test.tolerance:g}" if problem == REGRESSION else _shown(before)
                    failed = CheckExample(text, variant, expected, _shown(after))
                    break
        else:
            before = _score(base, test, problem)
            allowed = test.tolerance or 0.0
            what = "value" if problem == REGRESSION else f"{test.label} score"
            for variant in variants:
                delta = _score(predicted[variant], test, problem) - before
                if (delta < -allowed) if test.direction == "up" else (delta > allowed):
                    failed = CheckExample(text, variant, f"{what} {'up' if test.direction == 'up' else 'down'} from {before:.4f}", f"{before + delta:.4f} ({delta:+.4f})")
                    break
        if failed is not None:
            failures += 1
            if len(examples) < EXAMPLES_KEPT:
                examples.append(failed)
    return CheckOutcome(test.name, test.kind, test.title, test.description, test.max_fail_rate, len(cases), failures, skipped, examples)
