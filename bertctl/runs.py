"""Run directories: where a run lives, whether it finished, and writes that never leave half a file.

A run dir is a HuggingFace model dir (`save_pretrained` output, `id2label` with real names) plus:

    recipe.toml       the resolved recipe (absolute data paths), rewritten on resume
    metrics.json      written last: its presence means the run finished
    train_log.jsonl   one JSON object per logging step / evaluation
    checkpoints/      accelerate `save_state` folders, newest K kept
    curves.png, README.md

`runs/latest` (a symlink beside the run dirs) points at the newest finished classifier run.
A run's life: prepare_run_dir (refuse to clobber) -> create_run_dir (once data and model loaded) ->
save_checkpoint ... -> load_checkpoint on --resume -> save_model into best/ -> finish_run (metrics.json last).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bertctl.errors import BertctlError, RunError
from bertctl.modeling import quiet_transformers, resolve_model
from bertctl.recipe import Recipe, load_recipe

FINISHED_MARKER = "metrics.json"
DEFAULT_RUN = Path("runs") / "latest"
CHECKPOINTS = "checkpoints"
BEST = "best"
STATE_FILE = "trainer_state.json"
LOG_FILE = "train_log.jsonl"
# keys whose change doesn't alter what a resumed run computes
RESUME_IGNORES = {"output.dir", "eval.thresholds", "eval.metrics", "eval.split", "train.log_with", "train.log_every_steps", "sweep."}


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


def check_writable_path(path: Path, flag: str, *, directory: bool = False, example: str = "") -> None:
    """Refuse, before any model loads, an output path (`flag`'s value) that nothing can be written to: a directory
    where a file goes (or the other way round), or below an existing file."""
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise BertctlError(f"{flag} {path} is a file", fix=f"name a directory, e.g. {flag} {example or path.with_suffix('')}")
    if not directory and path.is_dir():
        raise BertctlError(f"{flag} {path} is a directory", fix=f"name a file, e.g. {flag} {example or path / 'out.json'}")
    blocker = next((parent for parent in reversed(path.parents) if parent.exists() and not parent.is_dir()), None)
    if blocker is not None:
        raise BertctlError(f"{flag} {path}: {blocker} is a file, not a directory", fix=f"write beside it instead, e.g. {flag} {blocker.parent / path.name}")


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


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (/proc): os.umask can only be read by
    setting it, and for that moment another thread's new files would get the wrong mode."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_modes(path: Path) -> Path:
    """Give `path` (a file, or a dir and everything in it) the modes a plain open() or mkdir() gives under the
    umask: 0644 files and 0755 dirs at umask 022. Temp files and dirs (mkstemp, mkdtemp) are made 0600/0700, and
    safetensors writes its files 0600, so without this a run dir moved into place from them is unreadable to a
    server running as another user. Symlinks are left alone (their mode means nothing)."""
    path = Path(path)
    keep = ~current_umask()
    file_mode, dir_mode = 0o666 & keep, 0o777 & keep
    if path.is_symlink() or not path.exists():
        return path
    if not path.is_dir():
        os.chmod(path, file_mode)
        return path
    os.chmod(path, dir_mode)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            item = os.path.join(root, name)
            if not os.path.islink(item):
                os.chmod(item, dir_mode if name in dirs else file_mode)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same dir, fsync, then rename: readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(umask_modes(Path(tmp)), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written temp dir into place, replacing an older copy; it gets the umask's modes first (a
    mkdtemp dir is 0700, a model's safetensors 0600)."""
    umask_modes(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def discard_dir(path: Path) -> None:
    """Delete a dir so that it is whole or gone at every instant: renamed out of sight, then removed (a kill in the
    middle of rmtree left a checkpoint with its state file but without its model)."""
    hidden = path.with_name(f".{path.name}.discarded")
    shutil.rmtree(hidden, ignore_errors=True)
    try:
        os.replace(path, hidden)
    except FileNotFoundError:
        return
    shutil.rmtree(hidden, ignore_errors=True)


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


def resolve_model_dir(model: str | Path | None) -> tuple[str, Path | None]:
    """(loadable location, local dir or None) for a command's --model: a run dir (default runs/latest, checked to
    hold a finished model), any save_pretrained dir, or a hub id."""
    if model is None or Path(model).expanduser().exists():
        run_dir = resolve_run_dir(Path(model).expanduser() if model is not None else None)
        return str(run_dir), run_dir
    resolved = resolve_model(str(model))
    return resolved.location, (Path(resolved.location) if resolved.is_local else None)


def load_run_recipe(run_dir: Path):
    """The resolved recipe saved with a run, or None for plain model dirs."""
    path = Path(run_dir) / "recipe.toml"
    return load_recipe(path) if path.is_file() else None


# ---------------------------------------------------------------------------------------------
# the lifecycle of a run dir that a training loop writes


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a finished run or silently restart an unfinished one; creates nothing (see create_run_dir)."""
    if resume and overwrite:
        raise RunError("--resume and --overwrite contradict each other", fix="pick one")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"output dir {run_dir} is a file", fix="set output.dir (or --output-dir) to a directory path")
    if resume:
        if not latest_checkpoint(run_dir):
            finished = " (it finished: nothing to resume)" if is_finished(run_dir) else ""
            raise RunError(f"no checkpoint to resume in {run_dir / CHECKPOINTS}{finished}", fix="start the run without --resume")
        return
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        if is_finished(run_dir):
            raise RunError(f"{run_dir} already holds a finished run", fix=f"pass --overwrite to replace it, or write another dir: --output-dir {run_dir}-2")
        raise RunError(f"{run_dir} holds an unfinished run", fix="continue it with --resume, or start over with --overwrite")


def create_run_dir(run_dir: Path, *, overwrite: bool) -> None:
    """Make (or, with --overwrite, empty) the run dir: only once data and model loaded, so bad input destroys nothing."""
    if overwrite and run_dir.is_dir() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    try:
        # a full disk still has room for a directory entry: if the probe fails, take the new dirs away again
        with removes_new_empty_dirs(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = run_dir / ".write-test"
            try:
                probe.write_text("ok")  # bytes, not just an inode: an empty file still fits on a full disk
            finally:
                probe.unlink(missing_ok=True)
    except OSError as exc:
        raise RunError(f"cannot write to {run_dir}: {exc.strerror}", fix="choose a writable output dir (--output-dir DIR)") from None


def write_recipe(run_dir: Path, recipe) -> None:
    """The resolved recipe the run computes with; rewritten on resume, where keys in RESUME_IGNORES may change."""
    with writing("the recipe", run_dir):
        atomic_write_text(run_dir / "recipe.toml", recipe.to_toml())


def recipe_differences(saved: dict[str, Any], current: dict[str, Any], ignored: set[str], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(saved) | set(current)):
        dotted = f"{prefix}{key}"
        a, b = saved.get(key), current.get(key)
        if dotted in ignored or f"{dotted}." in ignored:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys += recipe_differences(a, b, ignored, dotted + ".")
        elif a != b:
            keys.append(f"{dotted}: saved {a!r}, now {b!r}")
    return keys


def check_resume_recipe(run_dir: Path, recipe, ignored: set[str] = frozenset()) -> None:
    """Refuse to resume with settings that change what the run computes (`ignored`: keys and 'section.' prefixes)."""
    import tomllib


    saved_path = run_dir / "recipe.toml"
    if not saved_path.is_file():
        return
    saved = tomllib.loads(saved_path.read_text(encoding="utf-8"))
    # a key the saved recipe lacks was added to bertctl later, and had its default then
    for section, values in Recipe().to_dict().items():
        saved[section] = {**values, **saved.get(section, {})}
    diffs = recipe_differences(saved, recipe.to_dict(), RESUME_IGNORES | set(ignored))
    if diffs:
        raise RunError(
            f"the recipe differs from the one {run_dir} was started with, so a resume would not continue the same run:\n    "
            + "\n    ".join(diffs),
            fix="resume with the original settings, or start a new run with --overwrite / --output-dir",
        )


def checkpoint_processes(checkpoint: Path) -> int:
    """How many processes wrote a checkpoint: its recorded count, else accelerate's one RNG file per process."""
    recorded = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8")).get("num_processes") or 0
    return recorded or max(1, len(list(checkpoint.glob("random_states_*.pkl"))))


def check_resume_processes(checkpoint: Path, num_processes: int, recipe) -> None:
    """Refuse a resume on another process count: it would not continue the same run. Each process takes its own
    shard of every batch, so the effective batch (batch_size x processes x accumulation), the steps per epoch, the
    learning-rate schedule over them and each process's saved RNG stream all depend on the count."""
    written = checkpoint_processes(checkpoint)
    if written == num_processes:
        return
    t = recipe.train

    def batch(n: int) -> str:
        return f"{t.batch_size} x {n} process{'es' if n != 1 else ''}" + (f" x {t.gradient_accumulation_steps} accumulation" if t.gradient_accumulation_steps > 1 else "") + f" = {t.batch_size * n * t.gradient_accumulation_steps}"

    launch = "bertctl train ... --resume" if written == 1 else f"accelerate launch --num_processes {written} -m bertctl train ... --resume"
    raise RunError(
        f"{checkpoint} was written by {written} process{'es' if written != 1 else ''}, and this resume runs {num_processes}: the effective batch would change "
        f"({batch(written)} -> {batch(num_processes)}), and with it the steps per epoch, the learning-rate schedule and the data order, so it would not continue the same run",
        fix=f"resume with {written} process{'es' if written != 1 else ''} ({launch}; across machines, --num_machines and --num_processes as before), "
        "or start a new run with --overwrite / another --output-dir",
    )


def checkpoints(run_dir: Path) -> list[Path]:
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    done = [p for p in folder.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator, run_dir: Path, state, keep: int) -> None:
    """accelerate's save_state (model, optimizer, scheduler, RNG) plus the loop's state (a dataclass), written to a
    temp dir and renamed when complete; the newest `keep` checkpoints stay."""
    folder = run_dir / CHECKPOINTS
    final = folder / f"step-{state.global_step:07d}"
    tmp = folder / f".tmp-step-{state.global_step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    # accelerate warns on every save that a tied weight (the MLM decoder) is stored once: that is the intent
    quieted = logging.getLogger("accelerate.utils.other")
    level = quieted.level
    quieted.setLevel(logging.ERROR)
    try:
        with writing("a checkpoint", tmp):
            accelerator.save_state(str(tmp))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                # the state file goes in last: a checkpoint without it is never resumed from
                (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2, default=str))
                replace_dir(tmp, final)
    finally:
        quieted.setLevel(level)
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
    if accelerator.is_main_process:
        for old in checkpoints(run_dir)[:-keep]:
            discard_dir(old)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator, checkpoint: Path) -> dict[str, Any]:
    """Restore what save_checkpoint saved; returns the loop's state as a dict."""
    accelerator.load_state(str(checkpoint))
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def save_model(accelerator, model, tokenizer, target: Path, adjust=None) -> None:
    """save_pretrained (safetensors) into a temp dir, then swap it in: never a half-written model dir. `adjust`
    maps the state dict to the weights saved (Task.saved_weights)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:

            # transformers v5 draws a "Writing model shards" bar per save: noise between bertctl's eval lines
            with writing("the model", tmp), quiet_transformers():
                unwrapped = accelerator.unwrap_model(model)
                state_dict = accelerator.get_state_dict(model)
                unwrapped.save_pretrained(tmp, state_dict=adjust(state_dict) if adjust else state_dict, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
                replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()


class RunLog:
    """train_log.jsonl: one JSON object per line, flushed as written so a crash keeps what happened."""

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")


def trim_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from: they will be written again."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def finish_run(run_dir: Path, metrics: dict[str, Any], card: str, *, latest: bool) -> None:
    """Move the best model into the run dir, add a model card, then metrics.json last (curves.png: plots.plot_run_curves)."""
    best = run_dir / BEST
    for item in best.iterdir():
        target = run_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    best.rmdir()
    atomic_write_text(run_dir / "README.md", card)
    atomic_write_json(run_dir / FINISHED_MARKER, metrics)
    if latest:
        update_latest(run_dir)
