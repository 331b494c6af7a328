"""Continued masked-language-model pre-training (`bertctl pretrain`): the MLM/NSP task for bertctl.loop.

    pretrain(load_recipe("recipes/agnews.toml", ["pretrain.epochs=1"]))   # -> runs/agnews-mlm
    bertctl pretrain recipes/agnews.toml --whole-word-masking --data news.txt

The [pretrain] table of the recipe holds its settings (bertctl.recipe.PretrainSection); [train] holds the
optimizer's. The task gives the loop masked, length-grouped batches (bertctl.masking), a BertForMaskedLM (or
BertForPreTraining with NSP) wrapped so its loss is computed at the selected positions only, and a held-out slice
scored with identical masks before and after. The result is a model dir with an MLM head that a recipe can
fine-tune (model.name = "runs/agnews-mlm").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from bertctl.data import unlabeled_texts
from bertctl.errors import BertctlError, DataError
from bertctl.loop import RunResult, Task, build_train_loader, check_trainable, format_scores, run_loop
from bertctl.masking import IGNORE_INDEX, MaskingCollator, NextSentencePairs, sentence_token_ids
from bertctl.modeling import load_masked_lm, load_tokenizer, model_config, quiet_transformers, resolve_model
from bertctl.recipe import Recipe

if TYPE_CHECKING:
    import torch

HELDOUT_MASK_SEED = 20190603  # fixed: the before/after held-out scores of every run use the same masks


# ---------------------------------------------------------------------------------------------
# the MLM loss, computed where it counts


def pretraining_logits(model, batch: dict[str, "torch.Tensor"]) -> dict[str, tuple["torch.Tensor", "torch.Tensor"]]:
    """{"mlm": (logits, labels) at the selected (label != -100) positions, "nsp": (logits, labels) per example
    when the model has an NSP head and the batch NSP labels}.

    BertForMaskedLM projects every position onto the 30k-token vocabulary, though only ~15% carry a label; the
    projection and its softmax dominate a small model's step. Running the head on the selected positions gives
    the same loss (tests check it) about 3x faster on a CPU. Models without a BERT-style `cls` head use the full forward.
    """
    labels = batch["labels"]
    selected = labels != IGNORE_INDEX
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "next_sentence_label")}
    head = getattr(model, "cls", None)
    predictions = getattr(head, "predictions", None)  # BertOnlyMLMHead and BertPreTrainingHeads both have one
    if predictions is None:
        return {"mlm": (model(**inputs).logits[selected], labels[selected])}
    encoded = model.base_model(**inputs)
    out = {"mlm": (predictions(encoded.last_hidden_state[selected]), labels[selected])}
    next_sentence = getattr(head, "seq_relationship", None)
    if next_sentence is not None and "next_sentence_label" in batch:
        out["nsp"] = (next_sentence(encoded.pooler_output), batch["next_sentence_label"])
    return out


def selected_positions_mlm(mlm, pooler: dict[str, Any] | None = None):
    """A module around `mlm` whose `forward(**batch).loss` is the MLM loss over the selected positions only
    (see `pretraining_logits`); accelerate prepares the wrapper, so gradients still sync across processes.
    Its `save_pretrained` writes `mlm` as a plain model dir, plus the base checkpoint's `pooler` tensors."""
    import torch

    class SelectedPositionsMLM(torch.nn.Module):
        def __init__(self, inner, pooler):
            super().__init__()
            self.mlm = inner
            self.pooler = pooler

        @property
        def config(self):  # the loop reads the encoder's config (layers for train.layerwise_lr_decay)
            return self.mlm.config

        def forward(self, **batch):
            outputs = pretraining_logits(self.mlm, batch)
            logits, gold = outputs["mlm"]
            # an empty selection gives a zero loss that keeps the graph (every process must run backward)
            loss = torch.nn.functional.cross_entropy(logits.float(), gold) if gold.numel() else logits.sum() * 0.0
            if "nsp" in outputs:  # BERT's pre-training loss: MLM + NSP, unweighted
                nsp_logits, nsp_gold = outputs["nsp"]
                if bool((nsp_gold != IGNORE_INDEX).any()):
                    loss = loss + torch.nn.functional.cross_entropy(nsp_logits.float(), nsp_gold, ignore_index=IGNORE_INDEX)
                else:
                    loss = loss + nsp_logits.sum() * 0.0
            return SimpleNamespace(loss=loss, logits=logits)

        def save_pretrained(self, path, *, state_dict, **kwargs):
            inner = {k.removeprefix("mlm."): v for k, v in state_dict.items()}
            dtype = next(iter(inner.values())).dtype
            inner.update({k: v.to(dtype) for k, v in self.pooler.items() if k not in inner})
            with quiet_transformers():
                self.mlm.save_pretrained(path, state_dict=inner, **kwargs)

    return SelectedPositionsMLM(mlm, pooler or {})


