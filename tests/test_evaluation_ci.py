"""`bertctl eval` as a CI gate: bootstrap CIs, the paired comparison with a baseline, noise-aware gates, slices,
JUnit XML and Markdown (issue 23)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bertctl.cli import app
from bertctl.errors import BertctlError
from bertctl.evaluation import DropCheck, mcnemar_p, measure, parse_max_drop_options, parse_min_options, split_gate_key
from bertctl.metrics.bootstrap import Resamples, interval
from bertctl.problems import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from test_evaluation import make_run

runner = CliRunner()
LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def fake_single(n: int, seed: int = 0, strength: float = 1.5):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), refs] += strength
    return refs, SINGLE_LABEL.scores(logits)


# ---------------------------------------------------------------------------------------------
# the bootstrap itself


def _fake(problem, n=300, seed=1):
    rng = np.random.default_rng(seed)
    if problem == SINGLE_LABEL:
        return fake_single(n, seed)
    if problem == MULTI_LABEL:
        refs = (rng.random((n, 3)) < 0.3).astype(float)
        probs = 1 / (1 + np.exp(-(refs * 2 - 1 + rng.normal(size=(n, 3)))))
        probs[:7] = 0.5  # ties in the scores: ROC AUC counts them half
        return refs, probs
    y = np.round(rng.normal(size=n), 1)  # ties in the references: Spearman's average ranks
    return y, y + rng.normal(size=n) * 0.5


@pytest.mark.parametrize("problem", [SINGLE_LABEL, MULTI_LABEL, REGRESSION], ids=lambda p: p.name)
def test_evaluation_ci_the_data_itself_as_a_resample_gives_every_point_estimate(problem):
    """The vectorised formulas are the metrics: on the one 'resample' that is the data, they equal score()."""
    refs, scores = _fake(problem)
    labels = ["a", "b", "c", "d"][: scores.shape[1]] if scores.ndim == 2 else ["y"]
    thresholds = [0.5, 0.4, 0.6] if problem == MULTI_LABEL else None
    point = problem.score(refs, scores, labels, thresholds).overall
    resampled = problem.resampled(refs, scores, Resamples.identity(len(refs)), thresholds)
    assert set(point) <= set(resampled)
    for name, value in point.items():
        assert resampled[name][0] == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("problem", [SINGLE_LABEL, MULTI_LABEL, REGRESSION], ids=lambda p: p.name)
def test_evaluation_ci_every_metric_has_an_interval_around_its_estimate(problem):
    refs, scores = _fake(problem, n=400)
    labels = ["a", "b", "c", "d"][: scores.shape[1]] if scores.ndim == 2 else ["y"]
    measured = measure(problem, refs, scores, problem.metrics, resamples=500, seed=0, labels=labels)
    for name in problem.metrics:
        lo, hi = measured.intervals[name]
        assert lo < hi, name  # 400 noisy texts: no metric is certain
        assert lo - 1e-9 <= measured.values[name] <= hi + 1e-9 or name in ("ece",), name  # ECE's bootstrap is biased upwards


def test_evaluation_ci_one_resample_draw_has_each_text_drawn_n_times_in_all():
    drawn = Resamples.draw(50, 200, seed=3)
    assert drawn.indices.shape == (200, 50)
    assert (drawn.counts.sum(axis=1) == 50).all()
    assert np.array_equal(drawn.counts[7], np.bincount(drawn.indices[7], minlength=50))


@pytest.mark.parametrize("n", [1000, 7600])
def test_evaluation_ci_accuracy_interval_agrees_with_the_wilson_interval(n):
    """Within 20% of the Wilson interval's width at each end, for an accuracy near AG News's 0.9."""
    rng = np.random.default_rng(n)
    refs = rng.integers(0, 4, n)
    preds = np.where(rng.random(n) < 0.9, refs, (refs + 1) % 4)
    probs = np.full((n, 4), 0.1)
    probs[np.arange(n), preds] = 0.7
    p = float(np.mean(preds == refs))
    z = 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    wilson = (centre - half, centre + half)
    measured = measure(SINGLE_LABEL, refs, probs, ["accuracy"], resamples=2000, seed=0, labels=LABELS)
    lo, hi = measured.intervals["accuracy"]
    width = wilson[1] - wilson[0]
    assert abs(lo - wilson[0]) <= 0.2 * width and abs(hi - wilson[1]) <= 0.2 * width, (lo, hi, wilson)


def test_evaluation_ci_resamples_are_seeded():
    refs, probs = fake_single(500)
    one = measure(SINGLE_LABEL, refs, probs, ["accuracy", "f1_macro"], resamples=300, seed=5, labels=LABELS)
    again = measure(SINGLE_LABEL, refs, probs, ["accuracy", "f1_macro"], resamples=300, seed=5, labels=LABELS)
    other = measure(SINGLE_LABEL, refs, probs, ["accuracy", "f1_macro"], resamples=300, seed=6, labels=LABELS)
    assert one.intervals == again.intervals and one.intervals != other.intervals


def test_evaluation_ci_paired_difference_keeps_the_correlation_of_two_similar_models():
    """Two models that disagree on 2% of texts: the paired CI of the difference is far narrower than either CI,
    and contains the true difference."""
    rng = np.random.default_rng(0)
    refs, probs = fake_single(2000, strength=2.0)
    other = probs.copy()
    flip = rng.choice(2000, 40, replace=False)
    other[flip] = np.roll(other[flip], 1, axis=1)
    measured = measure(SINGLE_LABEL, refs, probs, ["accuracy"], resamples=1000, seed=0, labels=LABELS, baseline_scores=other)
    lo, hi = measured.difference_intervals["accuracy"]
    single = measured.intervals["accuracy"][1] - measured.intervals["accuracy"][0]
    assert hi - lo < single / 2
    assert lo <= measured.differences["accuracy"] <= hi
    paired = measured.paired
    assert len(paired.fixed) - len(paired.broken) == round(measured.differences["accuracy"] * 2000)
    assert set(paired.fixed) | set(paired.broken) <= set(flip.tolist())


def test_evaluation_ci_mcnemar_is_the_exact_binomial_test():
    # 10 fixed, 2 broken: p = 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_p(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == pytest.approx(1.0)


def test_evaluation_ci_drop_gate_decides_on_the_bound_not_the_estimate():
    # the estimate is an improvement, but the CI reaches 2 points down: a 1-point allowance fails
    assert not DropCheck("accuracy", 1.0, 0.01, -0.02, 0.04, True).passed
    # the estimate is a 0.4-point drop, and the CI's low end stays within the 1-point allowance
    assert DropCheck("accuracy", 1.0, -0.004, -0.009, 0.001, True).passed
    # log loss: lower is better, so its upper end is the worse side
    assert not DropCheck("log_loss", 1.0, -0.05, -0.1, 0.02, False).passed
    assert DropCheck("log_loss", 1.0, -0.05, -0.1, 0.005, False).passed


def test_evaluation_ci_gate_syntax_with_slices():
    assert parse_min_options(["accuracy=0.9", "accuracy[length=q4]=0.85", " f1_macro [ topic = Sci/Tech ] = 0.5"]) == {
        "accuracy": 0.9, "accuracy[length=q4]": 0.85, "f1_macro[topic=Sci/Tech]": 0.5,
    }
    assert split_gate_key("accuracy[length=q4]") == ("accuracy", ("length", "q4"))
    assert split_gate_key("accuracy") == ("accuracy", None)
    assert parse_max_drop_options(["accuracy=0.5"]) == {"accuracy": 0.5}
    with pytest.raises(BertctlError, match="--max-drop accuracy=-1"):
        parse_max_drop_options(["accuracy=-1"])
    with pytest.raises(BertctlError, match=r"expected METRIC=VALUE"):
        parse_min_options(["accuracy[length=]=0.5"])


# ---------------------------------------------------------------------------------------------
# bertctl eval on tiny models


@pytest.fixture
def two_runs(tmp_path, tiny_classifier_dir, varied_classifier_dir):
    return make_run(tmp_path, tiny_classifier_dir, name="old"), make_run(tmp_path, varied_classifier_dir, name="new")


def test_evaluation_ci_prints_and_reports_an_interval_for_every_metric(two_runs):
    _, new = two_runs
    shown = invoke("eval", new, "--min", "accuracy=0")
    assert shown.exit_code == 0, shown.output
    assert re.search(r"accuracy\s+0\.\d{4} \[0\.\d{4}, 0\.\d{4}\]", shown.output), shown.output
    report = json.loads((new / "eval.json").read_text())
    assert set(report["intervals"]) == set(report["metrics"])
    for name, (lo, hi) in report["intervals"].items():
        assert lo <= hi
    assert report["bootstrap"] == {"resamples": 1000, "seed": 0, "confidence": 0.95}
    off = json.loads(invoke("eval", new, "--bootstrap", "0", "--json").stdout)
    assert off["intervals"] == {} and off["metrics"] == report["metrics"]


def test_evaluation_ci_baseline_file_and_baseline_run_agree(two_runs, tmp_path):
    old, new = two_runs
    saved = tmp_path / "preds" / "old.jsonl"
    assert invoke("eval", old, "--save-predictions", saved).exit_code == 0
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    header, rows = lines[0], lines[1:]
    assert header["labels"] == LABELS and header["problem_type"] == "single_label_classification" and len(rows) == 30
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-6 and r["reference"] in LABELS for r in rows)
    assert [r["id"] for r in rows] == list(range(30))
    from_file = json.loads(invoke("eval", new, "--baseline", saved, "--json").stdout)
    from_run = json.loads(invoke("eval", new, "--baseline", old, "--json").stdout)
    for key in ("metrics", "differences", "paired"):
        a, b = from_file["baseline"][key], from_run["baseline"][key]
        assert a.keys() == b.keys()
        for name in a:
            assert a[name] == pytest.approx(b[name], abs=1e-5), (key, name)
    paired = from_run["baseline"]["paired"]
    diff = from_run["baseline"]["differences"]["accuracy"]
    assert (paired["fixed"] - paired["broken"]) == round(diff * 30)


def test_evaluation_ci_a_model_against_itself_differs_by_nothing(two_runs):
    _, new = two_runs
    result = invoke("eval", new, "--baseline", new, "--max-drop", "accuracy=0", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["baseline"]
    assert report["difference_intervals"]["accuracy"] == [0.0, 0.0]
    assert report["paired"] == {"metric": "accuracy", "fixed": 0, "broken": 0, "mcnemar_p": 1.0}


def _perfect_baseline(saved: Path, out: Path) -> Path:
    """The saved predictions, with every text's reference given all the probability: a baseline that is never wrong."""
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    for row in lines[1:]:
        row["scores"] = {label: float(label == row["reference"]) for label in LABELS}
    out.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return out


