"""Write a synthetic archive in exactly the real v1.0 or v2.0 (reBEN) layout, and read back what it holds.

GeoTIFF profiles, JSON key order, CRLF list files and the v2 parquet schema are the real ones.
Everything is drawn from `seed`: the archive plan from one generator (`scenes`), the pixels of pair
`i` from `np.random.default_rng([seed, i])` (`pixels`), so any number of worker processes writes
identical bytes.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import multiprocessing
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from affine import Affine
from rasterio.crs import CRS

from .. import layout as L
from ..nomenclature import CLASS_NAMES
from ..plan import Holdout, Source
from .pixels import synthesize
from .regions import check_regions
from .worlds import check_world
from .scenes import EXCLUDED_KINDS, KINDS, PATCH_M, plan_archive, public_pair

# Bump when the same arguments would give other files (pixels, lists, parquet, synth.json); cached
# builds carry it in their folder name. A new option that leaves every earlier output as it was
# (e.g. `regions` or `world`, whose default 0 writes the recorded archives of tests/test_synth.py) does
# not bump it.
# 2: industrial covers got white roofs (cloud-like spectrum).
GENERATOR_VERSION = 2

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


def write_archive(out: str, layout: str, pairs: int, seed: int, workers: int = 1, progress: bool = False,
                  regions: int = 0, world: int = 0) -> ArchiveInfo:
    """Write a synthetic archive under `out`; return (and save as out/synth.json) what it holds.

    v1 keys: s2_root, s1_root, train, val, test, cloudy_list, snow_list, very_cloudy_list;
    v2 keys: root, metadata, extra_metadata, very_cloudy_list. Both: layout, seed, kinds (counts)
    and pairs: one dict per pair with s2_name (v1 name or v2 patch_id), s1_name, labels (sorted
    19-class indices), kind, split ("train" / "val" / "test"; None for v1 cloudy and snow
    patches, which the official v1 splits leave out) and labels_43 (v1) or s2v1_name (v2).
    `regions` N >= 2 (see `regions`): the scenes lie in N countries whose climates shift the
    pixels; synth.json then also holds `regions`, each pair's `country`, and for v1 `country_map`,
    reBEN-schema parquet files beside the archive that give every v1 patch its country.
    `world` N >= 1 (see `worlds`): other class signatures, cloud model and brightness, SAR speckle
    and offsets; synth.json then holds `world` (world 0, the default, writes what it always did).
    Paths in the returned dict are absolute; synth.json stores them relative to `out` so that two
    archives written with the same arguments are byte-identical wherever they live.
    """
    _check_args(out, layout, pairs, seed, workers, regions, world)
    os.makedirs(out, exist_ok=True)
    scenes, tasks = plan_archive(layout, pairs, seed, regions)
    _write_pairs(out, layout, seed, scenes, tasks, workers, progress, int(world))
    files = _write_lists_v1(out, tasks) if layout == "v1" else _write_lists_v2(out, tasks, scenes)
    if regions:
        files["regions"] = regions
        if layout == "v1":
            files["country_map"] = _write_reben_metadata(out, tasks, scenes)
    summary = {
        "layout": layout,
        "generator": GENERATOR_VERSION,
        **files,
        "seed": seed,
        **({"world": int(world)} if world else {}),  # (absent in world 0: its synth.json stays as it was)
        "kinds": {k: sum(t["kind"] == k for t in tasks) for k in KINDS},
        "pairs": [public_pair(t, layout) for t in tasks],
    }
    with open(os.path.join(out, "synth.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    return read_archive_info(out)


_PATH_KEYS = ("s2_root", "s1_root", "train", "val", "test", "cloudy_list", "snow_list", "very_cloudy_list",
              "root", "metadata", "extra_metadata", "country_map")


class ArchiveInfo(dict):
    """synth.json with absolute paths: what `write_archive` wrote (see there); `source()` is the
    archive as the builder takes it, `holdout(countries)` a region-shift protocol on it."""

    def source(self) -> Source:
        return Source(self["layout"], **{key: self[key] for key in _PATH_KEYS if key in self and key != "country_map"})

    def holdout(self, countries) -> Holdout:
        return Holdout(tuple(countries), tuple(self.get("country_map", ())))


def read_archive_info(out: str) -> ArchiveInfo:
    """The description `write_archive` saved in out/synth.json, with absolute paths."""
    with open(os.path.join(out, "synth.json"), encoding="utf-8") as f:
        info = ArchiveInfo(json.load(f))
    root = os.path.abspath(out)
    absolute = lambda p: os.path.normpath(os.path.join(root, p))  # noqa: E731
    for key in _PATH_KEYS:
        if key in info:
            info[key] = [absolute(p) for p in info[key]] if isinstance(info[key], list) else absolute(info[key])
    return info


def _check_args(out, layout, pairs, seed, workers, regions, world=0):
    """Refuse what would give an unusable or silently mixed archive."""
    check_regions(regions)
    check_world(world)
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
# Writing the pairs (in parallel when asked)
# --------------------------------------------------------------------------------------------
def _write_pairs(out, layout, seed, scenes, tasks, workers, progress, world=0):
    jobs = [(out, layout, seed, scenes[t["scene"]], t, world) for t in tasks]
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
    out, layout, seed, scene, task, world = job
    rng = np.random.default_rng([seed, task["index"]])
    s2, s1 = synthesize(rng, task["covers"], task["kind"], task["climate"], world)
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


def _write_reben_metadata(out: str, tasks: list[dict], scenes: list[dict]) -> list[str]:
    """metadata.parquet (the clear patches) and the snow/cloud parquet, in reBEN's schema."""
    def table(rows):
        rows = sorted(rows, key=lambda t: t["patch_id"])
        return pa.table({
            "patch_id": [t["patch_id"] for t in rows],
            "labels": [sorted(CLASS_NAMES[c] for c in t["labels"]) for t in rows],
            "split": [V2_SPLIT_NAMES[t["split"]] if t["split"] else None for t in rows],
            "country": [scenes[t["scene"]]["country"] for t in rows],
            "s1_name": [t["s1_name"] for t in rows],
            "s2v1_name": [t["s2v1_name"] for t in rows],
            "contains_seasonal_snow": [t["kind"] == "snow" for t in rows],
            "contains_cloud_or_shadow": [t["kind"] in ("cloudy", "very_cloudy") for t in rows],
        }, schema=V2_SCHEMA)

    pq.write_table(table([t for t in tasks if t["kind"] not in EXCLUDED_KINDS]), os.path.join(out, L.V2_METADATA))
    pq.write_table(table([t for t in tasks if t["kind"] in EXCLUDED_KINDS]), os.path.join(out, L.V2_EXTRA_METADATA))
    return [L.V2_METADATA, L.V2_EXTRA_METADATA]


def _write_lists_v2(out: str, tasks: list[dict], scenes: list[dict]) -> dict:
    metadata, extra_metadata = _write_reben_metadata(out, tasks, scenes)
    _write_crlf(os.path.join(out, V1_FILES["very_cloudy_list"]),
                sorted(f"{t['s2v1_name']},{t['s1_name']}" for t in tasks if t["kind"] == "very_cloudy"))
    return {"root": ".", "metadata": metadata, "extra_metadata": extra_metadata,
            "very_cloudy_list": V1_FILES["very_cloudy_list"]}
