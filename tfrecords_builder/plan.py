"""What to build, from metadata alone: the archive (`Source`), and its subsets (`make_plan` → `Plan`).

`Source` describes an archive by its paths, one field per `build`/`plan` flag, so the CLI only
maps flags to a `Source` (and `Source.flags()` maps back). `make_plan` reads lists, JSON and
parquet — never a GeoTIFF — and routes every pair into a subset or a drop reason; `build.build`
then converts the plan. The synthetic cache and the benchmark call the same two functions.
"""
from __future__ import annotations

import dataclasses
import os

from . import archive, subsets
from .nomenclature import DEFAULT_PARTITION, Partition

# Source field → flag of `build` / `plan`, per layout.
V1_FLAGS = {"s2_root": "--s2-root", "s1_root": "--s1-root", "train": "--train", "val": "--val", "test": "--test",
            "cloudy_list": "--cloudy-list", "snow_list": "--snow-list"}
V2_FLAGS = {"root": "--root", "metadata": "--metadata", "extra_metadata": "--extra-metadata"}
BOTH_FLAGS = {"very_cloudy_list": "--very-cloudy-list"}
FLAGS = {**V1_FLAGS, **V2_FLAGS, **BOTH_FLAGS}
_V1_REQUIRED = ("s2_root", "s1_root", "train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Source:
    """A BigEarthNet-MM archive: layout "v1" (folders + JSON + list files) or "v2" (reBEN: folders +
    parquet). Paths are made absolute; a field the layout does not use must stay None."""

    layout: str
    s2_root: str | None = None
    s1_root: str | None = None
    train: str | None = None
    val: str | None = None
    test: str | None = None
    cloudy_list: str | None = None
    snow_list: str | None = None
    very_cloudy_list: str | None = None
    root: str | None = None
    metadata: str | None = None
    extra_metadata: str | None = None

    def __post_init__(self):
        for field in FLAGS:
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, os.path.abspath(os.fspath(value)))
        if self.layout == "v1":
            foreign = [V2_FLAGS[f] for f in V2_FLAGS if getattr(self, f)]
            missing = [FLAGS[f] for f in _V1_REQUIRED if not getattr(self, f)]
            if missing:
                raise ValueError(f"a v1 archive needs {' '.join(missing)}")
        elif self.layout == "v2":
            foreign = [V1_FLAGS[f] for f in V1_FLAGS if getattr(self, f)]
            if not self.metadata:
                raise ValueError("a v2 archive needs --metadata")
        else:
            raise ValueError(f"unknown layout {self.layout!r}: expected 'v1' or 'v2'")
        if foreign:
            raise ValueError(f"give either the v1 flags (--s2-root ...) or the v2 flags (--metadata ...), "
                             f"not both ({' '.join(foreign)} with a {self.layout} archive)")

    def flags(self) -> list[str]:
        """The `build`/`plan` flags that describe this archive."""
        return [x for field, flag in FLAGS.items() if getattr(self, field) for x in (flag, getattr(self, field))]

    def to_json(self) -> dict:
        """The manifest's `source`: layout and the paths given."""
        return {"layout": self.layout, **{f: getattr(self, f) for f in FLAGS if getattr(self, f)}}


@dataclasses.dataclass
class Plan:
    """What metadata alone says: subsets in record order, drops, and per-patch problems."""

    source: Source
    partition: Partition
    seed: int
    subsets: dict  # name → [Candidate]
    dropped: dict  # reason → count
    rejections: list  # [Rejection]

    def summary(self) -> dict:
        return {
            "subsets": {name: {"count": len(items)} for name, items in self.subsets.items()},
            "dropped": self.dropped,
            "rejected": reason_counts(r.reason for r in self.rejections),
        }


def reason_counts(reasons) -> dict:
    """Counts by kind of reason: every reason reads '<kind>: <details>'."""
    counts = {}
    for reason in reasons:
        kind = reason.split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def make_plan(source: Source, partition: Partition = DEFAULT_PARTITION, seed: int = 0, workers: int = 1,
              need_images: bool = True) -> Plan:
    """Read the archive's metadata and assign every pair to a subset (or a drop reason).

    `need_images`: the plan is for a build, so the v2 image folder (`--root`) must be known.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers!r}")
    if source.layout == "v2":
        if need_images and not source.root:
            raise ValueError("--root is required to build a v2 archive")
        candidates, rejections = archive.read_v2(source.root, source.metadata, source.extra_metadata,
                                                 source.very_cloudy_list)
    else:
        lists = {"train": source.train, "val": source.val, "test": source.test, "cloudy": source.cloudy_list,
                 "snow": source.snow_list, "very_cloudy": source.very_cloudy_list}
        candidates, rejections = archive.read_v1(source.s2_root, source.s1_root, lists, workers)
    assigned, dropped = subsets.assign(candidates, partition, seed)
    return Plan(source, partition, seed, assigned, dropped, rejections)
