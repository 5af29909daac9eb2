"""A small reBEN (v2) archive written here, by this file's own code, in the layout that
../shared/bigearthnet/README.md describes — not through `layout.py` or the synthetic writer — is
built, and every record equals what was written."""
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine

from conftest import run_cli
from tfrecords_builder import iter_records, load_manifest

S2_SIZES = {"B01": 20, "B02": 120, "B03": 120, "B04": 120, "B05": 60, "B06": 60, "B07": 60, "B08": 120,
            "B8A": 60, "B09": 20, "B11": 60, "B12": 60}
NAMES19 = ["Urban fabric", "Industrial or commercial units", "Arable land", "Permanent crops", "Pastures",
           "Complex cultivation patterns",
           "Land principally occupied by agriculture, with significant areas of natural vegetation",
           "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
           "Natural grassland and sparsely vegetated areas", "Moors, heathland and sclerophyllous vegetation",
           "Transitional woodland, shrub", "Beaches, dunes, sands", "Inland wetlands", "Coastal wetlands",
           "Inland waters", "Marine waters"]

# (h, v, 19-class indices, split, snow, cloud, country) → the subset the seed paper's protocol puts
# it in, and the subset (or drop reason) when Finland is held out
PATCHES = [
    (26, 57, [2, 8], "train", False, False, "Austria", "train", "train"),
    (27, 55, [9], "train", False, False, "Austria", "train", "train"),
    (3, 4, [4, 13, 11], "train", False, False, "Austria", "train", "train"),
    (27, 56, [10], "validation", False, False, "Austria", "val", "val"),
    (28, 1, [5, 6], "test", False, False, "Finland", "test", "region_shift"),
    (28, 2, [9, 10], "train", False, False, "Finland", "train", "region_shift"),
    (29, 10, [17, 18], "test", False, False, "Finland", "ood_test", "region_shift_ood"),
    (30, 11, [0, 1], "train", False, False, "Finland", "ood_train", "held_out_ood_train"),
    (31, 12, [2, 18], "train", False, False, "Finland", None, "held_out_mixed_labels"),
    (32, 12, [2, 18], "train", False, False, "Austria", None, None),  # mixed: dropped
    (40, 40, [8, 9], "train", False, True, "Austria", "cloudy", "cloudy"),  # the snow/cloud parquet
    (41, 41, [12], "validation", True, False, "Austria", "snow", "snow"),
    (42, 41, [12], "test", True, False, "Finland", "snow", "held_out_in_snow"),
]


def _names(h, v):
    # reBEN: v2 S2 ids pad h and v to 2 digits, S1 names do not
    patch_id = f"S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_{h:02d}_{v:02d}"
    s1_name = f"S1B_IW_GRDH_1SDV_20170612T165809_33UUP_{h}_{v}"
    return patch_id, s1_name


def _tif(path, array, x, y):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    px = 1200 / array.shape[0]
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                       dtype=array.dtype, crs="EPSG:32633", transform=Affine(px, 0, x, 0, -px, y)) as dst:
        dst.write(array, 1)


def write_reben(root, columns=None, images=True):
    """Folders, GeoTIFFs (unless not `images`) and the two parquet files; returns (patch_id → written
    arrays, metadata paths)."""
    rng = np.random.default_rng(11)
    written, rows = {}, {False: [], True: []}
    for h, v, labels, split, snow, cloud, country, *_ in PATCHES:
        patch_id, s1_name = _names(h, v)
        x, y = 300000 + 1200 * h, 5400000 - 1200 * v
        tile = "_".join(patch_id.split("_")[:-2])  # patch_id minus its last two parts
        scene = "_".join(s1_name.split("_")[:-3])  # s1_name minus its last three parts
        arrays = {}
        for band, size in S2_SIZES.items():
            arrays[band] = rng.integers(0, 10000, (size, size), dtype=np.uint16)
            if images:
                _tif(os.path.join(root, "BigEarthNet-S2", tile, patch_id, f"{patch_id}_{band}.tif"), arrays[band], x, y)
        for band in ("VV", "VH"):
            arrays[band] = rng.normal(-15, 5, (120, 120)).astype(np.float32)
            if images:
                _tif(os.path.join(root, "BigEarthNet-S1", scene, s1_name, f"{s1_name}_{band}.tif"), arrays[band], x, y)
        written[patch_id] = arrays
        rows[snow or cloud].append({
            "patch_id": patch_id, "labels": sorted(NAMES19[i] for i in labels), "split": split,
            "country": country, "s1_name": s1_name, "s2v1_name": f"S2A_MSIL2A_20170613T101031_{h}_{v}",
            "contains_seasonal_snow": snow, "contains_cloud_or_shadow": cloud})
    paths = []
    for extra, name in ((False, "metadata.parquet"), (True, "metadata_for_patches_with_snow_cloud_or_shadow.parquet")):
        table = pa.Table.from_pylist(rows[extra])
        pq.write_table(table.select(columns) if columns else table, os.path.join(root, name))
        paths.append(os.path.join(root, name))
    return written, paths


