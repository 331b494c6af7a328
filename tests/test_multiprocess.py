"""Training on more than one process: two "machines" on this host under `accelerate launch`, and the rule that a
checkpoint resumes only on the process count that wrote it (issue 27, part 3)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bertctl.errors import RunError
from bertctl.loop import Interrupted
from bertctl.recipe import load_recipe
from bertctl.runs import STATE_FILE, check_resume_processes, checkpoint_processes, checkpoints
from bertctl.training import train

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores: one thread each


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bertctl_train(recipe: Path, run: Path, *extra: str) -> list[str]:
    return ["-m", "bertctl", "train", str(recipe), "train.epochs=1", "--output-dir", str(run), *extra]


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_multiprocess_a_checkpoint_records_the_process_count_that_wrote_it(small_recipe, tmp_path):
    recipe = load_recipe(small_recipe, ["train.checkpoint_every_steps=2"])
    with pytest.raises(Interrupted):
        train(recipe, output_dir=tmp_path / "cut", progress=False, stop_after_steps=4)
    (checkpoint,) = checkpoints(tmp_path / "cut")[-1:]
    state = json.loads((checkpoint / STATE_FILE).read_text())
    assert state["num_processes"] == 1 and checkpoint_processes(checkpoint) == 1
    # a checkpoint from before the count was recorded: accelerate's RNG files, one per process, tell it
    (checkpoint / STATE_FILE).write_text(json.dumps({**state, "num_processes": 0}))
    (checkpoint / "random_states_1.pkl").write_bytes((checkpoint / "random_states_0.pkl").read_bytes())
    assert checkpoint_processes(checkpoint) == 2


def test_multiprocess_resume_on_another_process_count_is_refused_naming_both(small_recipe, tmp_path):
    recipe = load_recipe(small_recipe, ["train.checkpoint_every_steps=2", "train.gradient_accumulation_steps=2"])
    with pytest.raises(Interrupted):
        train(recipe, output_dir=tmp_path / "cut", progress=False, stop_after_steps=2)
    checkpoint = checkpoints(tmp_path / "cut")[-1]
    check_resume_processes(checkpoint, 1, recipe)  # the same count: fine
    with pytest.raises(RunError) as refused:
        check_resume_processes(checkpoint, 2, recipe)
    message = str(refused.value)
    assert "written by 1 process, and this resume runs 2" in message
    assert "16 x 1 process x 2 accumulation = 32 -> 16 x 2 processes x 2 accumulation = 64" in message
    assert "resume with 1 process (bertctl train ... --resume" in refused.value.fix and "--overwrite" in refused.value.fix


@pytest.mark.slow
def test_multiprocess_two_machines_match_two_processes_on_one(small_recipe, tmp_path):
    # two processes as two "machines" (torchrun's static rendezvous on 127.0.0.1, gloo) against two on one machine:
    # the same ranks get the same shards, and gloo sums two gradients in either order to the same float, so the
    # runs agree exactly, not just within a tolerance
    one = tmp_path / "one-machine"
    done = subprocess.run([*LAUNCH, "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(_free_port()), *_bertctl_train(small_recipe, one)],
                          capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    two = tmp_path / "two-machines"
    port = str(_free_port())
    machines = [
        subprocess.Popen([*LAUNCH, "--num_processes", "2", "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                          "--main_process_port", port, *_bertctl_train(small_recipe, two)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for rank in (0, 1)
    ]
    outputs = [machine.communicate(timeout=600) for machine in machines]
    assert [m.returncode for m in machines] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    a, b = _metrics(one), _metrics(two)
    assert a["num_processes"] == b["num_processes"] == 2
    assert b["validation"] == a["validation"] and b["best_step"] == a["best_step"]
    losses = [[json.loads(line).get("loss") for line in (run / "train_log.jsonl").read_text().splitlines()] for run in (one, two)]
    assert losses[0] == losses[1]
    assert outputs[0][0].count("done: best") == 1 and "done: best" not in outputs[1][0]  # only the main process (machine 0, rank 0) reports


@pytest.mark.slow
def test_multiprocess_checkpoints_resume_only_on_the_count_that_wrote_them(small_recipe, tmp_path):
    overrides = ["train.checkpoint_every_steps=2", "train.epochs=5"]
    # written by 1, resumed on 2: refused by every process, exit 2, the checkpoint left as it was
    one = tmp_path / "one"
    recipe = load_recipe(small_recipe, overrides)
    with pytest.raises(Interrupted):
        train(recipe, output_dir=one, progress=False, stop_after_steps=4)
    before = {p.name: p.stat().st_mtime_ns for p in checkpoints(one)}
    refused = subprocess.run([*LAUNCH, "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(_free_port()),
                              "-m", "bertctl", "train", str(small_recipe), *overrides, "--output-dir", str(one), "--resume"],
                             capture_output=True, text=True, timeout=600, env=ENV)
    assert refused.returncode != 0 and "written by 1 process, and this resume runs 2" in refused.stderr, refused.stderr[-3000:]
    # the workers print the error, not a traceback; the launcher's own traceback of a child's exit code stays
    assert not [line for line in refused.stderr.splitlines() if line.lstrip().startswith('File "') and "/bertctl/" in line], refused.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in checkpoints(one)} == before
    assert train(recipe, output_dir=one, resume=True, progress=False).metrics["num_processes"] == 1  # still resumes on 1

    # written by 2 (killed once a checkpoint exists), resumed on 1: refused
    two = tmp_path / "two"
    proc = subprocess.Popen([*LAUNCH, "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(_free_port()),
                             "-m", "bertctl", "train", str(small_recipe), *overrides, "--output-dir", str(two)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not checkpoints(two) and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoints(two) and not (two / "metrics.json").exists()
    assert checkpoint_processes(checkpoints(two)[-1]) == 2
    with pytest.raises(RunError) as excinfo:
        train(recipe, output_dir=two, resume=True, progress=False)
    assert "written by 2 processes, and this resume runs 1" in str(excinfo.value)
    assert "accelerate launch --num_processes 2 -m bertctl train ... --resume" in excinfo.value.fix
