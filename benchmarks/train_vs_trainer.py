"""Fine-tuning throughput: the stock HuggingFace Trainer, a tuned Trainer and `bertctl train`, same model and data.

    python benchmarks/train_vs_trainer.py            # full: 4,000 train / 1,000 dev AG News rows, 2 epochs (3 trainings)
    python benchmarks/train_vs_trainer.py --quick    # smoke run: 320 / 200 rows, 1 epoch
    python benchmarks/train_vs_trainer.py --quick --repeat 3 --ways bc   # interleaved repeats on a noisy machine
    python benchmarks/train_vs_trainer.py --ways bc --device cuda --bf16 --epochs 1   # on a GPU (benchmarks/gpu_check.sh)

Ways (each in its own fresh Python process):
  a  stock Trainer, set up as transformers' examples/pytorch/text-classification/run_classification.py does by
     default: every example padded to max_length 128 (`padding="max_length"`), default_data_collator, random batches
  b  tuned Trainer: no padding at tokenization, DataCollatorWithPadding (pad per batch; to a multiple of 8 under
     --bf16 on a GPU, as run_glue.py does under fp16),
     train_sampling_strategy="group_by_length"
  c  `bertctl train` (bertctl.training.train) on recipes/agnews.toml with the same data files and settings
  s  (diagnostic, not in the default set) bertctl train with bertctl.fastpath switched off

Shared settings (those of recipes/agnews.toml): MiniLM-L6 (bundled offline copy), lr 1e-4, batch 32, warmup 6%,
linear decay, weight decay 0.01 (not on bias/LayerNorm), max_grad_norm 1.0, seed 42, max_length 128, AdamW
(Trainer's default adamw_torch_fused), fp32 (--bf16: bf16 autocast for all), on the CPU (--device cuda: the first
GPU for all), torch's default thread count unless --threads; --model gives all ways another base model.

What is timed:
  train loop s   from the start of the first training step to the end of the last optimizer step, data loading
                 and collation included; the Trainer evaluates only after training (eval_strategy="no",
                 save_strategy="no"); bertctl's own end-of-epoch evaluations, best-model saves and checkpoints
                 that fall inside that window are subtracted (it cannot switch them off)
  samples/s      train examples x epochs / train loop s;  tokens/s: non-pad tokens x epochs / train loop s
  end-to-end s   the whole subprocess: interpreter start, imports, tokenization (bertctl: cold cache), model
                 load, training, final evaluation, and for bertctl writing the run dir (checkpoints, model card)
  peak RSS       the worker process's VmHWM
  accuracy       on the dev rows with the final weights (bertctl: last epoch, also its best epoch)
  MFU            tokens/s x (6 x non-embedding params + 12 x layers x seq_len x hidden) / fp32 matmul peak,
                 seq_len = mean padded length fed per example; peak = best square-matmul GFLOP/s (1024-2048)
                 measured in this run with the same thread count (CPU only: on a GPU, or with --no-mfu, MFU is left out)
On a GPU both clocks wait for the device (torch.cuda.synchronize) at the first step and after the last, since
CUDA work runs behind the host's clock.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    AGNEWS,
    gpu_name,
    AGNEWS_LABELS,
    AGNEWS_RECIPE,
    command_line,
    emit_result,
    load_average,
    machine_summary,
    median,
    peak_rss_mb,
    run_worker,
    table,
)

PROCESS_START = time.perf_counter()
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SETTINGS = {"model": MODEL, "learning_rate": 1e-4, "batch_size": 32, "eval_batch_size": 128, "warmup_ratio": 0.06, "weight_decay": 0.01, "seed": 42, "max_length": 128}
WAY_NAMES = {
    "a": "HF Trainer, stock (pad to 128)",
    "b": "HF Trainer, tuned (dynamic pad, grouped)",
    "c": "bertctl train",
    "s": "bertctl train, fast path off",
}
QUICK_ROWS = (320, 200)


# ---------------------------------------------------------------------------------------------
# workers


def _read_split(path: str):
    import pandas as pd

    frame = pd.read_csv(path)
    return frame["text"].astype(str).tolist(), [AGNEWS_LABELS.index(v) for v in frame["label"]]


def _model_numbers(model) -> dict[str, int]:
    config = model.config
    embedding = sum(p.numel() for n, p in model.named_parameters() if n.endswith("_embeddings.weight"))
    total = sum(p.numel() for p in model.parameters())
    return {"params": total, "non_embedding_params": total - embedding, "layers": config.num_hidden_layers, "hidden": config.hidden_size}


def _step_spread(ends: list[float]) -> dict[str, float]:
    """Host time between consecutive step ends after the first: median and worst, in ms (on a GPU, launch time,
    unless something in the step waits for the device)."""
    gaps = sorted(1000 * (b - a) for a, b in zip(ends[1:], ends[2:]))
    return {"step_ms_median": gaps[len(gaps) // 2], "step_ms_max": gaps[-1]} if gaps else {}


def _synchronize(device: str) -> None:
    """Wait for the GPU's queued work, so a host clock read after it counts that work."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def trainer_worker(way: str, train_csv: str, dev_csv: str, epochs: int, threads: int | None, device: str = "cpu", bf16: bool = False) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )
    from transformers.utils import logging as hf_logging

    from bertctl.modeling import resolve_model

    hf_logging.set_verbosity_error()
    if threads:
        torch.set_num_threads(threads)
    model_dir = resolve_model(SETTINGS["model"]).location
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    stock = way == "a"

    def dataset(path: str):
        texts, labels = _read_split(path)
        ds = Dataset.from_dict({"text": texts, "label": labels})
        pad = {"padding": "max_length"} if stock else {}
        return ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=SETTINGS["max_length"], **pad), batched=True, remove_columns=["text"])

    train_ds, dev_ds = dataset(train_csv), dataset(dev_csv)
    set_seed(SETTINGS["seed"])  # as run_classification.py: seed before the model, so it fixes the head's init
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(AGNEWS_LABELS), id2label=dict(enumerate(AGNEWS_LABELS)), label2id={n: i for i, n in enumerate(AGNEWS_LABELS)}
    )

    class Counting:
        """Wraps the collator: padded and real tokens of training batches (the switch is off during eval)."""

        def __init__(self, inner):
            self.inner, self.on, self.fed, self.real = inner, False, 0, 0

        def __call__(self, features):
            batch = self.inner(features)
            if self.on:
                self.fed += batch["input_ids"].numel()
                self.real += int(batch["attention_mask"].sum())
            return batch

    # in mixed precision on a GPU the tuned Trainer pads to a multiple of 8, as run_glue.py does under fp16 (tensor
    # cores, and far fewer distinct shapes); bertctl does the same on CUDA
    multiple = 8 if bf16 and device == "cuda" else None
    collator = Counting(default_data_collator if stock else DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple))

    class StepClock(TrainerCallback):
        first = first_end = last = None
        steps = 0
        ends: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            if self.first is None:
                _synchronize(device)
                self.first = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1
            if self.steps == 1 or state.global_step >= state.max_steps:
                _synchronize(device)  # the first and last steps only: a sync per step would stall the GPU's queue
            self.last = time.perf_counter()
            self.ends.append(self.last)
            if self.steps == 1:
                self.first_end = self.last

    clock = StepClock()
    out = tempfile.mkdtemp(prefix=f"bench-trainer-{way}-")
    # transformers 5 renamed group_by_length=True to train_sampling_strategy="group_by_length"; older 5.x has the first
    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        sampling = {"train_sampling_strategy": "random" if stock else "group_by_length"}
    else:
        sampling = {"group_by_length": not stock}
    args = TrainingArguments(
        output_dir=out,
        learning_rate=SETTINGS["learning_rate"],
        per_device_train_batch_size=SETTINGS["batch_size"],
        per_device_eval_batch_size=SETTINGS["eval_batch_size"],
        num_train_epochs=epochs,
        warmup_steps=SETTINGS["warmup_ratio"],  # a float below 1 is a ratio in transformers 5
        weight_decay=SETTINGS["weight_decay"],
        lr_scheduler_type="linear",
        seed=SETTINGS["seed"],
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        bf16=bf16,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **sampling,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        data_collator=collator,
        callbacks=[clock],
        compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, axis=-1) == p.label_ids).mean())},
    )
    collator.on = True
    start = time.perf_counter()
    trainer.train()
    train_call_s = time.perf_counter() - start
    collator.on = False
    start = time.perf_counter()
    scores = trainer.evaluate()
    eval_s = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return {
        "way": way,
        "train_examples": len(train_ds),
        "epochs": epochs,
        "train_loop_s": clock.last - clock.first,
        "first_step_s": clock.first_end - clock.first,
        "steps": clock.steps,
        **_step_spread(clock.ends),
        "train_call_s": train_call_s,
        "eval_s": eval_s,
        "fed_tokens": collator.fed,
        "real_tokens": collator.real,
        "accuracy": scores["eval_accuracy"],
        "optimizer": args.optim.value if hasattr(args.optim, "value") else str(args.optim),
        "threads": torch.get_num_threads(),
        "model_device": str(next(model.parameters()).device),
        **_model_numbers(model),
    }


