"""Which words made the label: integrated gradients (Sundararajan et al. 2017) on a classifier's word embeddings.

    classifier = load_for_inference("runs/agnews", fast_path=False)       # gradients need the stock forward
    result = explain_texts(classifier, ["Stocks fell as oil prices rose"], steps=50)
    result.explanations[0].words          # Word(text, start, end, segment, attribution), summed over WordPieces
    result.explanations[0].delta          # completeness: sum of attributions - (f(x) - f(baseline))
    explain_command("runs/agnews", ["Stocks fell"], html=Path("why.html"))   # `bertctl explain`

f is the score the prediction shows: the class probability (softmax, single-label), the label probability
(sigmoid, multi-label) or the value (regression), so attributions are in the units of the score and sum to
f(x) - f(baseline). Captum's `LayerIntegratedGradients` interpolates the word-embedding layer's output between
the baseline's and the text's; position and segment embeddings stay those of the text.

The baseline keeps [CLS] and [SEP] and puts [PAD] everywhere else. [CLS] is where the head reads and [SEP] marks
the segments: replacing them too would attribute part of the score to the frame every input shares, not to the
words. [PAD] is the token the model has learnt carries nothing (it is what padding holds), where a zero vector
is a point no input ever reaches.

captum is the optional extra `pip install -e ".[explain]"`, imported inside the functions that use it, as torch.
"""

from __future__ import annotations

import difflib
import html
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from bertctl.errors import BertctlError, DataError, ModelError, require
from bertctl.inference.classifier import Classifier
from bertctl.inference.loading import load_for_inference
from bertctl.inference.onnx import EXPORT_FILE, is_export_dir
from bertctl.inference.predict import EMPTY_TEXT, check_request
from bertctl.inference.requests import InputText, is_empty, open_inputs
from bertctl.problems import MultiLabel, Regression, SingleLabel
from bertctl.runs import atomic_write_text, check_writable_path, resolve_model_dir
from bertctl.truncation import SPECIAL_TOKENS, check_chunk_options, check_stride, default_stride, kept_ids, window_starts

if TYPE_CHECKING:
    import numpy as np

DEFAULT_STEPS = 50
MAX_STEPS = 2000  # past this the Riemann sum has long converged; a typo (--steps 50000) would run for hours
INTERNAL_BATCH_SIZE = 64  # interpolation steps x rows per forward pass: memory stays flat whatever --steps is
ROWS_PER_CALL = 8  # inputs (texts or windows) attributed together
DELTA_WARNING = 0.05  # completeness: warn when |delta| is over this share of |f(x) - f(baseline)|
INSTALL_FIX = 'pip install -e ".[explain]"  (or: pip install captum --no-deps, with torch already installed)'


# ---------------------------------------------------------------------------------------------
# what an explanation holds


@dataclass
class Piece:
    """One WordPiece as the model saw it; [CLS]/[SEP] have no offsets (start/end None) and no segment."""

    token: str
    start: int | None
    end: int | None
    segment: int | None  # 0: the text, 1: the second text of a pair
    attribution: float

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "start": self.start, "end": self.end, "segment": self.segment, "attribution": self.attribution}


@dataclass
class Word:
    """A word of the original text (its WordPieces whose character spans touch), its attribution their sum."""

    text: str
    start: int  # character offsets into the text (segment 0) or the second text (segment 1)
    end: int
    segment: int
    attribution: float

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.text, "start": self.start, "end": self.end, "segment": self.segment, "attribution": self.attribution}