# ---------------------------------------------------------------------------------------------
# held-out MLM evaluation


def evaluate_mlm(model, batches: list[dict[str, "torch.Tensor"]], device=None) -> dict[str, float]:
    """Token-weighted MLM loss and accuracy over the selected (label != -100) positions of fixed masked batches."""
    import torch

    was_training = model.training
    model.eval()
    sums = {"mlm": [0.0, 0, 0], "nsp": [0.0, 0, 0]}  # loss sum, correct, count
    with torch.inference_mode():
        for batch in batches:
            if device is not None:
                batch = {k: v.to(device) for k, v in batch.items()}
            for task, (logits, gold) in pretraining_logits(model, batch).items():
                keep = gold != IGNORE_INDEX
                logits, gold = logits[keep].float(), gold[keep]
                if gold.numel() == 0:
                    continue
                sums[task][0] += float(torch.nn.functional.cross_entropy(logits, gold, reduction="sum"))
                sums[task][1] += int((logits.argmax(-1) == gold).sum())
                sums[task][2] += int(gold.numel())
    if was_training:
        model.train()
    loss_sum, correct, total = sums["mlm"]
    scores = {
        "mlm_loss": loss_sum / total if total else float("nan"),
        "mlm_accuracy": correct / total if total else float("nan"),
        "masked_tokens": total,
    }
    loss_sum, correct, total = sums["nsp"]
    if total:
        scores.update({"nsp_loss": loss_sum / total, "nsp_accuracy": correct / total, "nsp_pairs": total})
    return scores


# ---------------------------------------------------------------------------------------------
# texts


def default_output_dir(recipe: "Recipe") -> Path:
    # beside the classifier run, never in it: `runs/latest` and eval/predict expect classifiers there
    return recipe.run_dir.with_name(recipe.run_dir.name + "-mlm")


def load_texts(recipe: "Recipe") -> tuple[list[str], list[str] | None, str]:
    """Unlabeled texts: the recipe's train texts (pairs kept as pairs), or the non-blank rows of pretrain.data
    in column pretrain.text."""

    data = recipe.data_path("pretrain")
    return unlabeled_texts(recipe if data is None else data, recipe.pretrain.text)


