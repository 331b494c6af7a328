"""Behavioural tests (CheckList) for `bertctl eval --checks FILE`: the file's schema, the perturbations, and MFT, INV and
DIR on tiny single-label, multi-label and regression BERTs (issue 23 part 5), plus the warning for scoring the split
that picked the best checkpoint (part 7)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertctl import checks
from bertctl.checks import CheckTest, load_checks, perturb, run_checks
from bertctl.cli import app
from bertctl.errors import ChecksError
from bertctl.inference import load_for_inference, predict_texts
from conftest import AGNEWS_LABELS, _tiny_config
from test_evaluation import make_run

runner = CliRunner()
TEXTS = [
    "Stocks fell as oil prices rose sharply on Monday",
    "Late goal wins the cup for United in 2004",
    "Microsoft patches a flaw in Windows",
    "John Smith named chief of the airline",
    "UN votes on sanctions against Sudan",
    "Mary Pierce reaches the final in Moscow",
]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def toml_list(texts: list[str]) -> str:
    return "[" + ", ".join(json.dumps(t) for t in texts) + "]"


# ---------------------------------------------------------------------------------------------
# the file


def test_checks_load_reads_all_three_kinds(tmp_path):
    path = write(tmp_path / "c.toml", f"""seed = 3
[tests.sports]
kind = "mft"
label = "Sports"
texts = {toml_list(TEXTS[:2])}
max_fail_rate = 0.1

[tests.swap]
kind = "inv"
perturb = "replace"
replace = {{ "Monday" = ["Friday", "Sunday"], "cup" = "trophy" }}
sample = 5
max_fail_rate = 0

[tests.money]
kind = "dir"
prefix = ["Markets: ", "Finance: "]
label = "Business"
direction = "up"
texts = {toml_list(TEXTS[:1])}
max_fail_rate = 0.5
""")
    suite = load_checks(path)
    assert suite.seed == 3 and [t.name for t in suite.tests] == ["sports", "swap", "money"]
    sports, swap, money = suite.tests
    assert (sports.kind, sports.label, sports.max_fail_rate, sports.line) == ("mft", "Sports", 0.1, 2)
    assert swap.replace == {"Monday": ["Friday", "Sunday"], "cup": ["trophy"]} and swap.sample == 5
    assert (money.where, money.phrases, money.direction) == ("prefix", ["Markets: ", "Finance: "], "up")


def test_checks_load_toml_error_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.toml", '[tests.a]\nkind = "mft\n')
    with pytest.raises(ChecksError) as error:
        load_checks(path)
    message = str(error.value)
    assert "bad.toml is not a valid checks file" in message and "(toml)" in message and "line 2" in message and 'kind = "mft' in message


def test_checks_load_reports_every_problem_at_once_with_lines(tmp_path):
    path = write(tmp_path / "c.toml", """[tests.a]
kind = "inv"
perturb = "typo"
texts = ["x y z"]

[tests.b]
kind = "mft"
label = "Sports"
txts = ["Late goal"]
max_fail_rate = 2

[tests.c]
kind = "dri"
""")
    with pytest.raises(ChecksError) as error:
        load_checks(path)
    message = str(error.value)
    assert "(4 problems)" not in message  # more than four: each of the lines below
    assert re.search(r"tests\.a\s+has no max_fail_rate", message)
    assert "tests.a.perturb" in message and "unknown perturbation 'typo' (line 3)" in message and "did you mean 'typos'?" in message
    assert "tests.b.txts" in message and "unknown key for a mft test (line 9)" in message and "did you mean 'texts'?" in message
    assert "tests.b.max_fail_rate" in message and "from 0 to 1, got 2 (line 10)" in message
    assert "tests.b" in message and "has no texts to test" in message
    assert "tests.c.kind" in message and "did you mean 'dir'?" in message


def test_checks_unknown_label_is_named_against_the_model(tmp_path, tiny_classifier_dir):
    path = write(tmp_path / "c.toml", f"""[tests.a]
kind = "mft"
label = "Sprots"
texts = ["Late goal"]
max_fail_rate = 0