@dataclass
class Explanation:
    """One text's attributions towards one target: a class, a label of a multi-label model, or the value."""

    text: str
    pair: str | None
    where: str  # "text 2", "line 7": how the user finds it
    label: str | None  # what was explained; None for regression (the value)
    score: float  # f(x): the label's probability, or the value
    words: list[Word]
    pieces: list[Piece]
    difference: float  # f(x) - f(baseline)
    delta: float  # completeness: sum of attributions - difference (captum's convergence delta)
    steps: int
    windows: int = 1  # --chunks: windows explained one by one, their deltas and differences summed
    truncated: bool = False  # words past max_length were not seen and have no attribution
    note: str | None = None

    @property
    def total(self) -> float:
        return sum(p.attribution for p in self.pieces)

    @property
    def converged(self) -> bool:
        return abs(self.delta) <= DELTA_WARNING * abs(self.difference)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"text": self.text}
        if self.pair is not None:
            record["text_pair"] = self.pair
        record.update({
            "where": self.where, "label": self.label, "score": self.score, "words": [w.to_dict() for w in self.words],
            "pieces": [p.to_dict() for p in self.pieces], "attribution_sum": self.total, "difference": self.difference,
            "delta": self.delta, "converged": self.converged, "steps": self.steps, "windows": self.windows, "truncated": self.truncated,
        })
        if self.note:
            record["note"] = self.note
        return record


@dataclass
class ExplainResult:
    explanations: list[Explanation]
    problem_type: str
    empty: list[str] = field(default_factory=list)  # where the empty inputs were (skipped)

    def warnings(self) -> list[str]:
        """Completeness: texts whose attributions don't add up to f(x) - f(baseline) within 5%."""
        out = []
        for e in self.explanations:
            if not e.converged:
                share = abs(e.delta) / abs(e.difference) if e.difference else float("inf")
                out.append(
                    f"warning: {e.where} ({e.label or 'value'}): attributions sum to {e.total:.4f} but f(x) - f(baseline) = {e.difference:.4f} "
                    f"(delta {e.delta:+.4f}, {share:.0%} of it, over {DELTA_WARNING:.0%}); the integral is not converged: try --steps {e.steps * 4}"
                )
        return out

    def notes(self) -> list[str]:
        out = []
        if self.empty:
            out.append(f"note: {len(self.empty)} empty input{'s' if len(self.empty) != 1 else ''} not explained ({', '.join(self.empty[:10])})")
        truncated = [e.where for e in self.explanations if e.truncated]
        if truncated:
            out.append(f"note: {len(set(truncated))} text(s) longer than the model's max_length: words past it were not seen and have no attribution; --chunks explains them whole")
        return out


class ExplainError(BertctlError):
    """A request explain can't answer as asked; `field` names what to change (serve's 422 points at it)."""

    def __init__(self, message: str, *, field: str, fix: str | None = None):
        super().__init__(message, fix=fix)
        self.field = field


# ---------------------------------------------------------------------------------------------
# checks: before any model loads where they can be


def check_steps(steps: int, name: str = "--steps", limit: int = MAX_STEPS) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= limit:
        raise ExplainError(
            f"{name} {steps!r} is out of range: integrated gradients needs 1 to {limit} interpolation steps",
            field="steps", fix=f"use {name} {DEFAULT_STEPS} (the default); raise it when the completeness delta is too large",
        )


def check_not_export(model: str | Path | None) -> None:
    """An export dir runs on onnxruntime, which has no gradients: name the run dir it came from."""
    _, run_dir = resolve_model_dir(model)
    if is_export_dir(run_dir):
        raise ModelError(f"{run_dir} is an ONNX export (onnxruntime computes no gradients): explain needs a torch run dir", fix=f"bertctl explain {export_source(run_dir)} \"text\"")