def split_heldout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): a seeded random `fraction` held out, at least one of each."""
    import random

    if n < 2:
        raise DataError(f"only {n} text to pretrain on: need at least 2 (one is held out to measure the MLM loss)", fix="give more texts")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = min(n - 1, max(1, round(n * fraction)))
    return sorted(order[k:]), sorted(order[:k])


def _pooler_tensors(location: str) -> dict[str, Any]:
    """The checkpoint's pooler weights, keyed as BertForSequenceClassification loads them.

    BertForMaskedLM has no pooler, so saving it would silently drop the pre-trained pooler that the classifier
    head reads; we carry it over unchanged into the saved model dir.
    """
    from safetensors import safe_open

    out = {}
    for path in sorted(Path(location).glob("*.safetensors")):
        with safe_open(str(path), "pt") as fh:
            for key in fh.keys():
                if key.endswith(("pooler.dense.weight", "pooler.dense.bias")):
                    out["bert.pooler.dense." + key.rsplit(".", 1)[1]] = fh.get_tensor(key)
    return out


def next_sentence_pairs(tokenizer, texts, pairs, train_ids, heldout_ids, recipe: "Recipe", source: str) -> tuple[NextSentencePairs, NextSentencePairs]:
    """NSP pair builders for the training and held-out texts (each draws its random B from its own side)."""
    if pairs is not None:
        raise BertctlError(
            f"pretrain.nsp builds sentence pairs by cutting single texts, but {recipe.source} already feeds text pairs (data.text_pair)",
            fix="drop --nsp (pretrain.nsp = false), or pretrain on single texts with --data FILE (pretrain.data)",
        )
    sentence_ids = sentence_token_ids(tokenizer, texts)
    several = [i for i in train_ids if len(sentence_ids[i]) >= 2]
    if len(several) < 2:
        raise DataError(
            f"{source}: pretrain.nsp needs texts of two or more sentences, and {len(several)} of the {len(train_ids)} training texts have them",
            fix="drop --nsp (MLM alone, pretrain.nsp = false), or pretrain on text with sentence boundaries (--data FILE)",
        )
    settings = dict(cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id, max_length=recipe.model.max_length)
    return NextSentencePairs(sentence_ids, train_ids, **settings), NextSentencePairs(sentence_ids, heldout_ids, **settings)


# ---------------------------------------------------------------------------------------------
# the task


class MaskedLM(Task):
    command, noun = "pretrain", "pre-training"
    curve_metric = "mlm_accuracy"
    updates_latest = False  # runs/latest is for classifiers, which eval and predict expect there

    def __init__(self, recipe: "Recipe"):
        self.recipe, self.settings = recipe, recipe.pretrain
        self.run_dir = default_output_dir(recipe)
        self.epochs = self.settings.epochs or recipe.train.epochs
        self.max_steps = self.settings.max_steps

    def load(self, accelerator):

        recipe, p = self.recipe, self.settings
        self.tokenizer = tokenizer = load_tokenizer(recipe.model.name, base_dir=recipe.base_dir_path)
        texts, pairs, self.source = load_texts(recipe)
        train_ids, heldout_ids = split_heldout(len(texts), p.heldout_fraction, recipe.train.seed)
        encoded = tokenizer(*((texts, pairs) if pairs is not None else (texts,)), truncation=True, max_length=recipe.model.max_length, return_token_type_ids=True)
        examples = [{"input_ids": ids, "token_type_ids": types, "index": i} for i, (ids, types) in enumerate(zip(encoded["input_ids"], encoded["token_type_ids"]))]
        self.train_examples = [examples[i] for i in train_ids]
        heldout = sorted((examples[i] for i in heldout_ids), key=lambda e: len(e["input_ids"]))
        self.heldout_examples = len(heldout)
        config = model_config(recipe.model.name, base_dir=recipe.base_dir_path)
        check_trainable(recipe, len(self.train_examples), config, accelerator.num_processes, "texts left for training")

        train_pairs = heldout_pairs = None
        if p.nsp:
            train_pairs, heldout_pairs = next_sentence_pairs(tokenizer, texts, pairs, train_ids, heldout_ids, recipe, self.source)
        masking = dict(mlm_probability=p.mlm_probability, whole_word_masking=p.whole_word_masking)
        collator = MaskingCollator(tokenizer, seed=recipe.train.seed, pad_to_multiple_of=8 if accelerator.device.type == "cuda" else None, pairs=train_pairs, **masking)
        heldout_collator = MaskingCollator(tokenizer, seed=HELDOUT_MASK_SEED, pairs=heldout_pairs, **masking)
        size = recipe.train.eval_batch_size
        self.heldout_batches = [heldout_collator(heldout[i : i + size]) for i in range(0, len(heldout), size)]
        return build_train_loader(self.train_examples, [len(e["input_ids"]) for e in self.train_examples], collator, recipe)

    def build_model(self, accelerator):

        name, base_dir = self.recipe.model.name, self.recipe.base_dir_path
        mlm, _, self.had_head = load_masked_lm(name, base_dir=base_dir, require_head=False, next_sentence=self.settings.nsp)
        mlm.train()
        resolved = resolve_model(name, base_dir=base_dir)
        pooler = _pooler_tensors(resolved.location) if resolved.is_local else {}
        # the unchanged model's score, the baseline the run is judged against; a resume computes the same again
        self.before = evaluate_mlm(mlm.to(accelerator.device), self.heldout_batches, accelerator.device)
        return selected_positions_mlm(mlm, pooler)

    def evaluate(self, model, accelerator):
        return evaluate_mlm(accelerator.unwrap_model(model).mlm, self.heldout_batches, accelerator.device)

    def describe(self) -> str:
        p = self.settings
        head = "its own MLM head" if self.had_head else "a fresh MLM head (the checkpoint has none)"
        return (
            f"{self.recipe.model.name} with {head}; {len(self.train_examples)} texts ({self.heldout_examples} held out), "
            f"{p.mlm_probability:.0%} masking{' (whole words)' if p.whole_word_masking else ''}{' + next-sentence prediction' if p.nsp else ''}"
            f"\nheld-out before: {format_scores(self.before)}"
        )

    def metrics(self, state):
        p, before, after = self.settings, self.before, state.last_metrics
        return {
            "task": "masked-lm + next-sentence" if p.nsp else "masked-lm",
            "base_model": self.recipe.model.name,
            "fresh_mlm_head": not self.had_head,
            "heldout": {"before": before, "after": after, "mask_seed": HELDOUT_MASK_SEED},
            "mlm_loss_before": before["mlm_loss"],
            "mlm_loss_after": after["mlm_loss"],
            "mlm_accuracy_before": before["mlm_accuracy"],
            "mlm_accuracy_after": after["mlm_accuracy"],
            "mlm_probability": p.mlm_probability,
            "whole_word_masking": p.whole_word_masking,
            "next_sentence_prediction": p.nsp,
            **({"nsp_accuracy_before": before.get("nsp_accuracy"), "nsp_accuracy_after": after.get("nsp_accuracy")} if p.nsp else {}),
            "texts_source": self.source,
            "train_examples": len(self.train_examples),
            "heldout_examples": self.heldout_examples,
        }

    def card(self, metrics, run_dir):
        return model_card(run_dir, self.recipe, metrics)


def pretrain(recipe: "Recipe", **options: Any) -> RunResult:
    """Continue MLM pre-training of `recipe.model` as `recipe.pretrain` says; write a model dir with an MLM head.
    Options are run_loop's: output_dir, resume, overwrite, progress, stop_after_steps (see bertctl.loop.run_loop)."""
    return run_loop(MaskedLM(recipe), recipe, **options)


