"""Look inside a BERT: attention maps, per-head statistics (Clark et al. 2019) and learned position embeddings.

    tokens, maps = attention_maps(model, tokenizer, "The cat sat.")        # maps: (layers, heads, n, n)
    stats = head_statistics(maps, **token_kinds(tokenizer, ids))            # share on [CLS]/[SEP]/punct/self/next/prev, entropy
    report = analyse_positions(model.embeddings.position_embeddings.weight) # norms, cosine similarity vs distance

The statistics follow "What Does BERT Look At?" (Clark et al., 2019): for each layer and head, the attention a
query token gives on average to [CLS], to [SEP], to punctuation, to itself, to the next and the previous token,
and the entropy of its attention distribution. Padding never counts, neither as a query nor as a key.

`write_attention_report` turns them into PNG heatmaps (bertctl.plots), an index.html to browse them and
attention.json, written into a temp dir that replaces the output dir only when complete.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from bertctl import plots
from bertctl.data import unlabeled_texts
from bertctl.errors import BertctlError, DataError, ModelError
from bertctl.modeling import load_encoder, load_tokenizer
from bertctl.runs import check_writable_path, removes_new_empty_dirs, replace_dir, resolve_model_dir

if TYPE_CHECKING:
    import numpy as np

# name -> what the terminal and the page call it
STATISTICS = {
    "cls": "[CLS]",
    "sep": "[SEP]",
    "punct": "punct",
    "self": "self",
    "next": "next",
    "prev": "prev",
    "entropy": "entropy",
}
MARKER = "attention.json"  # written by this command only: an --out holding it may be replaced
DEFAULT_MAX_LENGTH = 128
SIMILARITY_DISTANCES = (1, 8, 64)


# ---------------------------------------------------------------------------------------------
# statistics from attention tensors (plain numpy: tests build the tensors by hand)


def is_punctuation(token: str) -> bool:
    """A WordPiece made only of punctuation characters ('.', ',', '##!', "'")."""
    text = token[2:] if token.startswith("##") else token
    return bool(text) and all(unicodedata.category(ch).startswith("P") for ch in text)


def token_kinds(tokenizer, input_ids: Sequence[int] | Sequence[Sequence[int]], attention_mask=None) -> dict[str, "np.ndarray"]:
    """Boolean masks (same shape as input_ids) of [CLS], [SEP], punctuation and real (non-padding) tokens."""
    import numpy as np

    ids = np.asarray(input_ids)
    tokens = np.asarray(tokenizer.convert_ids_to_tokens(ids.reshape(-1).tolist()), dtype=object).reshape(ids.shape)
    valid = np.ones(ids.shape, dtype=bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    punct = np.vectorize(is_punctuation, otypes=[bool])(tokens) if tokens.size else np.zeros(ids.shape, dtype=bool)
    return {
        "is_cls": (ids == tokenizer.cls_token_id) & valid,
        "is_sep": (ids == tokenizer.sep_token_id) & valid,
        "is_punct": punct & valid,
        "valid": valid,
    }


@dataclass
class HeadStats:
    """Sums and counts per (layer, head), so statistics of many texts add up token-weighted."""

    sums: dict[str, "np.ndarray"]  # name -> (layers, heads)
    counts: dict[str, "np.ndarray"]  # name -> (layers, heads): query tokens that entered the sum
    texts: int = 1

    def __add__(self, other: "HeadStats") -> "HeadStats":
        return HeadStats(
            {k: self.sums[k] + other.sums[k] for k in self.sums},
            {k: self.counts[k] + other.counts[k] for k in self.counts},
            self.texts + other.texts,
        )

    def means(self) -> dict[str, "np.ndarray"]:
        import numpy as np

        with np.errstate(invalid="ignore", divide="ignore"):
            return {k: np.where(self.counts[k] > 0, self.sums[k] / np.maximum(self.counts[k], 1), np.nan) for k in self.sums}

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(next(iter(self.sums.values())).shape)  # type: ignore[return-value]


def head_statistics(
    attentions: "np.ndarray",
    *,
    is_cls: "np.ndarray",
    is_sep: "np.ndarray",
    is_punct: "np.ndarray",
    valid: "np.ndarray | None" = None,
) -> HeadStats:
    """Clark et al. head statistics of one sequence (layers, heads, n, n) or a batch (batch, layers, heads, n, n).

    The token masks have shape (n,) or (batch, n). Each statistic is averaged over real query tokens; `next`
    and `prev` only over queries that have a real next/previous token. Entropy is in nats (uniform over n
    keys gives log n); rows are renormalised over real keys first, as softmax already does for padded keys.
    """
    import numpy as np

    attn = np.asarray(attentions, dtype=np.float64)
    if attn.ndim == 4:
        attn = attn[None]
        is_cls, is_sep, is_punct = (np.asarray(m)[None] for m in (is_cls, is_sep, is_punct))
        valid = None if valid is None else np.asarray(valid)[None]
    if attn.ndim != 5 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attentions must be (layers, heads, n, n) or (batch, layers, heads, n, n), got {attn.shape}")
    batch, layers, heads, n, _ = attn.shape
    valid = np.ones((batch, n), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if valid.shape != (batch, n):
        raise ValueError(f"token masks must be (n,) or (batch, n) = {(batch, n)}, got {valid.shape}")
    key = valid[:, None, None, None, :]
    attn = np.where(key, attn, 0.0)
    totals = attn.sum(-1, keepdims=True)
    attn = np.divide(attn, totals, out=np.zeros_like(attn), where=totals > 0)

    def share(mask: "np.ndarray") -> "np.ndarray":  # (batch, layers, heads, n): attention each query puts on `mask`
        return np.einsum("blhqk,bk->blhq", attn, np.asarray(mask, dtype=np.float64) * valid)

    index = np.arange(n)
    next_ok = valid & np.concatenate([valid[:, 1:], np.zeros((batch, 1), dtype=bool)], axis=1)
    prev_ok = valid & np.concatenate([np.zeros((batch, 1), dtype=bool), valid[:, :-1]], axis=1)
    on_self = attn[..., index, index]
    on_next = np.concatenate([attn[..., index[:-1], index[1:]], np.zeros((batch, layers, heads, 1))], axis=-1)
    on_prev = np.concatenate([np.zeros((batch, layers, heads, 1)), attn[..., index[1:], index[:-1]]], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(attn > 0, attn * np.log(np.where(attn > 0, attn, 1.0)), 0.0)
    entropy = -plogp.sum(-1)

    per_query = {
        "cls": (share(is_cls), valid),
        "sep": (share(is_sep), valid),
        "punct": (share(is_punct), valid),
        "self": (on_self, valid),
        "next": (on_next, next_ok),
        "prev": (on_prev, prev_ok),
        "entropy": (entropy, valid),
    }
    sums, counts = {}, {}
    for name, (values, queries) in per_query.items():
        weight = queries[:, None, None, :].astype(np.float64)
        sums[name] = (values * weight).sum(axis=(0, 3))
        counts[name] = np.broadcast_to(weight.sum(axis=(0, 3)), (layers, heads)).copy()
    return HeadStats(sums, counts, texts=batch)


# ---------------------------------------------------------------------------------------------
# learned position embeddings


def _ranks(values: "np.ndarray") -> "np.ndarray":
    """Ranks 1..n with ties given their average rank (what Spearman's rho needs)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x: "np.ndarray", y: "np.ndarray") -> float:
    import numpy as np

    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(np.sqrt((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


@dataclass
class PositionAnalysis:
    positions: int
    dim: int
    norms: "np.ndarray"
    similarity: "np.ndarray"  # (positions, positions) cosine similarity
    norm_mean: float
    norm_std: float
    norm_cv: float  # std / mean of the norms: 0 for sinusoidal embeddings
    distance_spearman: float  # rho(|i - j|, cos(i, j)) over i < j: strongly negative when similarity falls with distance
    similarity_at: dict[int, float]  # distance -> mean cosine similarity of positions that far apart
    largest_norm_position: int  # learned tables often have one outlier (position 0), which alone inflates the CV

    def to_dict(self) -> dict[str, Any]:
        return {
            "positions": self.positions,
            "dim": self.dim,
            "norm_mean": self.norm_mean,
            "norm_std": self.norm_std,
            "norm_cv": self.norm_cv,
            "distance_spearman": self.distance_spearman,
            "similarity_at_distance": {str(d): s for d, s in self.similarity_at.items()},
            "largest_norm_position": self.largest_norm_position,
            "largest_norm": float(self.norms[self.largest_norm_position]),
        }


def analyse_positions(weights, positions: int | None = None) -> PositionAnalysis:
    """How close learned position embeddings (positions, dim) come to the sinusoidal table's two properties:
    equal norms, and similarity that falls as positions move apart."""
    import numpy as np

    table = np.asarray(weights.detach().cpu().numpy() if hasattr(weights, "detach") else weights, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] < 2:
        raise ValueError(f"position embeddings must be (positions >= 2, dim), got {table.shape}")
    if positions is not None:
        table = table[: max(2, positions)]
    n, dim = table.shape
    norms = np.linalg.norm(table, axis=1)
    unit = table / np.maximum(norms[:, None], 1e-12)
    similarity = unit @ unit.T
    upper_i, upper_j = np.triu_indices(n, k=1)
    rho = spearman(upper_j - upper_i, similarity[upper_i, upper_j])
    at = {d: float(np.diagonal(similarity, offset=d).mean()) for d in SIMILARITY_DISTANCES if d < n}
    mean = float(norms.mean())
    std = float(norms.std())
    cv = std / mean if mean > 0 else float("nan")
    return PositionAnalysis(n, dim, norms, similarity, mean, std, cv, rho, at, int(np.argmax(norms)))


def sinusoidal_table(positions: int, dim: int) -> "np.ndarray":
    """The fixed encoding of Vaswani et al. (2017): the reference learned embeddings are compared with."""
    import numpy as np

    pos = np.arange(positions)[:, None]
    rate = 1.0 / np.power(10000.0, (2 * (np.arange(dim) // 2)) / dim)
    angles = pos * rate[None, :]
    return np.where(np.arange(dim)[None, :] % 2 == 0, np.sin(angles), np.cos(angles))


# ---------------------------------------------------------------------------------------------
# running a model


def run_attention(model, tokenizer, texts: list[str], pairs: list[str] | None = None, max_length: int = DEFAULT_MAX_LENGTH):
    """(encoding, attentions) for a batch: attentions as numpy (batch, layers, heads, n, n)."""
    import numpy as np
    import torch

    args = (texts, pairs) if pairs is not None else (texts,)
    encoding = tokenizer(*args, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        output = model(**encoding, output_attentions=True)
    if not output.attentions:
        raise ModelError("the model returned no attention weights", fix="use a BERT model whose attention supports the eager implementation")
    stacked = torch.stack(list(output.attentions), dim=1)  # (batch, layers, heads, n, n)
    return encoding, stacked.float().cpu().numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------
# the report


@dataclass
class TextMaps:
    text: str
    text_pair: str | None
    tokens: list[str]
    maps: "np.ndarray"  # (layers, heads, n, n)


@dataclass
class AttentionReport:
    model: str
    out_dir: Path
    layers: int
    heads: int
    stats: HeadStats | None = None
    stats_source: str = ""
    text_maps: TextMaps | None = None
    positions: PositionAnalysis | None = None
    images: dict[str, list[str]] = field(default_factory=dict)  # section -> PNG names relative to out_dir
    shown_layers: list[int] | None = None  # --layer/--head: the rows the terminal table shows (None: all)
    shown_heads: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"written_by": "bertctl attention", "model": self.model, "layers": self.layers, "heads": self.heads}
        if self.text_maps is not None:
            out["text"] = self.text_maps.text
            out["text_pair"] = self.text_maps.text_pair
            out["tokens"] = self.text_maps.tokens
        if self.stats is not None:
            means = self.stats.means()
            out["statistics_source"] = self.stats_source
            out["texts"] = self.stats.texts
            out["statistics"] = {name: _nan_to_none(means[name].tolist()) for name in STATISTICS}
        if self.positions is not None:
            out["positions"] = self.positions.to_dict()
        out["images"] = self.images
        return out


def _nan_to_none(rows: list[list[float]]) -> list[list[float | None]]:
    return [[None if v != v else round(v, 6) for v in row] for row in rows]


def slugify(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()).strip("-")
    return slug[:limit].rstrip("-") or "text"


def check_out_dir(out: Path) -> None:
    """Refuse to replace a non-empty dir this command did not write (it may hold someone's files)."""
    check_writable_path(out, "--out", directory=True)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise BertctlError(
            f"--out {out} already holds files that `bertctl attention` did not write (no {MARKER})",
            fix="choose another --out, or empty that directory first",
        )


def _select(values: list[int] | None, count: int, what: str) -> list[int]:
    if values is None:
        return list(range(count))
    for v in values:
        if not 0 <= v < count:
            raise BertctlError(f"--{what} {v} is out of range: the model has {count} {what}s, numbered 0..{count - 1}", fix=f"pick a {what} between 0 and {count - 1}")
    return values


def attention_command(
    model: str | None,
    texts: list[str],
    *,
    layer: int | None = None,
    head: int | None = None,
    out: Path | None = None,
    data: Path | None = None,
    text_column: str = "text",
    limit: int = 100,
    positions: bool = False,
    max_length: int | None = None,
    batch_size: int = 16,
    trust_pickle: bool = False,
) -> AttentionReport:
    """Everything `bertctl attention` does, returning what it wrote (the CLI only prints)."""
    if len(texts) > 2:
        raise BertctlError(f"got {len(texts)} texts; attention takes one text, or two for a sentence pair", fix='quote each text: bertctl attention --model M "first text" "second text"')
    if not texts and data is None and not positions:
        raise BertctlError("nothing to show: give a text, --data FILE_OR_RECIPE, or --positions", fix='bertctl attention --model M "The cat sat on the mat."')
    if limit < 1:
        raise BertctlError(f"--limit must be at least 1, got {limit}", fix="e.g. --limit 100")
    if max_length is not None and max_length < 4:
        raise BertctlError(f"--max-length must be at least 4, got {max_length}", fix="e.g. --max-length 128")
    text_length = max_length or DEFAULT_MAX_LENGTH
    if data is not None and not data.exists():
        raise DataError(f"--data {data}: file not found", fix="name a recipe (.toml) or a data file (csv, tsv, jsonl, parquet, txt)")
    if out is None:
        name = texts[0] if texts else (f"data-{data.stem}" if data is not None else "positions")
        out = Path("attention") / slugify(name)
    check_out_dir(out)

    location, _ = resolve_model_dir(model)
    display = model if model is not None else location
    encoder = load_encoder(location, trust_pickle=trust_pickle)
    config = encoder.config
    report = AttentionReport(display, out, config.num_hidden_layers, config.num_attention_heads)
    layers = _select(None if layer is None else [layer], report.layers, "layer")
    heads = _select(None if head is None else [head], report.heads, "head")
    report.shown_layers, report.shown_heads = layers, heads

    tokenizer = load_tokenizer(location) if (texts or data is not None) else None
    if texts:
        encoding, maps = run_attention(encoder, tokenizer, [texts[0]], [texts[1]] if len(texts) == 2 else None, text_length)
        ids = encoding["input_ids"][0].tolist()
        report.text_maps = TextMaps(texts[0], texts[1] if len(texts) == 2 else None, tokenizer.convert_ids_to_tokens(ids), maps[0])
        report.stats = head_statistics(maps[0], **token_kinds(tokenizer, ids))
        report.stats_source = "the text above"
    if data is not None:
        import random

        many, pairs, where = unlabeled_texts(data, text_column)
        if len(many) > limit:  # a seeded sample rather than the first rows: files are often sorted by label
            keep = sorted(random.Random(0).sample(range(len(many)), limit))
            many, pairs = [many[i] for i in keep], (None if pairs is None else [pairs[i] for i in keep])
        total: HeadStats | None = None
        for start in range(0, len(many), batch_size):
            chunk_pairs = None if pairs is None else pairs[start : start + batch_size]
            encoding, maps = run_attention(encoder, tokenizer, many[start : start + batch_size], chunk_pairs, text_length)
            kinds = token_kinds(tokenizer, encoding["input_ids"].numpy(), encoding["attention_mask"].numpy())
            part = head_statistics(maps, **kinds)
            total = part if total is None else total + part
        report.stats = total
        report.stats_source = f"{total.texts} texts of {where}"  # type: ignore[union-attr]
    if positions:
        embeddings = getattr(getattr(encoder, "embeddings", None), "position_embeddings", None)
        if embeddings is None or not hasattr(embeddings, "weight"):
            raise ModelError(f"{display} has no learned absolute position embeddings to plot", fix="use a BERT model (position_embedding_type = 'absolute')")
        report.positions = analyse_positions(embeddings.weight, max_length)
    write_attention_report(report, layers=layers, heads=heads, per_head=layer is not None or head is not None)
    return report


# ---------------------------------------------------------------------------------------------
# writing PNGs + index.html + attention.json


def _stats_table_html(stats: HeadStats) -> str:
    means = stats.means()
    layers, heads = stats.shape
    head_row = "".join(f"<th>{html.escape(label)}</th>" for label in STATISTICS.values())
    body = []
    for lay in range(layers):
        for h in range(heads):
            cells = []
            for name in STATISTICS:
                v = means[name][lay, h]
                if v != v:
                    cells.append("<td>-</td>")
                elif name == "entropy":
                    cells.append(f"<td>{v:.2f}</td>")
                else:
                    cells.append(f'<td style="background: rgba(68,114,196,{min(1.0, max(0.0, v)):.2f})">{v:.2f}</td>')
            body.append(f"<tr><th>{lay}</th><th>{h}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>layer</th><th>head</th>{head_row}</tr>{''.join(body)}</table>"


def render_index_html(report: AttentionReport) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>bertctl attention: {html.escape(report.model)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px} img{max-width:100%;border:1px solid #ddd;margin:.5em 0}"
        " table{border-collapse:collapse;font-size:12px} td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee}"
        " code{background:#f4f4f4;padding:1px 4px} nav a{margin-right:1em}</style></head><body>",
        f"<h1>Attention of {html.escape(report.model)}</h1>",
        f"<p>{report.layers} layers &times; {report.heads} heads. Layers and heads are numbered from 0. "
        "In every map a row is a query token and its columns the attention it gives each key token (rows sum to 1).</p>",
    ]
    links = [f"<a href='#{section}'>{section}</a>" for section in report.images]
    if links:
        parts.append(f"<nav>{''.join(links)}</nav>")
    if report.text_maps is not None:
        tm = report.text_maps
        pair = f" / <q>{html.escape(tm.text_pair)}</q>" if tm.text_pair else ""
        parts.append(f"<h2>Input</h2><p><q>{html.escape(tm.text)}</q>{pair}</p><p><code>{html.escape(' '.join(tm.tokens))}</code> ({len(tm.tokens)} tokens)</p>")
    for section, images in report.images.items():
        parts.append(f"<h2 id='{section}'>{html.escape(section)}</h2>")
        if section == "statistics" and report.stats is not None:
            parts.append(
                f"<p>Averaged over {html.escape(report.stats_source)}: the mean share of a query token's attention on [CLS], [SEP], "
                "punctuation, itself, the next and the previous token, and the entropy of its attention (nats), as in "
                "Clark et al. 2019, <i>What Does BERT Look At?</i>. Padding is excluded.</p>"
            )
        if section == "positions" and report.positions is not None:
            p = report.positions
            at = ", ".join(f"{d}: {s:.3f}" for d, s in p.similarity_at.items())
            parts.append(
                f"<p>{p.positions} positions, {p.dim} dimensions. Norm coefficient of variation {p.norm_cv:.3f} (sinusoidal: 0). "
                f"Spearman &rho; between distance |i&minus;j| and cosine similarity {p.distance_spearman:.3f} (sinusoidal: strongly negative). "
                f"Mean similarity at distance {at}.</p>"
            )
        for image in images:
            parts.append(f"<div><a href='{html.escape(image)}'><img src='{html.escape(image)}' alt='{html.escape(image)}' loading='lazy'></a></div>")
        if section == "statistics" and report.stats is not None:
            parts.append(_stats_table_html(report.stats))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_attention_report(report: AttentionReport, *, layers: list[int], heads: list[int], per_head: bool) -> None:
    """Write every file into a temp dir beside --out, then swap it in: a crash never leaves half a report,
    and a failed write (disk full, read-only) leaves --out and its parents as they were."""
    out = report.out_dir
    check_out_dir(out)  # again: someone may have filled it while the model ran
    try:
        with removes_new_empty_dirs(out.parent):
            out.parent.mkdir(parents=True, exist_ok=True)
            _write_report_files(report, out, layers=layers, heads=heads, per_head=per_head)
    except OSError as exc:
        raise BertctlError(
            f"could not write the attention report to {out}: {exc.strerror or exc}", fix="free disk space, or choose a writable --out DIR"
        ) from None


def _write_report_files(report: AttentionReport, out: Path, *, layers: list[int], heads: list[int], per_head: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        report.images = {}
        if report.stats is not None:
            plots.plot_head_statistics(tmp / "statistics.png", report.stats.means(), STATISTICS, f"head statistics over {report.stats_source}")
            report.images["statistics"] = ["statistics.png"]
        if report.text_maps is not None:
            names = []
            for lay in layers:
                if per_head:
                    for h in heads:
                        name = f"layer{lay:02d}_head{h:02d}.png"
                        plots.plot_attention_head(tmp / name, report.text_maps.maps, report.text_maps.tokens, lay, h)
                        names.append(name)
                else:
                    name = f"layer{lay:02d}.png"
                    plots.plot_attention_layer(tmp / name, report.text_maps.maps, report.text_maps.tokens, lay, heads)
                    names.append(name)
            report.images["maps"] = names
        if report.positions is not None:
            plots.plot_positions(tmp / "positions.png", report.positions)
            report.images["positions"] = ["positions.png"]
        (tmp / "index.html").write_text(render_index_html(report), encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the report is meant to be shared like any output dir
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
