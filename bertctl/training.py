"""Fine-tune a BERT classifier from a recipe: the classification task for bertctl.loop.

    result = train(load_recipe("recipes/agnews.toml"))            # one CPU, one GPU
    accelerate launch --num_processes 2 -m bertctl train RECIPE     # many processes (gloo on CPU, NCCL on GPUs)

The task gives the loop tokenized, length-grouped batches, a BertForSequenceClassification (its forward returns
the cross-entropy), validation metrics gathered over all processes, and the model card. The best model by
train.metric_for_best (ties: lower log_loss) is the run's result.
"""

from __future__ import annotations

from typing import Any

from bertctl.data import tokenize_data
from bertctl.errors import BertctlError, Problem, RecipeError
from bertctl.loop import PadCollator, RunResult, Task, build_train_loader, check_trainable, run_loop
from bertctl.modeling import load_classifier, load_tokenizer, model_config
from bertctl.problems import ProblemType, problem_type
from bertctl.recipe import Recipe


def build_dataloaders(splits, recipe: Recipe, pad_token_id: int, *, pad_to_multiple_of: int | None = None):
    """(train loader, its batch sampler, validation loader sorted by length for the least padding, or None)."""
    import torch
    from torch.utils.data import DataLoader

    def columns(split) -> list[str]:  # distillation's train split also carries the teacher's outputs
        return [c for c in ("input_ids", "token_type_ids", "attention_mask", "label", *PadCollator.TARGETS) if c in split.column_names]

    collate = PadCollator(pad_token_id, pad_to_multiple_of)
    train = build_train_loader(splits["train"].select_columns(columns(splits["train"])), splits["train"]["length"], collate, recipe)
    eval_loader = None
    if "validation" in splits:
        val = splits["validation"]
        order = sorted(range(len(val)), key=lambda i: val[i]["length"]) if len(val) else []
        # its own generator, as the train loader's: iterating it must not draw from the global RNG (dropout)
        eval_loader = DataLoader(
            val.select(order).select_columns(columns(val)), batch_size=recipe.train.eval_batch_size, shuffle=False, collate_fn=collate,
            generator=torch.Generator().manual_seed(recipe.train.seed),
        )
    return train, train.batch_sampler, eval_loader


def evaluate_loader(model, loader, accelerator, labels: list[str], problem: ProblemType, target=None, calibrate: bool = False) -> tuple[dict[str, Any], Any, Any, dict[str, float]]:
    """Validation metrics over all processes' shards, without the duplicates that pad the last batch, and what the
    saved model needs from them: multi-label thresholds tuned here, and (train.calibrate) the temperatures, by
    which the metrics are those of the calibrated model; then also the log loss and ECE before calibration.

    Scores come from the gathered logits, so every example counts once whatever the number of processes.
    `target`: regression's (mean, std) of the training labels, which the model's standardised output is mapped
    back through.
    """
    import numpy as np
    import torch

    model.eval()
    all_logits, all_labels = [], []
    with torch.inference_mode():
        for batch in loader:
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            logits, gold = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
            all_logits.append(logits.cpu())
            all_labels.append(gold.cpu())
    model.train()
    logits, references = torch.cat(all_logits).numpy().astype(np.float64), torch.cat(all_labels).numpy()
    if target is not None:
        logits = logits * target[1] + target[0]
    temperature = problem.fit_temperature(logits, references) if calibrate and len(references) else None
    before: dict[str, float] = {}
    if temperature is not None:
        plain = problem.score(references, problem.scores(logits), labels, problem.tune_thresholds(references, problem.scores(logits))).overall
        before = {name: plain[name] for name in ("log_loss", "ece") if name in plain}
        logits = logits / temperature
    scores = problem.scores(logits)
    thresholds = problem.tune_thresholds(references, scores)
    return problem.score(references, scores, labels, thresholds).overall, thresholds, temperature, before


def class_weights(recipe: Recipe, targets: list, labels: list[str]):
    """train.class_weights as a tensor: CrossEntropy's per-class weight, or (multi-label) BCE's per-label pos_weight.
    'balanced' is the problem type's rule (ProblemType.class_weights). None when weighting is off."""
    import torch

    setting = recipe.train.class_weights
    if setting == "none":
        return None
    if isinstance(setting, list):
        if len(setting) != len(labels):
            raise BertctlError(
                f"{recipe.source}: train.class_weights has {len(setting)} weights for {len(labels)} labels ({', '.join(labels)})",
                fix="give one weight per label, in the labels' order",
            )
        return torch.tensor(setting, dtype=torch.float32)
    return torch.tensor(problem_type(recipe.model.problem_type).class_weights(targets, labels), dtype=torch.float32)


