"""Class names and the 43→19 conversion against the seed authors' own label file."""
import json

import pytest

from conftest import shared_path
from tfrecords_builder.nomenclature import CLASS_NAMES, CORINE_43_TO_19, Partition, labels_from_43, parse_index_set


def test_conversion_matches_seed_authors_label_indices():
    with open(shared_path("v1", "seed-authors", "label_indices.json")) as f:
        ref = json.load(f)
    assert list(ref["BigEarthNet-19_labels"]) == list(CLASS_NAMES)
    assert list(ref["original_labels"]) == list(CORINE_43_TO_19)
    for name, idx in ref["label_conversion1"].items():
        assert CORINE_43_TO_19[name] == (None if idx == 1000 else idx), name


def test_labels_map_by_name_and_drop():
    assert labels_from_43(["Sea and ocean", "Bare rock", "Continuous urban fabric", "Discontinuous urban fabric"]) == (0, 18)
    with pytest.raises(ValueError, match="unknown label name: 'Lava'"):
        labels_from_43(["Lava"])


def test_partition_groups_and_errors():
    p = Partition()
    assert p.group_of((2, 13)) == "in_distribution"
    assert p.group_of((0, 1)) == "ood_train"
    assert p.group_of((14, 18)) == "ood_test"
    assert p.group_of((2, 0)) == "mixed_labels"
    assert p.group_of((0, 17)) == "mixed_labels"
    assert p.group_of(()) == "no_19_class_label"
    assert parse_index_set("14-16,18") == (14, 15, 16, 18)
    with pytest.raises(ValueError, match="'2-x'"):
        parse_index_set("2-x")
    with pytest.raises(ValueError, match="class 3 is in both"):
        Partition.parse("2-13", "3", "14-18")
    custom = Partition.parse("2-12", "0,1", "14-18")
    assert custom.group_of((13,)) == "label_outside_partition"
