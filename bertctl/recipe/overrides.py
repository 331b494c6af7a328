"""Overrides: dotted keys on the command line (`train.epochs=1`), typed like the file and checked like it.

    parts, value = parse_override("train.learning_rate=2e-5")   # (["train", "learning_rate"], 2e-5)
    apply_overrides(raw, ["train.epochs=1"])                     # sets raw["train"]["epochs"] = 1
"""

from __future__ import annotations

import tomllib
from typing import Any

from bertctl.errors import Problem, RecipeError


def _parse_override(text: str) -> tuple[list[str], Any] | Problem:
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


def apply_overrides_collecting(raw: dict[str, Any], overrides: list[str], problems: list[Problem]) -> dict[str, str]:
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
            table[parts[-1]] = value
            applied[".".join(parts)] = text
    return applied


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> list[str]:
    """Set each override in the raw table; returns the dotted keys it set. RecipeError lists every bad override."""
    problems: list[Problem] = []
    applied = apply_overrides_collecting(raw, overrides, problems)
    if problems:
        raise RecipeError("command line", problems)
    return list(applied)


def mark_overridden(problems: list[Problem], applied: dict[str, str]) -> list[Problem]:
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
