"""Class names and the 43→19 conversion against the seed authors' own label file."""
import json

import pytest

from conftest import shared_path
from tfrecords_builder.nomenclature import (CLASS_NAMES, CORINE_43_TO_19, DEFAULT_PARTITION, Partition, format_index_set,
                                         labels_from_43, parse_index_set)


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


def test_default_partition_is_the_seed_papers_and_round_trips_through_text_and_json():
    # the seed paper's partition as ../shared/bigearthnet/README.md states it
    paper = {"in_distribution": list(range(2, 14)), "ood_train": [0, 1], "ood_test": [14, 15, 16, 17, 18]}
    assert DEFAULT_PARTITION.to_json() == paper and Partition.from_json(paper) == DEFAULT_PARTITION
    assert [format_index_set(paper[k]) for k in paper] == ["2-13", "0,1", "14-18"]
    for text in ("14-16,18", "0,2,4", "3", "0-18"):
        assert format_index_set(parse_index_set(text)) == text
    assert format_index_set([5, 3, 4, 4]) == "3-5"


@pytest.mark.parametrize("bad, needle", [
    ({"in_distribution": [2, 99], "ood_train": [0, 1], "ood_test": [14]}, "class indices 0-18"),
    ({"in_distribution": [2, True], "ood_train": [0, 1], "ood_test": [14]}, "class indices 0-18"),
    ({"in_distribution": "2-13", "ood_train": [0, 1], "ood_test": [14]}, "class indices 0-18"),
    ({"in_distribution": [2, 3], "ood_train": [0, 1]}, "exactly the keys"),
    ({"in_distribution": [2], "ood_train": [0], "ood_test": [14], "extra": [5]}, "exactly the keys"),
    ({"in_distribution": [2, 3], "ood_train": [3], "ood_test": [14]}, "class 3 is in both"),
    ({"in_distribution": [], "ood_train": [0], "ood_test": [14]}, "is empty"),
    ([2, 3], "exactly the keys"),
])
def test_partition_from_json_refuses_with_the_input_echoed(bad, needle):
    with pytest.raises(ValueError) as e:
        Partition.from_json(bad)
    assert needle in str(e.value) and repr(bad) in str(e.value) and "\n" not in str(e.value)
