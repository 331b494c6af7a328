"""The torch-free install (issue 24, part 6): a fresh venv with `pip install "./runtime[serve]"` (the bertctl-runtime
distribution: the same package, without torch or transformers) runs predict --file on a CSV, eval and serve on an
export dir. Slow: it builds the venv from scratch (pip fetches wheels from PyPI, or its cache)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, agnews_rows, write_csv

pytest.importorskip("onnxruntime", reason='the export is made with the full install: pip install -e ".[onnx]"')


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


@pytest.mark.slow
def test_serve_runtime_venv_without_torch_predicts_evaluates_and_serves(tmp_path, varied_classifier_dir):
    from bertctl import inference
    from bertctl.export import export_run
    from test_export import make_run

    exported = export_run(make_run(tmp_path / "full", varied_classifier_dir)).output  # with the full install

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # a copy of the repo's runtime/ (its link to the package resolved): pip builds in the source dir, and this test
    # must not leave build/ or *.egg-info in the checkout
    source = tmp_path / "runtime-src"
    shutil.copytree(REPO / "runtime", source, symlinks=False, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # only what the venv holds
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", f"{source}[serve]"], capture_output=True, text=True, env=env, timeout=1500)
    assert installed.returncode == 0, installed.stderr[-3000:]

    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print([m for m in ('torch', 'transformers', 'accelerate') if u.find_spec(m)])"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr  # really torch-free, not merely unused
    bertctl = [str(python), "-m", "bertctl"]

    def run(*args):
        proc = subprocess.run([*bertctl, *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        return proc.stdout

    rows = agnews_rows("dev", 90)[80:]
    table = write_csv(tmp_path / "news.csv", rows)
    predicted = [json.loads(line) for line in run("predict", "--model", exported, "--file", table, "--json").splitlines() if line.strip()]
    expected = inference.predict_texts(inference.load_for_inference(exported), [r["text"] for r in rows]).predictions
    assert [p["label"] for p in predicted] == [p.label for p in expected] and len(predicted) == 10
    evaluated = json.loads(run("eval", exported, "--json", "--report", tmp_path / "eval.json"))
    assert evaluated["data"]["examples"] == 80 and 0 <= evaluated["metrics"]["accuracy"] <= 1
    refused = subprocess.run([*bertctl, "train", str(REPO / "recipes" / "agnews.toml")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert refused.returncode == 2 and "which is not installed" in refused.stderr and "pip install -e ." in refused.stderr, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr

    server = subprocess.Popen([*bertctl, "serve", str(exported), "--port", "0"], stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        lines = []
        for line in server.stderr:
            lines.append(line)
            if line.startswith("listening on http://"):
                break
        else:
            raise AssertionError("".join(lines))
        threading.Thread(target=lambda: lines.extend(server.stderr), daemon=True).start()
        url = line.split()[2]
        request = urllib.request.Request(f"{url}/predict", data=json.dumps({"texts": [rows[0]["text"]]}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        with urllib.request.urlopen(f"{url}/docs", timeout=60) as docs:
            assert b"/docs-assets/swagger-ui-bundle.js" in docs.read()
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0, "".join(lines)
    finally:
        if server.poll() is None:
            server.kill()
    assert answer["predictions"][0]["label"] == expected[0].label
    assert "onnxruntime" in "".join(lines) and "Traceback" not in "".join(lines)

    runtime_mb, full_mb = size_mb(site_packages(venv)), size_mb(Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages")
    print(f"\ninstall size: bertctl-runtime[serve] {runtime_mb:.0f} MB, this full install {full_mb:.0f} MB", file=sys.stderr)
    assert runtime_mb < full_mb / 2


def test_serve_runtime_a_command_needing_torch_names_the_full_install(monkeypatch, small_recipe):
    """In the torch-free install, `train` (or predict on a torch run dir) says what to install, not a traceback."""
    from typer.testing import CliRunner

    from bertctl.cli import app

    monkeypatch.setitem(sys.modules, "accelerate", None)  # `import accelerate` now fails as it does without the package
    monkeypatch.setitem(sys.modules, "accelerate.utils", None)
    result = CliRunner().invoke(app, ["train", str(small_recipe)])
    assert result.exit_code == 2, result.output
    assert "this needs accelerate, which is not installed" in result.output and "pip install -e ." in result.output
    assert "Traceback" not in result.output
