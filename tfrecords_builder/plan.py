"""What to build, from metadata alone: the archive (`Source`), and its subsets (`make_plan` → `Plan`).

`Source` describes an archive by its paths, one field per `build`/`plan` flag, so the CLI only
maps flags to a `Source` (and `Source.flags()` maps back). `make_plan` reads lists, JSON and
parquet — never a GeoTIFF — and routes every pair into a subset or a drop reason; `build.build`
then converts the plan. The synthetic cache and the benchmark call the same two functions.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
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


@dataclasses.dataclass(frozen=True)
class Holdout:
    """A region-shift protocol: the countries held out of every subset but `region_shift` and
    `region_shift_ood`. A v1 archive has no countries: `country_map` names reBEN parquet files
    (`s2v1_name` → `country`, e.g. metadata.parquet and the snow/cloud one) that give them."""

    countries: tuple[str, ...]
    country_map: tuple[str, ...] = ()

    def __post_init__(self):
        if isinstance(self.countries, str):
            raise ValueError(f"hold-out countries must be a list of names, got the string {self.countries!r}")
        countries = tuple(sorted({c.strip() for c in self.countries if c.strip()}))
        if not countries:
            raise ValueError("--holdout-countries needs at least one country name")
        object.__setattr__(self, "countries", countries)
        object.__setattr__(self, "country_map", tuple(os.path.abspath(os.fspath(p)) for p in self.country_map))

    @classmethod
    def parse(cls, countries: str, country_map=()) -> "Holdout":
        """From the CLI: 'Finland,Portugal' and the --country-map files."""
        return cls(tuple(countries.split(",")), tuple(country_map or ()))


@dataclasses.dataclass
class Plan:
    """What metadata alone says: subsets in record order, drops, and per-patch problems."""

    source: Source
    partition: Partition
    seed: int
    subsets: dict  # name → [Candidate]
    dropped: dict  # reason → count
    rejections: list  # [Rejection]
    holdout: Holdout | None = None

    def summary(self) -> dict:
        out = {
            "subsets": {name: {"count": len(items)} for name, items in self.subsets.items()},
            "dropped": self.dropped,
            "rejected": reason_counts(r.reason for r in self.rejections),
        }
        if self.holdout:
            out["holdout"] = self.holdout_summary()
        return out

    def holdout_summary(self) -> dict | None:
        """The hold-out and its counts (per country for the region-shift subsets), for the manifest."""
        if not self.holdout:
            return None
        by_country = lambda name: dict(sorted(collections.Counter(c.country for c in self.subsets[name]).items()))  # noqa: E731
        return {"countries": list(self.holdout.countries), "country_map": list(self.holdout.country_map) or None,
                **{name: by_country(name) for name in subsets.REGION_SUBSETS},
                "dropped": {k: v for k, v in self.dropped.items() if k.startswith("held_out_")}}


def reason_counts(reasons) -> dict:
    """Counts by kind of reason: every reason reads '<kind>: <details>'."""
    counts = {}
    for reason in reasons:
        kind = reason.split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def make_plan(source: Source, partition: Partition = DEFAULT_PARTITION, seed: int = 0, workers: int = 1,
              need_images: bool = True, holdout: Holdout | None = None) -> Plan:
    """Read the archive's metadata and assign every pair to a subset (or a drop reason).

    `need_images`: the plan is for a build, so the v2 image folder (`--root`) must be known.
    `holdout`: countries whose patches form only the region-shift subsets.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers!r}")
    if holdout and source.layout == "v2" and holdout.country_map:
        raise ValueError("--country-map is for v1 archives; v2 metadata has its own country column")
    if holdout and source.layout == "v1" and not holdout.country_map:
        raise ValueError("a v1 hold-out needs --country-map (reBEN's metadata.parquet: s2v1_name → country)")
    with _allocating():
        if source.layout == "v2":
            if need_images and not source.root:
                raise ValueError("--root is required to build a v2 archive")
            candidates, rejections = archive.read_v2(source.root, source.metadata, source.extra_metadata,
                                                     source.very_cloudy_list, countries=holdout is not None)
        else:
            lists = {"train": source.train, "val": source.val, "test": source.test, "cloudy": source.cloudy_list,
                     "snow": source.snow_list, "very_cloudy": source.very_cloudy_list}
            candidates, rejections = archive.read_v1(source.s2_root, source.s1_root, lists, workers)
            if holdout:
                candidates, unmapped = archive.with_countries(candidates, holdout.country_map)
                rejections += unmapped
        if holdout:
            present = {c.country for c in candidates}
            unknown = [c for c in holdout.countries if c not in present]
            if unknown:
                raise ValueError(f"--holdout-countries: no patch from {', '.join(map(repr, unknown))}; "
                                 f"the metadata has {', '.join(sorted(p for p in present if p))}")
        assigned, dropped = subsets.assign(candidates, partition, seed, holdout.countries if holdout else ())
    return Plan(source, partition, seed, assigned, dropped, rejections, holdout)


@contextlib.contextmanager
def _allocating():
    """No cyclic garbage collection while a plan allocates its ~1M small acyclic objects (reBEN):
    the collector would rescan them all again and again, a third of the plan's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
