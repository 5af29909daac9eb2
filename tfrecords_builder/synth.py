"""A synthetic BigEarthNet-MM archive in exactly the real v1.0 or v2.0 (reBEN) layout.

The real archive is 120 GB and cannot be fetched here, so the builder, its tests and the demo run
on this one. File names, folders, GeoTIFF profiles, JSON key order and the list files reproduce
the real quirks (unpadded hours, `lly`, CRLF, v2 times a few seconds off the v1 names), and the
pixels are physically plausible mosaics of per-class spectral / backscatter signatures so that a
small network can actually learn the labels and OOD patches really look different.

Bright industrial roofs share the spectral shape of clouds, as on real Sentinel-2 scenes: this is
what lets the seed paper's optical OOD detector, trained on intensity-augmented urban/industrial
patches, flag clouds. `GENERATOR_VERSION` changes whenever the pixels do; cached builds carry it.

Everything is drawn from `seed`: the archive plan from one generator, the pixels of pair `i` from
`np.random.default_rng([seed, i])`, so any number of worker processes writes identical bytes.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import math
import multiprocessing
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from affine import Affine
from rasterio.crs import CRS

from . import layout as L
from .nomenclature import BAND_SIZE, CLASS_NAMES, CORINE_43_TO_19, S1_BANDS, S2_BANDS

# Bump when the same (layout, pairs, seed) would give different pixels or lists.
# 2: industrial covers got white roofs (cloud-like spectrum).
GENERATOR_VERSION = 2

# --------------------------------------------------------------------------------------------
# Signatures. S2: L2A reflectance x 10000 for B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12.
# S1: (VV, VH) backscatter in dB.
# --------------------------------------------------------------------------------------------
ENDMEMBERS = {
    #                  B01   B02   B03   B04   B05   B06   B07   B08   B8A   B09   B11   B12     VV     VH
    "green_crop":     ((250, 300, 620, 330, 1000, 2700, 3400, 3700, 3800, 3600, 2000, 950), (-11.0, -17.5)),
    "bare_soil":      ((900, 1100, 1400, 1700, 1900, 2100, 2300, 2400, 2500, 2400, 3000, 2400), (-12.5, -21.0)),
    "orchard_canopy": ((300, 380, 650, 450, 1100, 2400, 3000, 3250, 3350, 3200, 2200, 1200), (-10.0, -16.5)),
    "orchard_soil":   ((750, 950, 1200, 1450, 1700, 1950, 2100, 2200, 2300, 2250, 2850, 2250), (-12.0, -20.0)),
    "pasture":        ((220, 280, 640, 330, 1080, 3000, 3800, 4100, 4200, 4000, 2150, 1000), (-12.0, -19.0)),
    "dry_grass":      ((450, 600, 900, 950, 1400, 2200, 2550, 2700, 2800, 2700, 2900, 1950), (-13.0, -20.5)),
    "broadleaf":      ((180, 220, 450, 240, 750, 2500, 3200, 3450, 3550, 3350, 1600, 680), (-8.0, -14.0)),
    "conifer":        ((150, 180, 330, 190, 540, 1500, 1850, 2000, 2100, 2000, 950, 420), (-7.5, -13.5)),
    "canopy_shadow":  ((110, 130, 230, 130, 380, 1000, 1250, 1350, 1400, 1350, 650, 300), (-9.0, -15.5)),
    "shrub":          ((250, 310, 560, 420, 880, 2000, 2400, 2600, 2700, 2600, 1800, 900), (-10.0, -16.0)),
    "heather":        ((320, 400, 560, 580, 950, 1650, 1950, 2100, 2200, 2100, 1850, 1100), (-11.0, -18.0)),
    "sparse_soil":    ((800, 1000, 1250, 1350, 1600, 1900, 2100, 2250, 2350, 2300, 3000, 2450), (-13.5, -22.0)),
    "roof":           ((1300, 1400, 1500, 1600, 1700, 1800, 1850, 1900, 1950, 1900, 2100, 1800), (5.0, -7.0)),
    "industrial_roof": ((2000, 2200, 2350, 2450, 2500, 2550, 2600, 2650, 2700, 2600, 2900, 2600), (6.0, -7.5)),
    # white membrane / metal roofs of industrial halls: a cloud-like spectrum (bright and flat in
    # the VNIR, lower in the SWIR), the classic false cloud of Sentinel-2 cloud masks
    "white_roof":     ((4300, 4600, 4500, 4550, 4600, 4650, 4650, 4600, 4600, 3700, 3300, 2400), (6.5, -7.0)),
    "garden":         ((350, 450, 700, 600, 1050, 2000, 2350, 2500, 2600, 2500, 2100, 1300), (-4.0, -11.0)),
    "asphalt":        ((900, 1000, 1100, 1200, 1300, 1350, 1400, 1450, 1500, 1450, 1700, 1500), (-10.0, -18.0)),
    "sand":           ((1600, 1900, 2300, 2600, 2800, 3000, 3150, 3300, 3400, 3300, 4100, 3500), (-16.0, -24.0)),
    "wet_sand":       ((900, 1050, 1300, 1450, 1550, 1650, 1700, 1750, 1800, 1700, 1500, 1100), (-18.0, -26.0)),
    "marsh_veg":      ((250, 300, 550, 380, 800, 1700, 2000, 2150, 2200, 2100, 1200, 600), (-12.0, -19.0)),
    "salt_marsh":     ((400, 500, 700, 650, 900, 1300, 1450, 1500, 1550, 1450, 1300, 800), (-14.0, -22.0)),
    "salt_pan":       ((2500, 2800, 3000, 3100, 3100, 3100, 3100, 3100, 3100, 3000, 2400, 1800), (-17.0, -26.0)),
    "inland_water":   ((350, 420, 560, 320, 280, 200, 180, 150, 130, 100, 60, 40), (-22.0, -28.0)),
    "turbid_water":   ((450, 520, 750, 550, 600, 350, 300, 260, 220, 180, 90, 60), (-21.0, -27.5)),
    "sea_water":      ((480, 520, 380, 160, 120, 90, 80, 70, 60, 50, 30, 20), (-20.0, -29.0)),
    "sea_wave":       ((520, 560, 420, 190, 150, 110, 100, 90, 80, 70, 40, 30), (-17.0, -27.0)),
    "rock":           ((1500, 1700, 1950, 2150, 2300, 2400, 2500, 2600, 2700, 2600, 3300, 2800), (-10.0, -19.0)),
    "burnt":          ((400, 480, 600, 700, 900, 1100, 1250, 1300, 1350, 1300, 2200, 2100), (-12.0, -20.0)),
}
CLOUD = (7000, 7600, 7400, 7500, 7600, 7700, 7700, 7600, 7600, 6000, 5500, 4000)
SNOW = (8000, 8800, 8700, 8500, 8300, 8000, 7800, 7500, 7200, 6000, 600, 450)

# A land cover = (endmember a, endmember b, texture, mean fraction of b).
COVERS = {
    0: ("roof", "garden", "blocks", 0.25),                  # urban fabric
    1: ("white_roof", "asphalt", "big_blocks", 0.3),        # industrial or commercial units
    2: ("green_crop", "bare_soil", "stripes", 0.5),         # arable land
    3: ("orchard_canopy", "orchard_soil", "rows", 0.5),     # permanent crops
    4: ("pasture", "dry_grass", "smooth", 0.25),            # pastures
    5: ("green_crop", "orchard_soil", "parcels", 0.5),      # complex cultivation patterns
    6: ("pasture", "broadleaf", "mottled", 0.5),            # agriculture with natural vegetation
    7: ("dry_grass", "broadleaf", "scattered", 0.35),       # agro-forestry
    8: ("broadleaf", "canopy_shadow", "canopy", 0.3),       # broad-leaved forest
    9: ("conifer", "canopy_shadow", "canopy", 0.4),         # coniferous forest
    10: ("broadleaf", "conifer", "mottled_fine", 0.5),      # mixed forest
    11: ("dry_grass", "sparse_soil", "smooth", 0.3),        # natural grassland, sparse vegetation
    12: ("heather", "dry_grass", "mottled", 0.3),           # moors, heathland
    13: ("shrub", "dry_grass", "scattered", 0.4),           # transitional woodland, shrub
    14: ("sand", "wet_sand", "smooth", 0.35),               # beaches, dunes, sands
    15: ("marsh_veg", "inland_water", "mottled", 0.4),      # inland wetlands
    16: ("salt_marsh", "salt_pan", "mottled", 0.4),         # coastal wetlands
    17: ("inland_water", "turbid_water", "smooth", 0.3),    # inland waters
    18: ("sea_water", "sea_wave", "waves", 0.3),            # marine waters
}
# Covers of the 43-class names that the 19-class nomenclature drops.
DROPPED_COVERS = {
    "Road and rail networks and associated land": ("asphalt", "dry_grass", "stripes", 0.5),
    "Port areas": ("industrial_roof", "sea_water", "big_blocks", 0.4),
    "Airports": ("asphalt", "dry_grass", "big_blocks", 0.5),
    "Mineral extraction sites": ("rock", "sparse_soil", "smooth", 0.4),
    "Dump sites": ("sparse_soil", "asphalt", "mottled", 0.4),
    "Construction sites": ("bare_soil", "roof", "blocks", 0.3),
    "Green urban areas": ("pasture", "roof", "scattered", 0.2),
    "Sport and leisure facilities": ("pasture", "asphalt", "parcels", 0.3),
    "Bare rock": ("rock", "sparse_soil", "mottled", 0.3),
    "Burnt areas": ("burnt", "sparse_soil", "mottled", 0.3),
    "Intertidal flats": ("wet_sand", "sea_water", "mottled", 0.4),
}
# How much of a snow pack stays visible through each cover's canopy (default 0.95).
SNOW_VISIBILITY = {7: 0.8, 8: 0.65, 9: 0.6, 10: 0.65, 13: 0.8}

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
_IN_DIST = tuple(range(2, 14))
LABEL_POOLS = {
    "clean": _IN_DIST, "cloudy": _IN_DIST, "very_cloudy": _IN_DIST, "snow": _IN_DIST,
    "ood_train": (0, 1), "ood_test": (17, 18, 14, 15, 16), "mixed": (0, 17, 14, 1, 18, 15, 16),
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
PATCH_PX = 120
PATCH_M = 1200
GRID = 90  # patch positions per tile side (a 109.8 km tile holds 91)
SPECKLE_LOOKS = 4.4  # equivalent number of looks of the GRD backscatter
OPTICAL_NOISE = 0.025  # multiplicative per-pixel noise of the optical bands

# The projection string as the v1 JSON files write it (older GDAL WKT1, with lat/long axes).
_JSON_WKT = (
    'PROJCS["WGS 84 / UTM zone {zone}N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
    '298.257223563,AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY['
    '"EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],'
    'AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]],PROJECTION["Transverse_Mercator"],PARAMETER['
    '"latitude_of_origin",0],PARAMETER["central_meridian",{cm}],PARAMETER["scale_factor",0.9996],'
    'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1,AUTHORITY["EPSG",'
    '"9001"]],AXIS["Easting",EAST],AXIS["Northing",NORTH],AUTHORITY["EPSG","326{zone}"]]'
)

V1_FILES = {
    "train": "train.csv", "val": "val.csv", "test": "test.csv",
    "cloudy_list": "patches_with_cloud_and_shadow.csv",
    "snow_list": "patches_with_seasonal_snow.csv",
    "very_cloudy_list": "cloudy_handpicked_samples.csv",
}
V2_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
V2_SCHEMA = pa.schema([
    ("patch_id", pa.string()),
    ("labels", pa.list_(pa.field("element", pa.string()))),
    ("split", pa.string()),
    ("country", pa.string()),
    ("s1_name", pa.string()),
    ("s2v1_name", pa.string()),
    ("contains_seasonal_snow", pa.bool_()),
    ("contains_cloud_or_shadow", pa.bool_()),
])


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------
def write_archive(out: str, layout: str, pairs: int, seed: int, workers: int = 1, progress: bool = False) -> dict:
    """Write a synthetic archive under `out`; return (and save as out/synth.json) what it holds.

    v1 keys: s2_root, s1_root, train, val, test, cloudy_list, snow_list, very_cloudy_list;
    v2 keys: root, metadata, extra_metadata, very_cloudy_list. Both: layout, seed, kinds (counts)
    and pairs: one dict per pair with s2_name (v1 name or v2 patch_id), s1_name, labels (sorted
    19-class indices), kind, split ("train" / "val" / "test"; None for v1 cloudy and snow
    patches, which the official v1 splits leave out) and labels_43 (v1) or s2v1_name (v2).
    Paths in the returned dict are absolute; synth.json stores them relative to `out` so that two
    archives written with the same arguments are byte-identical wherever they live.
    """
    _check_args(out, layout, pairs, seed, workers)
    os.makedirs(out, exist_ok=True)
    scenes, tasks = _plan(layout, pairs, seed)
    _write_pairs(out, layout, seed, scenes, tasks, workers, progress)
    files = _write_lists_v1(out, tasks) if layout == "v1" else _write_lists_v2(out, tasks, scenes)
    summary = {
        "layout": layout,
        "generator": GENERATOR_VERSION,
        **files,
        "seed": seed,
        "kinds": {k: sum(t["kind"] == k for t in tasks) for k in KINDS},
        "pairs": [_public_pair(t, layout) for t in tasks],
    }
    with open(os.path.join(out, "synth.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    return read_archive_info(out)


_PATH_KEYS = ("s2_root", "s1_root", "train", "val", "test", "cloudy_list", "snow_list", "very_cloudy_list",
              "root", "metadata", "extra_metadata")


def read_archive_info(out: str) -> dict:
    """The description `write_archive` saved in out/synth.json, with absolute paths."""
    with open(os.path.join(out, "synth.json"), encoding="utf-8") as f:
        info = json.load(f)
    root = os.path.abspath(out)
    for key in _PATH_KEYS:
        if key in info:
            info[key] = os.path.normpath(os.path.join(root, info[key]))
    return info


_FLAGS = {"s2_root": "--s2-root", "s1_root": "--s1-root", "train": "--train", "val": "--val", "test": "--test",
          "cloudy_list": "--cloudy-list", "snow_list": "--snow-list", "root": "--root", "metadata": "--metadata",
          "extra_metadata": "--extra-metadata", "very_cloudy_list": "--very-cloudy-list"}


def builder_flags(info: dict, **override) -> list[str]:
    """`build`/`plan` flags for an archive description; override e.g. `root=None` to drop a flag."""
    values = {key: info[key] for key in _FLAGS if key in info}
    values.update(override)
    return [x for key, value in values.items() if value is not None for x in (_FLAGS[key], str(value))]


def _check_args(out, layout, pairs, seed, workers):
    """Refuse what would give an unusable or silently mixed archive."""
    if layout not in ("v1", "v2"):
        raise ValueError(f"unknown layout {layout!r}: expected 'v1' or 'v2'")
    if isinstance(pairs, bool) or not isinstance(pairs, (int, np.integer)) or pairs < 20:
        raise ValueError(f"pairs must be an integer >= 20 (every kind needs a patch), got {pairs!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"output {out!r} already exists and is not an empty directory")


# --------------------------------------------------------------------------------------------
# The plan: scenes, names, kinds, labels and splits (everything but the pixels)
# --------------------------------------------------------------------------------------------
def _plan(layout: str, pairs: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Scenes and one task per pair, drawn from a generator independent of the pixel ones."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    n_scenes = max(4, min(3 * len(TILES), pairs // 50), math.ceil(pairs / GRID**2))
    scenes = _plan_scenes(rng, n_scenes)
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


def _plan_scenes(rng, n: int) -> list[dict]:
    """n distinct acquisitions; about 1/4 at 09:xx so their v1 names drop the hour's zero."""
    tiles = [TILES[i] for i in rng.permutation(len(TILES))]
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
            "tile": tile, "x0": x0, "y0": y0, "country": country, "zone": zone, "epsg": 32600 + zone,
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