def check_records(out, written, expected_subsets):
    manifest = load_manifest(out)
    seen = {}
    for subset, entry in manifest["subsets"].items():
        records = list(iter_records(out, subset))
        assert len(records) == entry["count"]
        for rec in records:
            seen[rec["s2_name"]] = subset
            patch = next(p for p in PATCHES if _names(p[0], p[1])[0] == rec["s2_name"])
            assert rec["s1_name"] == _names(patch[0], patch[1])[1]
            assert rec["labels"] == [NAMES19[i] for i in sorted(patch[2])]  # official order, not alphabetical
            for band, array in written[rec["s2_name"]].items():
                assert rec[band].dtype == array.dtype
                np.testing.assert_array_equal(rec[band], array)
    assert seen == expected_subsets
    return manifest


def test_a_reben_archive_written_here_builds(tmp_path):
    root = tmp_path / "reBEN"
    written, (metadata, extra) = write_reben(str(root))
    out = tmp_path / "out"
    run_cli("build", "--root", root, "--metadata", metadata, "--extra-metadata", extra, "--out", out, "--quiet")
    expected = {_names(p[0], p[1])[0]: p[7] for p in PATCHES if p[7]}
    manifest = check_records(out, written, expected)
    assert manifest["dropped"] == {"mixed_labels": 2}
    assert manifest["source"] == {"layout": "v2", "root": str(root), "metadata": metadata, "extra_metadata": extra}



def test_a_parquet_of_the_four_basic_columns_builds(tmp_path):
    """The schema other BigEarthNet tools write for subsets: patch_id, labels, split, s1_name."""
    root = tmp_path / "reBEN"
    written, (metadata, _) = write_reben(str(root), columns=["patch_id", "labels", "split", "s1_name"])
    out = tmp_path / "out"
    run_cli("build", "--root", root, "--metadata", metadata, "--out", out, "--quiet")
    expected = {_names(p[0], p[1])[0]: p[7] for p in PATCHES if p[7] and not (p[4] or p[5])}
    check_records(out, written, expected)


def test_holding_a_country_out(tmp_path):
    root = tmp_path / "reBEN"
    written, (metadata, extra) = write_reben(str(root))
    out = tmp_path / "out"
    run_cli("build", "--root", root, "--metadata", metadata, "--extra-metadata", extra, "--out", out, "--quiet",
            "--holdout-countries", "Finland")
    expected = {_names(p[0], p[1])[0]: p[8] for p in PATCHES if p[8] and not p[8].startswith("held_out")}
    manifest = check_records(out, written, expected)
    held = [p[8] for p in PATCHES if p[8] and p[8].startswith("held_out")]
    assert manifest["dropped"] == {"mixed_labels": 1, **{reason: held.count(reason) for reason in held}}
    assert manifest["holdout"]["countries"] == ["Finland"]
    assert manifest["holdout"]["region_shift"] == {"Finland": 2}
    assert manifest["holdout"]["region_shift_ood"] == {"Finland": 1}


ALL = ["patch_id", "labels", "split", "country", "s1_name", "s2v1_name", "contains_seasonal_snow",
       "contains_cloud_or_shadow"]


@pytest.mark.parametrize("table, column, flag, extra_flags", [
    ("main", "labels", "--metadata", []),
    ("main", "s1_name", "--metadata", []),
    ("main", "split", "--metadata", []),
    ("main", "s2v1_name", "--very-cloudy-list", ["--very-cloudy-list"]),
    ("main", "country", "--holdout-countries", ["--holdout-countries", "Finland"]),
    ("extra", "contains_seasonal_snow", "--extra-metadata", []),
    ("extra", "contains_cloud_or_shadow", "--extra-metadata", []),
    ("extra", "country", "--holdout-countries", ["--holdout-countries", "Finland"]),
])
def test_a_missing_column_is_one_line_naming_it_and_the_flag(tmp_path, table, column, flag, extra_flags):
    root = tmp_path / "reBEN"
    root.mkdir()
    _, (metadata, extra) = write_reben(str(root), images=False)
    path = metadata if table == "main" else extra
    pq.write_table(pq.read_table(path, columns=[c for c in ALL if c != column]), path)
    if "--very-cloudy-list" in extra_flags:
        handpicked = tmp_path / "handpicked.csv"
        handpicked.write_text("S2A_MSIL2A_20170613T101031_40_40,S1B_IW_GRDH_1SDV_20170612T165809_33UUP_40_40\r\n")
        extra_flags = ["--very-cloudy-list", handpicked]
    proc = run_cli("plan", "--metadata", metadata, "--extra-metadata", extra, *extra_flags, check=False)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == f"error: {path}: no column {column!r}, which {flag} needs (columns: " \
                       f"{', '.join(c for c in ALL if c != column)})"
