"""THE training loop: one Accelerate loop for fine-tuning (bertctl.training) and pre-training (bertctl.pretraining).

    result = run_loop(task, recipe)            # a Task supplies batches, the model (its loss), evaluation, card
    accelerate launch --num_processes 2 -m bertctl train RECIPE     # many processes (gloo on CPU, NCCL on GPUs)

`run_loop` reads top to bottom like accelerate's examples/nlp_example.py: Accelerator -> set_seed -> data -> model
(after the seed) -> AdamW + scheduler -> `prepare` -> epochs under `accumulate` -> evaluate -> save on the main
process. What it adds is what a tool needs: checkpoints that resume to exactly the same result, Ctrl-C that
checkpoints first, a log of the curve, and a run dir that is never half-written (bertctl.runs).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bertctl.cpus import configure_training_threads, keep_run_threads
from bertctl.errors import BertctlError, RunError
from bertctl.progress import Progress
from bertctl.plots import plot_run_curves
from bertctl.recipe import METRICS, Recipe
from bertctl.runs import (
    BEST, LOG_FILE, RunLog, check_resume_processes, check_resume_recipe, create_run_dir, finish_run, latest_checkpoint, load_checkpoint,
    prepare_run_dir, save_checkpoint, save_model, trim_log, write_recipe, writing,
)


class Task:
    """What differs between fine-tuning and pre-training, in the order the loop asks for it."""

    command, noun = "train", "training"  # the bertctl command (for the resume hint), and what messages call it
    run_dir: Path  # where the run goes unless --output-dir says otherwise
    epochs: int
    max_steps: int | None = None  # wins over epochs
    metric: str | None = None  # validation metric that picks the best model; None: the last model is the result
    curve_metric = "accuracy"  # curves.png plots it beside the loss
    updates_latest = True  # runs/latest points at classifiers only
    resume_ignores: frozenset[str] = frozenset()  # recipe keys, or 'section.' prefixes, the task doesn't read
    tokenizer: Any = None  # saved with the model

    # read and tokenize the data; return the train DataLoader (build_train_loader), unprepared
    def load(self, accelerator): ...

    # the model, built after the seed; its forward(**batch).loss is what training minimises
    def build_model(self, accelerator): ...

    # every validation score (metrics.json keeps them all), or None when there is nothing to score
    def evaluate(self, model, accelerator) -> dict[str, Any] | None: ...

    # the scores an eval line and the progress message show
    def logged(self, scores: dict[str, Any]) -> dict[str, Any]:
        return scores

    # what training minimises for one batch
    def loss(self, model, batch: dict[str, Any]):
        return model(**batch).loss

    # the weights as they are saved (a task may fold a transform into them); called on the main process
    def saved_weights(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        return state_dict

    def describe(self) -> str: ...  # the start message's words on data and model

    def metrics(self, state: TrainerState) -> dict[str, Any]: ...  # the task's part of metrics.json

    def card(self, metrics: dict[str, Any], run_dir: Path) -> str: ...  # README.md of the finished run


@dataclass
class TrainerState:
    """What a checkpoint carries beside accelerate's own state (model, optimizer, scheduler, RNG)."""

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
    threads: int = 0  # CPU threads the run started with (0: unknown); a resume keeps them, as float sums depend on them
    num_processes: int = 0  # processes the run started with (0: written before bertctl recorded it; counted from the RNG files)


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    resumed_from: str | None = None


def is_better(metric: str, scores: dict[str, Any], best: dict[str, Any]) -> bool:
    """Whether `scores` beat the best so far on `metric`; a tie goes to the lower validation loss."""
    if not best:
        return True
    if scores[metric] != best[metric]:
        return (scores[metric] > best[metric]) == METRICS[metric]
    tie = next((name for name in ("log_loss", "mse") if name in scores), None)  # the problem type's validation loss
    return tie is not None and scores[tie] < best[tie]


def format_scores(scores: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())


