"""Faithfulness of `bertctl explain`: ERASER comprehensiveness and sufficiency (DeYoung et al., ACL 2020) on AG News dev.

    python benchmarks/explain_faithfulness.py --run-dir runs/agnews               # 500 dev texts (the issue's figure)
    python benchmarks/explain_faithfulness.py --run-dir runs/agnews --limit 40    # a quick look on a small machine

For each text the model's predicted class c and its probability p(c | x). Each method ranks the text's WordPieces
([CLS]/[SEP] excluded) by importance for c; the top k% (at least one) are the rationale.
- comprehensiveness: p(c | x) - p(c | x without the rationale). Higher: the tokens the method names did matter.
- sufficiency: p(c | x) - p(c | the rationale alone). Lower: those tokens alone keep the prediction.
Tokens are deleted, not masked, as in ERASER; [CLS] and [SEP] stay.

Methods: integrated gradients (bertctl explain: 50 steps, [PAD] baseline), attention (last layer, the [CLS] row,
mean over heads), gradient x input (on the word embeddings, summed over the hidden size) and random (seeded).
Time per text is each method's own work, the prediction of the full text not included.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import AGNEWS, command_line  # noqa: E402

KS = (0.1, 0.2)


def read_texts(path: Path, n: int) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [row["text"] for row, _ in zip(csv.DictReader(fh), range(n))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a trained AG News run dir (bertctl train recipes/agnews.toml)")
    parser.add_argument("--data", default=str(AGNEWS / "dev.csv"), help="csv with a text column (default: the bundled AG News dev split)")
    parser.add_argument("--limit", "-n", type=int, default=500, help="texts, from the top of the file (default 500)")
    parser.add_argument("--steps", type=int, default=50, help="integrated gradients steps (bertctl explain's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np
    import torch

    from bertctl import explaining
    from bertctl.inference import InputText, load_for_inference
    from bertctl.truncation import kept_ids

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    classifier = load_for_inference(args.run_dir, fast_path=False)
    model, tokenizer, device = classifier.model, classifier.tokenizer, classifier.device
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, classifier.pad_token_id
    texts = read_texts(Path(args.data), args.limit)
    contents = [kept_ids(ids, classifier.max_length, classifier.truncation) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def probabilities(rows: list[list[int]]) -> np.ndarray:
        """Softmax over classes for [CLS] row [SEP] inputs, batched by length."""
        out = np.zeros((len(rows), len(classifier.labels)))
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        with torch.no_grad():
            for start in range(0, len(rows), 64):
                index = order[start : start + 64]
                width = max(len(rows[i]) for i in index) + 2
                ids = torch.full((len(index), width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for r, i in enumerate(index):
                    framed = [cls, *rows[i], sep]
                    ids[r, : len(framed)] = torch.tensor(framed)
                    mask[r, : len(framed)] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
                out[index] = torch.softmax(logits, -1).cpu().numpy()
        return out

    full = probabilities(contents)
    predicted = full.argmax(1)

    def single(content: list[int]):
        ids = torch.tensor([[cls, *content, sep]], device=device)
        return ids, torch.ones_like(ids)

    def ig(i: int) -> np.ndarray:
        [e] = explaining.explain_items(classifier, [InputText(texts[i], None, f"text {i + 1}")], steps=args.steps, target=classifier.labels[predicted[i]]).explanations
        values = np.array([p.attribution for p in e.pieces if p.start is not None])
        if len(values) != len(contents[i]):
            raise SystemExit(f"text {i + 1}: {len(values)} attributions for {len(contents[i])} tokens")
        return values

    def attention(i: int) -> np.ndarray:
        ids, mask = single(contents[i])
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
        last = out.attentions[-1][0]  # heads x query x key
        return last[:, 0, 1:-1].mean(0).float().cpu().numpy()  # [CLS]'s row, the content keys, mean over heads

    embeddings = model.get_input_embeddings()

    def grad_x_input(i: int) -> np.ndarray:
        ids, mask = single(contents[i])
        embeds = embeddings(ids).detach().requires_grad_(True)
        p = torch.softmax(model(inputs_embeds=embeds, attention_mask=mask).logits.float(), -1)[0, predicted[i]]
        (grad,) = torch.autograd.grad(p, embeds)
        return (grad * embeds).sum(-1)[0, 1:-1].detach().float().cpu().numpy()

    def random_scores(i: int) -> np.ndarray:
        return np.array([rng.random() for _ in contents[i]])

    methods = {"integrated gradients": ig, "attention (last layer, [CLS], mean of heads)": attention, "gradient x input": grad_x_input, "random": random_scores}
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")  # sdpa returns no attention weights
    rows = []
    for name, method in methods.items():
        started = time.perf_counter()
        scores = [method(i) for i in range(len(texts))]
        seconds = (time.perf_counter() - started) / max(len(texts), 1)
        result = {"method": name, "ms_per_text": seconds * 1000}
        for k in KS:
            without, alone = [], []
            for content, s in zip(contents, scores):
                top = set(np.argsort(-s, kind="stable")[: max(1, math.ceil(k * len(content)))].tolist())
                without.append([t for j, t in enumerate(content) if j not in top])
                alone.append([t for j, t in enumerate(content) if j in top])
            index = np.arange(len(texts))
            p = full[index, predicted]
            result[f"comp@{k:.0%}"] = float(np.mean(p - probabilities(without)[index, predicted]))
            result[f"suff@{k:.0%}"] = float(np.mean(p - probabilities(alone)[index, predicted]))
        rows.append(result)
        print(f"  {name}: done ({seconds * 1000:.0f} ms/text)", file=sys.stderr, flush=True)

    columns = ["comp@10%", "comp@20%", "suff@10%", "suff@20%", "ms_per_text"]
    print(f"# {command_line()}")
    print(f"# {len(texts)} texts of {args.data}; run {args.run_dir} on {device}; comprehensiveness: higher is better; sufficiency: lower is better\n")
    print("| method | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for r in rows:
        print(f"| {r['method']} | " + " | ".join(f"{r[c]:.3f}" if c != "ms_per_text" else f"{r[c]:.1f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
