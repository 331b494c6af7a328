"""bertctl.cpus: the CPUs a process may use, how busy they are, and THE rule that picks torch's threads from them."""

from __future__ import annotations

import os

import pytest

from bertctl import cpus
from bertctl.cpus import ThreadChoice, busy_cpus, choose_threads, usable_cpus


def test_cpus_usable_follows_the_affinity_mask_and_the_cgroup_quota(tmp_path):
    missing = tmp_path / "no-cgroup"
    assert usable_cpus(missing, affinity=lambda: {0, 1, 2, 3}) == 4
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs of quota: 2 threads can use it
    assert usable_cpus(quota, affinity=lambda: {0, 1, 2, 3}) == 2
    quota.write_text("50000 100000\n")
    assert usable_cpus(quota, affinity=lambda: {0, 1, 2, 3}) == 1
    quota.write_text("max 100000\n")
    assert usable_cpus(quota, affinity=lambda: {0, 1, 2, 3, 4, 5}) == 6
    quota.write_text("800000 100000\n")  # a quota above the mask: the mask wins
    assert usable_cpus(quota, affinity=lambda: {3}) == 1
    quota.write_text("garbage")
    assert usable_cpus(quota, affinity=lambda: {0, 1}) == 2


def test_cpus_usable_without_an_affinity_call_counts_the_cpus(tmp_path):
    def unsupported():
        raise AttributeError("sched_getaffinity")  # macOS has none

    assert usable_cpus(tmp_path / "none", affinity=unsupported) == (os.cpu_count() or 1)


def test_cpus_usable_is_this_process_affinity():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity masks on this platform")
    assert usable_cpus(cpus.CGROUP_CPU_MAX) <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("usable", "busy", "requested", "threads", "warns"),
    [
        (2, 0.1, 0, 2, False),  # quiet: every CPU
        (2, 0.9, 0, 1, False),  # one CPU busy elsewhere: the other one
        (2, 2.1, 0, 1, False),  # the case: busier than the cores -> one thread, never zero
        (2, 7.0, 0, 1, False),
        (8, 3.0, 0, 5, False),
        (4, None, 0, 4, False),  # no load figure (no getloadavg): the usable CPUs
        (2, 2.1, 2, 2, True),  # asked for 2 on a full machine: kept, with a warning and the fix
        (2, 0.2, 2, 2, False),
        (2, 2.1, 1, 1, False),  # the fix itself warns no more
        (4, None, 3, 3, False),
    ],
)
def test_cpus_rule_picks_threads_from_the_free_cpus(usable, busy, requested, threads, warns):
    choice = choose_threads(usable, busy, requested)
    assert choice.threads == threads
    assert (choice.warning is not None) == warns
    if warns:
        assert "fix: train.num_threads = 1" in choice.warning and f"{busy:.1f} of {usable} CPUs busy" in choice.warning


def test_cpus_rule_reads_a_big_hosts_load_against_the_host_not_the_quota():
    # a 2-CPU quota on a 64-CPU host with 30 busy: 34 free on the host, the quota's 2 are ours
    assert choose_threads(2, 30.0, 0, host_cpus=64).threads == 2
    assert choose_threads(2, 63.5, 0, host_cpus=64).threads == 1
    assert "--threads 1" in choose_threads(2, 2.5, 2, setting="--threads").warning


def test_cpus_busy_takes_the_smaller_of_the_load_average_and_a_sample(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    samples = iter(["cpu  100 0 100 800 0 0 0 0 0 0\n", "cpu  150 0 150 900 0 0 0 0 0 0\n"])  # 100 busy of 200 jiffies

    def sleep(_seconds):
        stat.write_text(next(samples))

    sleep(0)
    monkeypatch.setattr(cpus.time, "sleep", sleep)
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(cpus.os, "getloadavg", lambda: (3.5, 3.0, 2.0))
    assert busy_cpus(stat) == pytest.approx(2.0)  # half of 4 CPUs busy now; the lagging load says 3.5
    samples = iter(["cpu  100 0 100 800 0 0 0 0 0 0\n", "cpu  190 0 190 820 0 0 0 0 0 0\n"])
    sleep(0)
    monkeypatch.setattr(cpus.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    assert busy_cpus(stat) == pytest.approx(1.0)  # a burst in the sample: the load average is steadier
    assert busy_cpus(tmp_path / "no-proc-stat") == pytest.approx(1.0)


def test_cpus_training_applies_the_rule(monkeypatch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    monkeypatch.setattr(cpus, "busy_cpus", lambda sample_s: 2.4)
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    try:
        assert cpus.configure_training_threads(0) == ThreadChoice(1, "2.4 of 2 CPUs busy, 1 free (train.num_threads = N to choose)")
        assert torch.get_num_threads() == 1
        choice = cpus.configure_training_threads(2)
        assert choice.threads == 2 and torch.get_num_threads() == 2 and "fix: train.num_threads = 1" in choice.warning
    finally:
        torch.set_num_threads(before)
