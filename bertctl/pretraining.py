"""BERT's own objective: masked-language-model masking and continued MLM pre-training.

    inputs, labels, selected = mask_tokens(ids, maskable, mask_token_id=103, vocab_size=30522)
    collate = MaskingCollator(tokenizer, whole_word_masking=True, seed=42)   # pads, then masks like BERT
    pretrain(load_recipe("recipes/agnews.toml"), PretrainOptions(epochs=1))   # -> runs/agnews-mlm

Masking follows Devlin et al. (2019) and Google's create_pretraining_data.py: 15% of the real (non-special,
non-padding) tokens are selected; each selected token becomes [MASK] 80% of the time, a random vocabulary token
10% and stays unchanged 10%; labels are -100 everywhere else. Whole-word masking selects words instead, a word
being a piece plus the `##` pieces after it, and masks all of its pieces (each still 80/10/10).

This is our own collator rather than transformers' DataCollatorForLanguageModeling because in v5 that one's
whole-word masking (a) silently drops the 80/10/10 replacement (it forces mask_replace_prob=1), (b) groups pieces
by character offsets, so "store." is one word with its period, and (c) needs offset mappings in every example.
Masks also come from a generator seeded per example by (seed, epoch, example index), so a resumed run and the
held-out evaluation see exactly the same masks without depending on the global RNG.

With next-sentence prediction (`--nsp`, BertForPreTraining), each multi-sentence text is cut at a random sentence
boundary into `[CLS] A [SEP] B [SEP]`: half the time B is the rest of the text (label 0, "is next"), half the time
the rest of another text (label 1, "random"), drawn anew each epoch from the same per-example generator.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from bertctl.errors import BertctlError, DataError, ModelError, RunError
from bertctl.modeling import load_masked_lm, quiet_transformers

if TYPE_CHECKING:
    import torch

    from bertctl.recipe import Recipe

IGNORE_INDEX = -100
HELDOUT_MASK_SEED = 20190603  # fixed: the before/after held-out scores of every run use the same masks
OPTIONS_FILE = "pretrain.json"


# ---------------------------------------------------------------------------------------------
# masking


def mask_tokens(
    input_ids: "torch.Tensor",
    maskable: "torch.Tensor",
    *,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    continuation: "torch.Tensor | None" = None,
    generator: "torch.Generator | None" = None,
) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """(masked inputs, labels, selected) for a (batch, length) tensor of token ids.

    `maskable` marks real tokens that may be selected (not [CLS]/[SEP]/padding). With `continuation` (True for
    `##` pieces) whole words are selected: a word starts at a maskable piece that is not a continuation (or
    follows an unmaskable token) and owns the continuation pieces after it.
    """
    import torch

    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
    if mask_replace_prob < 0 or random_replace_prob < 0 or mask_replace_prob + random_replace_prob > 1:
        raise ValueError("mask_replace_prob and random_replace_prob must be >= 0 and sum to at most 1")
    input_ids = torch.as_tensor(input_ids)
    maskable = torch.as_tensor(maskable, dtype=torch.bool)
    shape = input_ids.shape
    draw = torch.rand(shape, generator=generator)
    if continuation is None:
        selected = (draw < mlm_probability) & maskable
    else:
        continuation = torch.as_tensor(continuation, dtype=torch.bool)
        previous_maskable = torch.zeros_like(maskable)
        previous_maskable[:, 1:] = maskable[:, :-1]
        starts = maskable & (~continuation | ~previous_maskable)
        word_index = torch.cumsum(starts.long(), dim=1)  # 0 before the first word
        chosen_start = (draw < mlm_probability) & starts
        chosen_word = torch.zeros((shape[0], shape[1] + 1), dtype=torch.long)
        chosen_word.scatter_add_(1, word_index, chosen_start.long())
        selected = (chosen_word.gather(1, word_index) > 0) & maskable & (word_index > 0)
    how = torch.rand(shape, generator=generator)
    random_tokens = torch.randint(vocab_size, shape, generator=generator, dtype=input_ids.dtype)
    to_mask = selected & (how < mask_replace_prob)
    to_random = selected & (how >= mask_replace_prob) & (how < mask_replace_prob + random_replace_prob)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(to_random, random_tokens, inputs)
    return inputs, labels, selected


def example_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % (2**63 - 1)


class MaskingCollator:
    """Pad tokenized examples to the batch's longest, then mask them the BERT way (see `mask_tokens`).

    Examples carrying an `index` are masked by a generator seeded with (seed, epoch, index): the same example in
    the same epoch always gets the same mask, whatever the batch or process; `set_epoch` gives new masks each
    epoch (dynamic masking, as RoBERTa; BERT reused 10 fixed copies). Examples without `index` draw from one
    generator seeded once.
    """

    def __init__(
        self,
        tokenizer,
        *,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        whole_word_masking: bool = False,
        seed: int = 0,
        pad_to_multiple_of: int | None = None,
        pairs: "NextSentencePairs | None" = None,
    ):
        import torch

        from bertctl.training import PadCollator

        if tokenizer.mask_token_id is None:
            raise ModelError("the tokenizer has no [MASK] token, so it cannot be used for masked-language modelling", fix="use a BERT (WordPiece) tokenizer")
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.whole_word_masking = whole_word_masking
        self.seed = seed
        self.epoch = 0
        self.pad = PadCollator(tokenizer.pad_token_id, pad_to_multiple_of)
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        tokens = tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))
        self.is_continuation = torch.tensor([bool(t) and t.startswith("##") for t in tokens], dtype=torch.bool)
        self.generator = torch.Generator().manual_seed(seed)
        self.pairs = pairs  # when set, examples are {"index": i} and become NSP pairs here

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def maskable(self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
        import torch

        return attention_mask.bool() & ~torch.isin(input_ids, self.special_ids)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, "torch.Tensor"]:
        import torch

        next_sentence_labels = None
        if self.pairs is not None:
            built = []
            for example in examples:
                index = int(example["index"])
                gen = torch.Generator().manual_seed(example_seed(self.seed, self.epoch, index) ^ NSP_SALT)
                built.append(self.pairs.build(index, gen))
            examples = [{"input_ids": ids, "token_type_ids": types, "index": e["index"]} for (ids, types, _), e in zip(built, examples)]
            next_sentence_labels = torch.tensor([label for _, _, label in built], dtype=torch.long)
        batch = self.pad(examples)
        ids = batch["input_ids"]
        maskable = self.maskable(ids, batch["attention_mask"])
        continuation = self.is_continuation[ids.clamp(0, self.vocab_size - 1)] if self.whole_word_masking else None
        settings = dict(
            mask_token_id=self.mask_token_id,
            vocab_size=self.vocab_size,
            mlm_probability=self.mlm_probability,
            mask_replace_prob=self.mask_replace_prob,
            random_replace_prob=self.random_replace_prob,
        )
        if "index" not in examples[0]:
            inputs, labels, _ = mask_tokens(ids, maskable, continuation=continuation, generator=self.generator, **settings)
        else:
            rows_in, rows_lab = [], []
            for row, example in enumerate(examples):
                gen = torch.Generator().manual_seed(example_seed(self.seed, self.epoch, int(example["index"])))
                cont = None if continuation is None else continuation[row : row + 1]
                masked, labels_row, _ = mask_tokens(ids[row : row + 1], maskable[row : row + 1], continuation=cont, generator=gen, **settings)
                rows_in.append(masked)
                rows_lab.append(labels_row)
            inputs, labels = torch.cat(rows_in), torch.cat(rows_lab)
        batch["input_ids"] = inputs
        batch["labels"] = labels
        if next_sentence_labels is not None:
            batch["next_sentence_label"] = next_sentence_labels
        return batch


# ---------------------------------------------------------------------------------------------
# next-sentence prediction pairs

# a sentence ends at . ! or ? (optionally closed by a quote or bracket) followed by space and a capital or digit;
# "U.S. stocks" or "3.5 percent" do not split
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
NSP_SALT = 0x4E5350  # separates the NSP draws from the masking draws of the same example


def split_sentences(text: str) -> list[str]:
    """A text's sentences (a heuristic good enough for NSP: it only needs plausible boundaries)."""
    return [part for part in (p.strip() for p in _SENTENCE_END.split(text.strip())) if part]