def check_reinit_layers(recipe: Recipe, model_config) -> None:
    """train.reinit_layers can't exceed the model's encoder layers: a Problem, as the recipe's other keys."""
    layers = getattr(model_config, "num_hidden_layers", None)
    if layers is not None and recipe.train.reinit_layers > layers:
        raise RecipeError(
            recipe.source,
            [Problem("train.reinit_layers", f"is {recipe.train.reinit_layers}, but {recipe.model.name} has {layers} encoder layers", f"set train.reinit_layers to at most {layers}")],
        )


def reinit_top_layers(model, k: int, seed: int) -> list[str]:
    """Re-initialise the top `k` encoder layers and the pooler with the model's own init (its `_init_weights`,
    config.initializer_range), as Zhang et al. 2021 (Revisiting Few-sample BERT Fine-tuning) do: the top layers
    are the most specific to pre-training. Seeded by `seed` in a forked RNG, so the draws are the same for a seed
    and the global RNG (head init already done, dropout to come) is left as it was. Returns the modules reset."""
    import torch

    if k == 0:
        return []
    base = getattr(model, model.base_model_prefix)
    layers = list(base.encoder.layer)
    names = [f"{model.base_model_prefix}.encoder.layer.{i}" for i in range(len(layers) - k, len(layers))]
    modules = layers[len(layers) - k :]
    if getattr(base, "pooler", None) is not None:
        names.append(f"{model.base_model_prefix}.pooler")
        modules.append(base.pooler)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                # transformers' init functions skip tensors flagged as loaded from the checkpoint
                tensor._is_hf_initialized = False
            module.apply(model._init_weights)
    return names


class Classification(Task):
    command, noun = "train", "training"
    resume_ignores = frozenset({"pretrain.", "distill."})

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.model_source = recipe.model.name  # where the tokenizer and the initial weights come from
        self.problem = problem_type(recipe.model.problem_type)
        self.run_dir = recipe.run_dir
        self.epochs = recipe.train.epochs
        self.metric = self.curve_metric = recipe.train.metric_for_best
        # what eval lines show: the recipe's eval.metrics, the metric that picks the best model, and the tie-break
        self.logged_keys = list(dict.fromkeys([*recipe.eval.metrics, self.metric, self.problem.tie_break]))
        self.fast_path: list[str] = []
        self.target: tuple[float, float] | None = None  # regression: the training labels' mean and std
        self.temperature = None  # train.calibrate: fitted at each evaluation, folded into the head when it is saved

    def load(self, accelerator):
        recipe = self.recipe
        self.tokenizer = load_tokenizer(self.model_source, base_dir=recipe.base_dir_path)
        with accelerator.main_process_first():  # the main process tokenizes first, the others read its cache
            self.data = tokenize_data(recipe, self.tokenizer)
            self.extend_train(accelerator)
        config = model_config(self.model_source, base_dir=recipe.base_dir_path)
        check_trainable(recipe, len(self.data.splits["train"]), config, accelerator.num_processes)
        check_reinit_layers(recipe, config)
        pad_multiple = 8 if accelerator.device.type == "cuda" else None  # tensor cores like multiples of 8
        loader, _, eval_loader = build_dataloaders(self.data.splits, recipe, self.tokenizer.pad_token_id, pad_to_multiple_of=pad_multiple)
        self.eval_loader = accelerator.prepare(eval_loader) if eval_loader is not None else None
        return loader

    def build_model(self, accelerator):
        import numpy as np

        from bertctl.fastpath import use_fast_path  # imports torch and transformers at its top

        model = self.initial_model()
        reinit_top_layers(model, self.recipe.train.reinit_layers, self.recipe.train.seed)
        if accelerator.device.type == "cpu" and self.recipe.train.cpu_fast_path:
            self.fast_path = use_fast_path(model)
        targets = self.data.splits["train"]["label"]
        weights = class_weights(self.recipe, list(targets), self.data.labels)
        weights = weights.to(accelerator.device) if weights is not None else None
        if not self.problem.has_classes:
            # standardised targets: the head learns at the scale of its init whatever the label's units; the
            # scaling is folded into the saved head (saved_weights), so the saved model outputs those units
            values = np.asarray(targets, dtype=np.float64)
            self.target = (float(values.mean()), float(values.std()) or 1.0)
            model.config.regression_target = {"mean": self.target[0], "std": self.target[1], "folded_into": "classifier.weight, classifier.bias"}
        self.criterion = self.problem.loss(weights, self.target)
        self.weights = weights
        return model

    def extend_train(self, accelerator) -> None:
        """Called once the splits are tokenized, before the loaders are built (distillation adds its columns here)."""

    def initial_model(self):
        """The classifier before training: the recipe's BERT with a fresh head for the labels."""
        return load_classifier(self.model_source, labels=self.data.labels, base_dir=self.recipe.base_dir_path, problem_type=self.problem.name)

    def loss(self, model, batch):
        # the loss transformers computes for config.problem_type, with the recipe's class weights
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        return self.criterion(logits.float(), batch["labels"])

    def saved_weights(self, state_dict):
        """The head as the saved model should compute it: logits / T (calibration) and regression's units are
        folded into classifier.weight and .bias, so pipeline() and every runtime read the same scores."""
        if self.target is None and self.temperature is None:
            return state_dict
        folded = dict(state_dict)
        weight, bias = state_dict["classifier.weight"], state_dict["classifier.bias"]
        if self.target is not None:
            mean, std = self.target
            folded["classifier.weight"], folded["classifier.bias"] = weight * std, bias * std + mean
        else:
            import torch

            t = torch.as_tensor(self.temperature, dtype=weight.dtype, device=weight.device)
            folded["classifier.weight"], folded["classifier.bias"] = weight / t[:, None] if t.numel() > 1 else weight / t, bias / t
        return folded

    def evaluate(self, model, accelerator):
        if self.eval_loader is None:
            return None
        calibrate = self.recipe.train.calibrate
        scores, thresholds, temperature, before = evaluate_loader(model, self.eval_loader, accelerator, self.data.labels, self.problem, self.target, calibrate)
        config = accelerator.unwrap_model(model).config
        # the loop saves the model right after an evaluation that improved: its config then carries these
        if thresholds is not None:
            config.label_thresholds = {label: float(t) for label, t in zip(self.data.labels, thresholds)}
        if temperature is not None:
            self.temperature = temperature
            after = {name: scores[name] for name in before}
            config.calibration = {"temperature": [float(t) for t in temperature], "folded_into": "classifier.weight, classifier.bias", "validation_before": before, "validation_after": after}
        return scores

    def logged(self, scores):
        return {k: scores[k] for k in self.logged_keys}

    def describe(self) -> str:
        fast = f"; CPU fast path: {', '.join(self.fast_path)}" if self.fast_path else ""
        weighted = f", class weights {self.recipe.train.class_weights if isinstance(self.recipe.train.class_weights, str) else 'given'}" if self.weights is not None else ""
        return f"{len(self.data.splits['train'])} examples, {self.problem.count(self.data.labels)}{weighted}{fast}"

    def metrics(self, state):
        return {
            "metric_for_best": self.metric,
            "best_value": state.best_value,
            "best_step": state.best_step,
            "best_epoch": state.best_epoch,
            "validation": state.best_metrics,
            "last_validation": state.last_metrics,
            "stopped_early": state.stopped_early,
            "train_examples": len(self.data.splits["train"]),
            "validation_examples": len(self.data.splits["validation"]) if "validation" in self.data.splits else 0,
            "labels": self.data.labels,
            "problem_type": self.problem.name,
        }

    def card(self, metrics, run_dir):
        return model_card(self.recipe, self.data, metrics)