[tests.b]
kind = "dir"
suffix = " again"
label = "Busines"
direction = "up"
texts = ["Stocks fell"]
max_fail_rate = 0
""")
    classifier = load_for_inference(tiny_classifier_dir)
    with pytest.raises(ChecksError) as error:
        checks.check_against_model(load_checks(path), classifier)
    message = str(error.value)
    assert "tests.a.label" in message and "unknown label 'Sprots'" in message and "did you mean 'Sports'?" in message
    assert "tests.b.label" in message and "did you mean 'Business'?" in message and ", ".join(AGNEWS_LABELS) in message


# ---------------------------------------------------------------------------------------------
# perturbations


def _inv(perturbation: str, **extra) -> CheckTest:
    return CheckTest(name="t", kind="inv", max_fail_rate=0, line=1, perturb=perturbation, **extra)


def test_checks_typos_are_seeded_and_swap_two_letters_of_one_word():
    text = "Stocks tumbled as investors worried about rates"
    first = perturb(_inv("typos"), text, 0, 0)
    assert first == perturb(_inv("typos"), text, 0, 0)  # the same seed, test and position: the same typo
    assert len(first) == 1 and first[0] != text and sorted(first[0]) == sorted(text)
    changed = [i for i, (a, b) in enumerate(zip(text, first[0])) if a != b]
    assert len(changed) == 2 and changed[1] == changed[0] + 1
    variants = {perturb(_inv("typos"), text, seed, 0)[0] for seed in range(20)}
    assert len(variants) > 3  # the seed moves the typo


def test_checks_names_numbers_replace_and_punctuation():
    names = perturb(_inv("names", names=["John", "Mary", "Ahmed"]), "John met Mary; John left", 0, 0)
    words = names[0].replace(";", "").split()
    assert len(names) == 1 and words[0] == words[3] and {words[0], words[2]} <= {"John", "Mary", "Ahmed"}  # each name swapped the same way throughout
    assert words[0] != "John" and words[2] != "Mary" and words[0] != words[2]
    assert perturb(_inv("names"), "stocks fell", 0, 0) == []  # no name: the case is skipped, not counted
    numbers = perturb(_inv("numbers"), "Profit up 12 percent in 2004, a 7-year high", 0, 0)[0]
    found = re.findall(r"\d+", numbers)
    assert [len(n) for n in found] == [2, 4, 1] and found != ["12", "2004", "7"]
    replaced = perturb(_inv("replace", replace={"U.S.": ["France", "India"], "cup": ["trophy"]}), "U.S. team wins the cup", 0, 0)
    assert replaced == ["France team wins the cup", "India team wins the cup", "U.S. team wins the trophy"]
    assert perturb(_inv("replace", replace={"cup": ["trophy"]}), "A cupboard", 0, 0) == []  # whole words only
    assert perturb(_inv("punctuation"), "Oil, gas: up!", 0, 0) == ["Oil gas up"]


# ---------------------------------------------------------------------------------------------
# running: single-label through the CLI


def _single_label_file(tmp_path: Path, classifier_dir: Path, name: str = "checks.toml", with_wrong: bool = True) -> tuple[Path, dict[str, str]]:
    """A checks file whose MFT expects what the model predicts (must pass) and the label after it (must fail)."""
    classifier = load_for_inference(classifier_dir)
    got = {p.text: p.label for p in predict_texts(classifier, TEXTS).predictions}
    wrong = {t: AGNEWS_LABELS[(AGNEWS_LABELS.index(label) + 1) % 4] for t, label in got.items()}
    lines = []
    for i, text in enumerate(TEXTS):
        lines += [f"[tests.right_{i}]", 'kind = "mft"', f"label = {json.dumps(got[text])}", f"texts = {toml_list([text])}", "max_fail_rate = 0", ""]
    lines += [] if not with_wrong else ["[tests.wrong]", 'kind = "mft"', f"label = {json.dumps(wrong[TEXTS[0]])}", f"texts = {toml_list([t for t in TEXTS if got[t] == got[TEXTS[0]]])}", "max_fail_rate = 0.5", ""]
    lines += ["[tests.lowercase]", 'kind = "inv"', 'perturb = "lowercase"', "sample = 10", "max_fail_rate = 0", ""]
    return write(tmp_path / name, "\n".join(lines)), got


def test_checks_cli_single_label_passes_fails_and_reports(tmp_path, varied_classifier_dir):
    from junitparser import Failure, JUnitXml

    run = make_run(tmp_path, varied_classifier_dir, name="single")
    path, got = _single_label_file(tmp_path, run)
    junit, markdown = tmp_path / "ci" / "junit.xml", tmp_path / "ci" / "summary.md"
    result = invoke("eval", run, "--checks", path, "--junit", junit, "--markdown", markdown, "--bootstrap", "0", "--no-plot")
    assert result.exit_code == 1, result.output
    assert "behavioural tests" in result.output and "check wrong (MFT)" in result.output and "max_fail_rate 50%" in result.output
    report = json.loads((run / "eval.json").read_text())
    tests = {t["name"]: t for t in report["checks"]["tests"]}
    assert not report["passed"] and not report["checks"]["passed"]
    for i, text in enumerate(TEXTS):
        assert tests[f"right_{i}"]["passed"] and tests[f"right_{i}"]["failures"] == 0 and tests[f"right_{i}"]["tested"] == 1
    wrong = tests["wrong"]
    assert wrong["fail_rate"] == 1.0 and not wrong["passed"] and wrong["examples"][0]["got"] == got[TEXTS[0]]
    # the tiny tokenizer is uncased: lower-casing a text gives the same ids, so INV lowercase cannot fail
    assert tests["lowercase"]["passed"] and tests["lowercase"]["failures"] == 0 and tests["lowercase"]["tested"] >= 1

    xml = JUnitXml.fromfile(str(junit))
    cases = {case.name: case for suite in xml for case in suite}
    assert not any(isinstance(r, Failure) for r in cases["MFT right_0"].result)
    failures = [r for r in cases["MFT wrong"].result if isinstance(r, Failure)]
    assert failures and "100.0% > max_fail_rate 50%" in failures[0].message
    summary = markdown.read_text()
    assert "| wrong | MFT |" in summary and "**FAIL**" in summary and "failing examples" in summary

    # without the failing test the same run passes: the gate is the checks' own
    passing, _ = _single_label_file(tmp_path, run, "pass.toml", with_wrong=False)
    result = invoke("eval", run, "--checks", passing, "--bootstrap", "0", "--no-plot", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checks"]["passed"] is True


def test_checks_cli_bad_file_is_exit_2_before_the_model_loads(tmp_path, tiny_classifier_dir):
    run = make_run(tmp_path, tiny_classifier_dir)
    bad = write(tmp_path / "c.toml", '[tests.a]\nkind = "inv"\nperturb = "typoes"\ntexts = ["x"]\nmax_fail_rate = 0\n')
    result = invoke("eval", run, "--checks", bad)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "c.toml is not a valid checks file" in result.output and "did you mean 'typos'?" in result.output
    assert not (run / "eval.json").exists()


def test_checks_a_test_that_tests_nothing_fails(tmp_path, tiny_classifier_dir):
    """No name in any text: a names test would pass on nothing, so it fails and says so."""
    path = write(tmp_path / "c.toml", '[tests.names]\nkind = "inv"\nperturb = "names"\ntexts = ["stocks fell", "oil rose"]\nmax_fail_rate = 1\n')
    [outcome] = run_checks(load_checks(path), load_for_inference(tiny_classifier_dir))
    assert (outcome.tested, outcome.skipped, outcome.passed) == (0, 2, False) and "nothing tested" in outcome.describe()


# ---------------------------------------------------------------------------------------------
# multi-label and regression, on tiny models of their own


def _tiny_model(tmp_path_factory, bundled_tokenizer_dir, problem_type: str, labels: list[str]) -> Path:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp(problem_type)
    tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_dir)
    config = _tiny_config(tokenizer.vocab_size, num_labels=len(labels), problem_type=problem_type,
                          id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.4)  # texts get different answers
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def multi_label_dir(tmp_path_factory, bundled_tokenizer_dir) -> Path:
    return _tiny_model(tmp_path_factory, bundled_tokenizer_dir, "multi_label_classification", ["economy", "sport", "tech"])


@pytest.fixture(scope="module")
def regression_dir(tmp_path_factory, bundled_tokenizer_dir) -> Path:
    return _tiny_model(tmp_path_factory, bundled_tokenizer_dir, "regression", ["score"])


def test_checks_multi_label_mft_inv_dir(tmp_path, multi_label_dir):
    classifier = load_for_inference(multi_label_dir)
    got = {p.text: p.labels for p in predict_texts(classifier, TEXTS).predictions}
    text = TEXTS[0]
    other = sorted(set(["economy", "sport", "tech"]) - set(got[text]))[:1] or []  # a set the model does not predict
    path = write(tmp_path / "c.toml", f"""[tests.right]
