"""Long documents: model.truncation = head / tail / head+tail, and --chunks, on a long-text set built from AG News.

    python benchmarks/long_texts.py                 # 3 trainings (one per strategy) + 4 ways of reading dev
    python benchmarks/long_texts.py --quick         # smoke run: 200 / 100 documents, 1 epoch

No long-document set ships with this project, so one is built (seeded, the same every run): each AG News article
becomes a document of about `--words` words. The article sits at the start of half the documents (chosen at
random) and at the end of the other half; the rest is filler, Reddit comments from the bundled GoEmotions sample,
which say nothing about the four news topics. So a document's topic is in its first or its last ~50 tokens, and
the ~300 tokens between are noise, as in a review whose verdict is in its first or last paragraph.

Each strategy trains `recipes/agnews.toml` (MiniLM-L6, max_length 128) on the long train documents, in its own
process, and is scored on the long dev documents through bertctl's predict code: accuracy overall, and on the
documents whose article is at the start / at the end. The head-trained model is also read with --chunks
(windows of 128 tokens, stride 32, mean-pooled logits). Train and dev documents come from the disjoint AG News
train and dev splits.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import AGNEWS, AGNEWS_RECIPE, REPO, command_line, emit_result, load_average, machine_summary, run_worker, table  # noqa: E402

FILLER = REPO / "recipes" / "data" / "goemotions" / "train.tsv"
STRATEGIES = ["head", "tail", "head+tail"]


def build_documents(source: Path, out: Path, n: int | None, words: int, seed: int) -> dict[str, int]:
    """Write `out` (text,label,position): each article at the start or end of `words` words of filler."""
    rng = random.Random(seed)
    with open(source, newline="", encoding="utf-8") as fh:
        articles = list(csv.DictReader(fh))
    if n is not None:
        articles = rng.sample(articles, n)
    with open(FILLER, newline="", encoding="utf-8") as fh:
        comments = [row["text"] for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    counts = {"start": 0, "end": 0}
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label", "position"])
        for article in articles:
            filler: list[str] = []
            while sum(len(c.split()) for c in filler) < words - len(article["text"].split()):
                filler.append(rng.choice(comments))
            position = rng.choice(["start", "end"])
            parts = [article["text"], *filler] if position == "start" else [*filler, article["text"]]
            writer.writerow([" ".join(parts), article["label"], position])
            counts[position] += 1
    return counts


def score(run_dir: str, dev: Path, chunks: bool) -> dict:
    from bertctl.inference import load_for_inference, predict_texts, run_as_windows

    with open(dev, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    classifier = load_for_inference(run_dir)
    if chunks:
        run_as_windows(classifier)
    start = time.perf_counter()
    predicted = predict_texts(classifier, [r["text"] for r in rows], batch_size=64).predictions
    seconds = time.perf_counter() - start
    right = [p.label == r["label"] for p, r in zip(predicted, rows)]
    by_position = {pos: sum(ok for ok, r in zip(right, rows) if r["position"] == pos) / max(1, sum(r["position"] == pos for r in rows)) for pos in ("start", "end")}
    return {"accuracy": sum(right) / len(rows), "start": by_position["start"], "end": by_position["end"], "predict_s": seconds}


def worker(strategy: str, train_csv: str, dev_csv: str, epochs: int) -> dict:
    from bertctl.recipe import load_recipe
    from bertctl.training import train

    recipe = load_recipe(AGNEWS_RECIPE, [f"model.truncation={strategy}", f"data.train={train_csv}", f"data.validation={dev_csv}", "~data.validation_fraction", "~data.test", f"train.epochs={epochs}"])
    run_dir = tempfile.mkdtemp(prefix=f"bench-long-{strategy.replace('+', '-')}-")
    try:
        result = train(recipe, output_dir=run_dir, overwrite=True, progress=False)
        out = {"strategy": strategy, "train_s": result.metrics["wall_time_s"], "plain": score(run_dir, Path(dev_csv), chunks=False)}
        if strategy == "head":
            out["chunks"] = score(run_dir, Path(dev_csv), chunks=True)
        return out
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=250, help="words per document (default 250: ~400 WordPieces)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=None, help="train documents (default: all 4,000)")
    parser.add_argument("--quick", action="store_true", help="200 train / 100 dev documents, 1 epoch: a smoke run")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        strategy, train_csv, dev_csv, epochs = args.worker
        emit_result(worker(strategy, train_csv, dev_csv, int(epochs)))
        return
    print(f"# {command_line()}\n# {json.dumps(machine_summary())}  load before: {load_average()}")
    work = Path(tempfile.mkdtemp(prefix="bench-long-data-"))
    n_train, n_dev, epochs = (200, 100, 1) if args.quick else (args.train, None, args.epochs)
    train_counts = build_documents(AGNEWS / "train.csv", work / "train.csv", n_train, args.words, seed=1)
    dev_counts = build_documents(AGNEWS / "dev.csv", work / "dev.csv", n_dev, args.words, seed=2)
    from bertctl.modeling import load_tokenizer

    tokenizer = load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")
    with open(work / "dev.csv", newline="", encoding="utf-8") as fh:
        lengths = sorted(len(tokenizer(r["text"])["input_ids"]) for r in csv.DictReader(fh))
    print(f"# documents: train {sum(train_counts.values())} ({train_counts}), dev {sum(dev_counts.values())} ({dev_counts}); "
          f"dev WordPieces: median {lengths[len(lengths) // 2]}, min {lengths[0]}, max {lengths[-1]} (max_length 128)")
    rows = []
    results = []
    for strategy in STRATEGIES:
        result = run_worker(Path(__file__), ["--worker", strategy, str(work / "train.csv"), str(work / "dev.csv"), str(epochs)], timeout=7200)
        results.append(result)
        for way, scored in (("", result["plain"]), (" + predict --chunks", result.get("chunks"))):
            if scored is None:
                continue
            rows.append([f"truncation = {strategy}{way}", scored["accuracy"], scored["start"], scored["end"], result["train_s"], scored["predict_s"]])
    print(table(["trained and read as", "dev accuracy", "article at start", "article at end", "train s", f"predict s ({sum(dev_counts.values())} docs)"], rows))
    print("BENCH_JSON " + json.dumps(results))
    print(f"# load after: {load_average()}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
