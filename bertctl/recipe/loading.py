"""Loading a recipe: read the file, apply overrides, validate against the schema, then the rules that span keys.

    recipe = load_recipe("recipes/agnews.toml", ["train.epochs=1"])    # a Recipe, or one RecipeError with every problem
    parse_override("train.learning_rate=2e-5")                         # (["train", "learning_rate"], 2e-5): values are TOML

pydantic checks types, bounds, choices and unknown keys (schema.py declares them); this module turns its errors into
the rows users read, one per key: the key, the bad value, what was expected and the fix. Then the rules that span
keys (files, keys that need or exclude each other, keys only some problem types have, [sweep.space] entries, whose
values follow the keys they name) each add a Problem rather than stopping, so every problem is reported at once.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError

from bertctl.errors import Problem, RecipeError
from bertctl.problems import MULTI_LABEL, REGRESSION
from bertctl.recipe import DATA_SUFFIXES, DEFAULT_METRIC_FOR_BEST, DEFAULT_METRICS, METRICS, PROBLEM_METRICS, SPLITS, did_you_mean, label_columns, suggest, threshold_problem
from bertctl.recipe.schema import Recipe, RecipeFile, as_toml, choices, describe_schema, is_section, members, schema_field, type_name


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file; raises RecipeError listing every problem."""
    path = Path(path)
    source = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(source, [Problem("(file)", "not found", "check the path, e.g. bertctl train recipes/agnews.toml")]) from None
    except IsADirectoryError:
        raise RecipeError(source, [Problem("(file)", "is a directory", "name a .toml recipe file in it")]) from None
    except OSError as exc:
        raise RecipeError(source, [Problem("(file)", f"cannot be read: {exc.strerror}", "check its permissions")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecipeError(
            source, [Problem("(file)", f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})", "save the recipe as UTF-8")]
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        fix = "fix the TOML syntax at that line"
        if path.suffix.lower() in DATA_SUFFIXES:
            fix = f"this looks like a data file; pass the .toml recipe that names it ({fix})"
        raise RecipeError(source, [Problem("(toml)", _toml_error_message(exc, text), fix)]) from None
    except RecursionError:
        raise RecipeError(source, [Problem("(toml)", "nested too deeply to read", "flatten the nested arrays/tables")]) from None
    problems: list[Problem] = []
    applied = _apply_overrides(raw, overrides or [], problems)
    built = _validate(raw, source, path.parent, problems)
    if problems:
        raise RecipeError(source, _mark_overridden(problems, applied))
    built.overrides = list(overrides or [])
    return built


def recipe_from_dict(raw: dict[str, Any], *, source: str = "<recipe>", base_dir: str | Path = ".") -> Recipe:
    problems: list[Problem] = []
    built = _validate(raw, source, base_dir, problems)
    if problems:
        raise RecipeError(source, problems)
    return built


def _toml_error_message(exc: tomllib.TOMLDecodeError, text: str) -> str:
    """tomllib's message plus the offending line, so the user sees what the parser saw."""
    match = re.search(r"line (\d+)", str(exc))
    lines = text.splitlines()
    if match and 1 <= int(match.group(1)) <= len(lines):
        shown = lines[int(match.group(1)) - 1].strip()
        if shown:
            return f"{exc}: {shown[:80]!r}"
    return str(exc)


# ---------------------------------------------------------------------------------------------
# overrides: dotted keys on the command line (train.epochs=1), typed like the file and checked like it


UNSET = object()  # `~key`: drop the key, so it takes its default (Hydra's spelling)


def _parse_override(text: str) -> tuple[list[str], Any] | Problem:
    if text.startswith("~") and "=" not in text:
        parts = [p.strip() for p in text[1:].split(".")]
        if not text[1:].strip() or any(not p for p in parts):
            return Problem(text, f"bad key {text[1:]!r}", "write ~ and a dotted key, e.g. ~data.test")
        return parts, UNSET
    if "=" not in text:
        return Problem(text, "is not an override (no '=')", "write key=value, e.g. train.epochs=1")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = [p.strip() for p in key.split(".")]
    if not key or any(not p for p in parts):
        return Problem(text, f"bad key {key!r}", "write dotted keys like train.epochs=1")
    return parts, _override_value(raw)


def _override_value(raw: str) -> Any:
    """The TOML value `raw` spells (1, 2e-5, true, "x", [..]), else the bare word itself."""
    if "\n" in raw or "\r" in raw:
        return raw  # TOML would read the next line as more keys; keep it as text
    if not raw.strip():
        return ""
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except (tomllib.TOMLDecodeError, RecursionError):
        return raw.strip()  # bare words such as model.name=bert-base-uncased
    if list(parsed) != ["v"]:
        return raw.strip()
    return parsed["v"]


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.epochs=1' -> (['train', 'epochs'], 1). Values are TOML; bare words are strings."""
    parsed = _parse_override(text)
    if isinstance(parsed, Problem):
        raise RecipeError("command line", [parsed])
    return parsed


def _apply_overrides(raw: dict[str, Any], overrides: list[str], problems: list[Problem]) -> dict[str, str]:
    """Set each override in `raw`, adding a problem per bad one; returns dotted key -> override text."""
    applied: dict[str, str] = {}
    for text in overrides:
        parsed = _parse_override(text)
        if isinstance(parsed, Problem):
            problems.append(parsed)
            continue
        parts, value = parsed
        table = raw
        for i, part in enumerate(parts[:-1]):
            nxt = table.setdefault(part, {})
            if not isinstance(nxt, dict):
                where = ".".join(parts[: i + 1])
                problems.append(Problem(text, f"{where!r} is a value, not a table", f"override {where} itself"))
                break
            table = nxt
        else:
            if value is UNSET:
                if parts[-1] not in table:
                    problems.append(Problem(text, f"{'.'.join(parts)} is not set in the recipe, so there is nothing to unset", "check the key's spelling"))
                    continue
                del table[parts[-1]]
            else:
                table[parts[-1]] = value
            applied[".".join(parts)] = text
    return applied


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> list[str]:
    """Set each override in the raw table; returns the dotted keys it set. RecipeError lists every bad override."""
    problems: list[Problem] = []
    applied = _apply_overrides(raw, overrides, problems)
    if problems:
        raise RecipeError("command line", problems)
    return list(applied)


def _mark_overridden(problems: list[Problem], applied: dict[str, str]) -> list[Problem]:
    """Say which problems came from the command line: the recipe file itself is fine there."""
    out = []
    for p in problems:
        text = applied.get(p.key) or next((t for k, t in applied.items() if p.key.startswith(k + ".")), None)
        if text is None:
            out.append(p)
            continue
        fix = p.fix
        value = text.split("=", 1)[1].strip()
        if "must be" in p.message and value.startswith(("[", "{")):
            fix = 'override values are TOML: quote strings inside lists and tables, e.g. data.labels=\'["a", "b"]\''
        out.append(Problem(p.key, f"{p.message} (from the command line: {text})", fix))
    return out


# ---------------------------------------------------------------------------------------------
# validation: the schema, then the rules that span keys


def _validate(raw: dict[str, Any], source: str, base_dir: str | Path, problems: list[Problem]) -> Recipe:
    """The schema first, then the rules that span keys. A rejected key is removed and keeps its default, and
    the rules that read it stay quiet, so one mistake is reported once (`failed` names those keys)."""
    raw = copy.deepcopy(raw)
    failed: set[str] = set()
    try:
        valid = RecipeFile.model_validate(raw)
    except ValidationError as exc:
        for parts, problem in _schema_problems(exc, raw):
            problems.append(problem)
            failed.add(".".join(parts))
            functools.reduce(dict.__getitem__, parts[:-1], raw).pop(parts[-1])
        valid = RecipeFile.model_validate(raw)  # what is left is valid: every rejected key is gone
    built = Recipe(**dict(valid), source=source, base_dir=str(base_dir))
    _check_rules(built, problems, failed)
    return built



# ---------------------------------------------------------------------------------------------
# the schema's errors -> one Problem per key


def _value_problem(key: str, value: Any) -> tuple[Problem, bool] | None:
    """What the schema says of `key = value`, and whether the value's type is wrong (None: it would pass)."""
    raw = functools.reduce(lambda inner, part: {part: inner}, reversed(key.split(".")), value)  # train.epochs -> {"train": {"epochs": value}}
    try:
        RecipeFile.model_validate(raw)
    except ValidationError as exc:
        return _schema_problems(exc, raw)[0][1], any(_wrong_type(e["type"], e["input"]) for e in exc.errors())
    return None


def _wrong_type(kind: str, value: Any) -> bool:
    # 5 for a choice of strings is a type mistake, not a misspelling
    return kind.endswith(("_type", "_parsing")) or kind in ("finite_number", "int_from_float") or (kind == "literal_error" and not isinstance(value, str))


def _schema_problems(exc: ValidationError, raw: dict[str, Any]) -> list[tuple[tuple[str, ...], Problem]]:
    """One (key path, Problem) per key, however many errors pydantic has for it (a union reports each branch;
    a list, each bad entry)."""
    sites: dict[tuple[str, ...], tuple[Any, Any, Any, list]] = {}
    for error in exc.errors(include_url=False):
        parts, tp, default, model, inner = _locate(error["loc"])
        sites.setdefault(parts, (tp, default, model, []))[3].append((error, inner))
    return [(parts, _problem(".".join(parts), *site, functools.reduce(dict.__getitem__, parts, raw))) for parts, site in sites.items()]


def _locate(loc: tuple) -> tuple[tuple[str, ...], Any, Any, Any, tuple]:
    """Split an error's location into the recipe key it names, that key's type and default (None for an unknown key
    or a section), the model that holds it, and what is left (a list index, a union's branch).
    A table of values (eval.thresholds) gets one key per entry: eval.thresholds.accuracy."""
    model, parts = RecipeFile, []
    for i, part in enumerate(loc):
        info = model.model_fields.get(part) if isinstance(part, str) else None
        if info is None:
            return (*parts, str(part)), None, None, model, loc[i + 1 :]
        parts.append(part)
        if is_section(info.annotation):
            model = info.annotation
        elif get_origin(info.annotation) is dict and i + 1 < len(loc):
            return (*parts, str(loc[i + 1])), get_args(info.annotation)[1], None, model, loc[i + 2 :]
        else:
            return tuple(parts), info.annotation, info.get_default(call_default_factory=True), model, loc[i + 1 :]
    return tuple(parts), None, None, model, ()


BOUND_ERRORS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="), "less_than": ("lt", "<")}


def _problem(key: str, tp: Any, default: Any, model: Any, errors: list[tuple[dict, tuple]], value: Any) -> Problem:
    name = key.rpartition(".")[2]
    if tp is None:
        if errors[0][0]["type"] == "extra_forbidden":
            known = list(model.model_fields)
            return Problem(key, "unknown key", did_you_mean(name, known, f"known keys here: {', '.join(known)}"))
        return Problem(key, f"must be a table ([{key}]), got {_show(value)}", f"write it as a [{key}] section with keys under it")
    if len(members(tp)) > 1:  # a union reports every branch: keep the one the value's shape picks (a list or not)
        picked = [(e, inner[1:]) for e, inner in errors if inner and str(inner[0]).startswith("list") == isinstance(value, list)]
        errors = picked or [(e, inner[1:]) for e, inner in errors]
    error, inner = errors[0]
    kind = error["type"]
    allowed, _ = choices(tp)
    if _wrong_type(kind, error["input"]):
        if inner:
            detail = f" (item {inner[0] + 1} is {_show(error['input'])})" if isinstance(inner[0], int) else ""
        else:
            detail = " (nan and inf are not allowed)" if kind == "finite_number" else ""
        return Problem(key, f"must be {_with_article(type_name(tp))}, got {_show(value)}{detail}", _type_fix(name, tp, default))
    if kind == "literal_error" and not inner:
        others = "".join(f" (or {_with_article(type_name(m))})" for m in members(tp) if get_origin(m) is not Literal)
        return Problem(key, f"must be one of {', '.join(map(repr, allowed))}{others}, got {value!r}", did_you_mean(str(value), allowed))
    if kind == "literal_error":
        bad = [e["input"] for e, _ in errors if e["type"] == "literal_error"]
        guess = suggest(str(bad[0]), allowed)
        return Problem(key, f"unknown {', '.join(map(repr, bad))}", f"{f'did you mean {guess!r}? ' if guess else ''}choose from {', '.join(allowed)}")
    if kind in BOUND_ERRORS and not inner:
        bound, symbol = error["ctx"][BOUND_ERRORS[kind][0]], BOUND_ERRORS[kind][1]
        return Problem(key, f"must be {symbol} {bound!r}, got {float(value) if float in members(tp) else value!r}", f"set {key} to a value {symbol} {bound}")
    if kind == "too_short" and not inner:
        n = error["ctx"]["min_length"]
        return Problem(key, f"needs at least {n} entr{'y' if n == 1 else 'ies'}, got {value!r}", "list what you want, or remove the key to use the default")
    if kind == "string_pattern_mismatch" and inner:  # the one pattern: a non-blank string
        return Problem(key, f"has an empty entry: {_show(value)}", "remove the empty entry")
    if kind == "string_pattern_mismatch":
        return Problem(key, "is empty", "give it a value, or remove the key to use the default")
    return Problem(key, f"{error['msg']}, got {_show(error['input'])}")  # a check without its own wording yet


def _with_article(name: str) -> str:
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _show(value: Any, limit: int = 60) -> str:
    """A value as the message shows it: type and repr, cut short so a huge value can't flood the terminal."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def _type_fix(name: str, tp: Any, default: Any) -> str:
    """'write it like: epochs = 3', using the key's default as the example when it has one."""
    if default in (None, [], {}):
        examples = {"integer": 1, "number": 0.5, "true/false": True, "list of strings": ["a", "b"], "list of numbers": [1.0, 2.0]}
        default = examples.get(type_name(tp).split(" or ")[0], "text")
    return f"write it like: {name} = {as_toml(default)}"


# ---------------------------------------------------------------------------------------------
# rules that span keys


def _has_failed(key: str, failed: set[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in failed for i in range(1, len(parts) + 1))


def _data_file_problem(key: str, path: Path | None) -> Problem | None:
    if path is None:
        return None
    if path.suffix.lower() not in DATA_SUFFIXES:
        return Problem(key, f"unsupported file type {path.suffix or '(none)'!r} for {path}", f"use one of {', '.join(sorted(DATA_SUFFIXES))}")
    if not path.exists():
        return Problem(key, f"file not found: {path}", "check the path; relative paths resolve against the recipe's folder")
    if path.is_dir():
        return Problem(key, f"{path} is a directory, not a file", "name the data file itself")
    return None


def _check_rules(recipe: Recipe, problems: list[Problem], failed: set[str]) -> None:
    """Rules that span keys; each adds a problem rather than stopping.

    A rule is skipped when one of the keys it reads was already rejected: that key holds its default,
    not what the user wrote, so the rule would only report a consequence of the first problem.
    """
    def ok(*keys: str) -> bool:
        return not any(_has_failed(k, failed) for k in keys)

    d = recipe.data
    if d.dataset is None and ok("data.dataset"):
        if d.train is None and ok("data.train"):
            problems.append(Problem("data.train", "missing: no training data", "set data.train to a csv/tsv/jsonl/parquet file, or data.dataset to a hub dataset"))
        for split in SPLITS:
            if ok(f"data.{split}") and (problem := _data_file_problem(f"data.{split}", recipe.data_path(split))):
                problems.append(problem)
        if d.subset is not None and ok("data.subset"):
            problems.append(Problem("data.subset", f"is set ({d.subset!r}) but data.dataset is not", "set data.dataset to the hub dataset the subset belongs to, or remove data.subset"))
    elif d.dataset is not None and d.train is None and ok("data.train"):
        d.train = "train"
    for key, split in (("pretrain.data", "pretrain"), ("distill.unlabeled", "distill")):
        if ok(key) and (problem := _data_file_problem(key, recipe.data_path(split))):
            problems.append(problem)
    _check_distill(recipe, problems, ok)
    if d.validation is not None and d.validation_fraction is not None:
        problems.append(Problem("data.validation_fraction", "set, but data.validation is set too", "remove one of the two"))
    if d.labels is not None:
        stripped = [x.strip() for x in d.labels]
        dupes = sorted({x for x in stripped if stripped.count(x) > 1})
        if dupes:
            problems.append(Problem("data.labels", f"repeated names {dupes!r}", "list each class once"))
    if d.text_pair is not None and d.text_pair == d.text and ok("data.text", "data.text_pair"):
        problems.append(Problem("data.text_pair", f"is the same column as data.text ({d.text!r})", "name the second text column"))
    for column in label_columns(recipe):
        if column in {d.text, d.text_pair} and ok("data.label", "data.text", "data.text_pair"):
            problems.append(Problem("data.label", f"{column!r} is also a text column", "name the label column"))
    has_validation = d.validation is not None or d.validation_fraction is not None
    if recipe.train.early_stopping_patience > 0 and not has_validation and ok("data.validation", "data.validation_fraction"):
        problems.append(Problem("train.early_stopping_patience", f"is {recipe.train.early_stopping_patience}, but there is no validation data to stop on",
                                "set data.validation (or data.validation_fraction), or early_stopping_patience = 0"))
    if recipe.eval.split == "validation" and not has_validation and ok("eval.split", "data.validation", "data.validation_fraction"):
        problems.append(Problem("eval.split", "is 'validation', but there is no validation data", "set data.validation (or data.validation_fraction), or eval.split = 'test'"))
    problems.extend(p for metric, value in recipe.eval.thresholds.items() if (p := threshold_problem(f"eval.thresholds.{metric}", metric, value)))
    _check_problem_type(recipe, problems, ok)
    _check_sweep(recipe, problems, ok)


def _check_distill(recipe: Recipe, problems: list[Problem], ok) -> None:
    """The student's layers, as far as the recipe alone tells (the teacher's layer count is checked when it loads)."""
    t = recipe.distill
    if t.layers is not None and t.num_layers is not None and ok("distill.layers", "distill.num_layers"):
        problems.append(Problem("distill.num_layers", f"is {t.num_layers}, but distill.layers is set too ({t.layers})", "keep one of the two: the layers to keep, or how many"))
    if t.layers is not None and ok("distill.layers") and t.layers != sorted(set(t.layers)):
        problems.append(Problem("distill.layers", f"{t.layers} is not ascending without repeats", f"list each layer once, in order: {sorted(set(t.layers))}"))


def _check_problem_type(recipe: Recipe, problems: list[Problem], ok) -> None:
    """Keys that only some problem types have; then the per-type defaults of eval.metrics and metric_for_best."""
    d, t, kind = recipe.data, recipe.train, recipe.model.problem_type
    if not ok("model.problem_type"):
        return
    multi, regression = kind == MULTI_LABEL.name, kind == REGRESSION.name
    set_multi = f"set model.problem_type = '{MULTI_LABEL.name}'"
    if isinstance(d.label, list) and ok("data.label"):
        if not multi:
            problems.append(Problem("data.label", f"lists {len(d.label)} columns, one per label, which only multi-label data has", f"{set_multi}, or name one label column"))
        elif len(d.label) < 2:
            problems.append(Problem("data.label", f"lists a single 0/1 column {d.label!r}", "list one column per label, or name one label column"))
        elif len(set(d.label)) < len(d.label):
            problems.append(Problem("data.label", f"repeats columns: {sorted({c for c in d.label if d.label.count(c) > 1})!r}", "list each label column once"))
        elif d.labels is not None and ok("data.labels") and list(d.labels) != list(d.label):
            problems.append(Problem("data.labels", f"is {d.labels!r}, but the labels are the columns data.label lists ({d.label!r})", "remove data.labels: the 0/1 columns name the labels, in their order"))
        if d.label_separator is not None and ok("data.label_separator"):
            problems.append(Problem("data.label_separator", "is set, but data.label lists one 0/1 column per label", "remove data.label_separator (it splits one column of joined names)"))
    if d.label_separator is not None and not multi and ok("data.label_separator"):
        problems.append(Problem("data.label_separator", f"is set ({d.label_separator!r}), but model.problem_type is {kind!r}", f"{set_multi}, or remove data.label_separator"))
    if regression and d.labels is not None and ok("data.labels"):
        problems.append(Problem("data.labels", "is set, but regression predicts a number, not a class", "remove data.labels"))
    if regression and t.calibrate and ok("train.calibrate"):
        problems.append(Problem("train.calibrate", "is true, but a regression model's output is a value, not a probability to calibrate", "remove train.calibrate"))
    weights = t.class_weights
    if ok("train.class_weights"):
        if regression and weights != "none":
            problems.append(Problem("train.class_weights", "is set, but regression has no classes to weight", "remove train.class_weights"))
        elif isinstance(weights, list):
            if any(not math.isfinite(w) or w <= 0 for w in weights):
                problems.append(Problem("train.class_weights", f"has a weight that is not > 0: {weights!r}", "give every label a positive weight"))
            names = d.labels if d.labels is not None else (d.label if isinstance(d.label, list) else None)
            if names is not None and len(weights) != len(names):
                problems.append(Problem("train.class_weights", f"has {len(weights)} weights for {len(names)} labels ({', '.join(names)})", "give one weight per label, in the labels' order"))
    if d.text_pair is not None and recipe.model.truncation != "head" and ok("model.truncation", "data.text_pair"):
        problems.append(Problem("model.truncation", f"is {recipe.model.truncation!r}, but the inputs are pairs (data.text_pair)", "pairs are cut longest-first from their ends: use truncation = 'head'"))
    if recipe.eval.metrics is not None and ok("eval.metrics"):
        problems.extend(_wrong_kind("eval.metrics", metric, kind) for metric in recipe.eval.metrics if metric not in PROBLEM_METRICS[kind])
    if t.metric_for_best is not None and ok("train.metric_for_best") and t.metric_for_best not in PROBLEM_METRICS[kind]:
        problems.append(_wrong_kind("train.metric_for_best", t.metric_for_best, kind))
    problems.extend(_wrong_kind(f"eval.thresholds.{m}", m, kind) for m in recipe.eval.thresholds if m in METRICS and m not in PROBLEM_METRICS[kind])
    if recipe.eval.metrics is None:
        recipe.eval.metrics = list(DEFAULT_METRICS[kind])
    if t.metric_for_best is None:
        t.metric_for_best = DEFAULT_METRIC_FOR_BEST[kind]


def _wrong_kind(key: str, metric: str, kind: str) -> Problem:
    """A known metric that the problem type doesn't have (accuracy for regression)."""
    allowed = PROBLEM_METRICS[kind]
    kind_words = kind.replace("_", "-").replace("-classification", "")
    return Problem(key, f"{metric!r} is not a {kind_words} metric", did_you_mean(metric, allowed, f"choose from {', '.join(allowed)}"))


RANGE_KEYS = ("low", "high", "log")


def _check_sweep(recipe: Recipe, problems: list[Problem], ok) -> None:
    """[sweep]: a metric of the problem type, and a space whose keys are recipe keys and whose values each are."""
    s, kind = recipe.sweep, recipe.model.problem_type
    if s.metric is not None and ok("sweep.metric", "model.problem_type") and s.metric not in PROBLEM_METRICS[kind]:
        problems.append(_wrong_kind("sweep.metric", s.metric, kind))
    if not ok("sweep.space"):
        return
    keys = [row[0] for row in describe_schema()]
    for key, spec in s.space.items():
        where = f"sweep.space.{key}"
        found = schema_field(key)
        if found is None:
            # guess within the key's own section first: "train.lr" -> train.learning_rate
            section, _, name = str(key).rpartition(".")
            guess = suggest(name, [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == section]) if section else None
            fix = f"did you mean '{section}.{guess}'?" if guess else did_you_mean(key, keys, 'name recipe keys, e.g. "train.learning_rate" (bertctl schema lists them)')
            problems.append(Problem(where, f"{key!r} is not a recipe key", fix))
            continue
        if key.startswith("sweep.") or key == "output.dir":
            problems.append(Problem(where, f"{key} can't be searched: the sweep itself sets it", "remove it from [sweep.space]"))
            continue
        if isinstance(spec, list):
            _check_space_list(where, key, spec, found[1], problems)
        elif isinstance(spec, dict):
            _check_space_range(where, key, spec, found[1], problems)
        else:
            problems.append(Problem(where, f"must be a range {{ low = .., high = .. }} or a list of values, got {_show(spec)}", f'write it like: "{key}" = {{ low = 1e-5, high = 1e-4, log = true }} or "{key}" = [2, 3]'))


def _check_space_list(where: str, key: str, spec: list, tp: Any, problems: list[Problem]) -> None:
    """Each value of a list must be a value the key itself accepts."""
    if not spec:
        problems.append(Problem(where, "is an empty list", "list the values to try, e.g. [2, 3, 4]"))
    for i, value in enumerate(spec):
        if (found := _value_problem(key, value)) is None:
            continue
        problem, wrong_type = found
        if wrong_type:
            problems.append(Problem(where, f"value {i + 1} must be {_with_article(type_name(tp))} like {key} itself, got {_show(value)}"))
        else:
            problems.append(Problem(where, f"value {i + 1}: {key} {problem.message}", problem.fix))


def _check_space_range(where: str, key: str, spec: dict, tp: Any, problems: list[Problem]) -> None:
    """A range is of the key's own type (int keys: int bounds), within the key's bounds, low <= high, log only above 0."""
    if members(tp)[0] not in (int, float):
        problems.append(Problem(where, f"is a range, but {key} is {_with_article(type_name(tp))}", f'list the values to try: "{key}" = [..]'))
        return
    problems.extend(Problem(f"{where}.{name}", "unknown key", did_you_mean(str(name), list(RANGE_KEYS), f"a range has {', '.join(RANGE_KEYS)}")) for name in spec if name not in RANGE_KEYS)
    bounds = {}
    for name in ("low", "high"):
        if name not in spec:
            problems.append(Problem(where, f"has no {name}", f'write it like: "{key}" = {{ low = .., high = .. }}'))
        elif (found := _value_problem(key, spec[name])) is None:
            bounds[name] = spec[name]
        elif found[1]:
            problems.append(Problem(f"{where}.{name}", f"must be {_with_article(type_name(members(tp)[0]))}, as {key} is, got {_show(spec[name])}"))
        else:
            problems.append(Problem(f"{where}.{name}", f"{key} {found[0].message}", found[0].fix))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        problems.append(Problem(f"{where}.log", f"must be true or false, got {_show(log)}"))
        log = False
    if len(bounds) == 2:
        if bounds["low"] > bounds["high"]:
            problems.append(Problem(where, f"low {bounds['low']!r} is above high {bounds['high']!r}", "swap them"))
        if log and bounds["low"] <= 0:
            problems.append(Problem(where, f"log = true needs low > 0, got {bounds['low']!r}", "raise low above 0, or set log = false"))