def _public_pair(task: dict, layout: str) -> dict:
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
    return pair


# --------------------------------------------------------------------------------------------
# Writing the pairs (in parallel when asked)
# --------------------------------------------------------------------------------------------
def _write_pairs(out, layout, seed, scenes, tasks, workers, progress):
    jobs = [(out, layout, seed, scenes[t["scene"]], t) for t in tasks]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), unit="pair", desc=f"synth {layout}")
    try:
        if workers == 1:
            for job in jobs:
                _write_pair(job)
                if bar:
                    bar.update()
        else:
            # spawn, not fork: callers (the demo, notebooks) may have TensorFlow threads running.
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers) as pool:
                for _ in pool.imap_unordered(_write_pair, jobs, chunksize=8):
                    if bar:
                        bar.update()
    finally:
        if bar:
            bar.close()


def _write_pair(job) -> None:
    """Synthesise and write the 12 S2 bands, VV and VH (and the v1 JSON files) of one pair."""
    out, layout, seed, scene, task = job
    rng = np.random.default_rng([seed, task["index"]])
    s2, s1 = synthesize(rng, task["covers"], task["kind"])
    if layout == "v1":
        s2_dir, s1_dir = L.v1_dirs(os.path.join(out, L.V1_S2_DIR), os.path.join(out, L.V1_S1_DIR),
                                   task["s2v1_name"], task["s1_name"])
        s2_name = task["s2v1_name"]
    else:
        s2_dir, s1_dir = L.v2_dirs(out, task["patch_id"], task["s1_name"])
        s2_name = task["patch_id"]
    os.makedirs(s2_dir, exist_ok=True)
    os.makedirs(s1_dir, exist_ok=True)
    paths = L.band_paths(s2_dir, s2_name, s1_dir, task["s1_name"])
    crs = _crs(scene["epsg"])
    with rasterio.Env():
        for band, array in {**s2, **s1}.items():
            _write_tif(paths[band], array, crs, task["ulx"], task["uly"])
    if layout == "v1":
        s2_json, s1_json = _v1_json(scene, task)
        _write_text(L.json_path(s2_dir, s2_name), s2_json)
        _write_text(L.json_path(s1_dir, task["s1_name"]), s1_json)


