"""Read and validate BigEarthNet GeoTIFFs with rasterio: the 14 of one S2/S1 pair (build), or the
bands of one modality of one patch folder (prediction on new scenes).

A record is only ever written, and a prediction only ever made, from arrays that passed every
check here; anything else raises `BadPair` with a one-line reason naming the file.
"""
from __future__ import annotations

import os

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from . import layout
from .nomenclature import BAND_DTYPE, BAND_SIZE, MODALITY_BANDS, S1_BANDS

# GDAL lists the whole folder on every open unless told not to; BigEarthNet folders are tiny,
# but the listing still dominates the cost of opening a 1 KB GeoTIFF.
GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_NUM_THREADS": "1"}


class BadPair(ValueError):
    """One pair cannot be converted; the message is the reason."""


def read_band(path: str, band: str) -> np.ndarray:
    if not os.path.exists(path):
        raise BadPair(f"missing band file: {path}")
    try:
        with rasterio.open(path) as src:
            if src.count != 1:
                raise BadPair(f"wrong band count: {path} has {src.count} bands, expected 1")
            array = src.read(1)
    except RasterioError as e:
        raise BadPair(f"truncated or corrupt GeoTIFF: {path}: {str(e).splitlines()[0]}") from None
    size = BAND_SIZE[band]
    if array.shape != (size, size):
        raise BadPair(f"wrong band shape: {path} is {array.shape[0]}x{array.shape[1]}, expected {size}x{size} for {band}")
    if array.dtype != BAND_DTYPE[band]:
        raise BadPair(f"wrong band dtype: {path} is {array.dtype}, expected {BAND_DTYPE[band]} for {band}")
    if band in S1_BANDS and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise BadPair(f"non-finite SAR values: {path} has {bad}")
    return array


def read_pair(paths: dict[str, str]) -> dict[str, np.ndarray]:
    """BAND → validated native-resolution array, for the paths of `layout.band_paths`."""
    return {band: read_band(path, band) for band, path in paths.items()}


def read_patch(patch_dir, modality: str) -> dict[str, np.ndarray]:
    """BAND → validated native-resolution array of one patch folder (v1 or v2 layout:
    `<dir>/<name>_<BAND>.tif`, `<name>` = the folder's name): "optical" gives the 12 S2 bands,
    "sar" VV and VH. BadPair names the folder or file on any problem."""
    if modality not in MODALITY_BANDS:
        raise ValueError(f"modality must be one of {', '.join(MODALITY_BANDS)}; got {modality!r}")
    patch_dir = os.fspath(patch_dir)
    if not os.path.isdir(patch_dir):
        raise BadPair(f"no patch folder: {patch_dir}")
    name = os.path.basename(os.path.normpath(patch_dir))
    paths = layout.band_paths(patch_dir, name, patch_dir, name)
    return {band: read_band(paths[band], band) for band in MODALITY_BANDS[modality]}
