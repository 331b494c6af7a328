"""Run directories: where a run lives, whether it finished, and writes that never leave half a file.

A run dir is a HuggingFace model dir (`save_pretrained` output, `id2label` with real names) plus:

    recipe.toml       the resolved recipe (absolute data paths)
    metrics.json      written last: its presence means the run finished
    train_log.jsonl   one JSON object per logging step / evaluation
    checkpoints/      accelerate `save_state` folders, newest K kept
    curves.png, README.md

`runs/latest` (a symlink beside the run dirs) points at the newest finished run.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bertctl.errors import RunError

FINISHED_MARKER = "metrics.json"
DEFAULT_RUN = Path("runs") / "latest"


@contextmanager
def writing(what: str, where: Path):
    """Turn a failed write (disk full, read-only, permissions) into an error that says what was lost."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RunError(
            f"could not write {what} to {where}: {reason}",
            fix="free disk space or choose a writable dir (--output-dir DIR); completed checkpoints are kept, resume with --resume",
        ) from None


def file_in_the_way(path: Path) -> Path | None:
    """The first existing ancestor of `path` that is not a directory: nothing can be written below it."""
    for parent in reversed(Path(path).parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


@contextmanager
def removes_new_empty_dirs(path: Path):
    """On an error, remove `path` and its ancestors that did not exist before and are still empty:
    a command that fails leaves the folder tree as it found it, not a stray empty run dir."""
    created = []
    current = Path(path)
    while not os.path.lexists(current) and current != current.parent:
        created.append(current)  # deepest first
        current = current.parent
    try:
        yield
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not empty (or never made): it and its ancestors stay
                break
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same dir, fsync, then rename: readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600 files; a run's files should be as readable as any other the user writes
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written temp dir into place, replacing an older copy."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / FINISHED_MARKER).is_file()


def update_latest(run_dir: Path) -> Path:
    """Point `<parent>/latest` at `run_dir` (a relative symlink, swapped atomically)."""
    run_dir = Path(run_dir)
    link = run_dir.parent / "latest"
    if run_dir.name == "latest":
        return link
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(run_dir.name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)  # no symlinks on this filesystem: `latest` is a convenience only
    return link


def resolve_run_dir(run_dir: str | Path | None) -> Path:
    """The run dir a command should use (default runs/latest), checked to hold a model."""
    path = Path(run_dir) if run_dir is not None else DEFAULT_RUN
    if not path.exists():
        if run_dir is None:
            raise RunError(
                f"no run to use: {DEFAULT_RUN} does not exist",
                fix="train one first (bertctl train recipes/agnews.toml) or name a run dir",
            )
        raise RunError(f"run dir {path} does not exist", fix="check the path, or train one: bertctl train recipes/agnews.toml")
    if not path.is_dir():
        raise RunError(f"{path} is a file, not a run dir", fix="name the run directory")
    if not (path / "config.json").is_file():
        hint = " (training has not finished: resume it with bertctl train RECIPE --resume)" if (path / "checkpoints").is_dir() else ""
        raise RunError(f"no trained model in {path} (no config.json){hint}", fix="train one first: bertctl train recipes/agnews.toml")
    return path.resolve()


def load_run_recipe(run_dir: Path):
    """The resolved recipe saved with a run, or None for plain model dirs."""
    from bertctl.recipe import load_recipe

    path = Path(run_dir) / "recipe.toml"
    return load_recipe(path) if path.is_file() else None