def train(recipe: Recipe, **options: Any) -> RunResult:
    """Fine-tune `recipe.model` on `recipe.data` and write a finished run dir. Options are run_loop's: output_dir,
    resume, overwrite, progress, stop_after_steps (see bertctl.loop.run_loop)."""
    return run_loop(Classification(recipe), recipe, **options)


CALIBRATED = (
    "\nCalibrated (`train.calibrate`): temperature scaling fitted on validation is folded into the classifier's weight and"
    " bias (`calibration` in `config.json` gives the temperatures and the validation log loss / ECE before and after), so"
    " every runtime and `pipeline()` read calibrated probabilities.\n"
)


def model_card(recipe: Recipe, data, metrics: dict[str, Any], *, made: str = "", section: str = "") -> str:
    """The run's README.md; `made` says how it was made (default: fine-tuned by bertctl train), `section` comes
    before the settings."""
    t, problem = recipe.train, problem_type(recipe.model.problem_type)
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics["validation"].items() if isinstance(v, float))
    sources = "\n".join(f"- {split}: `{src}` ({len(data.splits[split])} examples)" for split, src in data.sources.items() if split in data.splits)
    return f"""---
library_name: transformers
pipeline_tag: text-classification
base_model: {recipe.model.name}
---
# {recipe.name}

A `BertForSequenceClassification` {made or f"fine-tuned by `bertctl train {recipe.source}`"}.
{section}
## Labels ({recipe.model.problem_type})
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
pipeline("text-classification", model="{recipe.run_dir}"{problem.pipeline_args})("some text")
```
{problem.card_note}{CALIBRATED if t.calibrate else ""}"""