def model_card(run_dir: Path, recipe: "Recipe", m: dict[str, Any]) -> str:
    t = recipe.train
    b, a = m["heldout"]["before"], m["heldout"]["after"]
    head = "a freshly initialised MLM head (the base checkpoint had none)" if m["fresh_mlm_head"] else "the base checkpoint's MLM head"
    nsp = ""
    if m.get("next_sentence_prediction"):
        nsp = f"; next-sentence prediction (50% real next, 50% random), held-out NSP accuracy {b.get('nsp_accuracy', float('nan')):.4f} -> {a.get('nsp_accuracy', float('nan')):.4f}"
    return f"""---
library_name: transformers
pipeline_tag: fill-mask
base_model: {recipe.model.name}
---
# {run_dir.name}

`{recipe.model.name}` after continued masked-language-model pre-training by `bertctl pretrain {recipe.source}`,
starting from {head}, on {m['train_examples']} texts of {m['texts_source']}.

## Held-out MLM ({m['heldout_examples']} texts, identical masks before and after)
| | MLM loss | masked-token accuracy |
|---|---|---|
| before | {b['mlm_loss']:.4f} | {b['mlm_accuracy']:.4f} |
| after | {a['mlm_loss']:.4f} | {a['mlm_accuracy']:.4f} |

## Settings
{m['mlm_probability']:.0%} of tokens selected (80% [MASK], 10% random, 10% unchanged){', whole-word masking' if m['whole_word_masking'] else ''}{nsp};
{m['global_steps']} steps, batch {t.batch_size} x {t.gradient_accumulation_steps} accumulation, lr {t.learning_rate}
({t.scheduler}, warmup {t.warmup_ratio}), weight decay {t.weight_decay}, max_length {recipe.model.max_length}, seed {t.seed};
{m['wall_time_s']} s on {m['num_processes']} x {m['device']}.

## Use
Fine-tune a classifier from it: set `[model] name = "{run_dir}"` in a recipe, then `bertctl train RECIPE`.
```bash
bertctl fill-mask --model {run_dir} "The man went to the [MASK]."
```
"""