@functools.lru_cache(maxsize=None)
def _crs(epsg: int) -> CRS:
    return CRS.from_epsg(epsg)


def _write_tif(path: str, array: np.ndarray, crs: CRS, ulx: int, uly: int) -> None:
    """Single-band GeoTIFF with the real profile: uncompressed strips, band interleave, Area."""
    pixel = PATCH_M // array.shape[0]
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                       dtype=array.dtype, crs=crs, transform=Affine(pixel, 0, ulx, 0, -pixel, uly),
                       interleave="band") as dst:
        dst.write(array, 1)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", newline="") as f:
        f.write(text)


def _v1_json(scene: dict, task: dict) -> tuple[str, str]:
    """The S2 and S1 `_labels_metadata.json` texts, one line each, real key order and quirks."""
    ulx, uly = task["ulx"], task["uly"]
    wkt = _JSON_WKT.format(zone=scene["zone"], cm=6 * scene["zone"] - 183)
    s2 = {
        "labels": task["labels_43"],
        "coordinates": {"ulx": ulx, "uly": uly, "lrx": ulx + PATCH_M, "lry": uly - PATCH_M},
        "projection": wkt,
        "tile_source": (f"{scene['s2_mission']}_MSIL1C_{scene['v1_stamp']}_{scene['baseline']}"
                        f"_R{scene['orbit']:03d}_T{scene['tile']}_{scene['processed']:%Y%m%dT%H%M%S}.SAFE"),
        "acquisition_date": f"{scene['s2_time']:%Y-%m-%d %H:%M:%S}",
    }
    s1_start, s1_stop = scene["s1_time"], scene["s1_time"] + dt.timedelta(seconds=25)
    s1 = {
        "labels": task["labels_43"],
        "coordinates": {"ulx": ulx, "uly": uly, "lrx": ulx + PATCH_M, "lly": uly - PATCH_M},
        "projection": wkt,
        "corresponding_s2_patch": task["s2v1_name"],
        "scene_source": (f"{scene['s1_mission']}_IW_GRDH_1SDV_{s1_start:%Y%m%dT%H%M%S}_{s1_stop:%Y%m%dT%H%M%S}"
                         f"_{scene['abs_orbit']:06d}_{scene['datatake']:06X}_{scene['product_id']:04X}"),
        "acquisition_time": f"{s1_start:%Y-%m-%dT%H:%M:%S}",
    }
    return json.dumps(s2), json.dumps(s1)