def run_loop(
    task: Task,
    recipe: Recipe,
    *,
    output_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> RunResult:
    """Train `task` as `recipe` says into a finished run dir. `stop_after_steps` stops at that global step as
    Ctrl-C would: checkpoint, then raise Interrupted (tests use it)."""
    from accelerate.utils import set_seed

    run_dir = Path(output_dir) if output_dir is not None else task.run_dir
    check_precision(recipe)
    # threads from the CPUs free now, not torch's every-core default: on a busy machine those queue (issue 28)
    threads = configure_training_threads(recipe.train.num_threads)
    keep_freed_memory_in_process()

    accelerator = build_accelerator(recipe, run_dir)
    main = accelerator.is_main_process
    if main:
        prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
        if resume:
            check_resume_recipe(run_dir, recipe, task.resume_ignores)
    if resume and latest_checkpoint(run_dir) is not None:  # every process checks, so none waits for one that quit
        check_resume_processes(latest_checkpoint(run_dir), accelerator.num_processes, recipe)
    accelerator.wait_for_everyone()
    set_seed(recipe.train.seed)

    train_loader = task.load(accelerator)
    # the model after the seed, so the seed also fixes a new head's init
    model = task.build_model(accelerator)
    optimizer = build_optimizer(model, recipe)
    steps_per_epoch = math.ceil(len(train_loader) / (recipe.train.gradient_accumulation_steps * accelerator.num_processes))
    total_steps = task.max_steps or steps_per_epoch * task.epochs
    scheduler = build_scheduler(optimizer, recipe, total_steps)
    # what draws per-epoch randomness (batch order, masks) is told the epoch by the loop itself: accelerate's
    # set_epoch reaches the batch sampler only while it is the loader's own, not through the SkipBatchSampler of
    # a resumed epoch or the BatchSamplerShard of several processes, and a resume would replay epoch 0's order
    seeded = [part for part in (train_loader.batch_sampler, train_loader.collate_fn) if hasattr(part, "set_epoch")]
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)

    state, resumed_from = TrainerState(threads=threads.threads, num_processes=accelerator.num_processes), None
    if resume:
        checkpoint = latest_checkpoint(run_dir)
        state, resumed_from = TrainerState(**load_checkpoint(accelerator, checkpoint)), checkpoint.name
        if accelerator.device.type == "cpu" and not recipe.train.num_threads and state.threads and state.threads != threads.threads:
            # the thread count the load picks now may differ from the run's; the run's keeps the resume exact
            threads = keep_run_threads(state.threads)
        state.threads = state.threads or threads.threads
        state.num_processes = accelerator.num_processes  # check_resume_processes made sure they match
    if main:
        if resume:
            trim_log(run_dir / LOG_FILE, state.global_step)
        else:
            create_run_dir(run_dir, overwrite=overwrite)
        write_recipe(run_dir, recipe)  # on resume too: log_every_steps and the eval keys may have changed
    if recipe.train.log_with:
        accelerator.init_trackers(recipe.name, config=flat_config(recipe))

    log = RunLog(run_dir / LOG_FILE, enabled=main)
    bar = StepProgress(enabled=main and progress, total=total_steps, done=state.global_step)
    # show where files really go when the path climbs out of the working dir
    shown = run_dir if ".." not in run_dir.parts else f"{run_dir} (= {run_dir.resolve()})"
    bar.message(
        (f"resuming {shown} from {resumed_from}" if resumed_from else f"{task.noun} into {shown}")
        + f": {total_steps} steps on {accelerator.num_processes} x {accelerator.device.type} ({recipe.train.mixed_precision} precision"
        + (f", {threads.threads} thread{'s' if threads.threads != 1 else ''}: {threads.reason}" if accelerator.device.type == "cpu" else "")
        + f"); {task.describe()}"
    )
    if main and threads.warning and accelerator.device.type == "cpu":
        print(f"warning: {threads.warning}", file=sys.stderr, flush=True)

    def evaluate(epoch_float: float) -> bool:
        """Score, keep the best model; True when early stopping says stop."""
        scores = task.evaluate(model, accelerator)
        if scores is None:
            return False
        state.last_metrics, logged = scores, task.logged(scores)
        improved = task.metric is not None and is_better(task.metric, scores, state.best_metrics)
        if improved:
            state.best_value, state.best_step, state.best_epoch = scores[task.metric], state.global_step, epoch_float
            state.best_metrics, state.evals_without_gain = scores, 0
            save_model(accelerator, model, task.tokenizer, run_dir / BEST, task.saved_weights)
        else:
            state.evals_without_gain += 1
        log.write({"type": "eval", "step": state.global_step, "epoch": round(epoch_float, 4), **logged})
        if recipe.train.log_with:
            accelerator.log({f"eval/{k}": v for k, v in logged.items() if isinstance(v, (int, float))}, step=state.global_step)
        best = "" if task.metric is None else "  (best)" if improved else f"  (best {task.metric} {state.best_value:.4f} at step {state.best_step})"
        bar.message(f"eval step {state.global_step}: {format_scores(logged)}{best}")
        patience = recipe.train.early_stopping_patience if task.metric else 0
        return bool(patience) and state.evals_without_gain >= patience

    segment_start = time.perf_counter()

    def checkpoint() -> None:
        nonlocal segment_start
        state.train_seconds += time.perf_counter() - segment_start
        segment_start = time.perf_counter()
        save_checkpoint(accelerator, run_dir, state, recipe.train.save_total_limit)

    def stop_asked() -> bool:
        return stop.requested or (stop_after_steps is not None and state.global_step >= stop_after_steps)

    def interrupted() -> Interrupted:
        bar.close()
        accelerator.end_training()
        again = ["bertctl", task.command, recipe.source, *recipe.overrides, "--resume"] + (["--output-dir", str(run_dir)] if output_dir is not None else [])
        return Interrupted(
            f"{task.noun} stopped at step {state.global_step}/{total_steps}; checkpoint saved in {latest_checkpoint(run_dir)}",
            fix=f"resume with: {shlex.join(again)}",
        )

    every_eval, every_checkpoint = recipe.train.eval_every_steps, recipe.train.checkpoint_every_steps
    with StopRequested() as stop:
        for epoch in range(state.epoch, math.ceil(total_steps / steps_per_epoch)):
            if state.global_step >= total_steps:
                break
            state.epoch = epoch
            for part in seeded:
                part.set_epoch(epoch)
            model.train()
            stop_early = False
            for info in epoch_steps(accelerator, model, optimizer, scheduler, train_loader, state, recipe, epoch, steps_per_epoch, task.loss):
                bar.step(info, recipe.train.log_every_steps, state.global_step)
                record_step(log, accelerator, recipe, state, info)
                if state.step_in_epoch >= steps_per_epoch:
                    continue  # the epoch's last step: the loader finishes its epoch, the boundary below evaluates
                if state.global_step >= total_steps:
                    break  # max_steps reached inside the epoch
                evaluate_now = every_eval and state.global_step % every_eval == 0
                stop_early = bool(evaluate_now) and evaluate(info["epoch"])
                if evaluate_now or (every_checkpoint and state.global_step % every_checkpoint == 0) or stop_asked():
                    checkpoint()
                if stop_early:
                    break
                if stop_asked():
                    raise interrupted()
            if not stop_early:
                if state.step_in_epoch >= steps_per_epoch:  # the epoch ran to its end
                    state.epoch, state.step_in_epoch = epoch + 1, 0
                stop_early = evaluate(state.epoch + state.step_in_epoch / steps_per_epoch)
                checkpoint()
            if stop_early:
                state.stopped_early = True
                bar.message(f"early stopping: no gain in {task.metric} for {recipe.train.early_stopping_patience} evaluations")
                break
            if stop_asked() and state.global_step < total_steps:
                raise interrupted()

    bar.close()
    if state.best_value is None:  # nothing selected a best model: the last weights are the result
        save_model(accelerator, model, task.tokenizer, run_dir / BEST, task.saved_weights)
    metrics = {
        **task.metrics(state),
        "epochs_completed": state.epoch,
        "global_steps": state.global_step,
        "wall_time_s": round(state.train_seconds, 2),
        "train_samples_per_s": round(state.samples_seen / max(1e-9, state.train_seconds), 2),
        "train_tokens_per_s": round(state.tokens_seen / max(1e-9, state.train_seconds), 1),
        "num_processes": accelerator.num_processes,
        "device": accelerator.device.type,
        "mixed_precision": recipe.train.mixed_precision,
    }
    if main:
        with writing("the finished run", run_dir):
            plot_run_curves(run_dir, task.curve_metric)  # before metrics.json: a finished run has its curves
            finish_run(run_dir, metrics, task.card(metrics, run_dir), latest=task.updates_latest)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return RunResult(run_dir, metrics, resumed_from)


