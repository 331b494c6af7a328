"""Where a bertctl training step spends its time, and what each speed-up of the step brings (same batches).

    python benchmarks/profile_train_step.py                 # 1 thread, thread CPU time: steady on a busy machine
    python benchmarks/profile_train_step.py --threads 2     # wall time with 2 threads: needs a quiet machine
    python benchmarks/profile_train_step.py --profile       # plus the torch.profiler table by operator class

Variants run on the same AG News batches (MiniLM-L6, batch 32, bertctl's length-grouped order), interleaved
round by round; the best round of each is kept. A step = forward, backward, clip_grad_norm_(1.0), AdamW step,
zero_grad: what bertctl's loop does per batch, without its logging.

  stock            transformers' model as loaded (sdpa attention), AdamW(foreach=True): bertctl before issue 5
  fused AdamW      + AdamW(fused=True) (the HF Trainer's default optimizer in transformers 5)
  + one-GEMM QKV   + bertctl.fastpath attention (Q, K, V in one matmul, additive padding bias)
  + [CLS]-only     + last layer computes [CLS] only
  + cheap dropout  + dropout masks from 16-bit random slices = bertctl train now (use_fast_path())
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import AGNEWS_RECIPE, command_line, load_average, machine_summary, table  # noqa: E402

VARIANTS = {
    "stock": {"fused": False, "fast": None},
    "fused AdamW": {"fused": True, "fast": None},
    "+ one-GEMM QKV": {"fused": True, "fast": {"cls_only": False, "cheap_dropout": False}},
    "+ [CLS]-only last layer": {"fused": True, "fast": {"cls_only": True, "cheap_dropout": False}},
    "+ cheap dropout (bertctl)": {"fused": True, "fast": {"cls_only": True, "cheap_dropout": True}},
}

# operator name -> class, for the profile table
OP_CLASSES = [
    ("matmul (mm/addmm/bmm/linear)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")),
    ("dropout RNG", ("aten::bernoulli_", "aten::random_", "aten::uniform_")),
    ("copies / layout", ("aten::copy_", "aten::contiguous", "aten::clone", "aten::cat", "aten::_to_copy", "aten::fill_", "aten::zero_", "aten::empty", "aten::zeros")),
    ("layer norm", ("aten::native_layer_norm", "aten::native_layer_norm_backward")),
    ("GELU", ("aten::gelu", "aten::gelu_backward")),
    ("softmax", ("aten::_softmax", "aten::_softmax_backward_data", "aten::_log_softmax", "aten::_log_softmax_backward_data")),
    ("embedding", ("aten::embedding", "aten::index_select", "aten::embedding_dense_backward", "aten::index_add_", "aten::embedding_backward")),
    ("elementwise (mul/add/div/where/...)", ("aten::mul", "aten::add", "aten::div", "aten::where", "aten::sum", "aten::masked_fill", "aten::ge", "aten::all", "aten::isneginf", "aten::tanh", "aten::sub", "aten::threshold", "aten::bitwise", "aten::logical")),
]


PHASES = ("forward", "backward", "clip_grad_norm", "optimizer step + zero_grad")


def classify(events) -> dict[str, float]:
    """Self time (ms) of every operator, by '<phase>: <operator class>' for forward/backward, by phase otherwise."""
    out: dict[str, float] = defaultdict(float)
    for event in events:
        if event.name in PHASES:
            continue
        phase, parent = None, event.cpu_parent
        while parent is not None:
            if parent.name in PHASES:
                phase = parent.name
                break
            parent = parent.cpu_parent
        if phase is None:
            phase = "outside the step"
        key = f"{phase}: {op_class(event.name)}" if phase in PHASES[:2] else phase
        out[key] += event.self_cpu_time_total / 1000
    return out


def op_class(name: str) -> str:
    for label, prefixes in OP_CLASSES:
        if any(name == p or name.startswith(p) for p in prefixes):
            return label
    return "other (autograd, views, python)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also profile stock and bertctl steps by operator class")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from bertctl.data import tokenize_data
    from bertctl.fastpath import use_fast_path
    from bertctl.modeling import load_classifier, load_tokenizer
    from bertctl.recipe import load_recipe
    from bertctl.training import build_dataloaders

    recipe = load_recipe(AGNEWS_RECIPE)
    tokenizer = load_tokenizer(recipe.model.name, base_dir=recipe.base_dir_path)
    data = tokenize_data(recipe, tokenizer)
    loader, _, _ = build_dataloaders(data.splits, recipe, tokenizer.pad_token_id)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == args.steps + 1:
            break

    def build(spec):
        torch.manual_seed(0)
        model = load_classifier(recipe.model.name, labels=data.labels, base_dir=recipe.base_dir_path)
        model.train()
        if spec["fast"] is not None:
            use_fast_path(model, **spec["fast"])
        opt = {"fused": True} if spec["fused"] else {"foreach": True}
        return model, torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, **opt)

    from torch.profiler import record_function

    def step(model, optimizer, batch):
        with record_function(PHASES[0]):
            outputs = model(**batch)
        with record_function(PHASES[1]):
            outputs.loss.backward()
        with record_function(PHASES[2]):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        with record_function(PHASES[3]):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    clock = time.thread_time if args.threads == 1 else time.perf_counter
    clock_name = "thread CPU time" if args.threads == 1 else "wall time"
    contenders = {name: build(spec) for name, spec in VARIANTS.items()}
    for model, optimizer in contenders.values():
        step(model, optimizer, batches[0])  # warm-up
    per_step: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for name, (model, optimizer) in contenders.items():
            start = clock()
            for batch in batches[1:]:
                step(model, optimizer, batch)
            per_step[name].append((clock() - start) / args.steps)

    tokens = sum(int(b["input_ids"].numel()) for b in batches[1:]) / args.steps
    print(f"# {command_line()}")
    print(f"# {machine_summary()['cpu']}, {args.threads} thread(s), {clock_name}, best of {args.rounds} rounds x {args.steps} steps; "
          f"batch 32, {tokens:.0f} padded tokens/step; load average {load_average()}")
    stock = min(per_step["stock"])
    fused = min(per_step["fused AdamW"])
    rows = [[name, 1000 * min(v), f"{stock / min(v):.2f}x", f"{fused / min(v):.2f}x", " ".join(f"{1000 * x:.0f}" for x in v)] for name, v in per_step.items()]
    print()
    print(table(["variant", "ms/step", "vs stock", "vs fused AdamW", "all rounds ms"], rows))
    result = {"benchmark": "profile_train_step", "command": command_line(), "threads": args.threads, "clock": clock_name,
              "ms_per_step": {k: [1000 * x for x in v] for k, v in per_step.items()}}

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        result["profile"] = {}
        for name in ("stock", "+ cheap dropout (bertctl)"):
            model, optimizer = contenders[name]
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for batch in batches[1:]:
                    step(model, optimizer, batch)
            by_class = classify(prof.events())
            total = sum(by_class.values())
            result["profile"][name] = {k: v / args.steps for k, v in by_class.items()}
            rows = [[k, v / args.steps, f"{100 * v / total:.1f}%"] for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])]
            print(f"\nprofile, {name}: ms per step (operator self time, profiler clock; total {total / args.steps:.0f} ms)")
            print(table(["where", "ms/step", "share"], rows))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
