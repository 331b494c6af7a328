"""Loading a recipe: read the file, apply overrides, validate against the schema, then the rules that span keys.

    recipe = load_recipe("recipes/agnews.toml", ["train.epochs=1"])    # a Recipe, or one RecipeError with every problem

pydantic checks types, bounds, choices and unknown keys (schema.py declares them); this module turns its errors into
the rows users read: one per key, naming the key, the bad value, what was expected and the fix.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bertctl.errors import Problem, RecipeError
from bertctl.recipe import DATA_SUFFIXES
from bertctl.recipe.messages import schema_problems
from bertctl.recipe.overrides import apply_overrides_collecting, mark_overridden
from bertctl.recipe.rules import check_rules
from bertctl.recipe.schema import Recipe, RecipeFile


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file; raises RecipeError listing every problem."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise RecipeError(source, [Problem("(file)", "not found", "check the path, e.g. bertctl train recipes/agnews.toml")])
    if path.is_dir():
        raise RecipeError(source, [Problem("(file)", "is a directory", "name a .toml recipe file in it")])
    try:
        data = path.read_bytes()
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
    applied = apply_overrides_collecting(raw, overrides or [], problems)
    built = _validate(raw, source, path.parent, problems)
    if problems:
        raise RecipeError(source, mark_overridden(problems, applied))
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


def _validate(raw: dict[str, Any], source: str, base_dir: str | Path, problems: list[Problem]) -> Recipe:
    """The schema first, then the rules that span keys. A rejected key is removed and keeps its default, and
    the rules that read it stay quiet, so one mistake is reported once (`failed` names those keys)."""
    raw = copy.deepcopy(raw)
    failed: set[str] = set()
    try:
        valid = RecipeFile.model_validate(raw)
    except ValidationError as exc:
        for parts, problem in schema_problems(exc, raw):
            problems.append(problem)
            failed.add(".".join(parts))
            _remove(raw, parts)
        valid = RecipeFile.model_validate(raw)  # what is left is valid: every rejected key is gone
    built = Recipe(**dict(valid), source=source, base_dir=str(base_dir))
    check_rules(built, problems, failed)
    return built


def _remove(raw: dict[str, Any], parts: tuple[str, ...]) -> None:
    table = raw
    for part in parts[:-1]:
        table = table[part]
    del table[parts[-1]]