def test_evaluation_ci_max_drop_fails_against_a_better_baseline_with_junit_and_markdown(two_runs, tmp_path):
    from junitparser import Failure, JUnitXml

    old, new = two_runs
    saved = tmp_path / "old.jsonl"
    invoke("eval", old, "--save-predictions", saved)
    perfect = _perfect_baseline(saved, tmp_path / "perfect.jsonl")
    junit, markdown = tmp_path / "ci" / "eval.xml", tmp_path / "ci" / "eval.md"
    result = invoke("eval", new, "--baseline", perfect, "--max-drop", "accuracy=0.5", "--min", "accuracy=0", "--show-changes", "3",
                    "--slice-by", "length", "--junit", junit, "--markdown", markdown)
    assert result.exit_code == 1, result.output
    assert "accuracy: new - baseline = " in result.output and "allowed drop of 0.5 points" in result.output
    report = json.loads((new / "eval.json").read_text())
    accuracy = report["metrics"]["accuracy"]
    assert report["baseline"]["metrics"]["accuracy"] == 1.0
    assert report["baseline"]["paired"]["broken"] == round((1 - accuracy) * 30) and report["baseline"]["paired"]["fixed"] == 0
    assert len(report["baseline"]["changes"]) == 3 and not any(c["fixed"] for c in report["baseline"]["changes"])
    assert "broken" in result.output

    xml = JUnitXml.fromfile(str(junit))
    cases = {case.name: case for suite in xml for case in suite}
    drop = cases["--max-drop accuracy"]
    failures = [r for r in drop.result if isinstance(r, Failure)]
    assert failures and "95% CI" in failures[0].message and "0.5 points" in failures[0].message
    assert cases["--min accuracy"].is_passed
    assert {"length=q1", "length=q4", "overall"} <= set(cases)
    assert sum(1 for c in cases.values() if not c.is_passed) == 1

    text = markdown.read_text()
    assert "### bertctl eval: FAILED" in text and "| metric | new | 95% CI | baseline | difference |" in text
    assert f"| accuracy | {accuracy:.4f} |" in text and "**FAIL**" in text


