"""A whole synthetic Sentinel-1/2 scene (`python -m tfrecords_builder synth-scene`), for the map.

The same pixel model as the archive (`pixels`, `spectra`, `textures`): land-cover regions of a
warped Voronoi mosaic over the scene, each mixing two endmembers of `spectra.COVERS` with the
cover's texture (drawn per 120 px tile, as a patch draws it), a cloud bank (the archive's cloud
spectrum, soft edges) over the east of the scene with its shadow beside it, multiplicative sensor
noise at each band's native size and gamma speckle on the SAR. Written in a real UTM grid:

    OUT/s2/B01.tif ... B12.tif   per-band GeoTIFFs at native 10/20/60 m (uint16 L2A reflectance x 1e4,
                                 no offset, 0 = nodata: a swath edge cuts the south-west corner)
    OUT/s1/VV.tif, VH.tif        backscatter in dB (float32, NaN = nodata) in `s1_crs` (default EPSG:4326,
                                 so a map has to warp it); its footprint leaves out the first window column
    OUT/<name>.SAFE/             with `safe=True`: the same S2 scene as a Sentinel-2 L2A product of
                                 processing baseline 04.00 (JP2 bands under GRANULE/*/IMG_DATA/R10m|R20m|R60m,
                                 DN = reflectance + 1000, MTD_MSIL2A.xml carrying BOA_ADD_OFFSET -1000)
    OUT/scene.json               the truth per 120 px window: dominant cover, cloud and shadow share,
                                 S2 nodata, whether S1 covers it; grid, CRS, seed

Everything is drawn from `seed`; the same arguments write identical pixels.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..nomenclature import BAND_SIZE, S1_BANDS, S2_BANDS
from .pixels import OPTICAL_NOISE, SPECKLE_LOOKS
from .spectra import CLOUD, COVERS, ENDMEMBERS
from . import textures
from .textures import PATCH_PX, TEXTURES

WINDOW = PATCH_PX  # 120 px at 10 m
PIXEL_M = 10
FACTOR = {b: PATCH_PX // BAND_SIZE[b] for b in S2_BANDS}  # 1, 2 or 6
ESA_BAND_ID = {b: i for i, b in enumerate(("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                                           "B09", "B10", "B11", "B12"))}
RESOLUTION_DIR = {1: "R10m", 2: "R20m", 6: "R60m"}
BOA_OFFSET = -1000  # processing baseline >= 04.00
# in-distribution covers (classes 2-13 of the seed paper's partition) the regions are drawn from
SCENE_COVERS = (2, 3, 4, 5, 8, 9, 11, 12)
S1_MARGIN_PX = 20  # a warped S1 image extends this far beyond the S2 extent (but west of its footprint)
TILE = "32TNS"
DATE = "20200615T103031"


def write_scene(out, size: int = 600, seed: int = 0, *, epsg: int = 32632, ulx: float = 497_000.0,
                uly: float = 5_300_040.0, regions: int = 6, clouds: bool = True, s1_crs: str | None = "EPSG:4326",
                s1_west_px: int | None = None, nodata_corner: bool = True, safe: bool = False) -> dict:
    """Write a `size` x `size` px (10 m) scene under `out` (see the module docstring); return scene.json.

    `size` a multiple of 120. `s1_crs` None: S1 on the S2 10 m grid itself (no warp needed);
    `s1_west_px`: S1's footprint starts that many px east of the S2 grid's west edge (default: one
    window less 200 m, so the first window column has no SAR; 0: S1 covers all). `nodata_corner`: a
    swath edge (DN 0) in the south-west corner. `safe`: also write the L2A `.SAFE`.
    """
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    if size < WINDOW or size % WINDOW:
        raise ValueError(f"size must be a positive multiple of {WINDOW} px; got {size}")
    if regions < 1:
        raise ValueError(f"regions must be >= 1; got {regions}")
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng([seed, 0x5CE2E])
    covers = [int(c) for c in rng.choice(SCENE_COVERS, size=regions, replace=regions > len(SCENE_COVERS))]
    cover_map = _regions(rng, size, regions)
    s2, s1 = _compose(rng, size, covers, cover_map)
    cloud = np.zeros((size, size), np.float32)
    shadow = np.zeros((size, size), np.float32)
    if clouds:
        cloud, shadow = _cloud_bank(rng, size)
        s2 *= 1 - 0.6 * shadow
        brightness = 0.85 + 0.3 * _smooth(rng, 8, size)
        s2 *= 1 - cloud
        s2 += np.asarray(CLOUD, np.float32)[:, None, None] * (cloud * brightness)
    nodata = _swath_edge(size) if nodata_corner else np.zeros((size, size), bool)
    bands = _optical_bands(rng, s2, nodata)
    sar = _sar_bands(rng, s1)

    crs = CRS.from_epsg(epsg)
    transform = Affine(PIXEL_M, 0, ulx, 0, -PIXEL_M, uly)
    s2_dir, s1_dir = os.path.join(out, "s2"), os.path.join(out, "s1")
    os.makedirs(s2_dir, exist_ok=True)
    os.makedirs(s1_dir, exist_ok=True)
    with rasterio.Env(GDAL_NUM_THREADS="1", GDAL_PAM_ENABLED="NO"):
        for band, array in bands.items():
            _write(os.path.join(s2_dir, f"{band}.tif"), array, crs, transform @ Affine.scale(FACTOR[band]), 0)
        west = WINDOW - 20 if s1_west_px is None else int(s1_west_px)
        s1_foot = np.zeros((size, size), bool)
        s1_foot[:, west:] = True
        for band, array in sar.items():
            array = np.where(s1_foot, array, np.nan).astype(np.float32)
            path = os.path.join(s1_dir, f"{band}.tif")
            if s1_crs is None:
                _write(path, array, crs, transform, np.nan)
            else:  # the ground goes on beyond the S2 extent: the warped image's edges stay outside it
                pad = S1_MARGIN_PX
                _write_warped(path, np.pad(array, pad, mode="edge"), crs, transform @ Affine.translation(-pad, -pad),
                              CRS.from_user_input(s1_crs))
        safe_dir = _write_safe(out, bands, crs, transform) if safe else None

    n = size // WINDOW
    per_window = lambda a: a.reshape(n, WINDOW, n, WINDOW).mean(axis=(1, 3))  # noqa: E731
    dominant = np.zeros((n, n), int)
    for r in range(n):
        for c in range(n):
            counts = np.bincount(cover_map[r * WINDOW:(r + 1) * WINDOW, c * WINDOW:(c + 1) * WINDOW].ravel(),
                                 minlength=regions)
            dominant[r, c] = covers[int(counts.argmax())]
    info = {
        "size": size, "seed": seed, "epsg": epsg, "transform": list(transform)[:6], "window": WINDOW,
        "covers": covers, "s1_crs": s1_crs, "s2": "s2", "s1": "s1",
        "safe": os.path.relpath(safe_dir, out) if safe_dir else None,
        "windows": {
            "dominant_cover": dominant.tolist(),
            "cloud": np.round(per_window(cloud), 4).tolist(),
            "shadow": np.round(per_window(shadow), 4).tolist(),
            "s2_nodata": (per_window(nodata.astype(np.float32)) > 0).tolist(),
            "s1_covered": (per_window((~s1_foot).astype(np.float32)) == 0).tolist(),
        },
    }
    with open(os.path.join(out, "scene.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    return info


# ------------------------------------------------------------------------------ the pixel model
def _smooth(rng, k: int, n: int) -> np.ndarray:
    u = textures.upsampler(k, n)
    return u @ rng.random((k, k), dtype=np.float32) @ u.T


def _regions(rng, size: int, n: int) -> np.ndarray:
    """Region index per 10 m pixel: a warped Voronoi mosaic of n seeds over the scene."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    sx, sy = rng.random(n) * size, rng.random(n) * size
    warp = 0.25 * size
    xw = xx + warp * (_smooth(rng, 5, size) - 0.5)
    yw = yy + warp * (_smooth(rng, 5, size) - 0.5)
    best = np.full((size, size), np.inf, np.float32)
    owner = np.zeros((size, size), np.intp)
    for i in range(n):
        d = (xw - sx[i]) ** 2 + (yw - sy[i]) ** 2
        owner = np.where(d < best, i, owner)
        best = np.minimum(d, best)
    return owner