kind = "mft"
labels = {toml_list(got[text])}
texts = {toml_list([text])}
max_fail_rate = 0

[tests.wrong]
kind = "mft"
labels = {toml_list(other if other != got[text] else [])}
texts = {toml_list([text])}
max_fail_rate = 0

[tests.case]
kind = "inv"
perturb = "uppercase"
texts = {toml_list(TEXTS)}
max_fail_rate = 0

[tests.up]
kind = "dir"
suffix = " markets and shares and profits"
label = "economy"
direction = "up"
texts = {toml_list(TEXTS)}
max_fail_rate = 1

[tests.down]
kind = "dir"
suffix = " markets and shares and profits"
label = "economy"
direction = "down"
texts = {toml_list(TEXTS)}
max_fail_rate = 1
""")
    suite = load_checks(path)
    checks.check_against_model(suite, classifier)
    right, wrong, case, up, down = run_checks(suite, classifier)
    assert right.passed and right.failures == 0
    assert not wrong.passed and wrong.failures == 1 and wrong.examples[0].got == "{" + ", ".join(sorted(got[text])) + "}"
    assert case.passed and case.tested == len(TEXTS)  # uncased tokenizer
    # with no tolerance each text's economy score moves one way or the other: it fails exactly one of the two tests
    assert up.tested == down.tested == len(TEXTS) and up.failures + down.failures == len(TEXTS)


def test_checks_multi_label_refuses_a_single_label_expectation(tmp_path, multi_label_dir):
    path = write(tmp_path / "c.toml", '[tests.a]\nkind = "mft"\nlabel = "sport"\ntexts = ["x"]\nmax_fail_rate = 0\n')
    with pytest.raises(ChecksError) as error:
        checks.check_against_model(load_checks(path), load_for_inference(multi_label_dir))
    assert "tests.a.labels" in str(error.value) and "set of labels" in str(error.value)


def test_checks_regression_ranges_tolerance_and_direction(tmp_path, regression_dir):
    classifier = load_for_inference(regression_dir)
    values = {p.text: p.value for p in predict_texts(classifier, TEXTS).predictions}
    text = TEXTS[1]
    v = values[text]
    path = write(tmp_path / "c.toml", f"""seed = 1