# --------------------------------------------------------------------------------------------
# List and metadata files
# --------------------------------------------------------------------------------------------
def _write_crlf(path: str, lines: list[str]) -> None:
    """One entry per line, CRLF after every line (as the official csv files)."""
    with open(path, "w", newline="") as f:
        f.write("".join(line + "\r\n" for line in lines))


def _write_lists_v1(out: str, tasks: list[dict]) -> dict:
    for split in ("train", "val", "test"):
        _write_crlf(os.path.join(out, V1_FILES[split]),
                    sorted(t["s2v1_name"] for t in tasks if t["split"] == split))
    _write_crlf(os.path.join(out, V1_FILES["cloudy_list"]),
                sorted(t["s2v1_name"] for t in tasks if t["kind"] in ("cloudy", "very_cloudy")))
    _write_crlf(os.path.join(out, V1_FILES["snow_list"]),
                sorted(t["s2v1_name"] for t in tasks if t["kind"] == "snow"))
    _write_crlf(os.path.join(out, V1_FILES["very_cloudy_list"]),
                sorted(f"{t['s2v1_name']},{t['s1_name']}" for t in tasks if t["kind"] == "very_cloudy"))
    return {"s2_root": L.V1_S2_DIR, "s1_root": L.V1_S1_DIR, **V1_FILES}


