"""Multi-label (GoEmotions-Ekman) and regression (STS-B): a tuned HF Trainer beside `bertctl train`, same model and data.

    python benchmarks/problem_types_vs_trainer.py                        # both tasks: Trainer + bertctl (4 trainings)
    python benchmarks/problem_types_vs_trainer.py --task stsb --run-dir runs/stsb   # reuse a finished bertctl run
    python benchmarks/problem_types_vs_trainer.py --quick                # smoke run: 300 / 200 rows, 1 epoch

The Trainer is the reference the issue names: `problem_type` set on the model (BCE-with-logits / MSE), 3 epochs at
lr 1e-4, batch 32, warmup 6%, weight decay 0.01, tuned input pipeline (per-batch padding, group_by_length), fixed
0.5 threshold for multi-label. It is scored on the dev split by the same metric code as `bertctl eval`
(bertctl.metrics), and for multi-label also with thresholds tuned on that same dev split (an optimistic reference:
the thresholds see the data they are scored on; bertctl's are tuned on validation the same way).

bertctl trains the shipped recipe (recipes/goemotions.toml, recipes/stsb.toml) as a user would, and is scored by
`bertctl eval` on the recipe's validation split. Each training runs in its own fresh Python process.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, command_line, emit_result, load_average, machine_summary, peak_rss_mb, run_worker, table  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMOTIONS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
TASKS = {
    "goemotions": {
        "recipe": REPO / "recipes" / "goemotions.toml",
        "train": REPO / "recipes" / "data" / "goemotions" / "train.tsv",
        "dev": REPO / "recipes" / "data" / "goemotions" / "dev.tsv",
        "problem_type": "multi_label_classification",
        "max_length": 64,
    },
    "stsb": {
        "recipe": REPO / "recipes" / "stsb.toml",
        "train": REPO / "recipes" / "data" / "stsb" / "train.tsv",
        "dev": REPO / "recipes" / "data" / "stsb" / "dev.tsv",
        "problem_type": "regression",
        "max_length": 128,
    },
}
TRAINER = {"learning_rate": 1e-4, "epochs": 3, "batch_size": 32, "warmup_ratio": 0.06, "weight_decay": 0.01, "seed": 42}


def read_rows(path: Path, limit: int | None) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[:limit] if limit else rows


def columns(task: str, rows: list[dict]) -> dict:
    if task == "goemotions":
        return {"text": [r["text"] for r in rows], "label": [[float(e in r["emotions"].split(",")) for e in EMOTIONS] for r in rows]}
    return {"text": [r["sentence1"] for r in rows], "text_pair": [r["sentence2"] for r in rows], "label": [float(r["score"]) for r in rows]}


def trainer_worker(task: str, limit: int | None, epochs: int) -> dict:
    import numpy as np
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments, set_seed
    from transformers.utils import logging as hf_logging

    from bertctl.metrics import functional
    from bertctl.problems import problem_type
    from bertctl.modeling import resolve_model

    hf_logging.set_verbosity_error()
    spec = TASKS[task]
    model_dir = resolve_model(MODEL).location
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def dataset(path: Path, n: int | None):
        data = Dataset.from_dict(columns(task, read_rows(path, n)))
        args = ("text", "text_pair") if task == "stsb" else ("text",)
        return data.map(lambda b: tokenizer(*(b[a] for a in args), truncation=True, max_length=spec["max_length"]), batched=True, remove_columns=list(args))

    train_ds, dev_ds = dataset(spec["train"], limit), dataset(spec["dev"], limit and 200)
    set_seed(TRAINER["seed"])
    labels = EMOTIONS if task == "goemotions" else ["score"]
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(labels), problem_type=spec["problem_type"], id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )
    out = tempfile.mkdtemp(prefix=f"bench-trainer-{task}-")
    args = TrainingArguments(
        output_dir=out, learning_rate=TRAINER["learning_rate"], per_device_train_batch_size=TRAINER["batch_size"], per_device_eval_batch_size=128,
        num_train_epochs=epochs, warmup_steps=TRAINER["warmup_ratio"], weight_decay=TRAINER["weight_decay"], lr_scheduler_type="linear",
        seed=TRAINER["seed"], eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
        train_sampling_strategy="group_by_length",
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=DataCollatorWithPadding(tokenizer))
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    predicted = trainer.predict(dev_ds)
    shutil.rmtree(out, ignore_errors=True)
    # label_ids, not dev_ds's order: with group_by_length the Trainer's prediction loader may reorder examples
    logits, refs = np.asarray(predicted.predictions, dtype=np.float64), np.asarray(predicted.label_ids, dtype=np.float64)
    result = {"way": "Trainer", "task": task, "train_examples": len(train_ds), "epochs": epochs, "train_s": train_s, "peak_rss_mb": peak_rss_mb()}
    if task == "goemotions":
        probs = 1 / (1 + np.exp(-logits))
        fixed = problem_type(spec["problem_type"]).score(refs, probs, labels).overall
        tuned = problem_type(spec["problem_type"]).score(refs, probs, labels, functional.best_f1_thresholds(refs, probs)).overall
        result.update(metrics=fixed, metrics_tuned_thresholds=tuned)
    else:
        result.update(metrics=problem_type(spec["problem_type"]).score(refs, logits[:, 0], labels).overall)
    return result


def bertctl_worker(task: str, limit: int | None, epochs: int | None, run_dir: str | None) -> dict:
    from bertctl.evaluation import evaluate_run
    from bertctl.recipe import load_recipe
    from bertctl.training import train

    spec = TASKS[task]
    wall = None
    if run_dir is None:
        overrides = [f"data.limit.train={limit}", f"data.limit.validation={min(limit, 200)}"] if limit else []
        overrides += [f"train.epochs={epochs}"] if epochs else []
        recipe = load_recipe(spec["recipe"], overrides)
        run_dir = tempfile.mkdtemp(prefix=f"bench-bertctl-{task}-")
        start = time.perf_counter()
        result = train(recipe, output_dir=run_dir, overwrite=True, progress=False)
        wall = time.perf_counter() - start
        metrics = result.metrics
    else:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    evaluated = evaluate_run(run_dir, split="validation")
    return {
        "way": "bertctl", "task": task, "train_examples": metrics["train_examples"], "epochs": metrics["epochs_completed"],
        "train_s": metrics["wall_time_s"], "run_wall_s": wall, "metrics": evaluated.metrics.overall, "peak_rss_mb": peak_rss_mb(),
        "run_dir": run_dir, "reused": wall is None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=[*TASKS, "both"], default="both")
    parser.add_argument("--run-dir", help="a finished bertctl run of the task's recipe to score instead of training one (one task only)")
    parser.add_argument("--quick", action="store_true", help="300 train / 200 dev rows, 1 epoch: a smoke run")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        way, task, limit, epochs, run_dir = args.worker
        limit_n = int(limit) or None
        if way == "trainer":
            emit_result(trainer_worker(task, limit_n, int(epochs)))
        else:
            emit_result(bertctl_worker(task, limit_n, int(epochs) or None, None if run_dir == "-" else run_dir))
        return
    if args.run_dir and args.task == "both":
        parser.error("--run-dir belongs to one task: pass --task goemotions or --task stsb")
    limit, trainer_epochs, bertctl_epochs = (300, 1, 1) if args.quick else (0, TRAINER["epochs"], 0)
    print(f"# {command_line()}\n# {json.dumps(machine_summary())}  load before: {load_average()}")
    for task in TASKS if args.task == "both" else [args.task]:
        reference = run_worker(Path(__file__), ["--worker", "trainer", task, str(limit), str(trainer_epochs), "-"], timeout=7200)
        ours = run_worker(Path(__file__), ["--worker", "bertctl", task, str(limit), str(bertctl_epochs), args.run_dir or "-"], timeout=7200)
        if task == "goemotions":
            names = ["f1_macro", "f1_micro", "subset_accuracy"]
            rows = [
                ["Trainer, threshold 0.5", reference["epochs"]] + [reference["metrics"][n] for n in names] + [reference["train_s"]],
                ["Trainer, thresholds tuned on dev", reference["epochs"]] + [reference["metrics_tuned_thresholds"][n] for n in names] + [reference["train_s"]],
                [f"bertctl ({TASKS[task]['recipe'].name})", ours["epochs"]] + [ours["metrics"][n] for n in names] + [ours["train_s"]],
            ]
        else:
            names = ["spearman", "pearson", "rmse"]
            rows = [
                ["Trainer", reference["epochs"]] + [reference["metrics"][n] for n in names] + [reference["train_s"]],
                [f"bertctl ({TASKS[task]['recipe'].name})", ours["epochs"]] + [ours["metrics"][n] for n in names] + [ours["train_s"]],
            ]
        print(f"\n## {task}: {reference['train_examples']} train rows, dev split" + (" (bertctl run reused: " + ours["run_dir"] + ")" if ours["reused"] else ""))
        print(table(["way", "epochs", *names, "train s"], rows))
        key = names[0]
        print(f"{key}: bertctl {ours['metrics'][key]:.4f} vs Trainer {reference['metrics'][key]:.4f} ({ours['metrics'][key] - reference['metrics'][key]:+.4f})")
        print("BENCH_JSON " + json.dumps({"task": task, "trainer": reference, "bertctl": ours}, default=str))
    print(f"# load after: {load_average()}")


if __name__ == "__main__":
    main()