[tests.inside]
kind = "mft"
range = [{v - 0.01}, {v + 0.01}]
texts = {toml_list([text])}
max_fail_rate = 0

[tests.outside]
kind = "mft"
range = [{v + 1}, {v + 2}]
texts = {toml_list([text])}
max_fail_rate = 0

[tests.typos_loose]
kind = "inv"
perturb = "typos"
tolerance = 1000.0
texts = {toml_list(TEXTS)}
max_fail_rate = 0

[tests.typos_strict]
kind = "inv"
perturb = "typos"
tolerance = 0.0
texts = {toml_list(TEXTS)}
max_fail_rate = 0

[tests.up]
kind = "dir"
prefix = "Great news: "
direction = "up"
texts = {toml_list(TEXTS)}
max_fail_rate = 1

[tests.down]
kind = "dir"
prefix = "Great news: "
direction = "down"
texts = {toml_list(TEXTS)}
max_fail_rate = 1
""")
    suite = load_checks(path)
    checks.check_against_model(suite, classifier)
    inside, outside, loose, strict, up, down = run_checks(suite, classifier)
    assert inside.passed and not outside.passed and outside.examples[0].got == f"{v:.4g}"
    assert loose.passed and loose.failures == 0 and loose.tested == len(TEXTS)
    assert strict.failures > 0  # a typo changes the tokens, so a random model's value moves at least a little
    assert up.failures + down.failures == len(TEXTS)


def test_checks_regression_needs_a_tolerance_and_no_label(tmp_path, regression_dir):
    path = write(tmp_path / "c.toml", """[tests.a]
kind = "inv"
perturb = "typos"
texts = ["x y z"]
max_fail_rate = 0

