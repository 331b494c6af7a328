"""See what BERT sees: one input as WordPiece rows, or a whole recipe's data as a length/label report.

    explain_input(tokenizer, "tokenization", "second text")   # [CLS] token ##ization [SEP] second text [SEP]
    report = tokenize_report(recipe)                           # per split: lengths, truncation, [UNK], labels
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bertctl.data import tokenize_data
from bertctl.errors import BertctlError
from bertctl.modeling import load_tokenizer
from bertctl.problems import MULTI_LABEL, REGRESSION, problem_type
from bertctl.truncation import default_stride, windows_needed
from bertctl.recipe import Recipe


@dataclass
class InputRow:
    position: int
    token: str
    id: int
    segment: int
    attention: int
    word: int | None  # index of the word the piece belongs to; None for [CLS]/[SEP]


def explain_input(tokenizer, text: str, text_pair: str | None = None, max_length: int | None = None) -> list[InputRow]:
    """The BERT input `[CLS] A [SEP] B [SEP]` one WordPiece per row, with segment ids and attention mask."""
    enc = tokenizer(text, text_pair, truncation=max_length is not None, max_length=max_length, return_token_type_ids=True)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    words = enc.word_ids() if hasattr(enc, "word_ids") else [None] * len(tokens)
    segments = enc.get("token_type_ids") or [0] * len(tokens)
    return [
        InputRow(i, tok, tid, seg, mask, word)
        for i, (tok, tid, seg, mask, word) in enumerate(zip(tokens, enc["input_ids"], segments, enc["attention_mask"], words))
    ]


def _percentile(values, q: float) -> int:
    """The smallest length that q% of examples fit in (a length that occurs, never an interpolation):
    with max_length = p99, 99% of examples are not truncated."""
    import numpy as np

    return int(np.percentile(values, q, method="inverted_cdf")) if len(values) else 0


@dataclass
class SplitReport:
    name: str
    source: str
    examples: int
    label_counts: dict[str, int]
    length_p50: int
    length_p90: int
    length_p99: int
    length_max: int
    truncated_share: float
    unk_share: float
    empty_dropped: int
    over_max_length: int = 0  # texts longer than max_length
    tokens_dropped: int = 0  # WordPieces truncation cuts from them (head, tail or head+tail: the same count, different tokens)
    chunk_windows: int = 0  # windows `--chunks` runs those texts as, at the default stride (dropping none)
    labels_per_row: dict[int, int] = field(default_factory=dict)  # multi-label: rows with 0, 1, 2... labels
    label_stats: dict[str, float] = field(default_factory=dict)  # regression: mean, std, min, max


@dataclass
class TokenizeReport:
    recipe: str
    model: str
    max_length: int
    labels: list[str]
    from_cache: bool
    problem_type: str
    cache_dir: str | None
    truncation: str
    stride: int  # --chunks' default stride at this max_length
    is_pair: bool
    splits: list[SplitReport]
    labels_missing: dict[str, list[str]] = field(default_factory=dict)  # split -> labels absent there but present elsewhere
    duplicates: dict[str, int] = field(default_factory=dict)  # "validation~train" -> examples of the first whose input also is in the second

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tokenize_report(recipe: Recipe, tokenizer=None) -> TokenizeReport:
    """Tokenize every split (through the cache) and summarise what a model will be trained and judged on."""
    import numpy as np

    tokenizer = tokenizer or load_tokenizer(recipe.model.name, base_dir=recipe.base_dir_path)
    data = tokenize_data(recipe, tokenizer)
    max_length = recipe.model.max_length
    stride = default_stride(max_length)
    reports = []
    present: dict[str, set[str]] = {}
    inputs: dict[str, list[int]] = {}
    for name, ds in data.splits.items():
        full = np.asarray(ds["n_tokens"])
        long = full[full > max_length]
        lengths = np.asarray(ds["length"])
        labels = np.asarray(ds["label"])
        per_row: dict[int, int] = {}
        stats: dict[str, float] = {}
        problem = problem_type(recipe.model.problem_type)
        if problem == REGRESSION:
            counts = {}
            stats = {"mean": float(labels.mean()), "std": float(labels.std()), "min": float(labels.min()), "max": float(labels.max())} if len(labels) else {}
        elif problem == MULTI_LABEL:
            matrix = labels.reshape(len(ds), len(data.labels))
            counts = {label: int(matrix[:, j].sum()) for j, label in enumerate(data.labels)}
            per_row = {int(k): int(v) for k, v in zip(*np.unique(matrix.sum(axis=1).astype(int), return_counts=True))}
        else:
            counts = {label: int((labels == i).sum()) for i, label in enumerate(data.labels)}
        present[name] = {label for label, n in counts.items() if n}
        inputs[name] = [hash(tuple(ids)) for ids in ds["input_ids"]]  # identical token ids = the same input
        reports.append(
            SplitReport(
                name=name,
                source=data.sources.get(name, ""),
                examples=len(ds),
                label_counts=counts,
                length_p50=_percentile(full, 50),
                length_p90=_percentile(full, 90),
                length_p99=_percentile(full, 99),
                length_max=int(full.max()) if len(full) else 0,
                truncated_share=float((full > max_length).mean()) if len(full) else 0.0,
                unk_share=float(np.asarray(ds["n_unk"]).sum() / max(1, lengths.sum())),
                empty_dropped=data.dropped_empty.get(name, 0),
                over_max_length=int(len(long)),
                tokens_dropped=int((long - max_length).sum()),
                chunk_windows=0 if data.is_pair else sum(windows_needed(int(n), max_length, stride) for n in long),
                labels_per_row=per_row,
                label_stats=stats,
            )
        )
    everywhere = set().union(*present.values()) if present and problem_type(recipe.model.problem_type).has_classes else set()
    missing = {name: sorted(everywhere - labels) for name, labels in present.items() if everywhere - labels}
    duplicates = {}
    names = list(inputs)
    for i, a in enumerate(names):
        for b in names[:i]:
            seen = set(inputs[b])
            duplicates[f"{a}~{b}"] = sum(1 for h in inputs[a] if h in seen)
    return TokenizeReport(
        recipe=recipe.source,
        model=recipe.model.name,
        max_length=recipe.model.max_length,
        labels=data.labels,
        from_cache=data.from_cache,
        problem_type=recipe.model.problem_type,
        cache_dir=str(data.cache_dir) if data.cache_dir else None,
        truncation=recipe.model.truncation,
        stride=stride,
        is_pair=data.is_pair,
        splits=reports,
        labels_missing=missing,
        duplicates=duplicates,
    )


# ---------------------------------------------------------------------------------------------
# `bertctl tokenize --model`


def explain_texts(model: str, texts: list[str], max_length: int | None = None) -> list[InputRow]:
    """`explain_input` for a model name or dir and one text (two for a sentence pair), with the argument checks
    `bertctl tokenize --model` makes: the text count before the tokenizer loads, then a --max-length that fits."""
    if not 1 <= len(texts) <= 2:
        raise BertctlError("--model takes one text, or two for a sentence pair", fix='bertctl tokenize --model NAME "text" ["second text"]')
    tokenizer = load_tokenizer(model)
    is_pair = len(texts) == 2
    if max_length is not None:
        # below this the tokenizer can't truncate (it then silently returns the whole input) or crashes
        special = tokenizer.num_special_tokens_to_add(pair=is_pair)
        needed = special + (2 if is_pair else 1)
        if max_length < needed:
            raise BertctlError(
                f"--max-length {max_length} leaves no room for the text{'s' if is_pair else ''}: [CLS] and [SEP] take {special} tokens",
                fix=f"use --max-length {needed} or more; training truncates at the recipe's model.max_length (at least 8)",
            )
    return explain_input(tokenizer, texts[0], texts[1] if is_pair else None, max_length)
