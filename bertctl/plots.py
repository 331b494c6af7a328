"""Every PNG bertctl draws, in one style: matplotlib's object API on the Agg canvas (no pyplot, so no GUI
backend and no global state), imported only when a figure is drawn, and saved atomically (temp file + rename),
so a reader never finds half a PNG.

    plot_curves(run_dir / "train_log.jsonl", run_dir / "curves.png", "accuracy")
    plot_confusion_matrix(matrix, labels, path, title)
    plot_head_statistics(path, means, names, title) / plot_attention_layer(...) / plot_attention_head(...) / plot_positions(...)
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertctl.runs import LOG_FILE, umask_modes

if TYPE_CHECKING:
    import numpy as np

DPI = 110


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(umask_modes(Path(tmp)), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plot_run_curves(run_dir: Path, metric: str) -> None:
    """curves.png of a finishing run, from its train_log.jsonl; a failure is a warning: a plot is a nicety, never
    a reason to fail a finished training."""
    if not (Path(run_dir) / LOG_FILE).is_file():  # a run shorter than log_every_steps, with no evaluation, logged nothing
        return
    try:
        plot_curves(Path(run_dir) / LOG_FILE, Path(run_dir) / "curves.png", metric)
    except Exception as exc:
        print(f"warning: could not draw curves.png: {exc}", file=sys.stderr)


def plot_curves(log_path: Path, out_path: Path, metric: str) -> Path:
    """Training loss and the validation metric against optimizer steps, from train_log.jsonl."""
    records = [json.loads(line) for line in Path(log_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval" and metric in r]
    fig = _figure(7, 4)
    ax_loss = fig.add_subplot(1, 1, 1)
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", label="training loss")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("training loss", color="tab:blue")
    if evals:
        ax_metric = ax_loss.twinx()
        ax_metric.plot([r["step"] for r in evals], [r[metric] for r in evals], "o-", color="tab:orange", label=f"validation {metric}")
        ax_metric.set_ylabel(f"validation {metric}", color="tab:orange")
    ax_loss.set_title("bertctl train")
    return _save(fig, out_path)


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path, title: str = "") -> Path:
    """A heat map with counts in the cells, rows = true label."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    n = len(labels)
    side = max(4.0, 0.7 * n + 2.5)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    # colour by row share, so a rare class's errors are as visible as a frequent one's
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true label's examples")
    ax.set_xticks(range(n), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    if title:
        ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black", fontsize=9)
    return _save(fig, path)


def plot_label_confusions(confusions: list[list[list[int]]], labels: list[str], path: Path, title: str = "") -> Path:
    """Multi-label: one 2x2 matrix per label ([[tn, fp], [fn, tp]]), rows = true, coloured by row share."""
    import numpy as np

    cols = min(4, len(labels))
    rows = math.ceil(len(labels) / cols)
    fig = _figure(2.6 * cols, 2.5 * rows + 0.6)
    for k, (label, matrix) in enumerate(zip(labels, confusions)):
        ax = fig.add_subplot(rows, cols, k + 1)
        counts = np.asarray(matrix, dtype=float)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks([0, 1], labels=["no", "yes"])
        ax.set_yticks([0, 1], labels=["no", "yes"])
        ax.set_title(label, fontsize=10)
        if k % cols == 0:
            ax.set_ylabel("true")
        if k >= (rows - 1) * cols:
            ax.set_xlabel("predicted")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black", fontsize=9)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _label_token_axes(ax, tokens: list[str], fontsize: float) -> None:
    ticks = list(range(len(tokens)))
    ax.set_xticks(ticks, labels=tokens, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, labels=tokens, fontsize=fontsize)


def _token_fontsize(n: int) -> float:
    return max(3.0, min(9.0, 220.0 / max(n, 1)))


def plot_attention_layer(path: Path, maps: "np.ndarray", tokens: list[str], layer: int, heads: list[int]) -> Path:
    """One layer's heads side by side: rows = queries (attending), columns = keys (attended to)."""
    n = len(tokens)
    cols = min(4, len(heads))
    rows = math.ceil(len(heads) / cols)
    cell = max(3.0, min(6.0, 0.18 * n + 1.5))
    fig = _figure(cell * cols, cell * rows)
    for index, h in enumerate(heads):
        ax = fig.add_subplot(rows, cols, index + 1)
        ax.imshow(maps[layer, h], cmap="viridis", vmin=0.0, vmax=1.0, aspect="equal")
        ax.set_title(f"layer {layer} head {h}", fontsize=10)
        _label_token_axes(ax, tokens, _token_fontsize(n) * 0.8)
    fig.suptitle(f"layer {layer}: attention weights (row = query token, column = key token)", fontsize=12)
    return _save(fig, path)


def plot_attention_head(path: Path, maps: "np.ndarray", tokens: list[str], layer: int, head: int) -> Path:
    n = len(tokens)
    size = max(4.0, min(14.0, 0.28 * n + 2.0))
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(maps[layer, head], cmap="viridis", vmin=0.0, vmax=1.0, aspect="equal")
    _label_token_axes(ax, tokens, _token_fontsize(n))
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(f"layer {layer} head {head}")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def plot_head_statistics(path: Path, means: dict[str, "np.ndarray"], names: dict[str, str], title: str) -> Path:
    """One layer-by-head heatmap per statistic (`names`: key -> label), the value written in each cell."""
    import numpy as np

    layers, heads = next(iter(means.values())).shape
    cols = 4
    rows = math.ceil(len(names) / cols)
    width = max(3.2, 0.45 * heads + 1.4)
    height = max(2.6, 0.42 * layers + 1.2)
    fig = _figure(width * cols, height * rows)
    for index, (name, label) in enumerate(names.items()):
        ax = fig.add_subplot(rows, cols, index + 1)
        values = means[name]
        top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
        vmax = max(top, 1e-9) if name == "entropy" else 1.0
        image = ax.imshow(values, cmap="magma" if name == "entropy" else "viridis", vmin=0.0, vmax=vmax, aspect="auto")
        ax.set_title(f"{label}" + (" (nats)" if name == "entropy" else " share"), fontsize=10)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(heads))
        ax.set_yticks(range(layers))
        if layers * heads <= 16 * 16:
            for (i, j), v in np.ndenumerate(values):
                if v == v:
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.6 * vmax else "black")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=12)
    return _save(fig, path)


