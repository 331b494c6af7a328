"""THE label rule (bertctl.labels) on its own: names, ids, missing values and the did-you-mean.

How a recipe's splits use it is in test_data.py; reading files is in test_inputs.py."""

from __future__ import annotations

from bertctl.labels import encode_labels


def test_labels_integer_named_labels_match_by_name_only():
    # labels "1".."4" (1-based ids, as in the original AG News csv): 0 is not class id 0 but unknown
    ids, found = encode_labels(["1", "4", 2, "0"], ["1", "2", "3", "4"], "data.label", "t.csv")
    assert ids[:3] == [0, 3, 1]
    assert len(found) == 1 and "'0'" in found[0].message


def test_labels_odd_label_values_do_not_crash():
    ids, found = encode_labels(["²", "1.5", True, "a"], ["a", "b"], "data.label", "t.csv")
    assert ids == [-1, -1, -1, 0]
    assert "'²'" in found[0].message and "'1.5'" in found[0].message