def _compose(rng, size: int, covers: list, cover_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """10 m optical (12, H, W) reflectance x 1e4 and SAR (2, H, W) dB: per region the cover's two
    endmembers mixed by its texture (drawn per 120 px tile, as in a patch)."""
    n = len(covers)
    a2 = np.empty((n, 12), np.float32)
    b2 = np.empty((n, 12), np.float32)
    a1 = np.empty((n, 2), np.float32)
    b1 = np.empty((n, 2), np.float32)
    for i, cover in enumerate(covers):
        a, b, _, _ = COVERS[cover]
        gain = rng.normal(1.0, 0.05)
        a2[i], b2[i] = np.asarray(ENDMEMBERS[a][0]) * gain, np.asarray(ENDMEMBERS[b][0]) * gain
        shift = rng.normal(0.0, 0.7)
        a1[i], b1[i] = np.asarray(ENDMEMBERS[a][1]) + shift, np.asarray(ENDMEMBERS[b][1]) + shift
    frac = np.zeros((size, size), np.float32)
    tiles = size // PATCH_PX
    for ty in range(tiles):
        for tx in range(tiles):
            sl = np.s_[ty * PATCH_PX:(ty + 1) * PATCH_PX, tx * PATCH_PX:(tx + 1) * PATCH_PX]
            here = cover_map[sl]
            f = np.zeros((PATCH_PX, PATCH_PX), np.float32)
            for i in np.unique(here):
                _, _, texture, mix = COVERS[covers[i]]
                t = TEXTURES[texture](rng)
                f = np.where(here == i, np.clip(2 * mix * t, 0, 1), f)
            frac[sl] = f
    s2 = a2.T[:, cover_map] * (1 - frac) + b2.T[:, cover_map] * frac
    s1 = a1.T[:, cover_map] * (1 - frac) + b1.T[:, cover_map] * frac
    return s2.astype(np.float32), s1.astype(np.float32)


def _cloud_bank(rng, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(cloud alpha, shadow) per 10 m pixel: a thick bank over the east of the scene with a ragged
    soft western edge, its shadow cast west-south-west of it on the clear ground."""
    x = (np.arange(size, dtype=np.float32) + 0.5) / size
    ragged = 0.25 * (_smooth(rng, 6, size) - 0.5)
    alpha = np.clip((x[None, :] + ragged - 0.56) / 0.06, 0, 1) * rng.uniform(0.92, 1.0)
    dy, dx = size // 40, -size // 8
    moved = np.zeros_like(alpha)
    moved[max(dy, 0):, :size + dx] = alpha[:size - max(dy, 0), -dx:]
    shadow = moved * (1 - alpha)
    return alpha.astype(np.float32), shadow.astype(np.float32)


def _swath_edge(size: int) -> np.ndarray:
    """True where the south-west corner lies outside the swath (a diagonal edge)."""
    yy, xx = np.mgrid[0:size, 0:size]
    return xx + (size - 1 - yy) < int(1.3 * WINDOW)


def _optical_bands(rng, s2: np.ndarray, nodata: np.ndarray) -> dict:
    """Block-average to each band's native grid, sensor noise, uint16; 0 where outside the swath
    (a native pixel is nodata when any of its 10 m pixels is)."""
    out = {}
    size = s2.shape[1]
    for i, band in enumerate(S2_BANDS):
        f = FACTOR[band]
        n = size // f
        x = s2[i] if f == 1 else s2[i].reshape(n, f, n, f).mean(axis=(1, 3))
        x = x * (1 + OPTICAL_NOISE * rng.standard_normal(x.shape, dtype=np.float32))
        x = np.clip(np.rint(x), 1, 65535).astype(np.uint16)
        gone = nodata if f == 1 else nodata.reshape(n, f, n, f).any(axis=(1, 3))
        x[gone] = 0
        out[band] = x
    return out


def _sar_bands(rng, s1_db: np.ndarray) -> dict:
    speckle = rng.gamma(SPECKLE_LOOKS, 1 / SPECKLE_LOOKS, size=s1_db.shape).astype(np.float32)
    db = np.clip(s1_db + 10 * np.log10(np.maximum(speckle, 1e-5)), -50, 30).astype(np.float32)
    return {band: np.ascontiguousarray(db[i]) for i, band in enumerate(S1_BANDS)}


# ------------------------------------------------------------------------------ files
def _write(path, array, crs, transform, nodata, driver="GTiff", **options):
    import rasterio

    with rasterio.open(path, "w", driver=driver, width=array.shape[1], height=array.shape[0], count=1,
                       dtype=array.dtype, crs=crs, transform=transform, nodata=nodata, **options) as dst:
        dst.write(array, 1)


def _write_warped(path, array, crs, transform, dst_crs):
    """`array` (10 m, `crs`) reprojected (bilinear) onto a grid of about the same resolution in `dst_crs`."""
    from rasterio.transform import array_bounds
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    h, w = array.shape
    dst_transform, dw, dh = calculate_default_transform(crs, dst_crs, w, h, *array_bounds(h, w, transform))
    dst = np.full((dh, dw), np.nan, np.float32)
    reproject(array, dst, src_transform=transform, src_crs=crs, src_nodata=np.nan, dst_transform=dst_transform,
              dst_crs=dst_crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
    _write(path, dst, dst_crs, dst_transform, np.nan)


def _write_safe(out, bands: dict, crs, transform) -> str:
    """The S2 bands as an L2A product of baseline 04.00: DN = reflectance + 1000 (0 stays nodata)."""
    from affine import Affine

    name = f"S2A_MSIL2A_{DATE}_N0400_R108_T{TILE}_{DATE}.SAFE"
    safe = os.path.join(out, name)
    img = os.path.join(safe, "GRANULE", f"L2A_T{TILE}_A026244_{DATE}", "IMG_DATA")
    for band, array in bands.items():
        f = FACTOR[band]
        folder = os.path.join(img, RESOLUTION_DIR[f])
        os.makedirs(folder, exist_ok=True)
        dn = np.where(array > 0, array.astype(np.int64) - BOA_OFFSET, 0).clip(0, 65535).astype(np.uint16)
        _write(os.path.join(folder, f"T{TILE}_{DATE}_{band}_{10 * f}m.jp2"), dn, crs,
               transform @ Affine.scale(f), 0, driver="JP2OpenJPEG", QUALITY="100", REVERSIBLE="YES")
    offsets = "".join(f'\n      <BOA_ADD_OFFSET band_id="{i}">{BOA_OFFSET}</BOA_ADD_OFFSET>' for i in range(13))
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info>
    <Product_Info>
      <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
      <PROCESSING_BASELINE>04.00</PROCESSING_BASELINE>
    </Product_Info>
    <Product_Image_Characteristics>
      <QUANTIFICATION_VALUES_LIST>
        <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST>
      <BOA_ADD_OFFSET_VALUES_LIST>{offsets}
      </BOA_ADD_OFFSET_VALUES_LIST>
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-2A_User_Product>
"""
    with open(os.path.join(safe, "MTD_MSIL2A.xml"), "w", encoding="utf-8") as f:
        f.write(xml)
    return safe
