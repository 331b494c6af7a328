"""`bertctl distill`: a student built from a teacher's layers (or another BERT with its tokenizer), trained by the
loop of train on the teacher's outputs and the labels, for every problem type and for pairs; a run dir like any
other; exact resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bertctl.cli import app
from bertctl.distillation import copy_layers, distill, student_layers, teacher_outputs, unfold_head
from bertctl.errors import BertctlError
from bertctl.problems import problem_type
from bertctl.recipe import load_recipe
from bertctl.runs import checkpoints
from bertctl.training import train
from conftest import AGNEWS_LABELS, agnews_rows, write_csv

runner = CliRunner()


def _tiny_bert(out: Path, tokenizer_dir: Path, layers: int) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def four_layer_bert(tmp_path_factory, bundled_tokenizer_dir) -> Path:
    return _tiny_bert(tmp_path_factory.mktemp("four-layer-bert"), bundled_tokenizer_dir, 4)


@pytest.fixture(scope="module")
def teacher_setup(tmp_path_factory, four_layer_bert):
    """A 4-layer tiny teacher trained on 160 AG News rows (40 validation), and its recipe."""
    root = tmp_path_factory.mktemp("teacher")
    write_csv(root / "train.csv", agnews_rows("train", 160))
    write_csv(root / "dev.csv", agnews_rows("dev", 40))
    recipe = root / "agnews.toml"
    recipe.write_text(
        f'[model]\nname = "{four_layer_bert}"\nmax_length = 64\n[data]\ntrain = "train.csv"\nvalidation = "dev.csv"\nlabels = {json.dumps(AGNEWS_LABELS)}\n'
        f'[train]\nepochs = 2\nbatch_size = 16\nlearning_rate = 1e-3\nseed = 7\nlog_every_steps = 2\n[output]\ndir = "{root / "runs" / "agnews"}"\n'
    )
    old = os.environ.get("BERTCTL_CACHE")
    os.environ["BERTCTL_CACHE"] = str(root / "cache")
    try:
        train(load_recipe(recipe), progress=False)
    finally:
        os.environ.pop("BERTCTL_CACHE") if old is None else os.environ.__setitem__("BERTCTL_CACHE", old)
    return recipe, root / "runs" / "agnews"


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# ---------------------------------------------------------------------------------------------
# the student's layers


def test_distill_student_layers_come_from_the_recipe(teacher_setup):
    recipe, _ = teacher_setup
    assert student_layers(load_recipe(recipe, ["distill.num_layers=3"]), 6) == [0, 2, 4]
    assert student_layers(load_recipe(recipe, ["distill.num_layers=6"]), 12) == [0, 2, 4, 6, 8, 10]  # DistilBERT
    assert student_layers(load_recipe(recipe, ["distill.num_layers=2"]), 6) == [0, 3]
    assert student_layers(load_recipe(recipe, ["distill.layers=[1, 3]"]), 4) == [1, 3]
    assert student_layers(load_recipe(recipe), 4) is None  # the student is model.name
    with pytest.raises(BertctlError, match=r"names layer 4, but the teacher has 4 encoder layers \(0 to 3\)"):
        student_layers(load_recipe(recipe, ["distill.layers=[0, 4]"]), 4)
    with pytest.raises(BertctlError, match="distill.num_layers is 5, but the teacher has 4"):
        student_layers(load_recipe(recipe, ["distill.num_layers=5"]), 4)


def test_distill_copy_keeps_the_named_layers_embeddings_and_head(teacher_setup):
    from transformers import AutoModelForSequenceClassification

    _, teacher_dir = teacher_setup
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    student = copy_layers(teacher, [1, 3])
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    t, s = teacher.state_dict(), student.state_dict()
    for new, old in enumerate([1, 3]):
        for name, tensor in s.items():
            if name.startswith(f"bert.encoder.layer.{new}."):
                assert (tensor == t[name.replace(f"layer.{new}.", f"layer.{old}.", 1)]).all(), name
    for name in ("bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "classifier.weight", "classifier.bias"):
        assert (s[name] == t[name]).all()
    assert teacher.config.num_hidden_layers == 4  # the teacher is left as it was


def test_distill_unfold_head_undoes_regression_units_and_calibration(four_layer_bert):
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(four_layer_bert, num_labels=1)
    weight, bias = model.classifier.weight.detach().clone(), model.classifier.bias.detach().clone()
    model.config.regression_target = {"mean": 2.5, "std": 1.5}
    model.config.label_thresholds = {"a": 0.3}
    unfold_head(model)
    assert torch.allclose(model.classifier.weight, weight / 1.5) and torch.allclose(model.classifier.bias, (bias - 2.5) / 1.5)
    assert not hasattr(model.config, "regression_target") and not hasattr(model.config, "label_thresholds")


# ---------------------------------------------------------------------------------------------
# the loss: each problem type's teacher term


def test_distill_loss_is_zero_where_the_student_matches_the_teacher_and_pulls_toward_it():
    import torch

    teacher = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 3.0, 0.0, 0.0]])
    single = problem_type("single_label_classification")
    assert single.distill_loss(teacher.clone(), teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    # softmax is shift-invariant: a student off by a constant per row matches too
    assert single.distill_loss(teacher + 5.0, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros_like(teacher, requires_grad=True)
    loss = single.distill_loss(student, teacher, 2.0)
    loss.backward()
    assert loss.item() > 0 and (student.grad[:, 0][0] < 0) and (student.grad[1, 1] < 0)  # descent raises the teacher's top class
    # scaled by T^2: at a high temperature, the gradient keeps its size (Hinton et al.) instead of shrinking by 1/T^2
    grads = []
    for t in (1.0, 8.0):
        s = torch.zeros_like(teacher, requires_grad=True)
        single.distill_loss(s, teacher / 8.0 * t, t).backward()  # the same soft targets at either temperature
        grads.append(s.grad.abs().sum().item())
    assert grads[1] == pytest.approx(grads[0] * 8.0, rel=1e-4)

    multi = problem_type("multi_label_classification")
    # BCE against the teacher's sigmoids is smallest at the teacher's logits
    at_teacher = multi.distill_loss(teacher.clone(), teacher, 2.0).item()
    assert at_teacher < multi.distill_loss(teacher + 0.5, teacher, 2.0).item() and at_teacher < multi.distill_loss(teacher - 0.5, teacher, 2.0).item()

    regression = problem_type("regression")
    values = torch.tensor([[4.0], [1.0]])  # the teacher's outputs, in the label's units
    standardised = (values - 2.5) / 1.5  # what the student's head learns
    assert regression.distill_loss(standardised, values, 2.0, (2.5, 1.5)).item() == pytest.approx(0.0, abs=1e-7)
    assert regression.distill_loss(standardised + 1.0, values, 2.0, (2.5, 1.5)).item() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# end to end


def test_distill_a_student_of_half_the_layers_is_an_ordinary_run_dir(teacher_setup, tmp_path):
    from transformers import AutoConfig, pipeline

    from bertctl.inference import load_for_inference, predict_texts

    recipe, teacher = teacher_setup
    result = runner.invoke(app, ["distill", str(recipe), "--teacher", str(teacher), "distill.num_layers=2", "--output-dir", str(tmp_path / "student")])
    assert result.exit_code == 0, result.output
    assert "teacher accuracy" in result.output  # the summary names both scores
    student = tmp_path / "student"
    config = AutoConfig.from_pretrained(student)
    assert config.num_hidden_layers == 2 and config.id2label[0] == "World"
    m = _metrics(student)
    assert m["distill"]["student_layers"] == [0, 2] and m["distill"]["teacher_layers"] == 4
    assert m["distill"]["teacher_validation"] == _metrics(teacher)["validation"]
    assert m["train_examples"] == 160 and 0.0 <= m["validation"]["accuracy"] <= 1.0
    import tomllib

    assert tomllib.loads((student / "recipe.toml").read_text())["distill"]["teacher"] == str(teacher)  # --teacher is saved as the recipe's key
    card = (student / "README.md").read_text()
    assert f"from `{teacher}`" in card and "encoder layers [0, 2] of its 4" in card and "| accuracy |" in card
    # as any run: bertctl's predictions and transformers' pipeline agree
    texts = [r["text"] for r in agnews_rows("dev", 12)]
    ours = predict_texts(load_for_inference(student), texts).predictions
    theirs = pipeline("text-classification", model=str(student))(texts)
    assert [p.label for p in ours] == [t["label"] for t in theirs]
    evaluated = runner.invoke(app, ["eval", str(student), "--json", "--bootstrap", "0"])
    assert evaluated.exit_code == 0, evaluated.output


def test_distill_alpha_zero_is_training_the_same_student_on_labels(teacher_setup, tmp_path):
    # alpha = 0 leaves only the label loss: the same numbers as train on the copied layers would give; alpha > 0
    # changes them, so the teacher term is really in the loss
    recipe, teacher = teacher_setup
    overrides = ["distill.num_layers=2", "train.epochs=1"]
    zero = distill(load_recipe(recipe, [*overrides, "distill.alpha=0.0"]), teacher, output_dir=tmp_path / "zero", progress=False).metrics
    half = distill(load_recipe(recipe, [*overrides, "distill.alpha=0.5"]), teacher, output_dir=tmp_path / "half", progress=False).metrics
    logs = [[json.loads(line)["loss"] for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines() if "loss" in json.loads(line)] for name in ("zero", "half")]
    assert logs[0] != logs[1]
    assert zero["distill"]["alpha"] == 0.0 and half["distill"]["alpha"] == 0.5


def test_distill_teacher_scores_are_cached_and_read_back(teacher_setup, tmp_path, capsys):
    from transformers import AutoTokenizer

    _, teacher = teacher_setup
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    encoded = tokenizer([r["text"] for r in agnews_rows("train", 30)], truncation=True, max_length=64)
    columns = {name: encoded[name] for name in ("input_ids", "token_type_ids", "attention_mask")}
    first = teacher_outputs(teacher, columns, device="cpu", show=True)
    assert "teacher scored 30 texts" in capsys.readouterr().err
    again = teacher_outputs(teacher, columns, device="cpu", show=True)
    assert "teacher scored" not in capsys.readouterr().err  # read from the cache
    assert first.shape == (30, 4) and (again == first).all()
    # the same texts as one batch through the inference path: the same outputs
    from bertctl.inference import load_for_inference, logits

    assert np.allclose(logits(load_for_inference(teacher), columns), first, atol=1e-5)


def test_distill_with_unlabelled_texts_adds_them_to_the_transfer_set(teacher_setup, tmp_path):
    recipe, teacher = teacher_setup
    extra = write_csv(tmp_path / "more.csv", [{"text": r["text"]} for r in agnews_rows("train", 260)[160:]])
    m = distill(load_recipe(recipe, ["distill.num_layers=1", "train.epochs=1", f"distill.unlabeled={json.dumps(str(extra))}"]), teacher,
                output_dir=tmp_path / "student", progress=False).metrics
    assert m["distill"]["unlabeled_examples"] == 100 and m["train_examples"] == 160
    assert m["global_steps"] == -(-260 // 16)  # the unlabelled texts are batched with the labelled ones


def test_distill_refuses_unlabelled_texts_that_are_in_validation(teacher_setup, tmp_path):
    recipe, teacher = teacher_setup
    dev = agnews_rows("dev", 40)
    extra = write_csv(tmp_path / "more.csv", [{"text": "a text of its own"}, {"text": "  " + dev[3]["text"].upper() + " "}])
    with pytest.raises(BertctlError) as refused:
        distill(load_recipe(recipe, ["distill.num_layers=1", f"distill.unlabeled={json.dumps(str(extra))}"]), teacher, output_dir=tmp_path / "s", progress=False)
    assert "more.csv: 1 of its 2 texts are also in the validation split (line 3)" in str(refused.value)
    assert not (tmp_path / "s").exists()


def test_distill_student_named_by_model_name_must_share_the_teacher_tokenizer(teacher_setup, tmp_path, tiny_bert_dir):
    from transformers import BertTokenizerFast

    recipe, teacher = teacher_setup
    # the tiny 2-layer BERT has the teacher's tokenizer: a student of another architecture, from scratch
    m = distill(load_recipe(recipe, [f"model.name={json.dumps(str(tiny_bert_dir))}", "train.epochs=1"]), teacher, output_dir=tmp_path / "named", progress=False).metrics
    assert m["distill"]["student_model"] == str(tiny_bert_dir) and m["distill"]["student_layers"] is None
    # the same BERT with a cased vocabulary of its own: refused, naming both
    other = tmp_path / "other-bert"
    _tiny_bert(other, tiny_bert_dir, 2)
    (other / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (other / name).unlink(missing_ok=True)
    BertTokenizerFast(vocab_file=str(other / "vocab.txt"), do_lower_case=False).save_pretrained(other)
    with pytest.raises(BertctlError, match=r"has another tokenizer than teacher .* \(\d+ against 30522 tokens\)"):
        distill(load_recipe(recipe, [f"model.name={json.dumps(str(other))}"]), teacher, output_dir=tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()


def test_distill_refuses_its_teachers_run_dir_as_output(teacher_setup):
    recipe, teacher = teacher_setup
    before = sorted(p.name for p in teacher.iterdir())
    with pytest.raises(BertctlError, match="into its teacher's run dir"):
        distill(load_recipe(recipe, ["distill.num_layers=1"]), teacher, output_dir=teacher, overwrite=True, progress=False)
    assert sorted(p.name for p in teacher.iterdir()) == before
    # the default goes beside it
    assert load_recipe(recipe).run_dir.name == "agnews"


def _other_problem_setup(tmp_path: Path, tiny_bert_dir: Path, problem: str) -> tuple[Path, Path]:
    """A teacher and a recipe for multi-label (tsv of comma-joined labels) or regression on pairs."""
    rows = agnews_rows("train", 120)
    if problem == "multi_label_classification":
        lines = [f"{r['text']}\t{r['label']}" + (",World" if i % 3 == 0 and r["label"] != "World" else "") for i, r in enumerate(rows)]
        (tmp_path / "train.tsv").write_text("text\tlabels\n" + "\n".join(lines[:90]) + "\n")
        (tmp_path / "dev.tsv").write_text("text\tlabels\n" + "\n".join(lines[90:]) + "\n")
        data = f'train = "train.tsv"\nvalidation = "dev.tsv"\nlabel = "labels"\nlabel_separator = ","\nlabels = {json.dumps(AGNEWS_LABELS)}\n'
    else:
        lines = [f"{r['text']}\t{rows[(i + 1) % len(rows)]['text']}\t{(i * 7) % 26 / 5:.1f}" for i, r in enumerate(rows)]
        (tmp_path / "train.tsv").write_text("a\tb\tscore\n" + "\n".join(lines[:90]) + "\n")
        (tmp_path / "dev.tsv").write_text("a\tb\tscore\n" + "\n".join(lines[90:]) + "\n")
        data = 'train = "train.tsv"\nvalidation = "dev.tsv"\ntext = "a"\ntext_pair = "b"\nlabel = "score"\n'
    recipe = tmp_path / f"{problem}.toml"
    recipe.write_text(
        f'[model]\nname = "{tiny_bert_dir}"\nmax_length = 64\nproblem_type = "{problem}"\n[data]\n{data}'
        f'[train]\nepochs = 1\nbatch_size = 16\nlearning_rate = 1e-3\nseed = 7\n[output]\ndir = "{tmp_path / "runs" / "teacher"}"\n'
    )
    train(load_recipe(recipe), progress=False)
    return recipe, tmp_path / "runs" / "teacher"


@pytest.mark.parametrize("problem", ["multi_label_classification", "regression"])
def test_distill_multi_label_and_regression_pairs(problem, tmp_path, tiny_bert_dir):
    from transformers import pipeline

    from bertctl.inference import load_for_inference, predict_texts

    recipe, teacher = _other_problem_setup(tmp_path, tiny_bert_dir, problem)
    result = distill(load_recipe(recipe, ["distill.num_layers=1"]), teacher, output_dir=tmp_path / "student", progress=False)
    m = result.metrics
    assert m["problem_type"] == problem and m["distill"]["student_layers"] == [0]
    assert m["metric_for_best"] in m["validation"] and m["distill"]["teacher_validation"]
    classifier = load_for_inference(tmp_path / "student")
    assert classifier.model.config.num_hidden_layers == 1
    if problem == "regression":
        # the student outputs the label's units (its own standardisation folded back in), as pipeline() reads it
        pair = ("a man is playing a guitar", "someone plays music")
        ours = predict_texts(classifier, [pair[0]], pairs=[pair[1]]).predictions[0].value
        theirs = pipeline("text-classification", model=str(tmp_path / "student"), function_to_apply="none")({"text": pair[0], "text_pair": pair[1]})
        assert ours == pytest.approx(theirs["score"] if isinstance(theirs, dict) else theirs[0]["score"], abs=1e-4)
        assert 0.0 < m["distill"]["teacher_validation"]["rmse"] < 10
    else:
        assert "label_thresholds" in classifier.model.config.to_dict()  # tuned on validation by the student itself


def test_distill_refuses_a_teacher_of_another_problem_type_or_labels(teacher_setup, tmp_path, tiny_bert_dir):
    recipe, teacher = teacher_setup
    with pytest.raises(BertctlError, match=r"is a single-label classification model, and .* trains multi-label classification"):
        distill(load_recipe(recipe, ['model.problem_type="multi_label_classification"']), teacher, progress=False)
    with pytest.raises(BertctlError) as refused:
        distill(load_recipe(recipe, ['data.labels=["Sports", "World", "Business", "Sci/Tech"]']), teacher, progress=False)
    assert "has the labels ['World', 'Sports', 'Business', 'Sci/Tech']" in str(refused.value) and 'data.labels = ["World"' in refused.value.fix


@pytest.mark.slow
def test_distill_survives_kill_9_and_resumes_exactly(teacher_setup, tmp_path):
    recipe, teacher = teacher_setup
    overrides = ["distill.num_layers=2", "train.checkpoint_every_steps=2", "train.epochs=4"]  # 40 steps
    full = distill(load_recipe(recipe, overrides), teacher, output_dir=tmp_path / "full", progress=False).metrics
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "bertctl", "distill", str(recipe), "--teacher", str(teacher), *overrides, "--output-dir", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run / "train_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.is_file() and any(json.loads(line)["step"] >= 15 for line in log.read_text().split("\n")[:-1] if line.strip()):
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists() and checkpoints(run)
    resumed = runner.invoke(app, ["distill", str(recipe), "--teacher", str(teacher), *overrides, "--output-dir", str(run), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"from {checkpoints(run)[-1].name}" in resumed.output or "resuming" in resumed.output
    got = _metrics(run)
    assert got["validation"] == full["validation"] and got["best_step"] == full["best_step"]
    assert got["last_validation"]["log_loss"] == pytest.approx(full["last_validation"]["log_loss"], abs=1e-9)