class NextSentencePairs:
    """BERT's next-sentence examples from texts split into sentences (token ids without special tokens).

    For text i with n >= 2 sentences: cut after sentence k (uniform in 1..n-1); A = sentences before the cut; with
    probability 1/2 B = the sentences after it (label 0), else B = the sentences of another text from `pool`
    starting at a random one (label 1). Texts with one sentence become `[CLS] A [SEP]` with label -100 (ignored by
    the NSP loss; they still train the MLM). A and B are trimmed from their ends, longest first, to max_length.
    """

    def __init__(self, sentence_ids: list[list[list[int]]], pool: Sequence[int], *, cls_id: int, sep_id: int, max_length: int):
        self.sentences = sentence_ids
        self.pool = list(pool)
        self.cls_id, self.sep_id, self.max_length = cls_id, sep_id, max_length

    def build(self, index: int, generator: "torch.Generator") -> tuple[list[int], list[int], int]:
        """(input_ids, token_type_ids, next_sentence_label) for text `index`."""
        import torch

        def draw(high: int) -> int:
            return int(torch.randint(high, (1,), generator=generator))

        sentences = self.sentences[index]
        if len(sentences) < 2:
            first, second, label = [t for s in sentences for t in s], [], IGNORE_INDEX
        else:
            cut = 1 + draw(len(sentences) - 1)
            first = [t for s in sentences[:cut] for t in s]
            if float(torch.rand((), generator=generator)) < 0.5 or len(self.pool) < 2:
                second, label = [t for s in sentences[cut:] for t in s], 0
            else:
                other = index
                while other == index:
                    other = self.pool[draw(len(self.pool))]
                others = self.sentences[other]
                second, label = [t for s in others[draw(len(others)) :] for t in s], 1
        budget = self.max_length - (2 if label == IGNORE_INDEX else 3)  # special tokens: [CLS] A [SEP] (B [SEP])
        while len(first) + len(second) > budget:
            if len(first) >= len(second):
                first.pop()
            else:
                second.pop()
        if label == IGNORE_INDEX:
            return [self.cls_id, *first, self.sep_id], [0] * (len(first) + 2), label
        ids = [self.cls_id, *first, self.sep_id, *second, self.sep_id]
        return ids, [0] * (len(first) + 2) + [1] * (len(second) + 1), label


