"""What a synthetic archive holds, before any pixel: scenes, and per pair its kind, labels, split,
names and position.

Kinds: clean (in-distribution labels), ood_train, ood_test, mixed, no_label, and the cloudy,
very_cloudy and snow patches that v1 leaves out of the splits. Names reproduce the real quirks
(unpadded v1 hours, S1/S2 mission letters that differ, v2 times a few seconds off the v1 names).
"""
from __future__ import annotations

import datetime as dt
import math

import numpy as np

from ..nomenclature import CORINE_43_TO_19, DEFAULT_PARTITION
from .regions import REGION_ORDER
from .spectra import DROPPED_COVERS

# Share of `pairs` per kind; "clean" takes the rest (at least half).
KIND_FRACTIONS = {
    "ood_train": 0.08, "ood_test": 0.08, "mixed": 0.03, "no_label": 0.01,
    "cloudy": 0.08, "very_cloudy": 0.04, "snow": 0.06,
}
KINDS = ("clean",) + tuple(KIND_FRACTIONS)
# (train, val, test) shares per kind; v1 leaves cloudy / very_cloudy / snow out of the splits.
SPLIT_FRACTIONS = {
    "clean": (0.6, 0.2, 0.2), "ood_train": (0.7, 0.2, 0.1), "ood_test": (0.1, 0.1, 0.8),
    "mixed": (0.6, 0.2, 0.2), "no_label": (0.6, 0.2, 0.2),
    "cloudy": (0.5, 0.25, 0.25), "very_cloudy": (0.5, 0.25, 0.25), "snow": (0.5, 0.25, 0.25),
}
EXCLUDED_KINDS = ("cloudy", "very_cloudy", "snow")
# Classes each kind draws from (water first among the OOD-test ones), and P(1, 2, 3 labels).
# The pools follow the default partition; their order matters (the first class cycles through the
# pool), so OOD-test pools put the waters first and the mixed pool alternates OOD groups.
_IN_DIST = DEFAULT_PARTITION.in_distribution
_OOD_TEST = tuple(sorted(DEFAULT_PARTITION.ood_test, key=lambda c: (c not in (17, 18), c)))  # waters first
_MIXED = (0, 17, 14, 1, 18, 15, 16)
assert sorted(_MIXED) == sorted(DEFAULT_PARTITION.ood_train + DEFAULT_PARTITION.ood_test)
LABEL_POOLS = {
    "clean": _IN_DIST, "cloudy": _IN_DIST, "very_cloudy": _IN_DIST, "snow": _IN_DIST,
    "ood_train": DEFAULT_PARTITION.ood_train, "ood_test": _OOD_TEST, "mixed": _MIXED,
}
LABEL_COUNTS = {
    "clean": (0.3, 0.4, 0.3), "cloudy": (0.3, 0.4, 0.3), "very_cloudy": (0.3, 0.4, 0.3),
    "snow": (0.3, 0.4, 0.3), "ood_train": (0.7, 0.3), "ood_test": (0.5, 0.5), "mixed": (1.0,),
}

# Sentinel-2 tiles the scenes sit on: (MGRS tile, tile upper-left x, y, country). The first four
# are the real tiles of the example patches; patch (h, v) has ulx = x + 1200 h, uly = y - 1200 v.
TILES = (
    ("33UUP", 300000, 5400000, "Austria"),
    ("29SND", 499980, 4400040, "Portugal"),
    ("35VPK", 600000, 7000020, "Finland"),
    ("29UPU", 600000, 5900040, "Ireland"),
    ("34TEP", 499980, 5000040, "Serbia"),
    ("35ULA", 300000, 6100020, "Lithuania"),
    ("31UFS", 499980, 5700000, "Belgium"),
    ("32TLT", 300000, 5300040, "Switzerland"),
    ("31UGR", 600000, 5600040, "Luxembourg"),
    ("34TEN", 499980, 4800000, "Kosovo"),
)
PATCH_M = 1200
GRID = 90  # patch positions per tile side (a 109.8 km tile holds 91)


