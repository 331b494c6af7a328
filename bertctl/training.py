"""Fine-tune a BERT classifier from a recipe with an Accelerate loop that reads top to bottom.

    result = train(load_recipe("recipes/agnews.toml"))            # one CPU, one GPU
    accelerate launch --num_processes 2 -m bertctl train RECIPE     # many processes (gloo on CPU, NCCL on GPUs)

The loop follows accelerate's `nlp_example.py`: Accelerator -> seed -> data -> model -> optimizer/scheduler ->
`prepare` -> epochs under `accumulate` -> `gather_for_metrics` -> save on the main process. What it adds is what a
tool needs: a run directory that is never half-written, checkpoints that resume to the same result, and logs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bertctl.errors import BertctlError, RunError
from bertctl.recipe import METRICS, Recipe
from bertctl.runs import FINISHED_MARKER, atomic_write_json, atomic_write_text, is_finished, replace_dir, update_latest, writing

CHECKPOINTS = "checkpoints"
BEST = "best"
STATE_FILE = "trainer_state.json"
LOG_FILE = "train_log.jsonl"
# keys whose change doesn't alter what a resumed run computes
RESUME_IGNORES = {"output.dir", "eval.thresholds", "eval.metrics", "eval.split", "train.log_with", "train.log_every_steps"}


# ---------------------------------------------------------------------------------------------
# batches


class LengthGroupedBatches:
    """Batches of similar length, in an order fixed by (seed, epoch): cheap padding and exact resume.

    Indices are shuffled, cut into mega-batches of 50 batches, each sorted by length and cut into batches;
    then the batch order is shuffled, so consecutive steps still see varied lengths. The permutation comes from
    its own generator, not the global RNG, so skipping batches on resume replays exactly the same order.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool = True, mega_batches: int = 50):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.mega = batch_size * mega_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        import torch

        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=gen).tolist()
        if not self.group_by_length:
            yield from (order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size))
            return
        batches = []
        for start in range(0, len(order), self.mega):
            chunk = sorted(order[start : start + self.mega], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        for j in torch.randperm(len(batches), generator=gen).tolist():
            yield batches[j]


class PadCollator:
    """Pad a list of tokenized examples to the batch's own longest one (dynamic padding)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, examples: list[dict[str, Any]]):
        import torch

        longest = max(len(e["input_ids"]) for e in examples)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple
        n = len(examples)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros((n, longest), dtype=torch.long)
        attention_mask = torch.zeros((n, longest), dtype=torch.long)
        for row, example in enumerate(examples):
            ids = example["input_ids"]
            input_ids[row, : len(ids)] = torch.as_tensor(ids)
            attention_mask[row, : len(ids)] = 1
            if "token_type_ids" in example:
                token_type_ids[row, : len(ids)] = torch.as_tensor(example["token_type_ids"])
        batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
        if "label" in examples[0]:
            batch["labels"] = torch.as_tensor([e["label"] for e in examples], dtype=torch.long)
        return batch


def keep_freed_memory_in_process() -> None:
    """Stop glibc from handing activation buffers back to the kernel after every step (Linux/glibc only).

    torch's CPU allocator is plain malloc; blocks of a few MB come from mmap and freed ones are returned, so
    every step page-faults its activations in again (~20k faults, 2-3% of a step on 2 cores). Raising the mmap
    and trim thresholds lets the next step reuse the same heap memory; peak RSS is unchanged.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from malloc.h
        libc.mallopt(m_mmap_threshold, 256 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):  # not glibc (musl, ...): keep the allocator's defaults
        pass


def _loader_generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


def build_dataloaders(splits, recipe: Recipe, pad_token_id: int, *, pad_to_multiple_of: int | None = None):
    """Train loader (length-grouped, seeded) and validation loader (sorted by length: least padding)."""
    from torch.utils.data import DataLoader

    columns = [c for c in ("input_ids", "token_type_ids", "attention_mask", "label") if c in splits["train"].column_names]
    collate = PadCollator(pad_token_id, pad_to_multiple_of)
    train_split = splits["train"]
    sampler = LengthGroupedBatches(train_split["length"], recipe.train.batch_size, recipe.train.seed, recipe.train.group_by_length)
    # each DataLoader iterator draws a seed from its generator; with none it takes it from the global RNG,
    # which would make dropout depend on how often loaders were iterated (and break exact resume)
    train_loader = DataLoader(
        train_split.select_columns(columns), batch_sampler=sampler, collate_fn=collate, generator=_loader_generator(recipe.train.seed)
    )
    eval_loader = None
    if "validation" in splits:
        val = splits["validation"]
        order = sorted(range(len(val)), key=lambda i: val[i]["length"]) if len(val) else []
        val = val.select(order).select_columns(columns)
        eval_loader = DataLoader(
            val, batch_size=recipe.train.eval_batch_size, shuffle=False, collate_fn=collate, generator=_loader_generator(recipe.train.seed)
        )
    return train_loader, sampler, eval_loader


# ---------------------------------------------------------------------------------------------
# optimizer


def build_optimizer(model, recipe: Recipe):
    """AdamW with no weight decay on biases and LayerNorm weights (as in the BERT paper's code)."""
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": recipe.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # the fused kernel updates each tensor in one pass over (param, grad, exp_avg, exp_avg_sq); over the 30k-row
    # embedding table that is ~6x faster than foreach on a CPU (benchmarks/NOTES.md), same AdamW arithmetic
    fused = all(p.device.type in ("cpu", "cuda") for group in groups for p in group["params"])
    return torch.optim.AdamW(groups, lr=recipe.train.learning_rate, **({"fused": True} if fused else {"foreach": True}))


def build_scheduler(optimizer, recipe: Recipe, total_steps: int):
    from transformers import get_scheduler

    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[recipe.train.scheduler]
    warmup = int(recipe.train.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer=optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


# ---------------------------------------------------------------------------------------------
# state that a checkpoint carries beside accelerate's (model, optimizer, scheduler, RNG)


@dataclass
class TrainerState:
    epoch: int = 0  # the epoch in progress
    step_in_epoch: int = 0  # optimizer steps done in that epoch
    global_step: int = 0
    best_value: float | None = None
    best_step: int = 0
    best_epoch: float = 0.0
    evals_without_gain: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0  # summed over resumed segments
    samples_seen: int = 0
    tokens_seen: int = 0
    best_metrics: dict[str, Any] = field(default_factory=dict)
    last_metrics: dict[str, Any] = field(default_factory=dict)


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value > best if METRICS[metric] else value < best


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    resumed_from: str | None = None


# ---------------------------------------------------------------------------------------------
# run directory lifecycle


def build_accelerator(recipe: Recipe, run_dir: Path, *, trackers: bool = True):
    """An Accelerator with the recipe's precision and accumulation, on whatever `accelerate launch` set up."""
    import torch
    from accelerate import Accelerator

    # accelerate picks gloo for CPU processes only when told it runs on the CPU; under torchrun-style launchers
    # (`accelerate launch --multi_gpu`, `torchrun`) on a machine with no GPU nothing else tells it
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(
        cpu=launched and not torch.cuda.is_available(),
        mixed_precision=recipe.train.mixed_precision,
        gradient_accumulation_steps=recipe.train.gradient_accumulation_steps,
        log_with=(recipe.train.log_with or None) if trackers else None,
        project_dir=str(run_dir),
    )


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a finished run or silently restart an unfinished one; creates nothing (see create_run_dir)."""
    if resume and overwrite:
        raise RunError("--resume and --overwrite contradict each other", fix="pick one")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"output dir {run_dir} is a file", fix="set output.dir (or --output-dir) to a directory path")
    has_content = run_dir.is_dir() and any(run_dir.iterdir())
    if resume:
        if not latest_checkpoint(run_dir):
            finished = " (it finished: nothing to resume)" if is_finished(run_dir) else ""
            raise RunError(f"no checkpoint to resume in {run_dir / CHECKPOINTS}{finished}", fix="start the run without --resume")
        return
    if has_content and not overwrite:
        if is_finished(run_dir):
            raise RunError(
                f"{run_dir} already holds a finished run",
                fix=f"pass --overwrite to replace it, or train into another dir: --output-dir {run_dir}-2",
            )
        raise RunError(
            f"{run_dir} holds an unfinished run",
            fix="continue it with --resume, or start over with --overwrite",
        )


def create_run_dir(run_dir: Path, *, overwrite: bool) -> None:
    """Make (or, with --overwrite, empty) the run dir: only once data and model loaded, so bad input destroys nothing."""
    from bertctl.runs import removes_new_empty_dirs

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


def checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    done = [p for p in folder.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def recipe_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(saved) | set(current)):
        dotted = f"{prefix}{key}"
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += recipe_differences(a, b, dotted + ".")
        elif a != b and dotted not in RESUME_IGNORES:
            keys.append(f"{dotted}: saved {a!r}, now {b!r}")
    return keys


def check_resume_recipe(run_dir: Path, recipe: Recipe) -> None:
    import tomllib

    saved_path = run_dir / "recipe.toml"
    if not saved_path.is_file():
        return
    saved = tomllib.loads(saved_path.read_text(encoding="utf-8"))
    current = recipe.to_dict()
    current["output"]["dir"] = saved.get("output", {}).get("dir")
    diffs = recipe_differences(saved, current)
    if diffs:
        raise RunError(
            f"the recipe differs from the one {run_dir} was started with, so a resume would not continue the same run:\n    "
            + "\n    ".join(diffs),
            fix="resume with the original settings, or start a new run with --overwrite / --output-dir",
        )


# ---------------------------------------------------------------------------------------------
# checks that need the data or the model


def check_trainable(recipe: Recipe, data, model_config, num_processes: int) -> None:
    problems = []
    n_train = len(data.splits["train"])
    per_step = recipe.train.batch_size * num_processes
    if per_step > n_train:
        problems.append(f"train.batch_size {recipe.train.batch_size} x {num_processes} process(es) is larger than the {n_train} training examples")
    max_pos = getattr(model_config, "max_position_embeddings", None)
    if max_pos is not None and recipe.model.max_length > max_pos:
        problems.append(f"model.max_length {recipe.model.max_length} is above the model's {max_pos} position embeddings")
    if problems:
        raise BertctlError(
            f"{recipe.source}: cannot train: " + "; ".join(problems),
            fix=f"lower train.batch_size (at most {max(1, n_train // num_processes)}) / model.max_length (at most {max_pos})",
        )


def check_precision(recipe: Recipe) -> None:
    import torch

    if recipe.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise BertctlError(
            f"{recipe.source}: train.mixed_precision = 'fp16' needs a CUDA GPU, and none is visible",
            fix="on a CPU use train.mixed_precision=bf16 (if the CPU supports it) or train.mixed_precision=no",
        )


# ---------------------------------------------------------------------------------------------
# evaluation inside the loop


def evaluate_loader(model, loader, accelerator, labels: list[str]) -> dict[str, Any]:
    """Validation metrics over all processes' shards, without the duplicates that pad the last batch.

    Validation loss is `log_loss` (mean cross-entropy), computed from the gathered probabilities so that it
    covers every example once, whatever the number of processes.
    """
    import torch

    from bertctl.metrics import classification_metrics

    model.eval()
    all_probs, all_labels = [], []
    with torch.inference_mode():
        for batch in loader:
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            probs, gold = accelerator.gather_for_metrics((torch.softmax(logits.float(), dim=-1), batch["labels"]))
            all_probs.append(probs.cpu())
            all_labels.append(gold.cpu())
    model.train()
    return classification_metrics(torch.cat(all_labels).numpy(), torch.cat(all_probs).numpy(), labels).overall


# ---------------------------------------------------------------------------------------------
# progress


class Progress:
    """A bar with loss, lr and samples/s on a terminal; plain periodic lines in logs (no carriage returns)."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.enabled = enabled
        self.tty = enabled and sys.stdout.isatty()
        self.total = total
        self.bar = None
        if self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, unit="step", dynamic_ncols=True, leave=True)

    def step(self, info: dict[str, Any], every: int, step: int) -> None:
        if not self.enabled:
            return
        text = f"loss {info['loss']:.4f}  lr {info['lr']:.2e}  {info['samples_per_s']:.1f} samples/s"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(text, refresh=False)
        elif step % every == 0 or step == self.total:
            print(f"step {step}/{self.total}  epoch {info['epoch']:.2f}  {text}", flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the next step boundary and exits cleanly."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a test runner thread): no handler
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Interrupted(RunError):
    exit_code = 130


# ---------------------------------------------------------------------------------------------
# the loop


def train(
    recipe: Recipe,
    *,
    output_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Fine-tune `recipe.model` on `recipe.data` and write a finished run dir; see the module docstring.

    `stop_after_steps` checkpoints and stops once the run reaches that global step, as Ctrl-C would (tests use it).
    """
    import torch
    from accelerate.utils import set_seed

    from bertctl.data import tokenize_data
    from bertctl.fastpath import use_fast_path
    from bertctl.modeling import load_classifier, load_tokenizer, model_config

    run_dir = Path(output_dir) if output_dir is not None else recipe.run_dir
    check_precision(recipe)
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    keep_freed_memory_in_process()

    accelerator = build_accelerator(recipe, run_dir)
    main = accelerator.is_main_process
    if main:
        prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
        if resume:
            check_resume_recipe(run_dir, recipe)
    accelerator.wait_for_everyone()
    set_seed(recipe.train.seed)

    # data: tokenized once (on the main process first, so others read its cache)
    tokenizer = load_tokenizer(recipe.model.name, base_dir=recipe.base_dir_path)
    with accelerator.main_process_first():
        data = tokenize_data(recipe, tokenizer)
    check_trainable(recipe, data, model_config(recipe.model.name, base_dir=recipe.base_dir_path), accelerator.num_processes)
    pad_multiple = 8 if accelerator.device.type == "cuda" else None  # tensor cores like multiples of 8
    train_loader, _, eval_loader = build_dataloaders(data.splits, recipe, tokenizer.pad_token_id, pad_to_multiple_of=pad_multiple)

    # model after the seed, so the seed also fixes the new classifier head's init
    model = load_classifier(recipe.model.name, labels=data.labels, base_dir=recipe.base_dir_path)
    fast_path = use_fast_path(model) if accelerator.device.type == "cpu" and recipe.train.cpu_fast_path else []
    optimizer = build_optimizer(model, recipe)
    steps_per_epoch = math.ceil(len(train_loader) / (recipe.train.gradient_accumulation_steps * accelerator.num_processes))
    total_steps = steps_per_epoch * recipe.train.epochs
    scheduler = build_scheduler(optimizer, recipe, total_steps)

    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)

    state = TrainerState()
    resumed_from = None
    if resume:
        checkpoint = latest_checkpoint(run_dir)
        accelerator.load_state(str(checkpoint))
        state = TrainerState(**json.loads((checkpoint / STATE_FILE).read_text()))
        resumed_from = checkpoint.name
        if main:
            trim_log(run_dir / LOG_FILE, state.global_step)
    elif main:
        create_run_dir(run_dir, overwrite=overwrite)
        with writing("the recipe", run_dir):
            atomic_write_text(run_dir / "recipe.toml", recipe.to_toml())
    if recipe.train.log_with:
        accelerator.init_trackers(recipe.name, config=flat_config(recipe))

    log = RunLog(run_dir / LOG_FILE, enabled=main)
    bar = Progress(enabled=main and progress, total=total_steps, done=state.global_step)
    if main and progress:
        # show where files really go when the path climbs out of the working dir
        shown = run_dir if ".." not in run_dir.parts else f"{run_dir} (= {run_dir.resolve()})"
        what = f"resuming {shown} from {resumed_from}" if resumed_from else f"training into {shown}"
        bar.message(
            f"{what}: {len(data.splits['train'])} examples, {len(data.labels)} labels, {total_steps} steps "
            f"on {accelerator.num_processes} x {accelerator.device.type} ({recipe.train.mixed_precision} precision)"
            + (f"; CPU fast path: {', '.join(fast_path)}" if fast_path else "")
        )

    metric = recipe.train.metric_for_best
    segment_start = time.perf_counter()
    stop_reason = None

    def run_evaluation(epoch_float: float) -> bool:
        """Evaluate, keep the best model, checkpoint; returns True when early stopping says stop."""
        if eval_loader is None:
            return False
        scores = evaluate_loader(model, eval_loader, accelerator, data.labels)
        state.last_metrics = scores
        improved = is_better(metric, scores[metric], state.best_value)
        if improved:
            state.best_value, state.best_step, state.best_epoch = scores[metric], state.global_step, epoch_float
            state.best_metrics, state.evals_without_gain = scores, 0
            save_model(accelerator, model, tokenizer, run_dir / BEST)
        else:
            state.evals_without_gain += 1
        log.write({"type": "eval", "step": state.global_step, "epoch": round(epoch_float, 4), **scores})
        if recipe.train.log_with:
            accelerator.log({f"eval/{k}": v for k, v in scores.items() if isinstance(v, (int, float))}, step=state.global_step)
        bar.message(
            f"eval step {state.global_step}: {metric} {scores[metric]:.4f}"
            + ("  (best)" if improved else f"  (best {state.best_value:.4f} at step {state.best_step})")
        )
        patience = recipe.train.early_stopping_patience
        return bool(patience) and state.evals_without_gain >= patience

    with StopRequested() as stop:
        for epoch in range(state.epoch, recipe.train.epochs):
            state.epoch = epoch
            model.train()
            for info in epoch_steps(accelerator, model, optimizer, scheduler, train_loader, state, recipe, epoch, steps_per_epoch):
                bar.step(info, recipe.train.log_every_steps, state.global_step)
                record_step(log, accelerator, recipe, state, info)
                epoch_float = info["epoch"]

                evaluate_now = recipe.train.eval_every_steps and state.global_step % recipe.train.eval_every_steps == 0
                checkpoint_now = recipe.train.checkpoint_every_steps and state.global_step % recipe.train.checkpoint_every_steps == 0
                if evaluate_now and run_evaluation(epoch_float):
                    stop_reason = "early stopping"
                if evaluate_now or checkpoint_now or stop_reason:
                    state.train_seconds += time.perf_counter() - segment_start
                    segment_start = time.perf_counter()
                    save_checkpoint(accelerator, run_dir, state, recipe.train.save_total_limit)
                if stop_reason:
                    break
                if stop.requested or (stop_after_steps is not None and state.global_step >= stop_after_steps):
                    state.train_seconds += time.perf_counter() - segment_start
                    save_checkpoint(accelerator, run_dir, state, recipe.train.save_total_limit)
                    bar.close()
                    accelerator.end_training()
                    raise Interrupted(
                        f"training stopped at step {state.global_step}/{total_steps}; checkpoint saved in {latest_checkpoint(run_dir)}",
                        fix=f"resume with: bertctl train {recipe.source} --resume" + (f" --output-dir {run_dir}" if output_dir else ""),
                    )
            if stop_reason:
                state.stopped_early = True
                break
            # the epoch is done: evaluate (unless a step evaluation just did) and checkpoint at the boundary
            just_evaluated = recipe.train.eval_every_steps and state.global_step % recipe.train.eval_every_steps == 0
            state.epoch, state.step_in_epoch = epoch + 1, 0
            stop_early = False if just_evaluated else run_evaluation(float(epoch + 1))
            state.train_seconds += time.perf_counter() - segment_start
            segment_start = time.perf_counter()
            save_checkpoint(accelerator, run_dir, state, recipe.train.save_total_limit)
            if stop_early:
                state.stopped_early = True
                bar.message(f"early stopping: no gain in {metric} for {recipe.train.early_stopping_patience} evaluations")
                break

    bar.close()
    if eval_loader is None:  # nothing to select by: the last weights are the result
        save_model(accelerator, model, tokenizer, run_dir / BEST)
    metrics = {
        "metric_for_best": metric,
        "best_value": state.best_value,
        "best_step": state.best_step,
        "best_epoch": state.best_epoch,
        "validation": state.best_metrics,
        "last_validation": state.last_metrics,
        "epochs_completed": state.epoch,
        "global_steps": state.global_step,
        "stopped_early": state.stopped_early,
        "train_examples": len(data.splits["train"]),
        "validation_examples": len(data.splits["validation"]) if "validation" in data.splits else 0,
        "wall_time_s": round(state.train_seconds, 2),
        "train_samples_per_s": round(state.samples_seen / max(1e-9, state.train_seconds), 2),
        "train_tokens_per_s": round(state.tokens_seen / max(1e-9, state.train_seconds), 1),
        "num_processes": accelerator.num_processes,
        "device": accelerator.device.type,
        "mixed_precision": recipe.train.mixed_precision,
        "labels": data.labels,
    }
    if main:
        with writing("the finished run", run_dir):
            finish_run(run_dir, recipe, data, metrics)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(run_dir, metrics, resumed_from)


# ---------------------------------------------------------------------------------------------
# writes


def epoch_steps(accelerator, model, optimizer, scheduler, train_loader, state: TrainerState, recipe: Recipe, epoch: int, steps_per_epoch: int):
    """One epoch of micro-batches under `accumulate`; yields what to log after each optimizer step.

    Mid-epoch (on resume) it skips the micro-batches `state.step_in_epoch` says were done; the order is the same
    by construction, so the run continues exactly where the checkpoint left it.
    """
    loader = accelerator.skip_first_batches(train_loader, state.step_in_epoch * recipe.train.gradient_accumulation_steps) if state.step_in_epoch else train_loader
    # accelerate's loaders count their own iterations and re-seed the batch sampler with that count when
    # iterated, so the epoch must be set on the loader actually used (a skip loader starts at 0)
    loader.set_epoch(epoch)
    step_loss, step_micro = 0.0, 0
    window_start, window_samples = time.perf_counter(), 0
    for batch in loader:
        with accelerator.accumulate(model):
            outputs = model(**batch)
            accelerator.backward(outputs.loss)
            grad_norm = None
            if accelerator.sync_gradients and recipe.train.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), recipe.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step_loss += float(outputs.loss.detach())
        step_micro += 1
        n_examples = len(batch["input_ids"]) * accelerator.num_processes
        state.samples_seen += n_examples
        state.tokens_seen += int(batch["attention_mask"].sum()) * accelerator.num_processes
        window_samples += n_examples
        if not accelerator.sync_gradients:
            continue
        state.global_step += 1
        state.step_in_epoch += 1
        now = time.perf_counter()
        info = {
            "loss": step_loss / step_micro,
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "samples_per_s": window_samples / max(1e-9, now - window_start),
            "epoch": epoch + state.step_in_epoch / steps_per_epoch,
        }
        step_loss, step_micro = 0.0, 0
        if state.global_step % recipe.train.log_every_steps == 0:  # samples/s covers the last logging window
            window_start, window_samples = now, 0
        yield info


def record_step(log: "RunLog", accelerator, recipe: Recipe, state: TrainerState, info: dict[str, Any]) -> None:
    """Every `log_every_steps`: a train_log.jsonl line, and the same numbers to any accelerate tracker."""
    if state.global_step % recipe.train.log_every_steps:
        return
    log.write({"type": "train", "step": state.global_step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in info.items()}})
    if recipe.train.log_with:
        accelerator.log({f"train/{k}": v for k, v in info.items() if v is not None}, step=state.global_step)


def save_model(accelerator, model, tokenizer, target: Path) -> None:
    """save_pretrained (safetensors) into a temp dir, then swap it in: never a half-written model dir."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with writing("the model", tmp):
                unwrapped = accelerator.unwrap_model(model)
                unwrapped.save_pretrained(tmp, state_dict=accelerator.get_state_dict(model), safe_serialization=True)
                tokenizer.save_pretrained(tmp)
                replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()


def save_checkpoint(accelerator, run_dir: Path, state: TrainerState, keep: int) -> None:
    """accelerate's save_state plus our TrainerState, written to a temp dir and renamed when complete."""
    folder = run_dir / CHECKPOINTS
    final = folder / f"step-{state.global_step:07d}"
    tmp = folder / f".tmp-step-{state.global_step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    try:
        with writing("a checkpoint", tmp):
            accelerator.save_state(str(tmp))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                # the state file goes in last: a checkpoint without it is never resumed from
                (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2, default=str))
                replace_dir(tmp, final)
    finally:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
    if accelerator.is_main_process:
        for old in checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
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


def flat_config(recipe: Recipe) -> dict[str, Any]:
    flat = {}
    for section, values in recipe.to_dict().items():
        for key, value in values.items():
            if not isinstance(value, dict):
                flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def finish_run(run_dir: Path, recipe: Recipe, data, metrics: dict[str, Any]) -> None:
    """Move the best model into the run dir, add curves and a model card, then metrics.json last."""
    best = run_dir / BEST
    for item in best.iterdir():
        target = run_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    best.rmdir()
    if (run_dir / LOG_FILE).is_file():  # a run shorter than log_every_steps, with no validation, logged nothing
        try:
            from bertctl.plots import plot_curves

            plot_curves(run_dir / LOG_FILE, run_dir / "curves.png", recipe.train.metric_for_best)
        except Exception as exc:  # a plot is a nicety: never fail a finished training over it
            print(f"warning: could not draw curves.png: {exc}", file=sys.stderr)
    atomic_write_text(run_dir / "README.md", model_card(recipe, data, metrics))
    atomic_write_json(run_dir / FINISHED_MARKER, metrics)
    update_latest(run_dir)


def model_card(recipe: Recipe, data, metrics: dict[str, Any]) -> str:
    t = recipe.train
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics["validation"].items() if isinstance(v, float))
    sources = "\n".join(f"- {split}: `{src}` ({len(data.splits[split])} examples)" for split, src in data.sources.items() if split in data.splits)
    return f"""---
library_name: transformers
pipeline_tag: text-classification
base_model: {recipe.model.name}
---
# {recipe.name}

A `BertForSequenceClassification` fine-tuned by `bertctl train {recipe.source}`.

## Labels
{", ".join(f"{i}: {name}" for i, name in enumerate(data.labels))}

## Data
{sources}

## Settings
model {recipe.model.name}, max_length {recipe.model.max_length}; {t.epochs} epochs, batch {t.batch_size} x
{t.gradient_accumulation_steps} accumulation, lr {t.learning_rate} ({t.scheduler}, warmup {t.warmup_ratio}),
weight decay {t.weight_decay}, seed {t.seed}, {metrics['mixed_precision']} precision on
{metrics['num_processes']} x {metrics['device']}. Full settings: `recipe.toml`.

## Validation metrics (best {metrics['metric_for_best']} at step {metrics['best_step']})
| metric | value |
|---|---|
{rows}

Trained in {metrics['wall_time_s']} s at {metrics['train_samples_per_s']} samples/s.

## Use
```bash
bertctl predict --model {recipe.run_dir} "some text"
```
```python
from transformers import pipeline
pipeline("text-classification", model="{recipe.run_dir}")("some text")
```
"""