def _write_lists_v2(out: str, tasks: list[dict], scenes: list[dict]) -> dict:
    def table(rows):
        rows = sorted(rows, key=lambda t: t["patch_id"])
        return pa.table({
            "patch_id": [t["patch_id"] for t in rows],
            "labels": [sorted(CLASS_NAMES[c] for c in t["labels"]) for t in rows],
            "split": [V2_SPLIT_NAMES[t["split"]] for t in rows],
            "country": [scenes[t["scene"]]["country"] for t in rows],
            "s1_name": [t["s1_name"] for t in rows],
            "s2v1_name": [t["s2v1_name"] for t in rows],
            "contains_seasonal_snow": [t["kind"] == "snow" for t in rows],
            "contains_cloud_or_shadow": [t["kind"] in ("cloudy", "very_cloudy") for t in rows],
        }, schema=V2_SCHEMA)

    pq.write_table(table([t for t in tasks if t["kind"] not in EXCLUDED_KINDS]),
                   os.path.join(out, L.V2_METADATA))
    pq.write_table(table([t for t in tasks if t["kind"] in EXCLUDED_KINDS]),
                   os.path.join(out, L.V2_EXTRA_METADATA))
    _write_crlf(os.path.join(out, V1_FILES["very_cloudy_list"]),
                sorted(f"{t['s2v1_name']},{t['s1_name']}" for t in tasks if t["kind"] == "very_cloudy"))
    return {"root": ".", "metadata": L.V2_METADATA, "extra_metadata": L.V2_EXTRA_METADATA,
            "very_cloudy_list": V1_FILES["very_cloudy_list"]}


