"""`bertctl export` and the ONNX backend: logits as torch's, the checks that refuse, the dir other runtimes load,
and predict/eval on an export dir answering as the torch path does, without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bertctl import inference
from bertctl.cli import app
from bertctl.errors import ModelError
from bertctl.export import export_run
from conftest import AGNEWS_LABELS, REPO, agnews_rows, write_csv

pytest.importorskip("onnxruntime", reason='the [onnx] extra: pip install -e ".[onnx]"')

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_run(root: Path, model_dir: Path, *, labels_from_model: bool = False) -> Path:
    """A run dir as `bertctl train` leaves it (model + recipe.toml with absolute data paths). With
    `labels_from_model`, the validation labels are the fp32 model's own answers: accuracy 1.0, so any label
    int8 changes is a measured drop."""
    import shutil

    run = root / "runs" / "tiny"
    shutil.copytree(model_dir, run)
    dev = agnews_rows("dev", 80)
    train = write_csv(root / "train.csv", agnews_rows("train", 40))
    validation = write_csv(root / "dev.csv", dev)
    labels = ", ".join(f'"{label}"' for label in AGNEWS_LABELS)
    (run / "recipe.toml").write_text(
        f'[model]\nname = "{run}"\nmax_length = 64\n[data]\ntrain = "{train}"\nvalidation = "{validation}"\nlabels = [{labels}]\n'
        '[train]\neval_batch_size = 16\n[eval]\nmetrics = ["accuracy", "f1_macro"]\nsplit = "validation"\n'
    )
    (run / "metrics.json").write_text("{}")
    if labels_from_model:  # after recipe.toml: the model then truncates at its max_length, as eval will
        classifier = inference.load_for_inference(run, device="cpu")
        for row, p in zip(dev, inference.predict_texts(classifier, [r["text"] for r in dev]).predictions):
            row["label"] = p.label
        write_csv(validation, dev)
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, varied_classifier_dir) -> Path:
    return make_run(tmp_path_factory.mktemp("export-run"), varied_classifier_dir)


@pytest.fixture(scope="module")
def exported(run_dir):
    return export_run(run_dir)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [row["text"] for row in agnews_rows("dev", 120)[80:]] + ["", "a", "word " * 200]


@pytest.mark.slow
def test_export_logits_match_torch_with_equal_labels(exported, run_dir, texts):
    logits = exported.checks["logits"]
    assert logits["passed"] and logits["same_labels"] == 1.0 and logits["same_tokens"] and logits["texts"] == 80
    assert 0 <= logits["max_abs_diff"] < 1e-4
    # and on texts the check never saw (the long one truncated), through the one seam both backends share
    torch_model, onnx_model = inference.load_for_inference(run_dir, device="cpu"), inference.load_for_inference(exported.output)
    assert (torch_model.backend, onnx_model.backend) == ("torch", "onnxruntime")
    ours, theirs = inference.encode(onnx_model, texts), inference.encode(torch_model, texts)
    assert ours.columns == theirs.columns and ours.truncated == theirs.truncated > 0
    expected, got = inference.logits(torch_model, theirs.columns, batch_size=7), inference.logits(onnx_model, ours.columns, batch_size=7)
    assert np.ptp(expected) > 0.5 and len(set(expected.argmax(1))) > 1
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_export_dir_layout_and_export_json(exported, run_dir):
    out = exported.output
    assert out == run_dir / "onnx"
    assert {p.name for p in out.iterdir()} == {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "export.json", "README.md", "recipe.toml", "metrics.json"}
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".onnx")]  # no staging dir left behind
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {str(i): label for i, label in enumerate(AGNEWS_LABELS)} and config["label2id"]["Sports"] == 1
    assert config["problem_type"] == "single_label_classification" and config["architectures"] == ["BertForSequenceClassification"]
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    assert tokenizer["padding"] is None and tokenizer["truncation"] is None
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 64
    info = json.loads((out / "export.json").read_text())
    assert info["exporter"] == "torchscript" and info["opset"] == 17 and info["quantize"] is None and info["forced"] is False
    assert {"SkipLayerNormalization", "BiasGelu"} <= set(info["fusions"])
    assert "last layer [CLS] only" in info["graph"]  # exported through the fast path's [CLS]-only last layer
    assert info["labels"] == AGNEWS_LABELS and info["max_length"] == 64 and info["outputs"] == ["logits"]
    assert {"torch", "transformers", "onnx", "onnxruntime", "tokenizers"} <= set(info["versions"])
    assert info["checks"]["logits"]["passed"] and "validation texts" in info["checks"]["logits"]["source"]
    readme = (out / "README.md").read_text()
    assert "bertctl predict --model" in readme and "max abs diff" in readme and "onnx/model.onnx" in readme

    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    batch = {name: np.ones((3, 5), dtype=np.int64) for name in ("input_ids", "attention_mask")} | {"token_type_ids": np.zeros((3, 5), dtype=np.int64)}
    assert session.run(["logits"], batch)[0].shape == (3, 4)  # dynamic batch and sequence axes


def test_export_predict_on_export_dir_gives_the_torch_json(exported, run_dir, texts, tmp_path):
    answers = [json_lines(invoke("predict", "--model", model, "--json", "-k", "3", *texts[:30]).stdout) for model in (run_dir, exported.output)]
    torch_json, onnx_json = answers
    assert len(onnx_json) == 30 and len({p["label"] for p in torch_json}) > 1
    for ours, theirs in zip(onnx_json, torch_json):
        assert ours.keys() == theirs.keys() and ours["text"] == theirs["text"]
        assert [k["label"] for k in ours["top_k"]] == [k["label"] for k in theirs["top_k"]]
        np.testing.assert_allclose([k["score"] for k in ours["top_k"]], [k["score"] for k in theirs["top_k"]], atol=1e-5)
    # --file, with an empty line: the same error entry, in input order
    file = tmp_path / "texts.txt"
    file.write_text("\n".join(texts[-3:-1] + texts[:5]) + "\n")
    lines = [json_lines(invoke("predict", "--model", model, "--file", file, "--json").stdout) for model in (run_dir, exported.output)]
    assert [p["label"] for p in lines[1]] == [p["label"] for p in lines[0]] and lines[1][0]["error"] == lines[0][0]["error"]
    refused = invoke("predict", "--model", exported.output, "--quantize", "int8", "text")
    assert refused.exit_code == 2 and "bertctl export RUN_DIR --quantize int8" in refused.output


def test_export_eval_on_export_dir_gives_the_torch_json(exported, run_dir, tmp_path):
    reports = []
    for model, name in ((run_dir, "torch.json"), (exported.output, "onnx.json")):
        result = invoke("eval", model, "--json", "--no-plot", "--report", tmp_path / name)
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.stdout))
    theirs, ours = reports
    assert ours.keys() == theirs.keys() and ours["data"] == theirs["data"] and ours["data"]["examples"] == 80
    assert ours["confusion_matrix"] == theirs["confusion_matrix"] and ours["labels"] == theirs["labels"]
    assert ours["metrics"].keys() == theirs["metrics"].keys() == {"accuracy", "f1_macro"}
    for name, value in theirs["metrics"].items():
        assert ours["metrics"][name] == pytest.approx(value, abs=1e-9)
    data = write_csv(tmp_path / "labelled.csv", [{"text": r["text"], "topic": r["label"]} for r in agnews_rows("dev", 120)[80:]])
    scored = [json.loads(invoke("eval", model, "--data", data, "--label", "topic", "--json", "--no-plot", "--report", tmp_path / f"d{i}.json").stdout) for i, model in enumerate((run_dir, exported.output))]
    assert scored[1]["confusion_matrix"] == scored[0]["confusion_matrix"] and scored[1]["data"]["truncated"] == scored[0]["data"]["truncated"]


@pytest.mark.slow  # three exports and four evaluations
def test_export_int8_refused_on_a_metric_drop_unless_forced(tmp_path, varied_classifier_dir):
    run = make_run(tmp_path, varied_classifier_dir, labels_from_model=True)
    target = tmp_path / "int8"
    refused = invoke("export", run, "--quantize", "int8", "--output", target)
    assert refused.exit_code == 1, refused.output
    assert "refused" in refused.output and "drops accuracy" in refused.output and "--force" in refused.output
    assert not target.exists() and not list(tmp_path.glob(".int8*"))  # nothing kept, no staging dir left
    kept = invoke("export", run, "--quantize", "int8", "--output", target, "--force", "--json")
    assert kept.exit_code == 0, kept.output
    info = json.loads((target / "export.json").read_text())
    metric = info["checks"]["metric"]
    assert info["quantize"] == "int8" and info["forced"] is True and not metric["passed"]
    assert metric["metric"] == "accuracy" and metric["torch"] == 1.0 and metric["drop_points"] > 0.5
    assert metric["drop_points"] == pytest.approx(100 * (1.0 - metric["onnx"]))
    assert json.loads(kept.stdout)["refused"] and "Kept with --force" in (target / "README.md").read_text()
    assert f"drop {metric['drop_points']:.2f} points" in (target / "README.md").read_text()
    # the same export within a looser limit is kept without --force, and predicts on onnxruntime
    loose = export_run(run, quantize="int8", output=tmp_path / "loose", max_drop=100.0)
    assert loose.checks["metric"]["passed"] and not loose.refused and loose.info["forced"] is False
    assert inference.load_for_inference(loose.output).quantized == "int8"


def test_export_of_a_model_dir_without_recipe_checks_on_random_texts(tmp_path, varied_classifier_dir):
    import shutil

    model = shutil.copytree(varied_classifier_dir, tmp_path / "model")
    result = export_run(model, output=tmp_path / "fp32")
    assert result.checks["logits"]["passed"] and "random word sequences" in result.checks["logits"]["source"]
    assert not (result.output / "recipe.toml").exists()
    assert inference.load_for_inference(result.output).max_length == inference.load_for_inference(model, device="cpu").max_length == 128
    refused = invoke("export", model, "--quantize", "int8", "--output", tmp_path / "int8")
    assert refused.exit_code == 1 and "no recipe.toml" in refused.output and not (tmp_path / "int8").exists()


def test_export_metric_drop_of_exactly_the_limit_is_allowed(run_dir, monkeypatch):
    import types

    import bertctl.export
    from bertctl.export import _metric_check

    # the scores of a real run: 899 and 894 of 1,000 right, whose float difference is a hair over 0.5 points
    scores = {run_dir: 0.899, run_dir / "onnx": 0.894}
    monkeypatch.setattr(bertctl.export, "evaluate_run", lambda path, split=None: types.SimpleNamespace(
        metrics=types.SimpleNamespace(overall={"accuracy": scores[Path(path)]}), split=split, source="dev.csv", examples=1000))
    at_limit = _metric_check(run_dir, run_dir / "onnx", 0.5)
    assert at_limit["passed"] and at_limit["drop_points"] == 0.5 and (at_limit["torch"], at_limit["onnx"]) == (0.899, 0.894)
    assert not _metric_check(run_dir, run_dir / "onnx", 0.49)["passed"]


def test_export_bad_input_exits_2_and_never_overwrites(exported, run_dir, tmp_path):
    cases = [
        ((tmp_path / "missing",), "does not exist"),
        ((REPO / "recipes",), "no trained model"),
        ((exported.output,), "already an ONNX export"),
        ((run_dir, "--quantize", "int4"), "--quantize 'int4' is not supported"),
        ((run_dir, "--opset", "9"), "--opset 9 is out of range"),
        ((run_dir, "--exporter", "tflite"), "not an exporter"),
        ((run_dir, "--output", run_dir), "would replace the run dir"),
        ((run_dir, "--output", run_dir / "recipe.toml" / "onnx"), "is a file, not a directory"),
        ((run_dir, "--output", "/proc/bertctl-export"), "cannot write the export"),
        ((run_dir,), "already holds an export"),  # the fixture's export
    ]
    for args, message in cases:
        result = invoke("export", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "fix:" in result.output, (args, result.output)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    result = invoke("export", run_dir, "--output", busy)
    assert result.exit_code == 2 and "--overwrite" in result.output and (busy / "notes.txt").read_text() == "mine"
    replaced = invoke("export", run_dir, "--output", busy, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert not (busy / "notes.txt").exists() and (busy / "model.onnx").is_file()


def test_export_without_the_onnx_extra_names_the_install_command(exported, run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    for call in (lambda: inference.load_for_inference(exported.output), lambda: export_run(run_dir, output=run_dir.parent / "x", overwrite=True)):
        with pytest.raises(ModelError, match=r'pip install -e "\.\[onnx\]"'):
            call()
    assert not (run_dir.parent / "x").exists()


def test_runtime_tokenizer_matches_transformers_on_pairs_and_truncation(exported, run_dir):
    from bertctl.modeling import load_tokenizer
    from bertctl.inference.onnx import ExportTokenizer

    theirs, ours = load_tokenizer(str(run_dir)), ExportTokenizer(exported.output)
    rows = agnews_rows("dev", 20)
    texts, pairs = [r["text"] for r in rows], [r["text"][::-1] for r in rows]
    for args in ((texts,), (texts, pairs)):
        for kwargs in ({"truncation": True, "max_length": 24}, {"truncation": False, "return_attention_mask": False, "return_token_type_ids": False}):
            expected, got = theirs(*args, **kwargs), ours(*args, **kwargs)
            assert {k: got[k] for k in got} == {k: expected[k] for k in expected}, (len(args), kwargs)
            assert [len(e.overflowing) for e in got.encodings] == [len(e.overflowing) for e in expected.encodings]
    assert (ours.pad_token_id, ours.unk_token_id, ours.model_input_names) == (theirs.pad_token_id, theirs.unk_token_id, theirs.model_input_names)


BLOCKER = '''
import os, traceback
with open(os.environ["BLOCKED_LOG"], "a") as log:
    log.write(f"import {__name__} attempted:\\n" + "".join(traceback.format_stack()) + "\\n")
raise ImportError(f"{__name__} is blocked by tests/test_export.py")
'''

RUNNER = '''
import atexit, json, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers"})), file=sys.stderr))
sys.argv = ["bertctl", *sys.argv[1:]]
from bertctl.cli import main
main()
'''


@pytest.mark.slow
def test_export_predict_and_eval_run_with_torch_and_transformers_unimportable(exported, run_dir, texts, tmp_path):
    blocked = tmp_path / "blocked"
    for name in ("torch", "transformers"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(textwrap.dedent(BLOCKER))
    log = tmp_path / "blocked.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), str(REPO)]), "BLOCKED_LOG": str(log)}

    def run(*args):
        proc = subprocess.run([sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "MODULES []" in proc.stderr, proc.stderr[-3000:]
        return proc.stdout

    predicted = json_lines(run("predict", "--model", exported.output, "--json", *texts[:10]))
    evaluated = json.loads(run("eval", exported.output, "--json", "--report", tmp_path / "eval.json"))
    assert not log.exists(), log.read_text()[:3000]  # not even an attempt (a caught ImportError would hide one)
    torch_model = inference.load_for_inference(run_dir, device="cpu")
    assert [p["label"] for p in predicted] == [p.label for p in inference.predict_texts(torch_model, texts[:10]).predictions]
    assert evaluated["data"]["examples"] == 80 and (tmp_path / "eval_confusion_matrix.png").is_file()