def sentence_token_ids(tokenizer, texts: Sequence[str]) -> list[list[list[int]]]:
    """Each text's sentences as WordPiece ids (no special tokens), tokenized in one batch."""
    split = [split_sentences(t) or [t] for t in texts]
    flat = [s for sentences in split for s in sentences]
    ids = tokenizer(flat, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    out, at = [], 0
    for sentences in split:
        out.append(ids[at : at + len(sentences)])
        at += len(sentences)
    return out


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


def selected_positions_mlm(mlm):
    """A module around `mlm` whose `forward(**batch).loss` is the MLM loss over the selected positions only
    (see `pretraining_logits`); accelerate prepares the wrapper, so gradients still sync across processes."""
    import torch

    class SelectedPositionsMLM(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.mlm = inner

        def forward(self, **batch):
            from types import SimpleNamespace

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

    return SelectedPositionsMLM(mlm)


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
# continued pre-training


@dataclass
class PretrainOptions:
    """What `bertctl pretrain` adds on top of the recipe's [train] settings (a recipe has no [pretrain] table)."""

    epochs: int | None = None  # default: train.epochs
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule spans them)
    mlm_probability: float = 0.15
    whole_word_masking: bool = False
    heldout_fraction: float = 0.1
    data: str | None = None  # unlabeled text file (csv/tsv/jsonl/parquet/txt) instead of the recipe's train texts
    text_column: str = "text"
    next_sentence: bool = False  # also train BERT's next-sentence prediction (BertForPreTraining)

    def check(self) -> None:
        problems = []
        if self.epochs is not None and self.epochs < 1:
            problems.append(f"--epochs must be at least 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"--max-steps must be at least 1, got {self.max_steps}")
        if not 0.0 < self.mlm_probability < 1.0:
            problems.append(f"--mlm-probability must be between 0 and 1, got {self.mlm_probability}")
        if not 0.0 < self.heldout_fraction <= 0.5:
            problems.append(f"--heldout-fraction must be in (0, 0.5], got {self.heldout_fraction}")
        if problems:
            raise BertctlError("; ".join(problems), fix="e.g. --epochs 1 --mlm-probability 0.15 --heldout-fraction 0.1")


@dataclass
class PretrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    resumed_from: str | None = None


def default_output_dir(recipe: "Recipe") -> Path:
    # beside the classifier run, never in it: `runs/latest` and eval/predict expect classifiers there
    return recipe.run_dir.with_name(recipe.run_dir.name + "-mlm")


def load_texts(recipe: "Recipe", options: PretrainOptions) -> tuple[list[str], list[str] | None, str]:
    """Unlabeled texts: the recipe's train texts (pairs kept as pairs), or the non-blank rows of --data."""
    from bertctl.data import unlabeled_texts

    return unlabeled_texts(recipe if options.data is None else Path(options.data), options.text_column)


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


def _check_resume_options(run_dir: Path, options: PretrainOptions) -> dict[str, Any]:
    saved = json.loads((run_dir / OPTIONS_FILE).read_text(encoding="utf-8")) if (run_dir / OPTIONS_FILE).is_file() else {}
    # an option the saved file lacks was added later and had its default then
    defaults = asdict(PretrainOptions())
    was = {k: saved.get("options", {}).get(k, defaults[k]) for k in defaults}
    diffs = [f"{k}: saved {was[k]!r}, now {v!r}" for k, v in asdict(options).items() if was[k] != v]
    if diffs:
        raise RunError(
            f"the pretrain options differ from those {run_dir} was started with:\n    " + "\n    ".join(diffs),
            fix="resume with the original options, or start over with --overwrite",
        )
    return saved


def _scores_line(scores: dict[str, Any]) -> str:
    line = f"MLM loss {scores['mlm_loss']:.4f}, masked-token accuracy {scores['mlm_accuracy']:.4f}"
    if "nsp_accuracy" in scores:
        line += f", NSP accuracy {scores['nsp_accuracy']:.4f}"
    return line


def _pairs_note(scores: dict[str, Any]) -> str:
    return f", {scores['nsp_pairs']} sentence pairs" if "nsp_pairs" in scores else ""


def next_sentence_pairs(tokenizer, texts, pairs, train_ids, heldout_ids, recipe: "Recipe", source: str) -> tuple[NextSentencePairs, NextSentencePairs]:
    """NSP pair builders for the training and held-out texts (each draws its random B from its own side)."""
    if pairs is not None:
        raise BertctlError(
            f"--nsp builds sentence pairs by cutting single texts, but {recipe.source} already feeds text pairs (data.text_pair)",
            fix="drop --nsp, or pretrain on single texts with --data FILE",
        )
    sentence_ids = sentence_token_ids(tokenizer, texts)
    several = [i for i in train_ids if len(sentence_ids[i]) >= 2]
    if len(several) < 2:
        raise DataError(
            f"{source}: --nsp needs texts of two or more sentences, and {len(several)} of the {len(train_ids)} training texts have them",
            fix="drop --nsp (MLM alone), or pretrain on text with sentence boundaries (--data FILE)",
        )
    settings = dict(cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id, max_length=recipe.model.max_length)
    return NextSentencePairs(sentence_ids, train_ids, **settings), NextSentencePairs(sentence_ids, heldout_ids, **settings)


def pretrain(
    recipe: "Recipe",
    options: PretrainOptions | None = None,
    *,
    output_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> PretrainResult:
    """Continue MLM pre-training of `recipe.model` on unlabeled in-domain text; write a model dir with an MLM head.

    Shares bertctl.training's machinery (run-dir checks, length-grouped seeded batches, padding, AdamW without decay
    on bias/LayerNorm, scheduler, checkpoints and resume, progress, log). The held-out slice is scored before and
    after with identical masks; both go to metrics.json.
    """
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from bertctl import training as T
    from bertctl.modeling import load_tokenizer, resolve_model
    from bertctl.runs import atomic_write_json, atomic_write_text, writing

    options = options or PretrainOptions()
    options.check()
    if options.data is not None:
        options.data = str(Path(options.data).resolve())
    run_dir = Path(output_dir) if output_dir is not None else default_output_dir(recipe)
    T.check_precision(recipe)
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    accelerator = T.build_accelerator(recipe, run_dir, trackers=False)
    main = accelerator.is_main_process
    if main:
        T.prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
        if resume:
            T.check_resume_recipe(run_dir, recipe)
            _check_resume_options(run_dir, options)
    accelerator.wait_for_everyone()
    set_seed(recipe.train.seed)

    tokenizer = load_tokenizer(recipe.model.name, base_dir=recipe.base_dir_path)
    texts, pairs, source = load_texts(recipe, options)
    train_ids, heldout_ids = split_heldout(len(texts), options.heldout_fraction, recipe.train.seed)
    args = (texts, pairs) if pairs is not None else (texts,)
    encoded = tokenizer(*args, truncation=True, max_length=recipe.model.max_length, return_token_type_ids=True)
    examples = [
        {"input_ids": ids, "token_type_ids": types, "index": i}
        for i, (ids, types) in enumerate(zip(encoded["input_ids"], encoded["token_type_ids"]))
    ]
    train_examples = [examples[i] for i in train_ids]
    heldout_examples = sorted((examples[i] for i in heldout_ids), key=lambda e: len(e["input_ids"]))
    if recipe.train.batch_size * accelerator.num_processes > len(train_examples):
        raise BertctlError(
            f"train.batch_size {recipe.train.batch_size} x {accelerator.num_processes} process(es) is larger than the {len(train_examples)} texts left for training",
            fix=f"lower it: bertctl pretrain {recipe.source} train.batch_size={max(1, len(train_examples) // accelerator.num_processes)}",
        )

    train_pairs = heldout_pairs = None
    if options.next_sentence:
        train_pairs, heldout_pairs = next_sentence_pairs(tokenizer, texts, pairs, train_ids, heldout_ids, recipe, source)
    collate_settings = dict(mlm_probability=options.mlm_probability, whole_word_masking=options.whole_word_masking)
    collator = MaskingCollator(tokenizer, seed=recipe.train.seed, pad_to_multiple_of=8 if accelerator.device.type == "cuda" else None, pairs=train_pairs, **collate_settings)
    heldout_collator = MaskingCollator(tokenizer, seed=HELDOUT_MASK_SEED, pairs=heldout_pairs, **collate_settings)
    heldout_batches = [heldout_collator(heldout_examples[i : i + recipe.train.eval_batch_size]) for i in range(0, len(heldout_examples), recipe.train.eval_batch_size)]
    batches = T.LengthGroupedBatches([len(e["input_ids"]) for e in train_examples], recipe.train.batch_size, recipe.train.seed, recipe.train.group_by_length)
    # with no generator a DataLoader iterator draws its seed from the global RNG, shifting dropout (and resume)
    train_loader = DataLoader(train_examples, batch_sampler=batches, collate_fn=collator, generator=torch.Generator().manual_seed(recipe.train.seed))

    resolved = resolve_model(recipe.model.name, base_dir=recipe.base_dir_path)
    model, _, had_head = load_masked_lm(recipe.model.name, base_dir=recipe.base_dir_path, require_head=False, next_sentence=options.next_sentence)
    model.train()
    pooler = _pooler_tensors(resolved.location) if resolved.is_local else {}
    mlm = model
    model = selected_positions_mlm(mlm)
    optimizer = T.build_optimizer(model, recipe)
    steps_per_epoch = math.ceil(len(train_loader) / (recipe.train.gradient_accumulation_steps * accelerator.num_processes))
    epochs = options.epochs or recipe.train.epochs
    total_steps = steps_per_epoch * epochs
    if options.max_steps is not None:
        total_steps = options.max_steps
        epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = T.build_scheduler(optimizer, recipe, total_steps)

    state = T.TrainerState()
    resumed_from = None
    if resume:
        before = json.loads((run_dir / OPTIONS_FILE).read_text(encoding="utf-8"))["heldout_before"]
    else:
        # scored before `prepare`, on the unchanged model: the baseline the run is judged against
        before = evaluate_mlm(mlm.to(accelerator.device), heldout_batches, accelerator.device)
        if main:
            T.create_run_dir(run_dir, overwrite=overwrite)
            with writing("the recipe and options", run_dir):
                atomic_write_text(run_dir / "recipe.toml", recipe.to_toml())
                atomic_write_json(run_dir / OPTIONS_FILE, {"options": asdict(options), "heldout_before": before, "source": source})
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if resume:
        checkpoint = T.latest_checkpoint(run_dir)
        accelerator.load_state(str(checkpoint))
        state = T.TrainerState(**json.loads((checkpoint / T.STATE_FILE).read_text()))
        resumed_from = checkpoint.name
        if main:
            T.trim_log(run_dir / T.LOG_FILE, state.global_step)

    log = T.RunLog(run_dir / T.LOG_FILE, enabled=main)
    bar = T.Progress(enabled=main and progress, total=total_steps, done=state.global_step)
    head = "its own MLM head" if had_head else "a fresh MLM head (the checkpoint has none)"
    what = f"resuming {run_dir} from {resumed_from}" if resumed_from else f"pre-training into {run_dir}"
    bar.message(
        f"{what}: {recipe.model.name} with {head}; {len(train_examples)} texts ({len(heldout_examples)} held out), "
        f"{total_steps} steps, {options.mlm_probability:.0%} masking{' (whole words)' if options.whole_word_masking else ''}"
        + (" + next-sentence prediction" if options.next_sentence else "")
    )
    bar.message(f"held-out before: {_scores_line(before)} ({before['masked_tokens']} masked tokens{_pairs_note(before)})")

    segment_start = time.perf_counter()

    def checkpoint_now() -> None:
        nonlocal segment_start
        state.train_seconds += time.perf_counter() - segment_start
        segment_start = time.perf_counter()
        with _quiet_shared_tensor_warning():
            T.save_checkpoint(accelerator, run_dir, state, recipe.train.save_total_limit)

    def evaluate(epoch_float: float) -> None:
        scores = evaluate_mlm(accelerator.unwrap_model(model).mlm, heldout_batches, accelerator.device)
        state.last_metrics = scores
        log.write({"type": "eval", "step": state.global_step, "epoch": round(epoch_float, 4), **scores})
        bar.message(f"held-out step {state.global_step}: {_scores_line(scores)}")

    done = state.global_step >= total_steps
    with T.StopRequested() as stop:
        for epoch in range(state.epoch, epochs):
            if done:
                break
            state.epoch = epoch
            collator.set_epoch(epoch)
            model.train()
            for info in T.epoch_steps(accelerator, model, optimizer, scheduler, train_loader, state, recipe, epoch, steps_per_epoch):
                bar.step(info, recipe.train.log_every_steps, state.global_step)
                T.record_step(log, accelerator, recipe, state, info)
                epoch_float = info["epoch"]
                done = state.global_step >= total_steps
                if recipe.train.eval_every_steps and state.global_step % recipe.train.eval_every_steps == 0 and not done:
                    evaluate(epoch_float)
                    checkpoint_now()
                elif recipe.train.checkpoint_every_steps and state.global_step % recipe.train.checkpoint_every_steps == 0 and not done:
                    checkpoint_now()
                if done:
                    break
                if stop.requested or (stop_after_steps is not None and state.global_step >= stop_after_steps):
                    checkpoint_now()
                    bar.close()
                    accelerator.end_training()
                    raise T.Interrupted(
                        f"pre-training stopped at step {state.global_step}/{total_steps}; checkpoint saved in {T.latest_checkpoint(run_dir)}",
                        fix=f"resume with: bertctl pretrain {recipe.source} --resume" + (f" --output-dir {run_dir}" if output_dir else ""),
                    )
            if not done or state.step_in_epoch >= steps_per_epoch:  # the epoch ran to its end
                state.epoch, state.step_in_epoch = epoch + 1, 0
            evaluate(state.epoch + state.step_in_epoch / steps_per_epoch)
            checkpoint_now()

    bar.close()
    after = evaluate_mlm(accelerator.unwrap_model(model).mlm, heldout_batches, accelerator.device)
    state.train_seconds += time.perf_counter() - segment_start
    metrics = {
        "task": "masked-lm + next-sentence" if options.next_sentence else "masked-lm",
        "base_model": recipe.model.name,
        "fresh_mlm_head": not had_head,
        "heldout": {"before": before, "after": after, "mask_seed": HELDOUT_MASK_SEED},
        "mlm_loss_before": before["mlm_loss"],
        "mlm_loss_after": after["mlm_loss"],
        "mlm_accuracy_before": before["mlm_accuracy"],
        "mlm_accuracy_after": after["mlm_accuracy"],
        "mlm_probability": options.mlm_probability,
        "whole_word_masking": options.whole_word_masking,
        "next_sentence_prediction": options.next_sentence,
        **({"nsp_accuracy_before": before.get("nsp_accuracy"), "nsp_accuracy_after": after.get("nsp_accuracy")} if options.next_sentence else {}),
        "texts_source": source,
        "train_examples": len(train_examples),
        "heldout_examples": len(heldout_examples),
        "epochs_completed": state.epoch,
        "global_steps": state.global_step,
        "wall_time_s": round(state.train_seconds, 2),
        "train_samples_per_s": round(state.samples_seen / max(1e-9, state.train_seconds), 2),
        "train_tokens_per_s": round(state.tokens_seen / max(1e-9, state.train_seconds), 1),
        "num_processes": accelerator.num_processes,
        "device": accelerator.device.type,
        "mixed_precision": recipe.train.mixed_precision,
    }
    with writing("the pre-trained model", run_dir):
        save_masked_lm(accelerator, model, tokenizer, run_dir, pooler)
        if main:
            _finish(run_dir, recipe, metrics)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return PretrainResult(run_dir, metrics, resumed_from)


@contextlib.contextmanager
def _quiet_shared_tensor_warning() -> Iterator[None]:
    """accelerate warns on every checkpoint that the tied decoder weight is stored once; that is the intent."""
    import logging

    logger = logging.getLogger("accelerate.utils.other")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def save_masked_lm(accelerator, model, tokenizer, run_dir: Path, pooler: dict[str, Any]) -> None:
    """save_pretrained (safetensors, tied MLM decoder) plus the carried-over pooler, into a temp dir, then moved
    into the run dir file by file (the run dir also holds checkpoints and logs, so it is not swapped whole)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = run_dir / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model).mlm
        state_dict = dict(unwrapped.state_dict())
        state_dict.update({k: v.to(next(iter(state_dict.values())).dtype) for k, v in pooler.items() if k not in state_dict})
        with quiet_transformers():
            unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for item in tmp.iterdir():
            target = run_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        tmp.rmdir()
    accelerator.wait_for_everyone()


def _finish(run_dir: Path, recipe: "Recipe", metrics: dict[str, Any]) -> None:
    from bertctl.runs import FINISHED_MARKER, atomic_write_json, atomic_write_text
    from bertctl.training import LOG_FILE

    try:
        from bertctl.plots import plot_curves

        plot_curves(run_dir / LOG_FILE, run_dir / "curves.png", "mlm_accuracy")
    except Exception as exc:  # a plot is a nicety: never fail a finished run over it
        print(f"warning: could not draw curves.png: {exc}", file=sys.stderr)
    atomic_write_text(run_dir / "README.md", model_card(run_dir, recipe, metrics))
    atomic_write_json(run_dir / FINISHED_MARKER, metrics)


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


def print_pretrain_summary(result: PretrainResult) -> None:
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return
    m = result.metrics
    b, a = m["heldout"]["before"], m["heldout"]["after"]
    print(
        f"\ndone: held-out MLM loss {b['mlm_loss']:.4f} -> {a['mlm_loss']:.4f}, masked-token accuracy {b['mlm_accuracy']:.4f} -> {a['mlm_accuracy']:.4f}"
        f" ({m['heldout_examples']} texts, same masks)\n"
        + (f"      held-out NSP accuracy {b['nsp_accuracy']:.4f} -> {a['nsp_accuracy']:.4f} ({b['nsp_pairs']} sentence pairs)\n" if "nsp_accuracy" in b else "")
        + f"      {m['global_steps']} steps in {m['wall_time_s']:.0f} s ({m['train_samples_per_s']:.1f} samples/s, {m['num_processes']} x {m['device']})\n"
        f"      saved to {result.run_dir}\n"
        f"next: set [model] name = \"{result.run_dir.resolve()}\" in a recipe and bertctl train it\n"
        f'      bertctl fill-mask --model {result.run_dir} "some text with [MASK]"',
        flush=True,
    )