# --------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------
_YY, _XX = np.mgrid[0:PATCH_PX, 0:PATCH_PX].astype(np.float32)
_S2_SIG = {k: np.asarray(v[0], np.float32) for k, v in ENDMEMBERS.items()}
_S1_SIG = {k: np.asarray(v[1], np.float32) for k, v in ENDMEMBERS.items()}


def synthesize(rng, covers: list, kind: str) -> tuple[dict, dict]:
    """BAND -> native-resolution array for S2 (uint16) and S1 (float32 dB) of one pair.

    `covers` holds 19-class indices and dropped 43-class names; each gets regions of the
    10 m scene. Clouds touch only the optical image, snow both; noise is added at native size.
    """
    cover_map = _segment(rng, len(covers), sum(isinstance(c, int) for c in covers))
    s2, s1 = _compose(rng, covers, cover_map)
    if kind in ("cloudy", "very_cloudy"):
        _add_clouds(rng, s2, full=(kind == "very_cloudy"))
    elif kind == "snow":
        visibility = np.asarray([SNOW_VISIBILITY.get(c, 0.95) for c in covers], np.float32)[cover_map]
        _add_snow(rng, s2, s1, visibility)
    return _optical_bands(rng, s2), _sar_bands(rng, s1)


def _segment(rng, n_covers: int, n_labelled: int, min_share: float = 0.08,
             max_unlabelled: float = 0.3) -> np.ndarray:
    """Cover index per 10 m pixel: a warped Voronoi mosaic.

    Every cover gets at least `min_share` of the patch; unlabelled (dropped 43-class) covers next
    to labelled ones stay below `max_unlabelled` so that the labels still describe the image.
    """
    if n_covers <= 1:
        return np.zeros((PATCH_PX, PATCH_PX), np.intp)
    for _ in range(30):
        owner = np.concatenate([np.full(int(rng.integers(1, 3)), c) for c in range(n_covers)])
        sx, sy = rng.random(len(owner)) * PATCH_PX, rng.random(len(owner)) * PATCH_PX
        xw = _XX + 50 * (_smooth(rng, 4) - 0.5)
        yw = _YY + 50 * (_smooth(rng, 4) - 0.5)
        dist = (xw[None] - sx[:, None, None]) ** 2 + (yw[None] - sy[:, None, None]) ** 2
        cover_map = owner[dist.argmin(0)]
        share = np.bincount(cover_map.ravel(), minlength=n_covers) / PATCH_PX**2
        unlabelled = share[n_labelled:].sum() if 0 < n_labelled < n_covers else 0.0
        if share.min() >= min_share and unlabelled <= max_unlabelled:
            break
    return cover_map


def _cover_spec(cover):
    return COVERS[cover] if isinstance(cover, int) else DROPPED_COVERS[cover]


