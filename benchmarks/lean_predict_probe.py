"""A probe, not a product: how fast could a cold `bertctl predict "text"` be without importing transformers?

    python benchmarks/lean_predict_probe.py RUN_DIR "one text" ["another text" ...]

Loads a bertctl run dir (BertForSequenceClassification) with only torch, safetensors and tokenizers, runs the
BERT encoder in ~40 lines of torch, prints one label per text. cold_start.sh times it beside `bertctl predict`
to size the proposal in benchmarks/NOTES.md; `--check` compares its labels and probabilities with
transformers on the AG News dev texts.
"""

from __future__ import annotations

import json
import math
import sys
import tomllib
from pathlib import Path


def load(run_dir: Path):
    import torch
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    config = json.loads((run_dir / "config.json").read_text())
    weights = load_file(str(run_dir / "model.safetensors"))
    max_length = 512
    recipe = run_dir / "recipe.toml"
    if recipe.is_file():
        max_length = tomllib.loads(recipe.read_text()).get("model", {}).get("max_length", max_length)
    tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=min(max_length, config["max_position_embeddings"]))
    tokenizer.no_padding()
    torch.set_grad_enabled(False)
    return config, weights, tokenizer


def logits(config, w, tokenizer, texts: list[str]):
    import torch
    import torch.nn.functional as F

    encodings = tokenizer.encode_batch(texts)
    width = max(len(e.ids) for e in encodings)
    ids = torch.zeros(len(texts), width, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros(len(texts), width, dtype=torch.bool)
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        types[row, : len(e.ids)] = torch.tensor(e.type_ids)
        mask[row, : len(e.ids)] = True
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
    hidden = config["hidden_size"]
    size = hidden // heads

    def ln(x, name):
        return F.layer_norm(x, (hidden,), w[f"{name}.weight"], w[f"{name}.bias"], eps)

    def lin(x, name):
        return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])

    e = "bert.embeddings"
    x = w[f"{e}.word_embeddings.weight"][ids] + w[f"{e}.position_embeddings.weight"][:width] + w[f"{e}.token_type_embeddings.weight"][types]
    x = ln(x, f"{e}.LayerNorm")
    bias = torch.zeros(mask.shape).masked_fill_(~mask, torch.finfo(torch.float32).min)[:, None, None, :]
    batch = len(texts)
    for i in range(config["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}"
        q, k, v = (lin(x, f"{p}.attention.self.{n}").view(batch, width, heads, size).transpose(1, 2) for n in ("query", "key", "value"))
        probs = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(size) + bias, dim=-1)
        attended = (probs @ v).transpose(1, 2).reshape(batch, width, hidden)
        x = ln(lin(attended, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        x = ln(lin(F.gelu(lin(x, f"{p}.intermediate.dense")), f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    pooled = torch.tanh(lin(x[:, 0], "bert.pooler.dense"))
    return lin(pooled, "classifier")


def main() -> None:
    run_dir, texts = Path(sys.argv[1]), sys.argv[2:]
    if texts == ["--check"]:
        check(run_dir)
        return
    config, weights, tokenizer = load(run_dir)
    out = logits(config, weights, tokenizer, texts)
    for text, row in zip(texts, out):
        print(f"{config['id2label'][str(int(row.argmax()))]}\t{text}")


def check(run_dir: Path) -> None:
    import pandas as pd
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = pd.read_csv(Path(__file__).resolve().parents[1] / "recipes/data/agnews/dev.csv")["text"].tolist()[:200]
    config, weights, tokenizer = load(run_dir)
    lean = torch.cat([logits(config, weights, tokenizer, texts[i : i + 50]) for i in range(0, len(texts), 50)])
    model = AutoModelForSequenceClassification.from_pretrained(run_dir).eval()
    hf_tok = AutoTokenizer.from_pretrained(run_dir)
    ref = torch.cat([model(**hf_tok(texts[i : i + 50], padding=True, truncation=True, max_length=128, return_tensors="pt")).logits for i in range(0, len(texts), 50)])
    print(f"max |logit diff| {float((lean - ref).abs().max()):.2e}; same labels {float((lean.argmax(1) == ref.argmax(1)).float().mean()):.3f}")


if __name__ == "__main__":
    main()
