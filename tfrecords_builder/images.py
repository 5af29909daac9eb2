"""Read and validate the 14 GeoTIFFs of one S2/S1 pair with rasterio.

A record is only ever written from arrays that passed every check here; anything else raises
`BadPair` with a one-line reason naming the file.
"""
from __future__ import annotations

import os

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from .nomenclature import BAND_DTYPE, BAND_SIZE, S1_BANDS

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
