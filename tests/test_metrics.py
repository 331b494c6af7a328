"""The offline metrics agree with scikit-learn (the reference implementation), including zero-division corners."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from bertctl import metrics
from bertctl.metrics import functional as F
from bertctl.problems import SINGLE_LABEL
from bertctl.recipe import PROBLEM_METRICS

METRICS = PROBLEM_METRICS["single_label_classification"]


def _random_case(seed: int, n: int = 200, k: int = 5, absent: tuple[int, ...] = ()):
    """References, probabilities and predictions; classes in `absent` never occur in the references."""
    rng = np.random.default_rng(seed)
    present = [c for c in range(k) if c not in absent]
    refs = rng.choice(present, size=n)
    logits = rng.normal(scale=2.0, size=(n, k))
    logits[np.arange(n), refs] += rng.normal(1.0, 1.0, size=n)  # better than chance, not perfect
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return refs, probs, probs.argmax(axis=1)


def _sk_prf(refs, preds, average, labels=None, zero_division=0.0):
    kwargs = dict(average=average, labels=labels, zero_division=zero_division)
    return (
        skm.precision_score(refs, preds, **kwargs),
        skm.recall_score(refs, preds, **kwargs),
        skm.f1_score(refs, preds, **kwargs),
    )


def _ece_reference(refs, probs, n_bins=15):
    """A deliberately plain loop over right-closed bins (lo, hi], as in Guo et al. 2017."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == refs
    total = 0.0
    edges = np.linspace(0, 1, n_bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return total


FIXED_REFS = [0, 0, 1, 1, 2, 2, 2, 3]
FIXED_PREDS = [0, 1, 1, 1, 2, 0, 2, 0]  # class 3 is never predicted: its precision divides by zero


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_metrics_precision_recall_f1_match_sklearn_on_fixed_inputs(average):
    ours = F.precision_recall_f1(FIXED_REFS, FIXED_PREDS, 4, average=average)
    assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx(_sk_prf(FIXED_REFS, FIXED_PREDS, average))


def test_metrics_per_class_and_confusion_match_sklearn_on_fixed_inputs():
    ours = F.precision_recall_f1(FIXED_REFS, FIXED_PREDS, 4, average=None)
    p, r, f, s = skm.precision_recall_fscore_support(FIXED_REFS, FIXED_PREDS, labels=range(4), zero_division=0.0)
    np.testing.assert_allclose(ours["precision"], p)
    np.testing.assert_allclose(ours["recall"], r)
    np.testing.assert_allclose(ours["f1"], f)
    np.testing.assert_array_equal(ours["support"], s)
    np.testing.assert_array_equal(F.confusion_matrix(FIXED_REFS, FIXED_PREDS, 4), skm.confusion_matrix(FIXED_REFS, FIXED_PREDS, labels=range(4)))
    assert F.accuracy(FIXED_REFS, FIXED_PREDS) == pytest.approx(skm.accuracy_score(FIXED_REFS, FIXED_PREDS))
    assert F.matthews_corrcoef(FIXED_REFS, FIXED_PREDS, 4) == pytest.approx(skm.matthews_corrcoef(FIXED_REFS, FIXED_PREDS))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("absent", [(), (1,), (0, 3)])
def test_metrics_match_sklearn_on_random_inputs(seed, absent):
    k = 5
    refs, probs, preds = _random_case(seed, n=150 + seed * 10, k=k, absent=absent)
    for average in ("macro", "micro", "weighted"):
        ours = F.precision_recall_f1(refs, preds, k, average=average)
        assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx(_sk_prf(refs, preds, average), abs=1e-12)
    per_class = F.precision_recall_f1(refs, preds, k, average=None)
    np.testing.assert_allclose(per_class["f1"], skm.f1_score(refs, preds, labels=range(k), average=None, zero_division=0.0))
    np.testing.assert_array_equal(F.confusion_matrix(refs, preds, k), skm.confusion_matrix(refs, preds, labels=range(k)))
    assert F.matthews_corrcoef(refs, preds, k) == pytest.approx(skm.matthews_corrcoef(refs, preds), abs=1e-12)
    assert F.log_loss(refs, probs) == pytest.approx(skm.log_loss(refs, y_proba=probs, labels=range(k)), rel=1e-12)
    assert F.accuracy(refs, preds) == pytest.approx(skm.accuracy_score(refs, preds))


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("zero_division", [0.0, 1.0])
@pytest.mark.parametrize(
    "refs, preds",
    [
        ([0, 0, 1, 1], [0, 0, 0, 0]),  # class 1 never predicted
        ([0, 0, 0, 0], [0, 1, 0, 2]),  # classes 1 and 2 predicted but absent from references
        ([2, 2, 1], [2, 2, 2]),  # one class predicted for everything
        ([2, 2, 2], [2, 2, 2]),  # a single class on both sides: MCC is 0 by convention
    ],
)
def test_metrics_zero_division_cases_match_sklearn(refs, preds, zero_division):
    for average in ("macro", "micro", "weighted"):
        ours = F.precision_recall_f1(refs, preds, 3, average=average, zero_division=zero_division)
        expected = _sk_prf(refs, preds, average, zero_division=zero_division)
        assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx(expected), average
    ours = F.precision_recall_f1(refs, preds, 3, average=None, zero_division=zero_division)
    expected = skm.precision_recall_fscore_support(refs, preds, labels=range(3), zero_division=zero_division)
    for got, want in zip((ours["precision"], ours["recall"], ours["f1"], ours["support"]), expected):
        np.testing.assert_allclose(got, want)
    assert F.matthews_corrcoef(refs, preds, 3) == pytest.approx(skm.matthews_corrcoef(refs, preds))


def test_metrics_explicit_labels_match_sklearn():
    refs, _, preds = _random_case(3, k=4, absent=(2,))
    for average in ("macro", "weighted", "micro"):
        ours = F.precision_recall_f1(refs, preds, 4, average=average, labels=[0, 1, 2])
        assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx(_sk_prf(refs, preds, average, labels=[0, 1, 2]))


def test_metrics_log_loss_clips_certain_wrong_answers_like_sklearn():
    refs = [0, 1, 1]
    probs = np.array([[1.0, 0.0], [1.0, 0.0], [0.25, 0.75]])
    assert F.log_loss(refs, probs) == pytest.approx(skm.log_loss(refs, y_proba=probs, labels=[0, 1]))
    assert np.isfinite(F.log_loss(refs, probs))


def test_metrics_log_loss_refuses_rows_that_are_not_probabilities():
    with pytest.raises(ValueError, match="sum to 1"):
        F.log_loss([0, 1], [[2.0, -1.0], [0.3, 0.3]])


@pytest.mark.parametrize("seed", range(5))
def test_metrics_ece_matches_a_plain_loop_and_sklearn_calibration_curve(seed):
    refs, probs, _ = _random_case(seed, n=400, k=4)
    ours = F.expected_calibration_error(refs, probs)
    assert ours == pytest.approx(_ece_reference(refs, probs), abs=1e-12)
    # the same number from scikit-learn's reliability curve: per non-empty bin, |fraction correct - mean conf|
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == refs).astype(int)
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
    counts, _ = np.histogram(confidence, bins=np.linspace(0, 1, 16))
    weights = counts[counts > 0] / len(refs)
    assert ours == pytest.approx(float(np.sum(weights * np.abs(prob_true - prob_pred))), abs=1e-9)