def export_source(export_dir: Path) -> str:
    import json

    try:
        source = json.loads((Path(export_dir) / EXPORT_FILE).read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        source = None
    return str(source) if isinstance(source, str) and source else str(Path(export_dir).parent)


def export_refusal(location: str, source: str | None = None) -> str:
    return f"{location} is an ONNX export (onnxruntime computes no gradients): explaining needs the torch run dir it was exported from{f' ({source})' if source else ''}; serve that: bertctl serve RUN_DIR"


def resolve_target(classifier: Classifier, target: str | None) -> int | None:
    """--target LABEL as a class id; regression has nothing to choose."""
    if target is None:
        return None
    problem = classifier.problem
    if isinstance(problem, Regression):
        raise ExplainError(f"--target {target!r}: {classifier.location} is a regression model, whose one output (the value) is what is explained", field="target", fix="drop --target")
    if target in classifier.labels:
        return classifier.labels.index(target)
    close = difflib.get_close_matches(target, classifier.labels, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    raise ExplainError(f"--target {target!r} is not a label of {classifier.location} (labels: {', '.join(classifier.labels)})", field="target", fix=f"{guess}use one of: {', '.join(classifier.labels)}")


def gradient_classifier(classifier: Classifier) -> Classifier:
    """A classifier whose forward has gradients: the same one, or a stock reload of a fast-path or int8 one (the fast
    path computes only [CLS] in the last layer, int8 Linear layers have no backward)."""
    if classifier.backend != "torch":
        raise ModelError(export_refusal(classifier.location), fix="bertctl explain RUN_DIR \"text\" with the run dir the export came from")
    if not classifier.fast_path and classifier.quantized is None:
        return classifier
    import torch

    # the threads the served model was given (serve --threads), not the loader's default of every free CPU
    threads = torch.get_num_threads() if classifier.device == "cpu" else None
    return load_for_inference(classifier.location, fast_path=False, device=classifier.device, max_length=classifier.max_length, threads=threads)


# ---------------------------------------------------------------------------------------------
# what the model sees, with where each token came from


@dataclass
class _Row:
    """One model input (a text, a pair, or one --chunks window) with each token's origin."""

    owner: int  # index of its item
    ids: list[int]
    types: list[int]
    offsets: list[tuple[int, int] | None]  # None for [CLS]/[SEP]
    segments: list[int | None]
    content: list[int | None]  # the token's index among its text's content tokens (windows share them); None for specials


def _rows(classifier: Classifier, owner: int, text: str, pair: str | None, chunks: bool) -> tuple[list[_Row], bool]:
    """The inputs for one item, cut as predict cuts it (the run's truncation, or --chunks windows), and whether
    tokens were left out."""
    tokenizer = classifier.tokenizer
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    if pair is not None:
        enc = tokenizer(text, pair, truncation=True, max_length=classifier.max_length, return_offsets_mapping=True, return_overflowing_tokens=False)
        segments = enc.sequence_ids()
        offsets = [tuple(o) if s is not None else None for o, s in zip(enc["offset_mapping"], segments)]
        types = enc.get("token_type_ids") or [0 if s != 1 else 1 for s in segments]
        full = len(tokenizer(text, pair, truncation=False)["input_ids"])
        content = [i if s is not None else None for i, s in enumerate(segments)]
        return [_Row(owner, list(enc["input_ids"]), list(types), offsets, list(segments), content)], full > len(enc["input_ids"])
    enc = tokenizer(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
    ids, spans = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
    n, budget = len(ids), classifier.max_length - SPECIAL_TOKENS
    if chunks:
        stride = classifier.chunk_stride if classifier.chunk_stride is not None else default_stride(classifier.max_length)
        pieces = [list(range(start, min(start + budget, n))) for start in window_starts(n, budget, stride)]
    else:
        pieces = [kept_ids(list(range(n)), classifier.max_length, classifier.truncation)]  # the indices truncation keeps
    rows = []
    for keep in pieces:
        rows.append(_Row(
            owner, [cls, *(ids[i] for i in keep), sep], [0] * (len(keep) + 2), [None, *(spans[i] for i in keep), None],
            [None, *([0] * len(keep)), None], [None, *keep, None],
        ))
    return rows, not chunks and len(pieces[0]) < n  # windows leave nothing out


# ---------------------------------------------------------------------------------------------
# the attribution


def _score_function(problem):
    """f: the score the prediction shows, from logits, in torch (problems.py's scores are numpy's)."""
    import torch

    if isinstance(problem, SingleLabel):
        return lambda logits: torch.softmax(logits, dim=-1)
    if isinstance(problem, MultiLabel):
        return torch.sigmoid
    return lambda logits: logits


def _pad(rows: Sequence[_Row], pad_id: int, device: str):
    import torch

    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
        types[i, : len(r.types)] = torch.tensor(r.types)
        mask[i, : len(r.ids)] = 1
    # the baseline: [CLS]/[SEP] kept (the frame every input shares), [PAD] in place of every word piece
    baseline = torch.where(torch.tensor([[o is None for o in r.offsets] + [False] * (width - len(r.ids)) for r in rows]), ids, torch.full_like(ids, pad_id))
    return ids.to(device), types.to(device), mask.to(device), baseline.to(device)


def _attribute(classifier: Classifier, rows: list[_Row], targets: list[int], steps: int):
    """Per row: each token's attribution, the convergence delta, f(x) and f(baseline) for its target."""
    import torch

    LayerIntegratedGradients = require("captum.attr", "bertctl explain", INSTALL_FIX).LayerIntegratedGradients
    model = classifier.model
    score = _score_function(classifier.problem)

    def forward(input_ids, token_type_ids, attention_mask):
        return score(model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask).logits.float())

    ig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    out = []
    for start in range(0, len(rows), ROWS_PER_CALL):
        part, wanted = rows[start : start + ROWS_PER_CALL], targets[start : start + ROWS_PER_CALL]
        ids, types, mask, baseline = _pad(part, classifier.pad_token_id, classifier.device)
        attributions, delta = ig.attribute(
            inputs=ids, baselines=baseline, additional_forward_args=(types, mask), target=wanted, n_steps=steps,
            internal_batch_size=max(INTERNAL_BATCH_SIZE, len(part)), return_convergence_delta=True,
        )
        with torch.no_grad():
            index = torch.arange(len(part), device=ids.device)
            at_x = forward(ids, types, mask)[index, wanted]
            at_base = forward(baseline, types, mask)[index, wanted]
        per_token = attributions.sum(dim=-1).detach().float().cpu().numpy()
        for i, row in enumerate(part):
            out.append((per_token[i, : len(row.ids)], float(delta[i]), float(at_x[i]), float(at_base[i])))
    return out


def _logits(classifier: Classifier, rows: list[_Row]) -> "np.ndarray":
    import numpy as np
    import torch

    chunks = []
    with torch.no_grad():
        for start in range(0, len(rows), ROWS_PER_CALL * 4):
            ids, types, mask, _ = _pad(rows[start : start + ROWS_PER_CALL * 4], classifier.pad_token_id, classifier.device)
            chunks.append(classifier.model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits.float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, len(classifier.labels)), dtype=np.float32)


def _targets(classifier: Classifier, scores: "np.ndarray", target: int | None) -> tuple[list[int], str | None]:
    """Which outputs to explain for one text: single-label the predicted class (or --target), multi-label every
    predicted label (or --target), regression the value."""
    problem = classifier.problem
    if isinstance(problem, Regression):
        return [0], None
    if target is not None:
        return [target], None
    fields = problem.decide(classifier.labels, scores, thresholds=classifier.thresholds)
    if isinstance(problem, MultiLabel):
        chosen = [classifier.labels.index(name) for name in fields["labels"]]
        if chosen:
            return chosen, None
        best = int(scores.argmax())
        return [best], f"no label reached its threshold; explained the most likely, {classifier.labels[best]!r}"
    return [classifier.labels.index(fields["label"])], None


def _merge_words(item: InputText, pieces: list[Piece]) -> list[Word]:
    """WordPieces back into the words of the original text: pieces whose character spans touch (no space between)
    are one word, as a reader sees it ("don't", "U.S.", "prices,"); the word's attribution is their sum."""
    words: list[Word] = []
    for piece in sorted((p for p in pieces if p.start is not None), key=lambda p: (p.segment, p.start, p.end)):
        source = item.text if piece.segment == 0 else (item.pair or "")
        last = words[-1] if words else None
        if last is not None and last.segment == piece.segment and piece.start <= last.end:
            last.end = max(last.end, piece.end)
            last.text = source[last.start : last.end]
            last.attribution += piece.attribution
        else:
            words.append(Word(source[piece.start : piece.end], piece.start, piece.end, piece.segment, piece.attribution))
    return words


def explain_items(classifier: Classifier, items: Sequence[InputText], *, steps: int = DEFAULT_STEPS, target: str | None = None, chunks: bool = False) -> ExplainResult:
    """Explanations of items (empty ones skipped and listed), in input order; multi-label gives one per predicted label."""
    import numpy as np

    check_steps(steps)
    has_pairs = any(item.pair is not None for item in items)
    if chunks and has_pairs:
        raise ExplainError("--chunks explains one long text as windows; sentence pairs are cut longest-first from their ends instead", field="chunks", fix="drop --chunks for a sentence-pair model")
    wanted = resolve_target(classifier, target)
    model_classifier = gradient_classifier(classifier)
    kept = [item for item in items if not is_empty(item, has_pairs)]
    empty = [item.where for item in items if is_empty(item, has_pairs)]
    rows: list[_Row] = []
    truncated: list[bool] = []
    for i, item in enumerate(kept):
        item_rows, cut = _rows(model_classifier, i, item.text, item.pair, chunks)
        rows.extend(item_rows)
        truncated.append(cut)
    owners = np.array([r.owner for r in rows], dtype=np.int64)
    problem = classifier.problem
    logits = _logits(model_classifier, rows)
    pooled = problem.pool(logits, owners, len(kept)) if chunks else logits
    scores = problem.scores(pooled) if len(kept) else pooled

    # one job per (row, target): windows are attributed one by one, towards their text's target
    plan = [(i, _targets(classifier, scores[i], wanted)) for i in range(len(kept))]
    rows_of: dict[int, list[_Row]] = {}
    for row in rows:
        rows_of.setdefault(row.owner, []).append(row)
    jobs = [(row, t) for i, (targets, _) in plan for t in targets for row in rows_of[i]]
    attributed = _attribute(model_classifier, [row for row, _ in jobs], [t for _, t in jobs], steps)
    results: dict[tuple[int, int], list] = {}
    for (row, t), got in zip(jobs, attributed):
        results.setdefault((row.owner, t), []).append((row, got))

    tokens = model_classifier.tokenizer.convert_ids_to_tokens
    explanations = []
    for i, (targets, note) in plan:
        item = kept[i]
        for t in targets:
            parts = results[(i, t)]
            pieces = _pieces(parts, tokens)
            delta = sum(got[1] for _, got in parts)
            difference = sum(got[2] - got[3] for _, got in parts)
            label = None if isinstance(problem, Regression) else classifier.labels[t]
            explanations.append(Explanation(
                item.text, item.pair, item.where, label, float(np.atleast_1d(scores[i])[t]), _merge_words(item, pieces), pieces, difference, delta, steps,
                windows=len(parts), truncated=truncated[i], note=note,
            ))
    return ExplainResult(explanations, problem.name, empty)


def _pieces(parts: list, tokens: Callable) -> list[Piece]:
    """The WordPiece detail of one text: a window's tokens once each, a token seen by several --chunks windows
    with the mean of their attributions (windows' logits are pooled by their mean); [CLS]/[SEP] summed into one each."""
    seen: dict[int, list] = {}
    specials: dict[str, float] = {}
    for row, (attribution, *_rest) in parts:
        names = tokens(row.ids)
        for j, index in enumerate(row.content):
            if index is None:
                specials[names[j]] = specials.get(names[j], 0.0) + float(attribution[j])
                continue
            entry = seen.setdefault(index, [names[j], row.offsets[j], row.segments[j], []])
            entry[3].append(float(attribution[j]))
    pieces = [Piece(name, None, None, None, value) for name, value in specials.items()]
    for index in sorted(seen):
        name, (start, end), segment, values = seen[index]
        pieces.append(Piece(name, int(start), int(end), segment, sum(values) / len(values)))
    return pieces


def explain_texts(classifier: Classifier, texts: Sequence[str], pairs: Sequence[str] | None = None, *, steps: int = DEFAULT_STEPS, target: str | None = None, chunks: bool = False) -> ExplainResult:
    """`explain_items` for plain texts (and pairs), after predict's request checks."""
    check_request(classifier, 1, pairs is not None)
    items = [InputText(t, None if pairs is None else pairs[i], f"text {i + 1}") for i, t in enumerate(texts)]
    return explain_items(classifier, items, steps=steps, target=target, chunks=chunks)


class Explainer:
    """serve's /explain: requests one at a time (an attribution is many forward and backward passes already), on a
    gradient-capable copy of the served classifier, loaded at the first request so a server that never explains
    never pays for it."""

    def __init__(self, classifier: Classifier, *, max_steps: int = MAX_STEPS):
        self.served = classifier
        self.max_steps = max_steps
        self._classifier: Classifier | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.served.backend == "torch"

    def refusal(self) -> str:
        source = export_source(self.served.run_dir) if self.served.run_dir is not None else None
        return export_refusal(self.served.location, source)

    def explain(self, items: Sequence[InputText], *, steps: int, target: str | None) -> list[dict[str, Any]]:
        """One record per item in input order: its explanations (several for multi-label), or an error for an empty one."""
        check_steps(steps, "steps", self.max_steps)
        with self._lock:
            if self._classifier is None:
                self._classifier = gradient_classifier(self.served)
            result = explain_items(self._classifier, items, steps=steps, target=target)
        by_where: dict[str, list[dict[str, Any]]] = {}
        for e in result.explanations:
            by_where.setdefault(e.where, []).append(e.to_dict())
        has_pairs = any(item.pair is not None for item in items)
        return [
            {"text": item.text, "error": EMPTY_TEXT} if is_empty(item, has_pairs) else {"text": item.text, "explanations": by_where.get(item.where, [])}
            for item in items
        ]


# ---------------------------------------------------------------------------------------------
# `bertctl explain`


def explain_command(
    model: str | Path | None,
    texts: Sequence[str] = (),
    *,
    file: Path | None = None,
    text_column: str | None = None,
    pair_column: str | None = None,
    pair: str | None = None,
    target: str | None = None,
    steps: int = DEFAULT_STEPS,
    chunks: bool = False,
    stride: int | None = None,
    html_path: Path | None = None,
    threads: int | None = None,
    trust_pickle: bool = False,
    stdin: Any = None,
    show: Callable[[ExplainResult], None] | None = None,
) -> ExplainResult:
    """Everything `bertctl explain` does but print: checks (before the model loads), explanations (`show` gets each
    block's as it is done), the HTML page."""
    check_steps(steps)
    check_chunk_options(chunks, stride)
    if html_path is not None:
        check_writable_path(Path(html_path), "--html", example="why.html")
    stream = open_inputs(texts, file=file, text_column=text_column, pair_column=pair_column, pair=pair, stdin=stdin)
    check_not_export(model)
    require("captum.attr", "bertctl explain", INSTALL_FIX)
    classifier = load_for_inference(model, fast_path=False, threads=threads, trust_pickle=trust_pickle)
    stream.for_model(classifier.settings)
    resolve_target(classifier, target)  # an unknown label is said before any text is read
    if chunks:
        check_stride(default_stride(classifier.max_length) if stride is None else stride, classifier.max_length)
        classifier.chunk_stride = default_stride(classifier.max_length) if stride is None else stride
    check_request(classifier, 1, stream.has_pairs)
    # a block at a time, each shown as soon as it is explained: a file of any length shows progress and keeps only
    # the explanations (for --html and the closing notes), not its texts' activations
    result, seen = ExplainResult([], classifier.problem.name), 0
    for block in stream.items(ROWS_PER_CALL):
        part = explain_items(classifier, block, steps=steps, target=target, chunks=chunks)
        seen += len(block)
        result.explanations.extend(part.explanations)
        result.empty.extend(part.empty)
        if show is not None and part.explanations:
            show(part)
    if not seen:
        raise DataError(f"{stream.source}: no texts to explain", fix='bertctl explain RUN_DIR "some text", --file FILE, or - to read stdin')
    if not result.explanations:
        raise DataError(f"{stream.source}: every input is empty ({', '.join(result.empty[:10])}): nothing to explain", fix="give a non-empty text")
    if html_path is not None:
        atomic_write_text(Path(html_path), render_html(result, title=f"bertctl explain: {classifier.location}"))
    return result


# ---------------------------------------------------------------------------------------------
# rendering: the terminal (rich) and one standalone HTML page


def _strength(e: Explanation) -> float:
    return max((abs(w.attribution) for w in e.words), default=0.0) or 1.0


def _rgb(value: float, scale: float) -> tuple[int, int, int]:
    """Green for words that raise the score, red for words that lower it; the stronger, the deeper."""
    s = min(abs(value) / scale, 1.0)
    fade = int(round(255 - 175 * s))
    return (fade, 255 - int(round(75 * s)), fade) if value >= 0 else (255 - int(round(55 * s)), fade, fade)


def _segments(e: Explanation) -> list[tuple[int, str, list[Word]]]:
    shown = [(0, e.text, [w for w in e.words if w.segment == 0])]
    if e.pair is not None:
        shown.append((1, e.pair, [w for w in e.words if w.segment == 1]))
    return shown


def render_terminal(e: Explanation):
    """One explanation as rich Text: a header with the label and score, then the text, each word coloured."""
    from rich.text import Text

    scale = _strength(e)
    out = Text()
    what = f"label {e.label}" if e.label is not None else "value"
    out.append(f"{e.where}  {what}  score {e.score:.4f}", style="bold")
    out.append(f"  (f(x) - f(baseline) {e.difference:+.4f}, delta {e.delta:+.4f}, {e.steps} steps{f', {e.windows} windows' if e.windows > 1 else ''})\n", style="dim")
    for segment, source, words in _segments(e):
        if e.pair is not None:
            out.append(f"[{'text' if segment == 0 else 'pair'}] ", style="dim")
        cursor = 0
        for w in words:
            out.append(source[cursor : w.start])
            r, g, b = _rgb(w.attribution, scale)
            out.append(source[w.start : w.end], style=f"black on rgb({r},{g},{b})")
            cursor = w.end
        out.append(source[cursor:] + "\n")
    ranked = sorted(e.words, key=lambda w: -abs(w.attribution))[:5]
    out.append("top: " + ", ".join(f"{w.text} {w.attribution:+.3f}" for w in ranked), style="dim")
    if e.note:
        out.append(f"\nnote: {e.note}", style="dim")
    return out


PAGE_STYLE = """
body { font: 16px/1.6 system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.3em; } .meta { color: #666; font-size: 0.85em; } .text { margin: 0.3em 0 1.6em; white-space: pre-wrap; }
.w { border-radius: 3px; padding: 0 1px; } .seg { color: #888; font-size: 0.8em; margin-right: 0.4em; }
.legend span { padding: 0 0.4em; border-radius: 3px; margin-right: 0.5em; }
"""


def render_html(result: ExplainResult, *, title: str = "bertctl explain") -> str:
    """One standalone page (inline style, no script, no external asset or URL) highlighting each text's words."""
    esc = html.escape
    blocks = []
    for e in result.explanations:
        scale = _strength(e)
        what = f"label <b>{esc(e.label)}</b>" if e.label is not None else "value"
        lines = [f'<section><div class="meta">{esc(e.where)} · {what} · score {e.score:.4f} · f(x) − f(baseline) {e.difference:+.4f} · delta {e.delta:+.4f} · {e.steps} steps</div>']
        for segment, source, words in _segments(e):
            parts, cursor = [], 0
            for w in words:
                r, g, b = _rgb(w.attribution, scale)
                parts.append(esc(source[cursor : w.start]))
                parts.append(f'<span class="w" style="background: rgb({r},{g},{b})" title="{w.attribution:+.4f}">{esc(source[w.start : w.end])}</span>')
                cursor = w.end
            parts.append(esc(source[cursor:]))
            tag = f'<span class="seg">{"text" if segment == 0 else "pair"}</span>' if e.pair is not None else ""
            lines.append(f'<div class="text">{tag}{"".join(parts)}</div>')
        if e.note:
            lines.append(f'<div class="meta">note: {esc(e.note)}</div>')
        blocks.append("".join(lines) + "</section>")
    pos, neg = _rgb(1, 1), _rgb(-1, 1)
    legend = f'<p class="legend meta"><span style="background: rgb{pos}">raises the score</span><span style="background: rgb{neg}">lowers it</span>integrated gradients; baseline: [CLS]/[SEP] kept, [PAD] elsewhere</p>'
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><style>{PAGE_STYLE}</style></head>\n'
        f"<body><h1>{esc(title)}</h1>{legend}\n" + "\n".join(blocks) + "\n</body></html>\n"
    )


def print_result(console, result: ExplainResult) -> None:
    for e in result.explanations:
        console.print(render_terminal(e))
        console.print()


def warn(result: ExplainResult, stream=None) -> None:
    for line in [*result.warnings(), *result.notes()]:
        print(line, file=stream or sys.stderr)