def test_evaluation_ci_min_on_the_lower_bound_is_stricter_than_on_the_estimate(two_runs):
    _, new = two_runs
    report = json.loads(invoke("eval", new, "--json").stdout)
    lo, value = report["intervals"]["accuracy"][0], report["metrics"]["accuracy"]
    assert lo < value
    threshold = f"accuracy={(lo + value) / 2:.6f}"
    assert invoke("eval", new, "--min", threshold).exit_code == 0
    strict = invoke("eval", new, "--min", threshold, "--on", "lower-bound")
    assert strict.exit_code == 1 and "lower 95% bound" in strict.output


def test_evaluation_ci_slices_by_label_and_length(two_runs):
    _, new = two_runs
    report = json.loads(invoke("eval", new, "--slice-by", "label", "--json").stdout)
    slices = report["slices"]["slices"]
    assert sum(s["examples"] for s in slices.values()) == report["data"]["examples"]
    for label, s in slices.items():
        # a slice of one true label: its accuracy is that class's recall
        assert s["metrics"]["accuracy"] == pytest.approx(report["per_class"][label]["recall"])
        assert s["examples"] == report["per_class"][label]["support"]
        assert set(s["intervals"]) == set(s["metrics"])
    by_length = json.loads(invoke("eval", new, "--slice-by", "length", "--json").stdout)["slices"]["slices"]
    assert set(by_length) <= {"q1", "q2", "q3", "q4"} and sum(s["examples"] for s in by_length.values()) == 30


