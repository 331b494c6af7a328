"""THE label rule (bertctl.labels) on its own: names, ids, missing values and the did-you-mean.

How a recipe's splits use it is in test_data.py; reading files is in test_inputs.py."""

from __future__ import annotations

import pytest

from bertctl.labels import encode_labels, encode_multi_labels, encode_numbers, is_missing, suggest_label


def test_labels_integer_named_labels_match_by_name_only():
    # labels "1".."4" (1-based ids, as in the original AG News csv): 0 is not class id 0 but unknown
    ids, found = encode_labels(["1", "4", 2, "0"], ["1", "2", "3", "4"], "data.label", "t.csv")
    assert ids[:3] == [0, 3, 1]
    assert len(found) == 1 and "'0'" in found[0].message


def test_labels_odd_label_values_do_not_crash():
    ids, found = encode_labels(["²", "1.5", True, "a"], ["a", "b"], "data.label", "t.csv")
    assert ids == [-1, -1, -1, 0]
    assert "'²'" in found[0].message and "'1.5'" in found[0].message


@pytest.mark.parametrize("value", [None, float("nan"), "", "  ", "NaN", "nan", " NULL ", "null", "<NA>", "-nan"])
def test_labels_missing_values_are_no_class(value):
    assert is_missing(value)
    ids, found = encode_labels(["a", value, "b"], ["a", "b"], "data.label", "t.csv")
    assert ids == [0, -1, 1]
    assert len(found) == 1 and "1 row with an empty or NaN label in t.csv: row 2" in found[0].message


@pytest.mark.parametrize("value", ["NA", "none", "N/A", 0, "0", "nancy"])
def test_labels_values_that_only_look_missing_are_labels(value):
    # real class names in some datasets (NA = North America, 'none' of a toxicity type)
    assert not is_missing(value)


def test_labels_missing_in_multi_label_and_regression_cells():
    targets, found = encode_multi_labels([["a"], "NaN", "a,nan", []], ["a", "b"], "data.label", "t.csv", separator=",")
    assert targets == [[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]
    assert len(found) == 1 and "1 row with an empty or NaN label in t.csv: row 2" in found[0].message
    values, found = encode_numbers(["1.5", "null", "NaN", 2], "data.label", "t.csv")
    assert values[0] == 1.5 and values[3] == 2.0
    assert len(found) == 1 and "2 rows with an empty or NaN label in t.csv: row 2, row 3" in found[0].message


def test_labels_did_you_mean_needs_a_close_spelling():
    # issue 28: 'sadness' was offered 'Business'; no suggestion beats a wrong one
    agnews = ["World", "Sports", "Business", "Sci/Tech"]
    assert suggest_label("sadness", agnews) is None
    assert suggest_label("Sprots", agnews) == "Sports"
    assert suggest_label("sci/tech", agnews) == "Sci/Tech"
    assert suggest_label("wrld", agnews) == "World"
    assert suggest_label("postive", ["negative", "positive"]) == "positive"
    _, found = encode_labels(["sadness", "Buisness"], agnews, "data.validation", "v.csv", fix="fix those rows")
    assert found[0].fix == "did you mean 'Business' for 'Buisness'? fix those rows"