def bertctl_worker(train_csv: str, dev_csv: str, epochs: int, threads: int | None, fast_path: bool = True, device: str = "cpu", bf16: bool = False) -> dict:
    import torch

    import bertctl.fastpath
    import bertctl.loop as loop
    import bertctl.training as training
    from bertctl.recipe import load_recipe

    if not fast_path:  # diagnostic way "s": the stock transformers forward (fused AdamW and the rest stay)
        bertctl.fastpath.use_fast_path = lambda model, **kwargs: []

    overrides = [
        f"model.name={json.dumps(SETTINGS['model'])}",
        f'data.train="{train_csv}"',
        f'data.validation="{dev_csv}"',
        "~data.validation_fraction",  # the recipe carves validation from train; here both ways score the dev file
        "~data.test",
        f"train.epochs={epochs}",
        f"train.batch_size={SETTINGS['batch_size']}",
        f"train.eval_batch_size={SETTINGS['eval_batch_size']}",
        f"train.learning_rate={SETTINGS['learning_rate']}",
        f"train.warmup_ratio={SETTINGS['warmup_ratio']}",
        f"train.weight_decay={SETTINGS['weight_decay']}",
        "train.scheduler=linear",
        "train.max_grad_norm=1.0",
        f"train.seed={SETTINGS['seed']}",
        f"model.max_length={SETTINGS['max_length']}",
        f"train.num_threads={threads or 0}",
        f"train.mixed_precision={'bf16' if bf16 else 'no'}",
    ]
    recipe = load_recipe(AGNEWS_RECIPE, overrides)

    # clocks around what the loop does besides training: their time inside the training window is subtracted
    side_intervals: list[tuple[float, float]] = []
    steps: dict[str, float] = {}

    def timed(fn):
        def wrapper(*args, **kwargs):
            # on a GPU the steps queued before this call are training time: wait for them, and if no step came
            # since, the training window ends here (the last step's "last" was only its launch)
            _synchronize(device)
            if steps.pop("pending", None):
                steps["last"] = time.perf_counter()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                side_intervals.append((start, time.perf_counter()))

        return wrapper

    training.evaluate_loader = timed(training.evaluate_loader)
    loop.save_model = timed(loop.save_model)
    loop.save_checkpoint = timed(loop.save_checkpoint)

    models = []
    original_load = training.load_classifier

    def load_and_clock(*args, **kwargs):
        model = original_load(*args, **kwargs)
        models.append(model)

        def first_forward(module, inputs):
            if module.training and "first" not in steps:
                _synchronize(device)
                steps["first"] = time.perf_counter()

        model.register_forward_pre_hook(first_forward)
        return model

    training.load_classifier = load_and_clock  # the name training.py imported at its top
    original_build_optimizer = loop.build_optimizer
    ends: list[float] = []

    def build_and_clock(model, recipe):
        optimizer = original_build_optimizer(model, recipe)
        def step_done(*args) -> None:
            steps["count"] = steps.get("count", 0) + 1
            if steps["count"] == 1:  # the first step's own time (CUDA and cuBLAS start-up land in it on a GPU)
                _synchronize(device)
                steps["first_end"] = time.perf_counter()
            steps.update(last=time.perf_counter(), pending=device == "cuda")
            ends.append(steps["last"])

        optimizer.register_step_post_hook(step_done)
        return optimizer

    loop.build_optimizer = build_and_clock

    run_dir = Path(tempfile.mkdtemp(prefix="bench-bertctl-")) / "run"
    result = training.train(recipe, output_dir=run_dir, progress=False)
    first, last = steps["first"], steps["last"]
    inside = sum(min(end, last) - max(start, first) for start, end in side_intervals if start < last and end > first)
    first_step = steps["first_end"] - first - sum(min(end, steps["first_end"]) - max(start, first) for start, end in side_intervals
                                                  if start < steps["first_end"] and end > first)
    metrics = result.metrics

    # the padded length actually fed: replay bertctl's batch order (the same sampler class, seed and epochs)
    from bertctl.data import tokenize_data
    from bertctl.modeling import load_tokenizer

    data = tokenize_data(recipe, load_tokenizer(recipe.model.name, base_dir=recipe.base_dir_path))
    lengths = [len(ids) for ids in data.splits["train"]["input_ids"]]
    kept = os.environ.get("BENCH_KEEP_RUN")
    if not kept:
        shutil.rmtree(run_dir.parent, ignore_errors=True)  # ~600 MB of checkpoints per run
    sampler = loop.LengthGroupedBatches(lengths, recipe.train.batch_size, recipe.train.seed, recipe.train.group_by_length)
    fed = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        fed += sum(max(lengths[i] for i in batch) * len(batch) for batch in sampler)
    return {
        "way": "c" if fast_path else "s",
        "train_examples": metrics["train_examples"],
        "epochs": epochs,
        "train_loop_s": last - first - inside,
        "first_step_s": first_step,
        "steps": steps["count"],
        **_step_spread(ends),
        "in_loop_eval_and_saves_s": inside,
        "fed_tokens": fed,
        "real_tokens": sum(lengths) * epochs,
        "accuracy": metrics["last_validation"]["accuracy"],
        "best_accuracy": metrics["validation"]["accuracy"],
        "threads": torch.get_num_threads(),
        "model_device": str(next(models[0].parameters()).device),
        **_model_numbers(models[0]),
        **({"kept_run_dir": str(run_dir)} if kept else {}),
    }