def plot_positions(path: Path, analysis: Any) -> Path:
    """Cosine similarity between position embeddings, and the histogram of their norms (attention.PositionAnalysis)."""
    fig = _figure(13, 5.5)
    grid = fig.add_gridspec(1, 2, width_ratios=[1.2, 1])
    left, right = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    image = left.imshow(analysis.similarity, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    left.set_title(f"cosine similarity of position embeddings 0..{analysis.positions - 1}")
    left.set_xlabel("position j")
    left.set_ylabel("position i")
    fig.colorbar(image, ax=left, fraction=0.046, pad=0.04)
    right.hist(analysis.norms, bins=min(40, max(5, analysis.positions // 4)), color="#4472c4")
    right.set_title(f"L2 norms (mean {analysis.norm_mean:.3g}, coefficient of variation {analysis.norm_cv:.3f})")
    right.set_xlabel("L2 norm")
    right.set_ylabel("positions")
    return _save(fig, path)


def plot_sweep_history(path: Path, trials: list[dict[str, Any]], metric: str, maximize: bool) -> Path:
    """Each trial's metric by trial number (pruned ones at their last report, hollow) and the best so far."""
    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    for state, style in (("COMPLETE", {"color": "tab:blue"}), ("PRUNED", {"facecolors": "none", "edgecolors": "tab:gray"})):
        shown = [t for t in trials if t["state"] == state and t["value"] is not None]
        ax.scatter([t["number"] for t in shown], [t["value"] for t in shown], label=state.lower(), **style)
    best, xs, ys = None, [], []
    for t in sorted((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["number"]):
        if best is None or (t["value"] > best if maximize else t["value"] < best):
            best = t["value"]
        xs.append(t["number"])
        ys.append(best)
    ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.legend()
    ax.set_title("bertctl sweep: optimisation history")
    return _save(fig, path)


def plot_sweep_importances(path: Path, importances: dict[str, float], metric: str) -> Path:
    """How much of the metric's variation each parameter explains (optuna.importance), largest on top."""
    names = list(importances)[::-1]
    fig = _figure(7, max(2.5, 0.5 * len(names) + 1.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(names, [importances[n] for n in names], color="#4472c4")
    ax.set_xlabel(f"importance for {metric}")
    ax.set_title("bertctl sweep: parameter importances")
    return _save(fig, path)


def plot_sweep_params(path: Path, trials: list[dict[str, Any]], keys: list[str], metric: str, log_keys: set[str]) -> Path:
    """The metric of each complete trial against each parameter, one panel per parameter."""
    cols = min(3, max(1, len(keys)))
    rows = math.ceil(max(1, len(keys)) / cols)
    fig = _figure(4.2 * cols, 3.4 * rows)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        shown = [t for t in trials if key in t["params"]]
        values = [t["params"][key] for t in shown]
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            ax.scatter(values, [t["value"] for t in shown], color="tab:blue")
            if key in log_keys:
                ax.set_xscale("log")
        else:  # categorical: strings, booleans
            labels = sorted({str(v) for v in values})
            ax.scatter([labels.index(str(v)) for v in values], [t["value"] for t in shown], color="tab:blue")
            ax.set_xticks(range(len(labels)), labels=labels)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
    return _save(fig, path)
