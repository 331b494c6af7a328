"""bertctl.problems: each problem type decides its own scores, decisions, pooling, loss, metrics and fields."""

from __future__ import annotations

import numpy as np
import pytest

from bertctl.errors import BertctlError
from bertctl.problems import DEFAULT_THRESHOLD, MULTI_LABEL, PROBLEM_TYPES, REGRESSION, SINGLE_LABEL, problem_of, problem_type

LOGITS = np.array([[2.0, 0.0, -1.0], [-3.0, 1.0, 1.0]])


def test_problems_scores_are_softmax_sigmoid_and_the_value():
    probs = SINGLE_LABEL.scores(LOGITS)
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0]) and probs[0].argmax() == 0
    assert MULTI_LABEL.scores(LOGITS) == pytest.approx(1 / (1 + np.exp(-LOGITS)))
    assert REGRESSION.scores(np.array([[3.5], [-1.25]])).tolist() == [3.5, -1.25]


def test_problems_decisions_and_fields():
    labels = ["a", "b", "c"]
    single = SINGLE_LABEL.decide(labels, SINGLE_LABEL.scores(LOGITS)[1], top_k=2)
    assert list(single) == list(SINGLE_LABEL.fields) and single["label"] == "b"  # a tie keeps class-id order
    assert [r["label"] for r in single["top_k"]] == ["b", "c"]
    multi = MULTI_LABEL.decide(labels, np.array([0.9, 0.3, 0.6]), thresholds=[0.95, 0.2, 0.5])
    assert multi["labels"] == ["c", "b"] and list(multi) == list(MULTI_LABEL.fields)  # most likely first, each at its threshold
    assert MULTI_LABEL.decide(labels, np.array([0.5, 0.49, 0.1]))["labels"] == ["a"]  # the one default threshold: 0.5
    assert DEFAULT_THRESHOLD == 0.5
    assert REGRESSION.decide(["score"], np.float64(2.5)) == {"value": 2.5}
    assert SINGLE_LABEL.shown(single) == ("b", f"{single['score']:.6f}") and REGRESSION.shown({"value": 2.5}) == ("2.5",)


def test_problems_pool_windows_by_mean_and_by_max_for_multi_label():
    windows = np.array([[1.0, 0.0], [3.0, -2.0], [0.0, 1.0]])
    assert SINGLE_LABEL.pool(windows, [0, 0, 1], 2).tolist() == [[2.0, -1.0], [0.0, 1.0]]
    assert MULTI_LABEL.pool(windows, [0, 0, 1], 2).tolist() == [[3.0, 0.0], [0.0, 1.0]]


def test_problems_thresholds_come_from_the_saved_config():
    class Config:
        label_thresholds = {"b": 0.3}

    assert MULTI_LABEL.thresholds(Config(), ["a", "b"]) == [0.5, 0.3]
    assert SINGLE_LABEL.thresholds(Config(), ["a", "b"]) is None


def test_problems_top_k_is_for_single_label_only():
    SINGLE_LABEL.check_top_k(3, ["a", "b", "c"], "runs/x")
    with pytest.raises(BertctlError, match="between 1 and 3"):
        SINGLE_LABEL.check_top_k(4, ["a", "b", "c"], "runs/x")
    for problem in (MULTI_LABEL, REGRESSION):
        with pytest.raises(BertctlError, match=f"is a {problem.title} model"):
            problem.check_top_k(2, ["a", "b", "c"], "runs/x")


def test_problems_losses_match_torch():
    torch = pytest.importorskip("torch")
    logits = torch.tensor(LOGITS, dtype=torch.float32)
    assert SINGLE_LABEL.loss()(logits, torch.tensor([0, 2])).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).item())
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert MULTI_LABEL.loss()(logits, targets).item() == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(logits, targets).item())
    # regression trains on standardised targets: a prediction of 0 is the mean
    mse = REGRESSION.loss(target=(3.0, 2.0))(torch.tensor([[0.0], [1.0]]), torch.tensor([3.0, 3.0]))
    assert mse.item() == pytest.approx(0.5)


def test_problems_class_weights():
    assert SINGLE_LABEL.class_weights([0, 0, 0, 1], ["a", "b"]).tolist() == pytest.approx([4 / 6, 2.0])
    assert MULTI_LABEL.class_weights([[1, 0], [1, 1], [0, 0], [1, 0]], ["a", "b"]).tolist() == pytest.approx([1 / 3, 3.0])
    with pytest.raises(BertctlError, match="no classes"):
        REGRESSION.class_weights([1.0, 2.0], ["score"])


def test_problems_agreement_of_two_models():
    a = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    b = np.array([[1.5, 0.2], [0.5, 0.4], [1.0, 0.0]])
    assert SINGLE_LABEL.agreement(a, b) == pytest.approx(2 / 3)
    assert REGRESSION.agreement(np.array([[1.0], [2.0]]), np.array([[1.0005], [2.1]])) == 0.5


def test_problems_named_by_their_transformers_strings():
    assert set(PROBLEM_TYPES) == {"single_label_classification", "multi_label_classification", "regression"}
    for name, problem in PROBLEM_TYPES.items():
        assert problem_type(name) is problem and problem.name == name
        assert problem.metric_for_best in problem.metrics and set(problem.default_metrics) <= set(problem.metrics)
        assert problem.tie_break in problem.metrics
    with pytest.raises(BertctlError, match="unknown problem type 'ranking'"):
        problem_type("ranking")

    class Unset:
        problem_type = None

    one, many = Unset(), Unset()
    one.num_labels, many.num_labels = 1, 4
    assert problem_of(one) is REGRESSION and problem_of(many) is SINGLE_LABEL  # transformers' own reading of an unset type
