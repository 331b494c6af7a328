"""Errors a user can act on: what failed, the bad value, and the fix.

Library code raises these; only `bertctl.cli` turns them into messages and exit codes,
so the plain functions stay usable (and testable) from Python.
"""

from __future__ import annotations

from dataclasses import dataclass


class BertctlError(Exception):
    """An error caused by input the user can fix. Exit code 2 unless a subclass says otherwise."""

    exit_code = 2

    def __init__(self, message: str, *, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe: where, what value, what is wrong, and how to fix it."""

    key: str
    message: str
    fix: str | None = None

    def render(self, width: int) -> str:
        line = f"  {self.key:<{width}}  {self.message}"
        return line if not self.fix else f"{line}\n  {'':<{width}}  fix: {self.fix}"


class RecipeError(BertctlError):
    """A recipe (or its overrides) is invalid; carries every problem found, not just the first."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = list(problems)
        width = max((len(p.key) for p in self.problems), default=0)
        body = "\n".join(p.render(width) for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{source} is not a valid recipe ({n} problem{'s' if n != 1 else ''}):\n{body}")


class ChecksError(BertctlError):
    """A `--checks` file is invalid (TOML, schema, or labels the model lacks); carries every problem found."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = list(problems)
        width = max((len(p.key) for p in self.problems), default=0)
        n = len(self.problems)
        body = "\n".join(p.render(width) for p in self.problems)
        super().__init__(f"{source} is not a valid checks file ({n} problem{'s' if n != 1 else ''}):\n{body}")


class DataError(BertctlError):
    """A data file or dataset can't be used as it is (missing, unreadable, bad rows, bad labels)."""


class ModelError(BertctlError):
    """A model can't be resolved or loaded, or isn't the kind of model the command needs."""


class RunError(BertctlError):
    """A run directory is missing, unfinished, already finished, or unwritable."""


def require(module: str, what: str, fix: str):
    """Import an optional dependency, or say which extra installs it (a BertctlError, not an ImportError)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(f"{what} needs {module}, which is not installed", fix=fix) from None


class GateFailed(BertctlError):
    """A quality gate not met (`bertctl eval` thresholds, `bertctl export` checks): exit 1, distinct from bad input (exit 2)."""

    exit_code = 1
