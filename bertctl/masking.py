"""BERT's masking and next-sentence pairs: pure functions of the token ids and a seeded generator.

    inputs, labels, selected = mask_tokens(ids, maskable, mask_token_id=103, vocab_size=30522)
    collate = MaskingCollator(tokenizer, whole_word_masking=True, seed=42)   # pads, then masks like BERT
    pairs = NextSentencePairs(sentence_token_ids(tokenizer, texts), pool, cls_id=101, sep_id=102, max_length=128)

Masking follows Devlin et al. (2019) and Google's create_pretraining_data.py: 15% of the real (non-special,
non-padding) tokens are selected; each selected token becomes [MASK] 80% of the time, a random vocabulary token
10% and stays unchanged 10%; labels are -100 everywhere else. Whole-word masking selects words instead, a word
being a piece plus the `##` pieces after it, and masks all of its pieces (each still 80/10/10).

This is our own collator rather than transformers' DataCollatorForLanguageModeling because in v5 that one's
whole-word masking (a) silently drops the 80/10/10 replacement (it forces mask_replace_prob=1), (b) groups pieces
by character offsets, so "store." is one word with its period, and (c) needs offset mappings in every example.
Masks also come from a generator seeded per example by (seed, epoch, example index), so a resumed run and the
held-out evaluation see exactly the same masks without depending on the global RNG.

With next-sentence prediction (`pretrain.nsp`, BertForPreTraining), each multi-sentence text is cut at a random
sentence boundary into `[CLS] A [SEP] B [SEP]`: half the time B is the rest of the text (label 0, "is next"), half
the time the rest of another text (label 1, "random"), drawn anew each epoch from the same per-example generator.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Sequence

from bertctl.errors import ModelError
from bertctl.loop import PadCollator

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100

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