def plan_archive(layout: str, pairs: int, seed: int, regions: int = 0) -> tuple[list[dict], list[dict]]:
    """Scenes and one task per pair, drawn from a generator independent of the pixel ones.

    `regions` (2 or more): scene j lies in region j % regions, the country `REGION_ORDER[r]`, whose
    climate shifts its pixels (task "climate"); 0 leaves every draw as it always was.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    n_scenes = max(4, min(3 * len(TILES), pairs // 50), math.ceil(pairs / GRID**2))
    if regions:
        n_scenes = regions * math.ceil(n_scenes / regions)  # as many scenes in every region
    scenes = _plan_scenes(rng, n_scenes, regions)
    kinds = _kind_list(pairs, layout)
    kinds = [kinds[i] for i in rng.permutation(pairs)]
    splits = _split_list(rng, kinds, layout)
    positions = _positions(rng, pairs, n_scenes)
    tasks = []
    seen = dict.fromkeys(KINDS, 0)
    for i, kind in enumerate(kinds):
        scene = scenes[i % n_scenes]
        labels, extra = _labels_for(rng, kind, seen[kind])
        seen[kind] += 1
        names43 = _names43(rng, labels, extra)
        h, v = positions[i]
        tasks.append({
            "index": i, "kind": kind, "split": splits[i], "labels": list(labels),
            "labels_43": names43, "covers": [int(c) for c in labels] + extra,
            "scene": i % n_scenes, "h": int(h), "v": int(v), **_names(scene, int(h), int(v)),
            "climate": scene["climate"],
        })
    return scenes, tasks


def _kind_list(pairs: int, layout: str) -> list[str]:
    """Exact kind counts: each rare kind at least once, clean takes the rest (at least half)."""
    counts = {k: max(1, round(f * pairs)) for k, f in KIND_FRACTIONS.items()}
    if layout == "v2":  # v2 has only 19-class names, so a patch without one cannot exist
        counts.pop("no_label")
    counts["clean"] = pairs - sum(counts.values())
    assert counts["clean"] >= pairs / 2, counts
    return [k for k in KINDS if k in counts for _ in range(counts[k])]


def _split_list(rng, kinds: list[str], layout: str) -> list[str | None]:
    """Deterministic split counts per kind, shuffled within the kind."""
    splits: list[str | None] = [None] * len(kinds)
    for kind, fractions in SPLIT_FRACTIONS.items():
        members = [i for i, k in enumerate(kinds) if k == kind]
        if not members or (layout == "v1" and kind in EXCLUDED_KINDS):
            continue
        n_train = round(fractions[0] * len(members))
        n_val = min(round(fractions[1] * len(members)), len(members) - n_train)
        values = ["train"] * n_train + ["val"] * n_val + ["test"] * (len(members) - n_train - n_val)
        for i, j in zip(members, rng.permutation(len(members))):
            splits[i] = values[j]
    return splits


def _positions(rng, pairs: int, n_scenes: int) -> list[tuple[int, int]]:
    """Distinct (h, v) grid positions within each scene."""
    out: list[tuple[int, int]] = [(0, 0)] * pairs
    for s in range(n_scenes):
        members = list(range(s, pairs, n_scenes))
        cells = rng.choice(GRID * GRID, size=len(members), replace=False)
        for i, cell in zip(members, cells):
            out[i] = (int(cell % GRID), int(cell // GRID))
    return out


def _plan_scenes(rng, n: int, regions: int = 0) -> list[dict]:
    """n distinct acquisitions; about 1/4 at 09:xx so their v1 names drop the hour's zero."""
    tiles = [TILES[i] for i in rng.permutation(len(TILES))]
    if regions:  # (after the draw above, so that archives without regions stay as they were)
        by_country = {tile[3]: tile for tile in TILES}
        tiles = [by_country[country] for country in REGION_ORDER[:regions]]
    early = set(rng.permutation(n)[: max(1, round(n / 4))].tolist())
    start = dt.datetime(2017, 6, 1)
    days = rng.choice(365, size=n, replace=False)
    scenes = []
    for j in range(n):
        tile, x0, y0, country = tiles[j % len(tiles)]
        hour = 9 if j in early else int(rng.integers(10, 12))
        s2_time = start + dt.timedelta(days=int(days[j]), hours=hour, minutes=int(rng.integers(60)),
                                       seconds=int(rng.integers(60)))
        # reBEN re-derived the sensing times; for some scenes v2 ids are a few seconds off v1 names
        v2_time = s2_time - dt.timedelta(seconds=int(rng.integers(1, 9)) if j % 3 == 1 else 0)
        s1_hour = int(rng.choice([4, 5, 6, 16, 17]))
        s1_time = dt.datetime(s2_time.year, s2_time.month, s2_time.day) + dt.timedelta(
            days=int(rng.integers(-2, 3)), hours=s1_hour, minutes=int(rng.integers(60)),
            seconds=int(rng.integers(60)))
        s2_mission = str(rng.choice(["S2A", "S2B"]))
        s1_mission = str(rng.choice(["S1A", "S1B"]))
        if j == 0:  # the pairing never relies on matching mission letters
            s1_mission = "S1B" if s2_mission == "S2A" else "S1A"
        zone = int(tile[:2])
        scenes.append({
            "tile": tile, "x0": x0, "y0": y0, "country": country, "climate": country if regions else None,
            "zone": zone, "epsg": 32600 + zone,
            "s2_mission": s2_mission, "s2_time": s2_time, "v2_time": v2_time,
            "v1_stamp": _v1_stamp(s2_time), "orbit": int(rng.integers(1, 144)),
            "baseline": "N0205" if s2_time < dt.datetime(2017, 10, 23) else "N0206",
            "processed": s2_time + dt.timedelta(seconds=int(rng.integers(-60, 7200))),
            "s1_mission": s1_mission, "s1_time": s1_time,
            "abs_orbit": int(rng.integers(16000, 23000)), "datatake": int(rng.integers(0x01A000, 0x023000)),
            "product_id": int(rng.integers(0, 0x10000)),
        })
    return scenes