# ---------------------------------------------------------------------------------------------
# batches


def build_train_loader(dataset, lengths: list[int], collate, recipe: Recipe):
    """The training DataLoader: length-grouped batches in an order fixed by (seed, epoch)."""
    import torch
    from torch.utils.data import DataLoader

    sampler = LengthGroupedBatches(lengths, recipe.train.batch_size, recipe.train.seed, recipe.train.group_by_length)
    # each DataLoader iterator draws a seed from its generator; with none it takes it from the global RNG,
    # which would make dropout depend on how often loaders were iterated (and break exact resume)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, generator=torch.Generator().manual_seed(recipe.train.seed))


def check_trainable(recipe: Recipe, n_train: int, model_config, num_processes: int, what: str = "training examples") -> None:
    problems = []
    if recipe.train.batch_size * num_processes > n_train:
        problems.append(f"train.batch_size {recipe.train.batch_size} x {num_processes} process(es) is larger than the {n_train} {what}")
    max_pos = getattr(model_config, "max_position_embeddings", None)
    if max_pos is not None and recipe.model.max_length > max_pos:
        problems.append(f"model.max_length {recipe.model.max_length} is above the model's {max_pos} position embeddings")
    if problems:
        raise BertctlError(
            f"{recipe.source}: cannot train: " + "; ".join(problems),
            fix=f"lower train.batch_size (at most {max(1, n_train // num_processes)}) / model.max_length (at most {max_pos})",
        )


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

    # per-example targets beside the label, passed through as float tensors: a teacher's outputs (distillation)
    # and whether the example has a label at all (unlabelled transfer texts do not)
    TARGETS = ("teacher", "labelled")

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
            # class ids; 0/1 rows (multi-label) and numbers (regression) are float targets
            dtype = torch.long if isinstance(examples[0]["label"], int) else torch.float32
            batch["labels"] = torch.as_tensor([e["label"] for e in examples], dtype=dtype)
        for name in self.TARGETS:
            if name in examples[0]:
                batch[name] = torch.as_tensor([e[name] for e in examples], dtype=torch.float32)
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


