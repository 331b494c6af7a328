"""pydantic's errors as the rows users read: one per key, naming the key, the bad value, what was expected and the fix.

    except ValidationError as exc:
        schema_problems(exc, raw)       # [(("train", "epochs"), Problem("train.epochs", "must be >= 1, got 0", ...)), ...]
    value_problem("train.epochs", 0)    # the same Problem for one value, as [sweep.space] checks each value it lists
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError

from bertctl.errors import Problem
from bertctl.recipe import did_you_mean, suggest
from bertctl.recipe.schema import RecipeFile, choices, is_section, members, type_name


def value_problem(key: str, value: Any) -> tuple[Problem, bool] | None:
    """What the schema says of `key = value`, and whether the value's type is wrong (None: it would pass)."""
    *sections, name = key.split(".")
    raw: dict[str, Any] = {name: value}
    for section in reversed(sections):
        raw = {section: raw}
    try:
        RecipeFile.model_validate(raw)
    except ValidationError as exc:
        return schema_problems(exc, raw)[0][1], any(_wrong_type(e["type"], e["input"]) for e in exc.errors())
    return None


def _wrong_type(kind: str, value: Any) -> bool:
    # 5 for a choice of strings is a type mistake, not a misspelling
    return kind.endswith(("_type", "_parsing")) or kind in ("finite_number", "int_from_float") or (kind == "literal_error" and not isinstance(value, str))


def schema_problems(exc: ValidationError, raw: dict[str, Any]) -> list[tuple[tuple[str, ...], Problem]]:
    """One (key path, Problem) per key, however many errors pydantic has for it (a union reports each branch;
    a list, each bad entry)."""
    sites: dict[tuple[str, ...], tuple[Any, Any, Any, list]] = {}
    for error in exc.errors(include_url=False):
        parts, tp, default, model, inner = _locate(error["loc"])
        sites.setdefault(parts, (tp, default, model, []))[3].append((error, inner))
    out = []
    for parts, (tp, default, model, errors) in sites.items():
        value = raw
        for part in parts:
            value = value[part]
        out.append((parts, _problem(".".join(parts), tp, default, model, errors, value)))
    return out


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
        return Problem(key, f"must be a table ([{key}]), got {show(value)}", f"write it as a [{key}] section with keys under it")
    if len(members(tp)) > 1:  # a union reports every branch: keep the one the value's shape picks (a list or not)
        picked = [(e, inner[1:]) for e, inner in errors if inner and str(inner[0]).startswith("list") == isinstance(value, list)]
        errors = picked or [(e, inner[1:]) for e, inner in errors]
    error, inner = errors[0]
    kind = error["type"]
    allowed, _ = choices(tp)
    if _wrong_type(kind, error["input"]):
        if inner:
            detail = f" (item {inner[0] + 1} is {show(error['input'])})" if isinstance(inner[0], int) else ""
        else:
            detail = " (nan and inf are not allowed)" if kind == "finite_number" else ""
        return Problem(key, f"must be {with_article(type_name(tp))}, got {show(value)}{detail}", _type_fix(name, tp, default))
    if kind == "literal_error" and not inner:
        others = "".join(f" (or {with_article(type_name(m))})" for m in members(tp) if get_origin(m) is not Literal)
        return Problem(key, f"must be one of {', '.join(map(repr, allowed))}{others}, got {value!r}", did_you_mean(str(value), allowed))
    if kind == "literal_error":
        bad = [e["input"] for e, _ in errors if e["type"] == "literal_error"]
        guess = suggest(str(bad[0]), allowed)
        return Problem(key, f"unknown {', '.join(map(repr, bad))}", f"{f'did you mean {guess!r}? ' if guess else ''}choose from {', '.join(allowed)}")
    if kind in BOUND_ERRORS and not inner:
        bound_name, symbol = BOUND_ERRORS[kind]
        bound = error["ctx"][bound_name]
        shown = float(value) if float in members(tp) else value
        return Problem(key, f"must be {symbol} {bound!r}, got {shown!r}", f"set {key} to a value {symbol} {bound}")
    if kind == "too_short" and not inner:
        n = error["ctx"]["min_length"]
        return Problem(key, f"needs at least {n} entr{'y' if n == 1 else 'ies'}, got {value!r}", "list what you want, or remove the key to use the default")
    if kind == "string_pattern_mismatch":  # the one pattern: a non-blank string
        if inner:
            return Problem(key, f"has an empty entry: {show(value)}", "remove the empty entry")
        return Problem(key, "is empty", "give it a value, or remove the key to use the default")
    return Problem(key, f"{error['msg']}, got {show(error['input'])}")  # a check without its own wording yet


def with_article(name: str) -> str:
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def show(value: Any, limit: int = 60) -> str:
    """A value as the message shows it: type and repr, cut short so a huge value can't flood the terminal."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def _type_fix(name: str, tp: Any, default: Any) -> str:
    """'write it like: epochs = 3', using the key's default as the example when it has one."""
    if default in (None, [], {}):
        kind = type_name(tp).split(" or ")[0]
        default = {"string": "text", "integer": 1, "number": 0.5, "true/false": True}.get(kind, ["a", "b"] if kind.startswith("list") else "text")
    if isinstance(default, bool):
        shown = str(default).lower()
    elif isinstance(default, (int, float)):
        shown = repr(default)
    elif isinstance(default, list):
        shown = "[" + ", ".join(f'"{v}"' for v in default) + "]"
    else:
        shown = f'"{default}"'
    return f"write it like: {name} = {shown}"
