"""The seed paper's protocol: which candidate pairs go into which subset, and why others are dropped.

From the splits: in-distribution patches → train/val/test; OOD-train-only patches of the train
and val splits → ood_train/ood_val; OOD-test-only patches of the test split → ood_test. From the
cloud/snow/very-cloudy lists: in-distribution patches only. Patches mixing groups, with no
19-class label, or of an OOD group outside its split are dropped and counted by reason.
"""
from __future__ import annotations

import collections
import random

from .archive import Candidate
from .nomenclature import Partition

SUBSETS = ("train", "val", "test", "ood_train", "ood_val", "ood_test", "cloudy", "snow", "very_cloudy")

# (source, label group) → subset; anything else is dropped as "<group>_in_<source>".
_ROUTES = {
    ("train", "in_distribution"): "train",
    ("val", "in_distribution"): "val",
    ("test", "in_distribution"): "test",
    ("train", "ood_train"): "ood_train",
    ("val", "ood_train"): "ood_val",
    ("test", "ood_test"): "ood_test",
    ("cloudy", "in_distribution"): "cloudy",
    ("snow", "in_distribution"): "snow",
    ("very_cloudy", "in_distribution"): "very_cloudy",
}
_LABEL_GROUPS = ("in_distribution", "ood_train", "ood_test")


def assign(candidates: list[Candidate], partition: Partition, seed: int = 0):
    """(subset → candidates in a seeded shuffled order, dropped reason → count).

    Records are shuffled once here (the official lists are sorted by tile and date, i.e. by
    place), so every shard is a fair sample and a modest shuffle buffer suffices downstream.
    """
    subsets = {name: [] for name in SUBSETS}
    dropped = collections.Counter()
    seen = set()
    for c in candidates:
        if (c.source, c.s2_name) in seen:
            dropped[f"duplicate_in_{c.source}"] += 1
            continue
        seen.add((c.source, c.s2_name))
        group = partition.group_of(c.labels)
        subset = _ROUTES.get((c.source, group))
        if subset is not None:
            subsets[subset].append(c)
        elif group in _LABEL_GROUPS:
            dropped[f"{group}_in_{c.source}"] += 1
        else:
            dropped[group] += 1
    for name, items in subsets.items():
        items.sort(key=lambda c: c.s2_name)
        random.Random(f"{seed}:{name}").shuffle(items)
    return subsets, dict(sorted(dropped.items()))
