"""How many CPU threads torch should use: the CPUs this process may run on, and how many of them are free.

    usable_cpus()                               # the affinity mask, lowered by a cgroup CPU quota
    choose_threads(usable=2, busy=2.1, requested=0)   # THE rule, a pure function: ThreadChoice(1, ...)
    configure_training_threads(recipe.train.num_threads)  # the rule applied to torch: training, predict, serve, eval

Threads beyond the CPUs that are free do not add speed, they queue: on the 2-CPU build machine with other work on
it, training at torch's default threads ran at 4.9-7.2 samples/s and at one thread at 13.1-15.7 (issue 28).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
PROC_STAT = Path("/proc/stat")
SAMPLE_S = 0.3  # long enough to see a busy CPU, short beside any training


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX, affinity: Callable[[], set[int]] | None = None) -> int:
    """CPUs this process may run on: the affinity mask, lowered by a cgroup v2 CPU quota (containers).

    `cpu_max` and `affinity` are the places this is read from, there to be pointed elsewhere by a test."""
    try:
        count = len((affinity or (lambda: os.sched_getaffinity(0)))())
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = Path(cpu_max).read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def _cpu_times(stat: Path) -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat's first line; None where there is none."""
    try:
        fields = [int(v) for v in Path(stat).read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return total - idle, total


def busy_cpus(stat: Path = PROC_STAT, sample_s: float = SAMPLE_S) -> float | None:
    """How many CPUs of the machine other work keeps busy now: the smaller of the 1-minute load average and a short
    /proc/stat sample. The load average alone lags: right after a sweep's previous trial (this tool's own work) it
    still reads ~2 on an idle machine; the sample alone can land in a pause of bursty work."""
    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    first = _cpu_times(stat)
    if first is None:
        return load
    time.sleep(sample_s)
    second = _cpu_times(stat)
    if second is None or second[1] <= first[1]:
        return load
    sampled = (second[0] - first[0]) / (second[1] - first[1]) * (os.cpu_count() or 1)
    return sampled if load is None else min(load, sampled)


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str  # why this many, for the start message
    warning: str | None = None  # set when the threads asked for do not fit in the free CPUs, with the fix


def choose_threads(usable: int, busy: float | None, requested: int | None, *, host_cpus: int | None = None, setting: str = "train.num_threads") -> ThreadChoice:
    """THE rule: `requested` threads when given (> 0), else one per CPU left free by the `busy` ones, at least one
    and at most `usable`. `host_cpus` (default `usable`): the CPUs `busy` counts over; the load of a big host is
    not taken from a container's quota. A request that does not fit in the free CPUs is kept, with a warning
    that names `setting`, the fix."""
    def set_to(n: int | str) -> str:
        return f"{setting} {n}" if setting.startswith("--") else f"{setting} = {n}"

    usable = max(1, usable)
    host = max(usable, host_cpus or usable)
    free = None if busy is None else max(1, min(usable, math.floor(host - busy + 0.5)))
    shown = "" if busy is None else f"{busy:.1f} of {host} CPUs busy"
    if requested:
        if free is not None and requested > free:
            return ThreadChoice(
                requested, set_to(requested), f"{set_to(requested)}, but {shown}: {free} free, so the threads wait on each other (fix: {set_to(free)})"
            )
        return ThreadChoice(requested, set_to(requested))
    if free is None:
        return ThreadChoice(usable, f"{usable} usable CPUs")
    if free < usable:
        return ThreadChoice(free, f"{shown}, {free} free ({set_to('N')} to choose)")
    return ThreadChoice(free, f"{free} free CPUs")


def keep_run_threads(threads: int) -> ThreadChoice:
    """A resumed run's threads: those it started with, whatever the load now (float sums depend on the count)."""
    import torch

    torch.set_num_threads(threads)
    return ThreadChoice(threads, "the thread count this run started with (a resume keeps it, so it stays exact)")


def configure_training_threads(requested: int | None, *, setting: str = "train.num_threads", sample_s: float = SAMPLE_S) -> ThreadChoice:
    """Apply choose_threads to torch, from this machine's usable and busy CPUs (training, and predict and serve
    with setting="--threads" and a shorter sample: a one-text predict should not wait 0.3 s to start)."""
    import torch

    if not requested and os.environ.get("OMP_NUM_THREADS"):
        return ThreadChoice(torch.get_num_threads(), "OMP_NUM_THREADS")  # the environment's choice stands
    choice = choose_threads(usable_cpus(), busy_cpus(sample_s=sample_s), requested, host_cpus=os.cpu_count(), setting=setting)
    torch.set_num_threads(choice.threads)
    try:
        # one forward pass at a time: inter-op parallelism only adds idle threads
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set, or parallel work already ran in this process
    return choice