# ---------------------------------------------------------------------------------------------
# filling [MASK] with a masked-language model (bertctl pretrain output): `bertctl fill-mask`


@dataclass
class MaskPrediction:
    position: int  # token index in the input ([CLS] = 0)
    candidates: list[dict[str, Any]]  # {"token", "token_id", "probability"}, most likely first


@dataclass
class FillMaskResult:
    text: str
    tokens: list[str]
    masks: list[MaskPrediction]
    filled: str  # the text with every [MASK] replaced by its most likely token

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fill_mask(model, text: str, top_k: int = 5, *, tokenizer=None) -> FillMaskResult:
    """The top-k tokens (with probabilities) for each [MASK] in `text`.

    `model` is a name/dir (loaded with `load_masked_lm`, which refuses models without an MLM head) or an already
    loaded masked-LM, in which case pass its `tokenizer`.
    """
    import torch

    if isinstance(model, (str, Path)):
        model, tokenizer, _ = load_masked_lm(str(model))
    if tokenizer is None:
        raise ValueError("pass the tokenizer with an already loaded model")
    if top_k < 1:
        raise BertctlError(f"--top-k must be at least 1, got {top_k}", fix="e.g. --top-k 5")
    mask = tokenizer.mask_token
    encoding = tokenizer(text, truncation=True, max_length=getattr(model.config, "max_position_embeddings", 512), return_tensors="pt")
    ids = encoding["input_ids"][0]
    positions = (ids == tokenizer.mask_token_id).nonzero().flatten().tolist()
    if not positions:
        raise BertctlError(f"the text has no {mask} token to fill: {text!r}", fix=f'write {mask} where a word should be predicted, e.g. "The man went to the {mask}."')
    with torch.inference_mode():
        logits = model(**encoding).logits[0]
    probs = torch.softmax(logits[positions].float(), dim=-1)
    top = torch.topk(probs, k=min(top_k, probs.shape[-1]), dim=-1)
    masks = []
    filled_ids = ids.clone()
    for row, position in enumerate(positions):
        token_ids = top.indices[row].tolist()
        tokens = tokenizer.convert_ids_to_tokens(token_ids)
        masks.append(MaskPrediction(position, [{"token": t, "token_id": i, "probability": float(p)} for t, i, p in zip(tokens, token_ids, top.values[row].tolist())]))
        filled_ids[position] = token_ids[0]
    filled = tokenizer.decode(filled_ids, skip_special_tokens=True)
    return FillMaskResult(text, tokenizer.convert_ids_to_tokens(ids.tolist()), masks, filled)


# ---------------------------------------------------------------------------------------------
# `bertctl pretrain`'s flags


def flag_overrides(
    *,
    data: Path | None = None,
    text: str | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    mlm_probability: float | None = None,
    heldout_fraction: float | None = None,
    whole_word_masking: bool = False,
    nsp: bool = False,
) -> list[str]:
    """The `pretrain.KEY=VALUE` overrides that `bertctl pretrain`'s flags stand for, in the override syntax (TOML
    values), so a flag and the override it names are validated alike. Flags not given set nothing: the recipe's
    value stands, and a boolean flag can only switch its key on."""
    import json

    flags = {
        # a path on the command line is relative to the working dir; in a recipe, to the recipe's folder
        "data": None if data is None else json.dumps(str(Path(data).resolve())),
        "text": None if text is None else json.dumps(text),
        "epochs": epochs, "max_steps": max_steps, "mlm_probability": mlm_probability, "heldout_fraction": heldout_fraction,
        "whole_word_masking": "true" if whole_word_masking else None, "nsp": "true" if nsp else None,
    }
    return [f"pretrain.{key}={value}" for key, value in flags.items() if value is not None]
