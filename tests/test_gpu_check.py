"""benchmarks/gpu_check.sh --dry-run: the GPU check's steps on CPU with a tiny random BERT, so the script that gets
one short turn on a GPU cannot rot between turns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROWS = (  # the first column of every row the table must have (benchmarks/gpu_check.py ROWS)
    "train: AG News",
    "predict: 24 dev texts, torch run dir",
    "predict: ONNX export",
    "serve: 32 clients",
    "serve: 128 clients",
    "accelerate launch: 2 processes",
)


@pytest.mark.slow
def test_gpu_check_dry_run_prints_every_row(tmp_path):
    table = tmp_path / "gpu_check.md"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--output", str(table)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    written = table.read_text(encoding="utf-8")
    assert written.strip() in proc.stdout  # the table printed is the table written
    lines = [line for line in written.splitlines() if line.startswith("| ")]
    assert lines[0].split("|")[1].strip() == "check"
    body = lines[1:]
    assert len(body) == len(ROWS), written
    for line, start in zip(body, ROWS):
        first = line.split("|")[1].strip()
        assert first.startswith(start), (first, start)
        assert "FAILED" not in line and "not run" not in line, line
    # every measured row has both numbers and a ratio; the launch row says why it was skipped on CPU
    for line in body[:-1]:
        stock, ours, ratio = (cell.strip() for cell in line.split("|")[3:6])
        assert stock != "-" and ours != "-" and ratio.endswith("x"), line
    assert "skipped: no GPUs visible" in body[-1]
    assert "DRY RUN" in written