# ---------------------------------------------------------------------------------------------
# optimizer, accelerator, checks


def build_optimizer(model, recipe: Recipe):
    """AdamW with no weight decay on biases and LayerNorm weights (as in the BERT paper's code), and with
    train.layerwise_lr_decay < 1 a lower lr the deeper a parameter sits (layer_lr_scale)."""
    import torch

    decay_rate, num_layers = recipe.train.layerwise_lr_decay, getattr(model.config, "num_hidden_layers", 0)
    by_group: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name
        by_group.setdefault((layer_lr_scale(name, num_layers, decay_rate), no_decay), []).append(param)
    # full-lr groups first (decay before no-decay): the progress line and the log show the first group's lr
    groups = [
        {"params": params, "weight_decay": 0.0 if no_decay else recipe.train.weight_decay, "lr": recipe.train.learning_rate * scale}
        for (scale, no_decay), params in sorted(by_group.items(), key=lambda item: (-item[0][0], item[0][1]))
    ]
    # the fused kernel updates each tensor in one pass over (param, grad, exp_avg, exp_avg_sq); over the 30k-row
    # embedding table that is ~6x faster than foreach on a CPU (benchmarks/NOTES.md), same AdamW arithmetic
    fused = all(p.device.type in ("cpu", "cuda") for group in groups for p in group["params"])
    return torch.optim.AdamW(groups, lr=recipe.train.learning_rate, **({"fused": True} if fused else {"foreach": True}))


