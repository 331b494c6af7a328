"""Which tokens of a long text the model sees: the recipe's truncation, or all of them as overlapping windows.

    encoded = encode_texts(tokenizer, texts, max_length=128, truncation="head+tail")   # Encoded: columns, truncated
    windows = encode_windows(tokenizer, texts, max_length=128, stride=32)               # one row per window, .owners
    logits = problem.pool(window_logits, windows.owners, len(texts))                     # one row per text again (bertctl.problems)

`model.truncation` decides what a text longer than max_length keeps, [CLS] and [SEP] always included:
- `head`: the first max_length - 2 WordPieces (what transformers' `truncation=True` does);
- `tail`: the last max_length - 2;
- `head+tail`: a quarter of max_length from the start, the rest from the end. Sun et al. 2019 (*How to Fine-Tune
  BERT for Text Classification?*) kept the first 128 and the last 382 of 510 at max_length 512 and found it best
  on IMDb; `head_tail_split` gives exactly that at 512 (32 + 94 at 128).

Sentence pairs are cut longest-first from their ends, as transformers does, so they take `head` only (the recipe
refuses anything else). `--chunks` drops nothing: a text runs as windows of max_length tokens that overlap by
`stride`, and the windows' logits are pooled back into one row (mean; max for multi-label, so that a label
present in any part of the text is found). Training data, predict, eval, serve and the tokenize report all encode
through here, so the model is judged on the tokens it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from bertctl.errors import BertctlError

if TYPE_CHECKING:
    import numpy as np

SPECIAL_TOKENS = 2  # [CLS] text [SEP]
DEFAULT_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


@dataclass
class Encoded:
    columns: dict[str, list[list[int]]]  # model input name -> one id list per row (a text, or a window), unpadded
    truncated: int  # texts that lost tokens
    n_tokens: list[int] | None = None  # each text's full length, [CLS] and [SEP] included (None: not measured)
    owners: list[int] | None = None  # windows only: the text each row belongs to


def head_tail_split(max_length: int) -> tuple[int, int]:
    """head+tail: how many WordPieces a too-long text keeps from its start and from its end."""
    head = max_length // 4
    return head, max_length - SPECIAL_TOKENS - head


def kept_ids(ids: list[int], max_length: int, truncation: str) -> list[int]:
    """The content ids (no [CLS]/[SEP]) that `truncation` keeps of a text, for an input of max_length tokens."""
    budget = max_length - SPECIAL_TOKENS
    if len(ids) <= budget:
        return ids
    if truncation == "tail":
        return ids[len(ids) - budget :]
    if truncation == "head+tail":
        head, tail = head_tail_split(max_length)
        return ids[:head] + ids[len(ids) - tail :]
    return ids[:budget]


def default_stride(max_length: int) -> int:
    return max_length // 4


def check_chunk_options(chunks: bool, stride: int | None) -> None:
    """--stride without --chunks: said before anything is loaded."""
    if stride is not None and not chunks:
        raise BertctlError("--stride sets how many tokens --chunks windows share", fix="add --chunks, or drop --stride")


def check_stride(stride: int, max_length: int) -> None:
    budget = max_length - SPECIAL_TOKENS
    if not 0 <= stride < budget:
        raise BertctlError(
            f"--stride {stride} must be at least 0 and below {budget} (the {max_length}-token window less [CLS] and [SEP]): "
            "it is how many tokens consecutive windows share",
            fix=f"use --stride {default_stride(max_length)} (the default, a quarter of max_length)",
        )


def window_starts(n: int, budget: int, stride: int) -> list[int]:
    """Where the windows of a text of n content tokens start: every budget - stride tokens, the last one flush with
    the end so every window is full and no token is left out."""
    if n <= budget:
        return [0]
    starts = list(range(0, n - budget, budget - stride))
    return [*starts, n - budget]


def quiet_length_warning(tokenizer) -> None:
    """Untruncated passes are deliberate here (truncation happens after them); transformers' "longer than the maximum
    sequence length" warning would only alarm the user about inputs that do get cut."""
    warned = getattr(tokenizer, "deprecation_warnings", None)
    if isinstance(warned, dict):
        warned["sequence-length-is-longer-than-the-specified-maximum"] = True


def _input_names(tokenizer) -> list[str]:
    return list(getattr(tokenizer, "model_input_names", None) or DEFAULT_INPUTS)


def _content_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    quiet_length_warning(tokenizer)
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=False, return_attention_mask=False, return_token_type_ids=False)
    return enc["input_ids"]


def _framed(tokenizer, pieces: list[list[int]]) -> dict[str, list[list[int]]]:
    """[CLS] piece [SEP] for each piece, with the columns the model takes (one segment, no padding)."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids = [[cls, *piece, sep] for piece in pieces]
    names = _input_names(tokenizer)
    columns = {"input_ids": ids}
    if "token_type_ids" in names:
        columns["token_type_ids"] = [[0] * len(row) for row in ids]
    if "attention_mask" in names:
        columns["attention_mask"] = [[1] * len(row) for row in ids]
    return columns


def encode_texts(
    tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, *, max_length: int, truncation: str = "head", lengths: bool = False
) -> Encoded:
    """Texts (and pairs) as model inputs of at most max_length tokens, cut by `truncation`; `lengths` also measures
    each text's full length (the head path needs a second, untruncated pass for it)."""
    if not texts:
        return Encoded({name: [] for name in _input_names(tokenizer)}, 0, [] if lengths else None)
    if pairs is not None or truncation == "head":
        args = (list(texts), list(pairs)) if pairs is not None else (list(texts),)
        enc = tokenizer(*args, truncation=True, max_length=max_length)
        columns = {name: enc[name] for name in _input_names(tokenizer) if name in enc}
        if lengths:
            quiet_length_warning(tokenizer)
            full = tokenizer(*args, truncation=False, add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False)
            n_tokens = [len(ids) for ids in full["input_ids"]]
            return Encoded(columns, sum(1 for n in n_tokens if n > max_length), n_tokens)
        # fast tokenizers keep what truncation cut off in each Encoding: no second pass needed to count
        encodings = getattr(enc, "encodings", None) or []
        return Encoded(columns, sum(1 for e in encodings if e.overflowing))
    content = _content_ids(tokenizer, texts)
    n_tokens = [len(ids) + SPECIAL_TOKENS for ids in content]
    columns = _framed(tokenizer, [kept_ids(ids, max_length, truncation) for ids in content])
    return Encoded(columns, sum(1 for n in n_tokens if n > max_length), n_tokens)


def encode_windows(tokenizer, texts: Sequence[str], *, max_length: int, stride: int) -> Encoded:
    """Each text as overlapping windows of max_length tokens (one row per window; `owners` maps rows to texts)."""
    check_stride(stride, max_length)
    budget = max_length - SPECIAL_TOKENS
    pieces, owners = [], []
    content = _content_ids(tokenizer, texts) if texts else []
    for i, ids in enumerate(content):
        for start in window_starts(len(ids), budget, stride):
            pieces.append(ids[start : start + budget])
            owners.append(i)
    columns = _framed(tokenizer, pieces) if pieces else {name: [] for name in _input_names(tokenizer)}
    return Encoded(columns, 0, [len(ids) + SPECIAL_TOKENS for ids in content], owners)


def windows_needed(n_tokens: int, max_length: int, stride: int) -> int:
    return len(window_starts(n_tokens - SPECIAL_TOKENS, max_length - SPECIAL_TOKENS, stride))