def matmul_worker(threads: int | None) -> dict:
    from common import matmul_peak_gflops

    return matmul_peak_gflops(threads)


def worker_main(args) -> None:
    if args.worker == "matmul":
        result = matmul_worker(args.threads)
    elif args.worker in ("a", "b"):
        result = trainer_worker(args.worker, args.train, args.dev, args.epochs, args.threads, args.device, args.bf16)
    else:
        result = bertctl_worker(args.train, args.dev, args.epochs, args.threads, fast_path=args.worker == "c", device=args.device, bf16=args.bf16)
    result["peak_rss_mb"] = peak_rss_mb()
    result["worker_s"] = time.perf_counter() - PROCESS_START
    emit_result(result)


# ---------------------------------------------------------------------------------------------
# parent


def subset(rows: int, src: Path, dst: Path) -> Path:
    import pandas as pd

    pd.read_csv(src).head(rows).to_csv(dst, index=False)
    return dst


def derive(r: dict, peak: float | None) -> dict:
    examples = r["train_examples"] * r["epochs"]
    seq_fed = r["fed_tokens"] / examples
    flops_per_token = 6 * r["non_embedding_params"] + 12 * r["layers"] * seq_fed * r["hidden"]
    tokens_per_s = r["real_tokens"] / r["train_loop_s"]
    gflops = tokens_per_s * flops_per_token / 1e9
    steps = r.get("steps") or 0
    after_first = r["train_loop_s"] - r.get("first_step_s", 0.0)
    return {
        "samples_per_s": examples / r["train_loop_s"],
        # the same past the first step (batches average examples / steps): on a GPU the first holds the start-up
        "samples_per_s_after_first_step": examples * (steps - 1) / steps / after_first if steps > 1 and after_first > 0 else None,
        "tokens_per_s": tokens_per_s,
        "seq_len_fed": seq_fed,
        "padding_share": 1 - r["real_tokens"] / r["fed_tokens"],
        "model_gflops": gflops,
        "mfu": gflops / peak if peak else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_ROWS[0]} train / {QUICK_ROWS[1]} dev rows, 1 epoch")
    parser.add_argument("--ways", default="abc", help="which contenders to run (subset of 'abc'; 's' adds bertctl with its fast path off)")
    parser.add_argument("--seed", type=int, default=None, help="seed for every way (default 42, the recipe's)")
    parser.add_argument("--repeat", type=int, default=1, help="run the ways this many times, interleaved (a b c a b c ...); medians reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every worker (default: torch's default)")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs (default 2, --quick 1)")
    parser.add_argument("--train-rows", type=int, default=None, help=f"the first N train rows (default all 4,000; --quick {QUICK_ROWS[0]})")
    parser.add_argument("--dev-rows", type=int, default=None, help=f"the first N dev rows (default all 1,000; --quick {QUICK_ROWS[1]})")
    parser.add_argument("--model", default=MODEL, help="base model for every way: a hub id bertctl resolves offline, or a model dir (default: the bundled MiniLM-L6)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where every way trains (cpu hides the GPUs from the workers)")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision for every way (Trainer bf16=True, bertctl train.mixed_precision=bf16)")
    parser.add_argument("--no-mfu", action="store_true", help="skip the CPU matmul peak (and MFU); implied by --device cuda")
    parser.add_argument("--worker", choices=["a", "b", "c", "s", "matmul"], help=argparse.SUPPRESS)
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--dev", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed is not None:
        SETTINGS["seed"] = args.seed
    SETTINGS["model"] = args.model
    if args.worker:
        worker_main(args)
        return

    ways = [w for w in "abcs" if w in args.ways]
    epochs = args.epochs or (1 if args.quick else 2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    train_rows = args.train_rows or (QUICK_ROWS[0] if args.quick else None)
    dev_rows = args.dev_rows or (QUICK_ROWS[1] if args.quick else None)
    train_csv = subset(train_rows, AGNEWS / "train.csv", tmp / "train.csv") if train_rows else AGNEWS / "train.csv"
    dev_csv = subset(dev_rows, AGNEWS / "dev.csv", tmp / "dev.csv") if dev_rows else AGNEWS / "dev.csv"
    script = Path(__file__).resolve()
    common_args = ["--train", str(train_csv), "--dev", str(dev_csv), "--epochs", str(epochs)] + (["--threads", str(args.threads)] if args.threads else [])
    common_args += ["--seed", str(SETTINGS["seed"]), "--model", args.model, "--device", args.device] + (["--bf16"] if args.bf16 else [])
    mfu = not (args.no_mfu or args.device == "cuda")
    # --device cpu: the workers see no GPU (accelerate would otherwise put bertctl on one, and not the Trainer)
    worker_env = {"CUDA_VISIBLE_DEVICES": ""} if args.device == "cpu" else {}

    machine = machine_summary()
    if args.threads:
        machine["torch_threads"] = args.threads
    if args.device == "cuda":
        machine["gpu"] = gpu_name()
    print(f"# {command_line()}")
    print(f"# {machine['cpu']}, {machine['cpus']} CPUs, {machine['torch_threads']} torch threads, {machine['simd']}, "
          f"torch {machine['torch']}, transformers {machine['transformers']}; load average at start {machine['load_average']}")
    if args.device == "cuda":
        print(f"# GPU: {machine['gpu']}")
    print(f"# data: {train_csv} / {dev_csv}, {epochs} epoch(s), seed {SETTINGS['seed']}, {'bf16' if args.bf16 else 'fp32'} on {args.device}, "
          f"model {args.model}; each way in its own process", flush=True)

    peaks = [run_worker(script, ["--worker", "matmul", *common_args], env=worker_env)["peak"]] if mfu else []
    runs: dict[str, list[dict]] = {w: [] for w in ways}
    for rep in range(args.repeat):
        for way in ways:
            env = {"BERTCTL_CACHE": str(tmp / f"cache-{way}-{rep}"), **worker_env}  # cold tokenize cache: bertctl tokenizes like the others
            result = run_worker(script, ["--worker", way, *common_args], env=env)
            runs[way].append(result)
            print(f"#   run {rep + 1}/{args.repeat} way {way}: train loop {result['train_loop_s']:.1f} s, "
                  f"accuracy {result['accuracy']:.4f}, load {load_average()}", flush=True)
            if "kept_run_dir" in result:
                print(f"#   run dir kept: {result['kept_run_dir']}", file=sys.stderr, flush=True)
    if mfu:
        peaks.append(run_worker(script, ["--worker", "matmul", *common_args], env=worker_env)["peak"])
    peak = max(peaks) if mfu else None
    if os.environ.get("BENCH_KEEP_RUN"):  # a kept run's recipe.toml names the data subsets: they stay with it
        print(f"#   data subsets kept with the run: {tmp}", file=sys.stderr, flush=True)
    else:
        shutil.rmtree(tmp, ignore_errors=True)  # data subsets and the workers' tokenize caches

    summary = {}
    for way in ways:
        derived = [derive(r, peak) for r in runs[way]]
        pick = lambda key, src=derived: None if src[0][key] is None else median([d[key] for d in src])  # noqa: E731
        raw = lambda key: median([r[key] for r in runs[way]])  # noqa: E731
        summary[way] = {
            "name": WAY_NAMES[way],
            "samples_per_s": pick("samples_per_s"),
            "tokens_per_s": pick("tokens_per_s"),
            "train_loop_s": raw("train_loop_s"),
            "end_to_end_s": raw("process_wall_s"),
            "peak_rss_mb": raw("peak_rss_mb"),
            "accuracy": raw("accuracy"),
            "seq_len_fed": pick("seq_len_fed"),
            "padding_share": pick("padding_share"),
            "model_gflops": pick("model_gflops"),
            "mfu": pick("mfu"),
            "first_step_s": raw("first_step_s"),
            "samples_per_s_after_first_step": pick("samples_per_s_after_first_step"),
            "model_device": runs[way][0]["model_device"],
            "runs": len(runs[way]),
        }
        if way in ("c", "s"):
            summary[way]["best_accuracy"] = raw("best_accuracy")
            summary[way]["in_loop_eval_and_saves_s"] = raw("in_loop_eval_and_saves_s")

    headers = ["way", "samples/s", "tokens/s", "train loop s", "end-to-end s", "peak RSS MiB", "accuracy", "seq fed", "pad %", "GFLOP/s", "MFU"]
    rows = [
        [f"({w}) {s['name']}", s["samples_per_s"], s["tokens_per_s"], s["train_loop_s"], s["end_to_end_s"], s["peak_rss_mb"],
         f"{s['accuracy']:.4f}", s["seq_len_fed"], f"{100 * s['padding_share']:.1f}", s["model_gflops"], None if s["mfu"] is None else f"{100 * s['mfu']:.0f}%"]
        for w, s in summary.items()
    ]
    print()
    print(table(headers, rows))
    if peak:
        print(f"\nfp32 matmul peak: {peak:.0f} GFLOP/s ({machine['torch_threads']} threads; runs: {', '.join(f'{p:.0f}' for p in peaks)}); "
              f"load average at end {load_average()}")
    else:
        print(f"\nMFU not measured ({'a GPU run' if args.device == 'cuda' else '--no-mfu'}); load average at end {load_average()}")
    ratios = {}
    for num, den in (("c", "a"), ("c", "b"), ("b", "a"), ("c", "s")):
        if num in summary and den in summary:
            ratios[f"{num}/{den}"] = summary[num]["samples_per_s"] / summary[den]["samples_per_s"]
    if ratios:
        print("samples/s ratios: " + ", ".join(f"{k} = {v:.2f}x" for k, v in ratios.items()))
    for way, s in summary.items():
        after = s["samples_per_s_after_first_step"]
        spread = runs[way][0]
        print(f"({way}) on {s['model_device']}: first step {s['first_step_s']:.2f} s"
              + (f", then {after:,.0f} samples/s" if after else "")
              + (f"; step-to-step median {spread['step_ms_median']:.1f} ms, worst {spread['step_ms_max']:.1f} ms (first run)" if "step_ms_median" in spread else ""))
    for way in ("c", "s"):
        if way in summary:
            c = summary[way]
            print(f"({way}) best-epoch accuracy {c['best_accuracy']:.4f}; in-loop evaluation/saves subtracted from its train loop: {c['in_loop_eval_and_saves_s']:.1f} s")
    if "c" in summary and peak:
        # the fast path's last layer works on [CLS] only: of the per-token matmul FLOPs of the formula it runs
        # 5 full layers + the last layer's K/V projections (4 of 24 H^2), i.e. (5 x 24 + 4) / (6 x 24)
        layers = runs["c"][0]["layers"]
        executed = ((layers - 1) * 24 + 4) / (layers * 24)
        print(f"(c) runs ~{100 * executed:.0f}% of the formula's FLOPs ([CLS]-only last layer): hardware FLOP utilization ~{100 * executed * summary['c']['mfu']:.0f}%")
    print(json.dumps({"benchmark": "train_vs_trainer", "command": command_line(), "machine": machine, "epochs": epochs,
                      "device": args.device, "precision": "bf16" if args.bf16 else "fp32", "model": args.model,
                      **({"kept_data_dir": str(tmp)} if os.environ.get("BENCH_KEEP_RUN") else {}),
                      "matmul_peak_gflops": peak, "ways": summary, "ratios": ratios,
                      "runs": {w: runs[w] for w in ways}}, default=str))


if __name__ == "__main__":
    main()