def test_metrics_ece_hand_computed_and_edges():
    # two bins used: conf 0.9 (2 examples, 1 correct) -> |0.5 - 0.9| ; conf 0.6 (2 examples, 2 correct) -> |1 - 0.6|
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    refs = [0, 1, 1, 1]
    assert F.expected_calibration_error(refs, probs) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    # a confidence exactly on a bin edge (0.6 = 9/15) belongs to the bin that ends there, like the plain loop
    edge = np.array([[0.6, 0.4], [1.0, 0.0]])
    assert F.expected_calibration_error([0, 0], edge) == pytest.approx(_ece_reference(np.array([0, 0]), edge))
    perfect = np.eye(3)
    assert F.expected_calibration_error([0, 1, 2], perfect) == 0.0


def test_metrics_reject_out_of_range_ids():
    with pytest.raises(ValueError, match="outside"):
        F.confusion_matrix([0, 5], [0, 1], 3)


@pytest.fixture(scope="module")
def evaluate_modules_cache(tmp_path_factory):
    """One modules cache for the whole module: evaluate imports copied modules as the package `evaluate_modules`,
    which Python caches by name, so it must not move between tests."""
    import evaluate.config

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path_factory.mktemp("hf-modules"))
        yield


@pytest.mark.parametrize("name", list(metrics.MODULES))
def test_metrics_local_modules_load_offline_through_evaluate(name, tmp_path, monkeypatch, evaluate_modules_cache):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    via_loader = evaluate.load(str(metrics.module_path(name)), keep_in_memory=True, cache_dir=str(tmp_path / "data"))
    direct = metrics.load(name)
    refs, probs, preds = _random_case(11, n=60, k=3)
    inputs = {"predictions": probs.tolist(), "references": refs} if name in {"log_loss", "expected_calibration_error"} else {"predictions": preds, "references": refs}
    kwargs = {"num_labels": 3} if name not in {"accuracy", "log_loss", "expected_calibration_error"} else {}
    assert via_loader.compute(**inputs, **kwargs) == direct.compute(**inputs, **kwargs)


def test_metrics_classification_metrics_reports_every_recipe_metric_like_sklearn():
    refs, probs, preds = _random_case(5, n=120, k=4, absent=(3,))
    labels = ["World", "Sports", "Business", "Sci/Tech"]
    result = SINGLE_LABEL.score(refs, probs, labels)
    assert list(result.overall) == list(METRICS)
    expected = {
        "accuracy": skm.accuracy_score(refs, preds),
        "f1_macro": skm.f1_score(refs, preds, average="macro", zero_division=0),
        "f1_micro": skm.f1_score(refs, preds, average="micro", zero_division=0),
        "f1_weighted": skm.f1_score(refs, preds, average="weighted", zero_division=0),
        "precision_macro": skm.precision_score(refs, preds, average="macro", zero_division=0),
        "recall_weighted": skm.recall_score(refs, preds, average="weighted", zero_division=0),
        "mcc": skm.matthews_corrcoef(refs, preds),
        "log_loss": skm.log_loss(refs, y_proba=probs, labels=range(4)),
        "ece": _ece_reference(refs, probs),
    }
    for name, value in expected.items():
        assert result.overall[name] == pytest.approx(value, abs=1e-12), name
    assert result.per_class["Sci/Tech"]["support"] == 0
    assert result.confusion_matrix == skm.confusion_matrix(refs, preds, labels=range(4)).tolist()