def test_evaluation_ci_a_slice_gate(two_runs):
    _, new = two_runs
    report = json.loads(invoke("eval", new, "--slice-by", "length", "--json").stdout)
    q4 = report["slices"]["slices"]["q4"]["metrics"]["accuracy"]
    passing = invoke("eval", new, "--slice-by", "length", "--min", f"accuracy[length=q4]={q4:.6f}")
    assert passing.exit_code == 0, passing.output
    failing = invoke("eval", new, "--slice-by", "length", "--min", f"accuracy[length=q4]={min(q4 + 0.01, 1):.6f}")
    assert failing.exit_code == 1 and "accuracy[length=q4]" in failing.output
    unsliced = invoke("eval", new, "--min", "accuracy[length=q4]=0.5")
    assert unsliced.exit_code == 2 and "--slice-by length" in unsliced.output
    no_such = invoke("eval", new, "--slice-by", "length", "--min", "accuracy[length=q5]=0.5")
    assert no_such.exit_code == 2 and "q4" in no_such.output


def test_evaluation_ci_usage_errors_come_before_loading(tmp_path):
    missing = tmp_path / "no-run"
    for args, words in [
        (["--max-drop", "accuracy=1"], "add --baseline"),
        (["--show-changes", "3"], "add --baseline"),
        (["--on", "estimate"], "--on point"),
        (["--on", "lower-bound", "--bootstrap", "0"], "drop --bootstrap 0"),
    ]:
        result = invoke("eval", missing, *args)
        assert result.exit_code == 2 and words in result.output, (args, result.output)


def test_evaluation_ci_warns_when_a_drop_allowance_is_inside_the_noise():
    from bertctl.evaluation import tight_drop_note

    # a CI of +-1.24 points: an equally good model's lower end sits near -1.24, far below -0.5
    tight = tight_drop_note(DropCheck("accuracy", 0.5, 0.0, -0.0124, 0.0124, True))
    assert tight is not None and "--max-drop accuracy=0.5" in tight and "2.3 points" in tight
    assert "about 88% of the time" in tight  # Phi((1.24 - 0.5) / 0.633) = 0.879
    assert tight_drop_note(DropCheck("accuracy", 2.5, 0.0, -0.0124, 0.0124, True)) is None


def test_evaluation_ci_slices_by_a_column_of_the_recipes_split_file(tmp_path, varied_classifier_dir):
    from conftest import agnews_rows, write_csv

    run = make_run(tmp_path, varied_classifier_dir, name="sliced")
    rows = [{**row, "source": "wire" if i % 3 else "blog"} for i, row in enumerate(agnews_rows("dev", 60)[30:])]
    write_csv(tmp_path / "test.csv", rows)  # the file the run's recipe names as its test split
    report = json.loads(invoke("eval", run, "--slice-by", "source", "--json").stdout)
    slices = report["slices"]["slices"]
    assert {name: s["examples"] for name, s in slices.items()} == {"blog": 10, "wire": 20}
    missing = invoke("eval", run, "--slice-by", "sorce")
    assert missing.exit_code == 2 and "did you mean 'source'?" in missing.output