def _compose(rng, covers: list, cover_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """10 m optical (12, H, W) reflectance and SAR (2, H, W) dB from the covers' endmembers."""
    n = len(covers)
    a2, b2 = np.empty((n, 12), np.float32), np.empty((n, 12), np.float32)
    a1, b1 = np.empty((n, 2), np.float32), np.empty((n, 2), np.float32)
    frac = np.zeros((PATCH_PX, PATCH_PX), np.float32)
    for i, cover in enumerate(covers):
        a, b, texture, mix = _cover_spec(cover)
        gain = rng.normal(1.0, 0.05)  # regions of one cover differ a little in brightness
        a2[i], b2[i] = _S2_SIG[a] * gain, _S2_SIG[b] * gain
        shift = rng.normal(0.0, 0.7)
        a1[i], b1[i] = _S1_SIG[a] + shift, _S1_SIG[b] + shift
        t = TEXTURES[texture](rng)
        frac = np.where(cover_map == i, np.clip(2 * mix * t, 0, 1), frac)
    s2 = a2.T[:, cover_map] * (1 - frac) + b2.T[:, cover_map] * frac
    s1 = a1.T[:, cover_map] * (1 - frac) + b1.T[:, cover_map] * frac
    s2 *= rng.uniform(0.92, 1.08)  # illumination / phenology of the acquisition
    return s2, s1


def _add_clouds(rng, s2: np.ndarray, full: bool) -> None:
    """Bright, flat, soft-edged clouds; partial ones cast a shadow beside them (optical only)."""
    if full:
        alpha = np.clip(0.92 + 0.2 * (_smooth(rng, 5) - 0.5), 0, 1)
    else:
        field = _smooth(rng, 5)
        threshold = np.quantile(field, 1 - rng.uniform(0.2, 0.55))
        alpha = np.clip((field - threshold) / 0.12, 0, 1) * rng.uniform(0.85, 1.0)
        dy, dx = (int(rng.integers(6, 18)) * int(rng.choice([-1, 1])) for _ in range(2))
        shadow = _shifted(alpha, dy, dx) * (1 - alpha)
        s2 *= 1 - 0.6 * shadow
    brightness = 0.85 + 0.3 * _smooth(rng, 8)
    s2 *= 1 - alpha
    s2 += np.asarray(CLOUD, np.float32)[:, None, None] * (alpha * brightness)


def _add_snow(rng, s2: np.ndarray, s1: np.ndarray, visibility: np.ndarray) -> None:
    """Snow: bright visible, dark SWIR, and wet-snow backscatter 3-6 dB lower."""
    field = _smooth(rng, 4)
    threshold = np.quantile(field, 1 - rng.uniform(0.8, 1.0))
    cover = np.clip((field - threshold) / 0.1, 0, 1)
    alpha = cover * visibility
    s2 *= 1 - alpha
    s2 += np.asarray(SNOW, np.float32)[:, None, None] * alpha
    s1 -= rng.uniform(3, 6) * cover


def _optical_bands(rng, s2: np.ndarray) -> dict:
    """Block-average to each band's native 10/20/60 m grid, add sensor noise, quantise to uint16."""
    out = {}
    for i, band in enumerate(S2_BANDS):
        size = BAND_SIZE[band]
        f = PATCH_PX // size
        x = s2[i] if f == 1 else s2[i].reshape(size, f, size, f).mean(axis=(1, 3))
        x = x * (1 + OPTICAL_NOISE * rng.standard_normal(x.shape, dtype=np.float32))
        out[band] = np.clip(np.rint(x), 0, 65535).astype(np.uint16)
    return out


def _sar_bands(rng, s1_db: np.ndarray) -> dict:
    """Multiplicative gamma speckle in linear power, back to dB, float32 within -50..+30."""
    speckle = rng.gamma(SPECKLE_LOOKS, 1 / SPECKLE_LOOKS, size=s1_db.shape).astype(np.float32)
    db = s1_db + 10 * np.log10(np.maximum(speckle, 1e-5))
    db = np.clip(db, -50, 30).astype(np.float32)
    return {band: np.ascontiguousarray(db[i]) for i, band in enumerate(S1_BANDS)}


# --------------------------------------------------------------------------------------------
# Textures: t in [0, 1] per 10 m pixel, the share of a cover's endmember b is 2 * mix * t
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _upsampler(k: int) -> np.ndarray:
    """(PATCH_PX, k) interpolation matrix from k control points; smoothstep weights, no kinks."""
    pos = (np.arange(PATCH_PX) + 0.5) / PATCH_PX * (k - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, k - 2)
    w = pos - i0
    w = (w * w * (3 - 2 * w)).astype(np.float32)
    u = np.zeros((PATCH_PX, k), np.float32)
    u[np.arange(PATCH_PX), i0] = 1 - w
    u[np.arange(PATCH_PX), i0 + 1] = w
    return u


def _smooth(rng, k: int) -> np.ndarray:
    """Smooth random field in [0, 1] with about k - 1 bumps across the patch."""
    u = _upsampler(k)
    return u @ rng.random((k, k), dtype=np.float32) @ u.T


def _shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`a` moved by (dy, dx) pixels, zero where nothing moved in."""
    out = np.zeros_like(a)
    h, w = a.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = a[max(-dy, 0):h - max(dy, 0),
                                                                   max(-dx, 0):w - max(dx, 0)]
    return out


def _sharpen(t: np.ndarray, gain: float) -> np.ndarray:
    return np.clip((t - 0.5) * gain + 0.5, 0, 1)


def _rotated(rng) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    return _XX * np.cos(angle) + _YY * np.sin(angle)


def _tex_smooth(rng):
    return 0.3 + 0.8 * (_smooth(rng, 6) - 0.5) + 0.2 * rng.random(_XX.shape, dtype=np.float32)


def _tex_stripes(rng):
    """Field strips of crop and bare soil, random orientation and width."""
    u = _rotated(rng)
    return _sharpen(0.5 + 0.5 * np.sin(2 * np.pi * u / rng.uniform(6, 14) + rng.uniform(0, 6.3)), 3)


def _tex_rows(rng):
    """Orchard / vineyard rows: a regular grid of canopy dots on soil."""
    period = rng.uniform(3.5, 6)
    u, w = _rotated(rng), _rotated(rng)
    canopy = (np.sin(2 * np.pi * u / period) > 0) & (np.sin(2 * np.pi * w / period) > -0.3)
    return np.where(canopy, 0.15, 0.85).astype(np.float32)


def _tex_parcels(rng):
    """Patchwork of small parcels, each with its own mix."""
    size = int(rng.integers(8, 16))
    n = PATCH_PX // size + 2
    blocks = np.repeat(np.repeat(rng.random((n, n), dtype=np.float32), size, 0), size, 1)
    oy, ox = rng.integers(0, size, 2)
    return blocks[oy:oy + PATCH_PX, ox:ox + PATCH_PX]


def _tex_mottled(rng):
    return _sharpen(_smooth(rng, 14), 3)


def _tex_mottled_fine(rng):
    return _sharpen(_smooth(rng, 30), 2.5)


def _tex_canopy(rng):
    """Speckled canopy: crowns and gaps at pixel scale over a gentle trend."""
    return 0.7 * rng.random(_XX.shape, dtype=np.float32) ** 2 + 0.6 * _smooth(rng, 5)


def _tex_scattered(rng):
    """Scattered trees or shrubs (20 m crowns) on an open background."""
    dots = (rng.random((PATCH_PX // 2, PATCH_PX // 2)) < rng.uniform(0.15, 0.3)).astype(np.float32)
    return np.repeat(np.repeat(dots, 2, 0), 2, 1)


def _blocks(rng, size_lo, size_hi, fill):
    size = int(rng.integers(size_lo, size_hi))
    n = PATCH_PX // size + 2
    gaps = (rng.random((n, n)) > fill).astype(np.float32)
    t = np.repeat(np.repeat(gaps, size, 0), size, 1)[:PATCH_PX, :PATCH_PX]
    street = (_XX % (3 * size) < 1.5) | (_YY % (3 * size) < 1.5)
    return np.where(street, 1.0, t).astype(np.float32)


def _tex_blocks(rng):
    """Urban blocks: buildings, gardens and streets on a grid."""
    return _blocks(rng, 3, 6, 0.6)


def _tex_big_blocks(rng):
    """Industrial halls: larger, brighter blocks with parking lots."""
    return _blocks(rng, 6, 12, 0.7)


def _tex_waves(rng):
    u = _rotated(rng)
    return 0.5 + 0.3 * np.sin(2 * np.pi * u / rng.uniform(10, 25)) + 0.2 * (_smooth(rng, 5) - 0.5)


TEXTURES = {
    "smooth": _tex_smooth, "stripes": _tex_stripes, "rows": _tex_rows, "parcels": _tex_parcels,
    "mottled": _tex_mottled, "mottled_fine": _tex_mottled_fine, "canopy": _tex_canopy,
    "scattered": _tex_scattered, "blocks": _tex_blocks, "big_blocks": _tex_big_blocks, "waves": _tex_waves,
}


def ensure_build(root: str, layout: str = "v1", pairs: int = 400, seed: int = 0, workers: int = 2,
                 extra_flags=(), progress: bool = True, log=print) -> str:
    """ROOT/archive (synthetic) built into ROOT/tfrecords, each step done once and resumed if cut short.

    Returns the build folder. The demo, the benchmarks and synthetic experiments all go through here.
    """
    import shutil

    from . import cli

    archive_dir, out = os.path.join(root, "archive"), os.path.join(root, "tfrecords")
    info_path = os.path.join(archive_dir, "synth.json")
    if os.path.exists(info_path) and read_archive_info(archive_dir).get("generator") != GENERATOR_VERSION:
        log(f"{archive_dir}: written by an older generator; writing it again")
        shutil.rmtree(archive_dir)
        shutil.rmtree(out, ignore_errors=True)
    if os.path.exists(os.path.join(out, "manifest.json")):
        return out
    if not os.path.exists(os.path.join(archive_dir, "synth.json")):
        shutil.rmtree(archive_dir, ignore_errors=True)  # an interrupted synthesis starts again
        log(f"writing a synthetic {layout} archive of {pairs} pairs to {archive_dir}")
        write_archive(archive_dir, layout, pairs, seed, workers=workers, progress=progress)
    flags = ["build", *builder_flags(read_archive_info(archive_dir)), "--out", out, "--workers", str(workers),
             *extra_flags, *([] if progress else ["--quiet"])]
    log("$ python -m tfrecords_builder " + " ".join(flags))
    if cli.main(flags) != 0:
        raise RuntimeError(f"building the synthetic archive into {out} failed (see the error above)")
    return out
