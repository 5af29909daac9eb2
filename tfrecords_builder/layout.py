"""Where BigEarthNet keeps each file, for v1.0 (folder per patch + JSON) and v2.0 (reBEN).

v1.0:  <s2_root>/<s2>/<s2>_<BAND>.tif, <s2>_labels_metadata.json
       <s1_root>/<s1>/<s1>_{VV,VH}.tif, <s1>_labels_metadata.json
v2.0:  <root>/BigEarthNet-S2/<patch_id minus last 2 parts>/<patch_id>/<patch_id>_<BAND>.tif
       <root>/BigEarthNet-S1/<s1_name minus last 3 parts>/<s1_name>/<s1_name>_{VV,VH}.tif
"""
from __future__ import annotations

import os

from .nomenclature import S1_BANDS, S2_BANDS

V2_S2_DIR = "BigEarthNet-S2"
V2_S1_DIR = "BigEarthNet-S1"
V1_S2_DIR = "BigEarthNet-v1.0"
V1_S1_DIR = "BigEarthNet-S1-v1.0"
V2_METADATA = "metadata.parquet"
V2_EXTRA_METADATA = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"


def json_path(patch_dir: str, name: str) -> str:
    return os.path.join(patch_dir, f"{name}_labels_metadata.json")


def band_paths(s2_dir: str, s2_name: str, s1_dir: str, s1_name: str) -> dict[str, str]:
    """BAND → GeoTIFF path for the 12 S2 bands and VV, VH, in `nomenclature.BANDS` order."""
    paths = {b: os.path.join(s2_dir, f"{s2_name}_{b}.tif") for b in S2_BANDS}
    paths.update({b: os.path.join(s1_dir, f"{s1_name}_{b}.tif") for b in S1_BANDS})
    return paths


def v1_dirs(s2_root: str, s1_root: str, s2_name: str, s1_name: str) -> tuple[str, str]:
    return os.path.join(s2_root, s2_name), os.path.join(s1_root, s1_name)


def v2_s2_tile(patch_id: str) -> str:
    return patch_id.rsplit("_", 2)[0]


def v2_s1_scene(s1_name: str) -> str:
    return s1_name.rsplit("_", 3)[0]


def v2_dirs(root: str, patch_id: str, s1_name: str) -> tuple[str, str]:
    # Plain concatenation: this runs for each of the 550k reBEN rows in `plan`.
    return (
        f"{root}/{V2_S2_DIR}/{v2_s2_tile(patch_id)}/{patch_id}",
        f"{root}/{V2_S1_DIR}/{v2_s1_scene(s1_name)}/{s1_name}",
    )