def _v1_stamp(t: dt.datetime) -> str:
    """v1 writes the hour without its leading zero (`20170924T93020`)."""
    return f"{t:%Y%m%d}T{t.hour}{t:%M%S}"


def _names(scene: dict, h: int, v: int) -> dict:
    """All the names and georeferencing one pair needs."""
    s2v1 = f"{scene['s2_mission']}_MSIL2A_{scene['v1_stamp']}_{h}_{v}"
    patch_id = (f"{scene['s2_mission']}_MSIL2A_{scene['v2_time']:%Y%m%dT%H%M%S}_N9999_R{scene['orbit']:03d}"
                f"_T{scene['tile']}_{h:02d}_{v:02d}")
    s1 = f"{scene['s1_mission']}_IW_GRDH_1SDV_{scene['s1_time']:%Y%m%dT%H%M%S}_{scene['tile']}_{h}_{v}"
    return {"s2v1_name": s2v1, "patch_id": patch_id, "s1_name": s1,
            "ulx": scene["x0"] + PATCH_M * h, "uly": scene["y0"] - PATCH_M * v}


def _labels_for(rng, kind: str, k: int) -> tuple[tuple[int, ...], list[str]]:
    """19-class labels of the k-th pair of a kind, plus dropped 43-class covers in its image.

    The first class cycles through the kind's pool, so even a small archive shows every class.
    """
    labels: list[int] = []
    if kind != "no_label":
        pool = LABEL_POOLS[kind]
        labels.append(pool[k % len(pool)])
        n_labels = 1 + int(rng.choice(len(LABEL_COUNTS[kind]), p=LABEL_COUNTS[kind]))
        rest = [c for c in pool if c != labels[0]]
        labels += rng.choice(rest, size=min(n_labels - 1, len(rest)), replace=False).tolist()
        if kind == "mixed":  # an OOD class from the pool next to an in-distribution one
            labels.append(int(rng.choice(LABEL_POOLS["clean"])))
    dropped = sorted(DROPPED_COVERS)
    if kind == "no_label":
        extra = rng.choice(dropped, size=int(rng.integers(1, 3)), replace=False).tolist()
    elif rng.random() < 0.15:
        extra = [str(rng.choice(dropped))]
    else:
        extra = []
    return tuple(sorted(int(c) for c in labels)), [str(e) for e in extra]


def _names43(rng, labels, extra) -> list[str]:
    """43-class names for the v1 JSON, in the official 43-class order."""
    chosen = set(extra)
    for c in labels:
        options = sorted(n for n, i in CORINE_43_TO_19.items() if i == c)
        chosen.add(str(rng.choice(options)))
    return [n for n in CORINE_43_TO_19 if n in chosen]


def public_pair(task: dict, layout: str) -> dict:
    pair = {
        "s2_name": task["s2v1_name"] if layout == "v1" else task["patch_id"],
        "s1_name": task["s1_name"],
        "labels": task["labels"],
        "kind": task["kind"],
        "split": task["split"],
    }
    if layout == "v1":
        pair["labels_43"] = task["labels_43"]
    else:
        pair["s2v1_name"] = task["s2v1_name"]
    if task["climate"]:  # archives with regions only, so that the others stay byte-identical
        pair["country"] = task["climate"]
    return pair