_ENCODER_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings\.")


def layer_lr_scale(name: str, num_layers: int, decay: float) -> float:
    """Layer-wise lr decay (ULMFiT; Sun et al. 2019, How to Fine-Tune BERT): encoder.layer.i (0-based, of L) learns at
    decay^(L-i) of the lr, the embeddings at decay^(L+1), everything above the encoder (pooler, head) at the full lr."""
    if decay == 1.0:
        return 1.0
    layer = _ENCODER_LAYER.search(name)
    if layer is not None:
        return decay ** (num_layers - int(layer.group(1)))
    return decay ** (num_layers + 1) if _EMBEDDINGS.search(name) else 1.0


def build_scheduler(optimizer, recipe: Recipe, total_steps: int):
    from transformers import get_scheduler

    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[recipe.train.scheduler]
    warmup = int(recipe.train.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer=optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def build_accelerator(recipe: Recipe, run_dir: Path):
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
        log_with=recipe.train.log_with or None,
        project_dir=str(run_dir),
    )


def check_precision(recipe: Recipe) -> None:
    import torch

    if recipe.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise BertctlError(
            f"{recipe.source}: train.mixed_precision = 'fp16' needs a CUDA GPU, and none is visible",
            fix="on a CPU use train.mixed_precision=bf16 (if the CPU supports it) or train.mixed_precision=no",
        )


# ---------------------------------------------------------------------------------------------
# progress, Ctrl-C


class StepProgress:
    """Training's view of THE progress display: a bar of optimizer steps, or a plain line every N steps."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.enabled, self.total = enabled, total
        self.display = Progress("training", total=total, completed=done, live=enabled and sys.stdout.isatty(), stream=sys.stdout, keep=True)

    def step(self, info: dict[str, Any], every: int, step: int) -> None:
        if not self.enabled:
            return
        text = f"loss {info['loss']:.4f}  lr {info['lr']:.2e}  {info['samples_per_s']:.1f} samples/s"
        if self.display.live:
            self.display.update(advance=1, status=text)
        elif step % every == 0 or step == self.total:
            self.display.say(f"step {step}/{self.total}  epoch {info['epoch']:.2f}  {text}")

    def message(self, text: str) -> None:
        if self.enabled:
            self.display.say(text)

    def close(self) -> None:
        self.display.close()


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
# the hot loop


def epoch_steps(accelerator, model, optimizer, scheduler, train_loader, state: TrainerState, recipe: Recipe, epoch: int, steps_per_epoch: int, loss_of):
    """One epoch of micro-batches under `accumulate`; yields what to log after each optimizer step.

    Mid-epoch (on resume) it skips the micro-batches `state.step_in_epoch` says were done; the order is the same
    by construction, so the run continues exactly where the checkpoint left it.
    """
    loader = accelerator.skip_first_batches(train_loader, state.step_in_epoch * recipe.train.gradient_accumulation_steps) if state.step_in_epoch else train_loader
    # accelerate's loaders count their own iterations and, when iterated, pass the count to the batch sampler's
    # set_epoch where they reach it: keep that count equal to the epoch the loop set on the sampler itself
    loader.set_epoch(epoch)
    step_loss, step_micro = 0.0, 0
    window_start, window_samples = time.perf_counter(), 0
    for batch in loader:
        with accelerator.accumulate(model):
            loss = loss_of(model, batch)
            accelerator.backward(loss)
            grad_norm = None
            if accelerator.sync_gradients and recipe.train.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), recipe.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step_loss += float(loss.detach())
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


def flat_config(recipe: Recipe) -> dict[str, Any]:
    flat = {}
    for section, values in recipe.to_dict().items():
        for key, value in values.items():
            if not isinstance(value, dict):
                flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
