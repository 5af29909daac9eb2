"""The seed paper's protocol: which candidate pairs go into which subset, and why others are dropped.

From the splits: in-distribution patches → train/val/test; OOD-train-only patches of the train
and val splits → ood_train/ood_val; OOD-test-only patches of the test split → ood_test. From the
cloud/snow/very-cloudy lists: in-distribution patches only. Patches mixing groups, with no
19-class label, or of an OOD group outside its split are dropped and counted by reason.

Region shift (a country hold-out): patches of held-out countries go to no subset above. Their
clear patches (any split) with in-distribution labels only form `region_shift`, those with
OOD-test labels only `region_shift_ood`; the rest, and their cloudy, snowy or very cloudy
patches, are dropped as `held_out_<group>` / `held_out_in_<list>`, so the region-shift test is
not mixed with the cloud and snow tests.
"""
from __future__ import annotations

import collections
import random

from .archive import Candidate
from .nomenclature import Partition

SUBSETS = ("train", "val", "test", "ood_train", "ood_val", "ood_test", "cloudy", "snow", "very_cloudy")
REGION_SUBSETS = ("region_shift", "region_shift_ood")
SPLITS = ("train", "val", "test")

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
_REGION_ROUTES = {"in_distribution": "region_shift", "ood_test": "region_shift_ood"}
_LABEL_GROUPS = ("in_distribution", "ood_train", "ood_test")


def assign(candidates: list[Candidate], partition: Partition, seed: int = 0, held_out=()):
    """(subset → candidates in a seeded shuffled order, dropped reason → count).

    `held_out`: countries whose patches form only the region-shift subsets (which the result then
    has, after the others). Records are shuffled once here (the official lists are sorted by
    tile and date, i.e. by place), so every shard is a fair sample and a modest shuffle buffer
    suffices downstream.
    """
    held_out = frozenset(held_out)
    subsets = {name: [] for name in SUBSETS + (REGION_SUBSETS if held_out else ())}
    dropped = collections.Counter()
    groups = {}  # label set → group: reBEN's 550k patches share a few thousand label sets
    seen = set()
    for c in candidates:
        if (c.source, c.s2_name) in seen:
            dropped[f"duplicate_in_{c.source}"] += 1
            continue
        seen.add((c.source, c.s2_name))
        group = groups.get(c.labels)
        if group is None:
            group = groups[c.labels] = partition.group_of(c.labels)
        if c.country in held_out:
            subset = _REGION_ROUTES.get(group) if c.source in SPLITS else None
            if subset is not None:
                subsets[subset].append(c)
            else:
                dropped[f"held_out_{group}" if c.source in SPLITS else f"held_out_in_{c.source}"] += 1
            continue
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
