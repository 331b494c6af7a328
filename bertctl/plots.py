"""PNG figures of a run (matplotlib on the Agg backend, imported only when a figure is drawn)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_curves(log_path: Path, out_path: Path, metric: str) -> Path:
    """Training loss and the validation metric against optimizer steps, from train_log.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval" and metric in r]
    fig, ax_loss = plt.subplots(figsize=(7, 4), dpi=110)
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", label="training loss")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("training loss", color="tab:blue")
    if evals:
        ax_metric = ax_loss.twinx()
        ax_metric.plot([r["step"] for r in evals], [r[metric] for r in evals], "o-", color="tab:orange", label=f"validation {metric}")
        ax_metric.set_ylabel(f"validation {metric}", color="tab:orange")
    ax_loss.set_title("bertctl train")
    fig.tight_layout()
    tmp = out_path.with_name(f".{out_path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out_path)
    return out_path