[tests.b]
kind = "dir"
suffix = "!"
label = "score"
direction = "up"
texts = ["x"]
max_fail_rate = 0
""")
    with pytest.raises(ChecksError) as error:
        checks.check_against_model(load_checks(path), load_for_inference(regression_dir))
    assert "tests.a.tolerance" in str(error.value) and "tests.b.label" in str(error.value)


# ---------------------------------------------------------------------------------------------
# issue 23 part 7: scoring the split that picked the best checkpoint


def test_checks_eval_warns_when_scoring_the_validation_split(tmp_path, tiny_classifier_dir):
    run = make_run(tmp_path, tiny_classifier_dir, test=False)
    result = invoke("eval", run, "--bootstrap", "0", "--no-plot", "--json")
    assert result.exit_code == 0, result.output
    assert "warning: the validation split picked this run's best checkpoint (train.metric_for_best = accuracy)" in result.stderr
    report = json.loads(result.stdout)
    assert report["warnings"] and "optimistic" in report["warnings"][0]
    # the test split did not pick anything: no warning
    tested = make_run(tmp_path / "t", tiny_classifier_dir, test=True)
    result = invoke("eval", tested, "--bootstrap", "0", "--no-plot", "--json")
    assert result.exit_code == 0 and "warning" not in result.stderr and json.loads(result.stdout)["warnings"] == []


@pytest.mark.slow  # one ONNX export
def test_checks_on_an_export_dir_match_the_run_dir(tmp_path, varied_classifier_dir):
    """--checks goes through predict_texts, so an ONNX export answers every case as its torch run does."""
    from bertctl.export import export_run

    run = make_run(tmp_path, varied_classifier_dir, name="exported")
    path, _ = _single_label_file(tmp_path, run)
    exported = export_run(run)
    reports = []
    for model in (run, exported.output):
        result = invoke("eval", model, "--checks", path, "--bootstrap", "0", "--no-plot", "--json", "--report", tmp_path / f"{Path(model).name}.json")
        assert result.exit_code == 1, result.output  # the `wrong` test fails on both
        reports.append(json.loads(result.stdout)["checks"]["tests"])
    torch_tests, onnx_tests = reports
    assert [(t["name"], t["tested"], t["failures"]) for t in onnx_tests] == [(t["name"], t["tested"], t["failures"]) for t in torch_tests]


def test_checks_mft_examples_carry_their_own_labels(tmp_path, varied_classifier_dir):
    classifier = load_for_inference(varied_classifier_dir)
    got = {p.text: p.label for p in predict_texts(classifier, TEXTS).predictions}
    flipped = AGNEWS_LABELS[(AGNEWS_LABELS.index(got[TEXTS[2]]) + 1) % 4]
    rows = [f"{{ text = {json.dumps(t)}, label = {json.dumps(got[t] if i != 2 else flipped)} }}" for i, t in enumerate(TEXTS)]
    path = write(tmp_path / "c.toml", "[tests.mixed]\nkind = \"mft\"\nmax_fail_rate = 0.2\nexamples = [\n  " + ",\n  ".join(rows) + ",\n]\n")
    suite = load_checks(path)
    checks.check_against_model(suite, classifier)
    [outcome] = run_checks(suite, classifier)
    assert (outcome.tested, outcome.failures, outcome.passed) == (len(TEXTS), 1, True)  # 1 of 6 <= 20%
    assert outcome.examples[0].text == TEXTS[2] and outcome.examples[0].expected == flipped and outcome.examples[0].got == got[TEXTS[2]]

    bad = write(tmp_path / "bad.toml", '[tests.mixed]\nkind = "mft"\nmax_fail_rate = 0\nexamples = [{ text = "a", label = "Sports" }, { text = "b", label = "Sprots" }, { txt = "c" }]\n')
    with pytest.raises(ChecksError) as error:
        load_checks(bad)
    assert "tests.mixed.examples" in str(error.value) and "example 3 needs a non-empty text" in str(error.value)
    good_shape = write(tmp_path / "b2.toml", '[tests.mixed]\nkind = "mft"\nmax_fail_rate = 0\nexamples = [{ text = "a", label = "Sports" }, { text = "b", label = "Sprots" }]\n')
    with pytest.raises(ChecksError) as error:
        checks.check_against_model(load_checks(good_shape), classifier)
    assert "tests.mixed.examples[2].label" in str(error.value) and "did you mean 'Sports'?" in str(error.value)
