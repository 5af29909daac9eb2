"""`python -m tf_fusion.map --model MODEL --s2 S2 --s1 S1 --out OUT_DIR`: a whole scene in, class and
reliability maps out.

The scene is cut into 120 x 120 px windows at 10 m (the patch the model was trained on), `--stride`
px apart; every band is read at its native resolution (a 20 m band's window is 60 x 60 px, a 60 m
band's 20 x 20), the S1 backscatter is reprojected on the fly onto the S2 10 m grid (rasterio
`WarpedVRT`, bilinear), and the windows go through the SavedModel's `serving_default` signature,
which resamples and normalises in its graph (`tf_fusion.export`). So each window is answered
exactly as `python -m tf_fusion.predict` answers the same patch written as BigEarthNet GeoTIFFs.

Inputs (`--s2`): a Sentinel-2 L2A `.SAFE` folder (`GRANULE/*/IMG_DATA/R10m|R20m|R60m/*_B02_10m.jp2`
...; `BOA_ADD_OFFSET` of `MTD_MSIL2A.xml` applied, as processing baseline >= 04.00 needs), a folder
of per-band files (`B02.tif` or `*_B02.tif`, `.tif`/`.tiff`/`.jp2`, native resolutions sharing one
extent) or one multi-band GeoTIFF whose band descriptions are the band names (all at 10 m: the
20/60 m bands are block-averaged to their native windows). A window holding an L2A nodata pixel (0
in every 10 m band) has no optical input. `--s1`: a folder with `VV` and `VH` GeoTIFFs (`VV.tif`,
`*_VV.tif`) in dB (`--s1-linear`: linear power), any CRS and resolution; a window not wholly inside
the S1 footprint has no SAR input. Either modality may be left out.

Output folder: `map.tif` (Cloud-Optimized GeoTIFF, one pixel per window position: one band per
class with the Eq. 3 probability, then p_optical, p_sar, entropy; NaN where no modality was
there), `labels.tif` (uint32 bitmask, bit i = class i of assets/class_names.txt; 2**32-1 = nodata),
`quicklook.png`, `summary.json`. Windows are processed in blocks of `--block` x `--block` window
positions, each committed as OUT/.blocks/NNNNNN.npz (written whole); a killed run, started again
with the same command, goes on from the last committed block and ends with the same bytes. The
final files are each written beside their name and renamed into place. OUT/.lock keeps a second
command off the folder.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import glob
import json
import math
import os
import re
import sys
import time

import numpy as np

from tfrecords_builder import BAND_SIZE, S1_BANDS, S2_BANDS

from . import atomic, cli
from .config import ConfigError
from .runs import using

WINDOW = BAND_SIZE["B02"]  # 120 px at 10 m
FACTOR = {b: WINDOW // BAND_SIZE[b] for b in S2_BANDS}  # 1 (10 m), 2 (20 m), 6 (60 m)
TEN_M = tuple(b for b in S2_BANDS if FACTOR[b] == 1)
ESA_BAND_ID = {b: i for i, b in enumerate(("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                                           "B09", "B10", "B11", "B12"))}
RES_DIR = {1: "R10m", 2: "R20m", 6: "R60m"}
EXTENSIONS = (".tif", ".tiff", ".jp2")
BLOCKS_DIR, JOB_FILE = ".blocks", "job.json"
MAP, LABELS, QUICKLOOK, SUMMARY = "map.tif", "labels.tif", "quicklook.png", "summary.json"
LABEL_NODATA = np.uint32(2**32 - 1)
OOD_THRESHOLD = 0.5
WARP_TOLERANCE = 0.01  # px of the S1 image: the warper's approximate transform stays well below a pixel
GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_NUM_THREADS": "1", "GDAL_PAM_ENABLED": "NO"}
FORMAT = 1  # bump when the same command would write other bytes (blocks of another format are not reused)


class MapError(ConfigError):
    """The scene, the model or the output folder cannot be used; one line saying why."""


class BadBlock(RuntimeError):
    """One block could not be read; the message names the block and the file."""


# ------------------------------------------------------------------------------ the S2 input
@dataclasses.dataclass
class BandFile:
    path: str
    index: int = 1  # band index in the file (multi-band GeoTIFF)
    factor: int = 1  # native pixel size / 10 m of the data read (1 for every band of a multi-band file)
    offset: float = 0.0  # added to the DN (BOA_ADD_OFFSET)


@dataclasses.dataclass
class S2Input:
    path: str
    kind: str  # "safe", "folder" or "multiband"
    bands: dict  # band → BandFile
    crs: object
    transform: object  # of the 10 m grid
    width: int
    height: int
    baseline: str | None = None

    def describe(self) -> dict:
        return {"path": os.path.abspath(self.path), "kind": self.kind, "processing_baseline": self.baseline,
                "boa_add_offset": sorted({f.offset for f in self.bands.values()})}


def _band_of(filename: str) -> str | None:
    """The band a file is named by: `B02.tif`, `X_B02.tif`, ESA's `T32TNS_..._B02_10m.jp2`."""
    stem, ext = os.path.splitext(os.path.basename(filename))
    if ext.lower() not in EXTENSIONS:
        return None
    stem = re.sub(r"_(10|20|60)m$", "", stem)
    for band in S2_BANDS + S1_BANDS:
        if stem.upper() == band or stem.upper().endswith("_" + band):
            return band
    return None


def boa_offsets(mtd_path: str) -> tuple[str | None, dict]:
    """(processing baseline, band → BOA_ADD_OFFSET) from MTD_MSIL2A.xml (no offsets: older baselines)."""
    try:
        with open(mtd_path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise MapError(f"{mtd_path}: cannot read ({e.strerror})") from None
    baseline = re.search(r"<PROCESSING_BASELINE>\s*([\d.]+)\s*<", text)
    by_id = {int(i): float(v) for i, v in re.findall(r'<BOA_ADD_OFFSET\s+band_id="(\d+)"\s*>\s*(-?[\d.]+)\s*<', text)}
    offsets = {b: by_id.get(ESA_BAND_ID[b], 0.0) for b in S2_BANDS}
    return (baseline.group(1) if baseline else None), offsets


def find_s2(path) -> S2Input:
    """The S2 input at `path` (`.SAFE`, band folder or multi-band GeoTIFF), its grid checked."""
    import rasterio

    path = os.fspath(path)
    if not os.path.exists(path):
        raise MapError(f"--s2 {path}: no such file or folder")
    baseline, offsets = None, {b: 0.0 for b in S2_BANDS}
    if os.path.isfile(path):
        kind, bands = "multiband", _multiband(path)
    elif os.path.exists(os.path.join(path, "MTD_MSIL2A.xml")) or path.rstrip(os.sep).upper().endswith(".SAFE"):
        kind = "safe"
        mtd = os.path.join(path, "MTD_MSIL2A.xml")
        if os.path.exists(mtd):
            baseline, offsets = boa_offsets(mtd)
        bands = {}
        for band in S2_BANDS:
            f = FACTOR[band]
            hits = sorted(glob.glob(os.path.join(path, "GRANULE", "*", "IMG_DATA", RES_DIR[f], f"*_{band}_{10 * f}m.jp2")))
            if hits:
                bands[band] = BandFile(hits[0], factor=f)
        _require(bands, path, "GRANULE/*/IMG_DATA/{R10m,R20m,R60m}/*_BAND_{10,20,60}m.jp2")
    else:
        kind = "folder"
        bands = {}
        for name in sorted(os.listdir(path)):
            band = _band_of(name)
            if band in S2_BANDS and band not in bands:
                bands[band] = BandFile(os.path.join(path, name), factor=FACTOR[band])
        _require(bands, path, "BAND.tif or *_BAND.tif")
    for band, bf in bands.items():
        bf.offset = offsets[band]
    ref = bands["B02"]
    try:
        with rasterio.Env(**GDAL_ENV), rasterio.open(ref.path) as src:
            crs, transform, width, height = src.crs, src.transform, src.width, src.height
        if kind != "multiband":
            for band, bf in bands.items():
                with rasterio.Env(**GDAL_ENV), rasterio.open(bf.path) as src:
                    want = (width // bf.factor, height // bf.factor)
                    origin = (src.transform.c, src.transform.f)
                    if (src.width, src.height) != want or not np.allclose(origin, (transform.c, transform.f)) \
                            or not math.isclose(src.transform.a, transform.a * bf.factor) or src.crs != crs:
                        raise MapError(f"--s2 {bf.path}: {band} is {src.width}x{src.height} px at "
                                       f"{src.transform.a:g} m from ({src.transform.c:g}, {src.transform.f:g}); expected "
                                       f"{want[0]}x{want[1]} px at {transform.a * bf.factor:g} m on B02's extent")
    except rasterio.errors.RasterioError as e:
        raise MapError(f"--s2 {path}: cannot open ({str(e).splitlines()[0]})") from None
    if crs is None:
        raise MapError(f"--s2 {ref.path}: no CRS; a map needs a georeferenced scene")
    if not math.isclose(transform.a, 10, rel_tol=1e-3) or not math.isclose(-transform.e, 10, rel_tol=1e-3):
        raise MapError(f"--s2 {ref.path}: B02 has {transform.a:g} x {-transform.e:g} m pixels; expected the 10 m grid")
    return S2Input(path, kind, bands, crs, transform, width, height, baseline)


def _require(bands: dict, path: str, pattern: str) -> None:
    missing = [b for b in S2_BANDS if b not in bands]
    if missing:
        raise MapError(f"--s2 {path}: missing band {', '.join(missing)} (looked for {pattern})")


def _multiband(path: str) -> dict:
    import rasterio

    try:
        with rasterio.Env(**GDAL_ENV), rasterio.open(path) as src:
            names = [(d or "").strip().upper() for d in src.descriptions]
    except rasterio.errors.RasterioError as e:
        raise MapError(f"--s2 {path}: cannot open ({str(e).splitlines()[0]})") from None
    bands = {b: BandFile(path, index=names.index(b) + 1, factor=1) for b in S2_BANDS if b in names}
    _require(bands, path, "band descriptions naming the bands")
    return bands


def find_s1(path) -> dict:
    """VV/VH → file path of an S1 folder."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise MapError(f"--s1 {path}: not a folder (expected VV.tif and VH.tif in it)")
    found = {}
    for name in sorted(os.listdir(path)):
        band = _band_of(name)
        if band in S1_BANDS and band not in found:
            found[band] = os.path.join(path, name)
    missing = [b for b in S1_BANDS if b not in found]
    if missing:
        raise MapError(f"--s1 {path}: missing band {', '.join(missing)} (looked for BAND.tif or *_BAND.tif)")
    return found


# ------------------------------------------------------------------------------ the window grid
@dataclasses.dataclass
class Grid:
    """The 10 m pixel grid of the scene and the window positions on it."""
    crs: object
    transform: object  # 10 m
    width: int
    height: int
    stride: int
    col0: int = 0  # first window's pixel offset (a multiple of 6: 60 m bands stay on their grid)
    row0: int = 0
    cols: int = 0  # window positions
    rows: int = 0

    def window_transform(self):
        """The map's transform: one pixel per window position, centred on the window's centre."""
        from affine import Affine

        half = (WINDOW - self.stride) / 2
        return self.transform @ Affine.translation(self.col0 + half, self.row0 + half) @ Affine.scale(self.stride)

    def describe(self) -> dict:
        return {"crs": self.crs.to_string(), "transform": list(self.transform)[:6], "width": self.width,
                "height": self.height, "stride": self.stride, "col0": self.col0, "row0": self.row0,
                "cols": self.cols, "rows": self.rows}


def make_grid(crs, transform, width: int, height: int, stride: int, bounds=None, bounds_crs=None) -> Grid:
    if stride < 6 or stride % 6:
        raise MapError(f"--stride must be a positive multiple of 6 px (60 m bands stay on their grid); got {stride}")
    if width < WINDOW or height < WINDOW:
        raise MapError(f"the scene is {width}x{height} px; a window needs {WINDOW}x{WINDOW}")
    cols, rows = (width - WINDOW) // stride + 1, (height - WINDOW) // stride + 1
    grid = Grid(crs, transform, width, height, stride, 0, 0, cols, rows)
    if bounds is None:
        return grid
    from rasterio.warp import transform_bounds

    try:
        minx, miny, maxx, maxy = transform_bounds(bounds_crs or crs, crs, *bounds) if bounds_crs else bounds
    except Exception as e:  # noqa: BLE001 — rasterio raises several kinds for a CRS it cannot use
        raise MapError(f"--bounds-crs {bounds_crs}: cannot transform the bounds to {crs.to_string()} ({e})") from None
    inv = ~transform
    (c_a, r_a), (c_b, r_b) = inv @ (minx, maxy), inv @ (maxx, miny)
    px0, px1, py0, py1 = min(c_a, c_b), max(c_a, c_b), min(r_a, r_b), max(r_a, r_b)
    # window positions whose 120 px window intersects the bounds
    ix = [i for i in range(cols) if i * stride < px1 and i * stride + WINDOW > px0]
    iy = [j for j in range(rows) if j * stride < py1 and j * stride + WINDOW > py0]
    if not ix or not iy:
        raise MapError(f"--bounds {','.join(f'{b:g}' for b in bounds)} do not overlap the scene's windows")
    return Grid(crs, transform, width, height, stride, ix[0] * stride, iy[0] * stride, len(ix), len(iy))


def parse_bounds(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or values[0] >= values[2] or values[1] >= values[3]:
        raise MapError(f"--bounds must be MINX,MINY,MAXX,MAXY with MINX < MAXX and MINY < MAXY; got {text!r}")
    return values


# ------------------------------------------------------------------------------ reading a block
class Scene:
    """The open inputs of one scene on one grid: reads the windows of a block."""

    def __init__(self, s2: S2Input | None, s1: dict | None, grid: Grid, s1_linear: bool = False):
        import rasterio

        self.s2, self.s1_paths, self.grid, self.s1_linear = s2, s1, grid, s1_linear
        self.env = rasterio.Env(**GDAL_ENV)
        self.env.__enter__()
        self.files, self.vrts = {}, {}
        try:
            if s2:
                for bf in s2.bands.values():
                    if bf.path not in self.files:
                        self.files[bf.path] = rasterio.open(bf.path)
            if s1:
                self._open_s1()
        except BaseException:
            self.close()
            raise

    def _open_s1(self) -> None:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT
        from rasterio.warp import transform_bounds

        g = self.grid
        for band, path in self.s1_paths.items():
            try:
                src = rasterio.open(path)
            except rasterio.errors.RasterioError as e:
                raise MapError(f"--s1 {path}: cannot open ({str(e).splitlines()[0]})") from None
            self.files[path] = src
            if src.crs is None:
                raise MapError(f"--s1 {path}: no CRS; cannot reproject it onto the S2 grid")
            try:
                left, bottom, right, top = transform_bounds(src.crs, g.crs, *src.bounds)
            except Exception as e:  # noqa: BLE001
                raise MapError(f"--s1 {path}: cannot reproject {src.crs.to_string()} onto {g.crs.to_string()} "
                               f"({str(e).splitlines()[0]})") from None
            if not all(map(math.isfinite, (left, bottom, right, top))):
                raise MapError(f"--s1 {path}: cannot reproject {src.crs.to_string()} onto {g.crs.to_string()} "
                               f"(bounds not finite there)")
            g_left, g_top = g.transform @ (0, 0)
            g_right, g_bottom = g.transform @ (g.width, g.height)
            if left >= g_right or right <= g_left or bottom >= g_top or top <= g_bottom:
                raise MapError(f"--s1 {path}: does not overlap the S2 grid (S1 {left:.0f},{bottom:.0f},{right:.0f},"
                               f"{top:.0f} vs S2 {g_left:.0f},{g_bottom:.0f},{g_right:.0f},{g_top:.0f} in "
                               f"{g.crs.to_string()})")
            src_nodata = src.nodata if src.nodata is not None else (np.nan if src.dtypes[0].startswith("float") else None)
            try:
                self.vrts[band] = WarpedVRT(src, crs=g.crs, transform=g.transform, width=g.width, height=g.height,
                                            resampling=Resampling.bilinear, src_nodata=src_nodata, nodata=np.nan,
                                            dtype="float32", tolerance=WARP_TOLERANCE)
            except Exception as e:  # noqa: BLE001
                raise MapError(f"--s1 {path}: cannot reproject {src.crs.to_string()} onto {g.crs.to_string()} "
                               f"({str(e).splitlines()[0]})") from None

    def close(self) -> None:
        for vrt in self.vrts.values():
            vrt.close()
        for src in self.files.values():
            src.close()
        self.vrts, self.files = {}, {}
        import rasterio

        with contextlib.suppress(rasterio.errors.EnvError):  # closed from another thread (a Beam worker's
            self.env.__exit__(None, None, None)               # teardown): that thread has no environment

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read_block(self, positions: list[tuple[int, int]]) -> dict:
        """Model inputs (batch first, every window position of `positions` = (row, col)) and the
        two availability flags; raises BadBlock naming the file on a read error."""
        from rasterio.windows import Window

        g = self.grid
        rows = [r for r, _ in positions]
        cols = [c for _, c in positions]
        y0, x0 = g.row0 + min(rows) * g.stride, g.col0 + min(cols) * g.stride
        y1, x1 = g.row0 + max(rows) * g.stride + WINDOW, g.col0 + max(cols) * g.stride + WINDOW
        n = len(positions)
        offs = [((r - min(rows)) * g.stride, (c - min(cols)) * g.stride) for r, c in positions]
        out = {}
        optical = np.zeros(n, np.float32)
        sar = np.zeros(n, np.float32)
        if self.s2:
            raw = {}
            for band, bf in self.s2.bands.items():
                f = FACTOR[band] // bf.factor  # block averaging still to do (multi-band files)
                d = bf.factor
                try:
                    a = self.files[bf.path].read(bf.index, window=Window(x0 // d, y0 // d, (x1 - x0) // d, (y1 - y0) // d))
                except Exception as e:  # noqa: BLE001 — RasterioIOError, CPLE_* errors of the driver
                    raise BadBlock(f"{band} {bf.path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
                if f > 1:
                    h, w = a.shape
                    a = a.astype(np.float64).reshape(h // f, f, w // f, f).mean(axis=(1, 3))
                raw[band] = a
            nodata = np.all([raw[b] == 0 for b in TEN_M], axis=0)
            for band, bf in self.s2.bands.items():
                size, step = BAND_SIZE[band], FACTOR[band]
                a = raw[band].astype(np.float32)
                if bf.offset:
                    a = np.maximum(a + np.float32(bf.offset), 0)
                out[band] = np.stack([a[oy // step:oy // step + size, ox // step:ox // step + size] for oy, ox in offs])
            optical = np.asarray([not nodata[oy:oy + WINDOW, ox:ox + WINDOW].any() for oy, ox in offs], np.float32)
        else:
            out.update({b: np.zeros((n, BAND_SIZE[b], BAND_SIZE[b]), np.float32) for b in S2_BANDS})
        if self.vrts:
            for band, vrt in self.vrts.items():
                try:
                    a = vrt.read(1, window=Window(x0, y0, x1 - x0, y1 - y0))
                except Exception as e:  # noqa: BLE001
                    raise BadBlock(f"{band} {self.s1_paths[band]}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
                if self.s1_linear:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        a = np.where(a > 0, 10 * np.log10(np.maximum(a, 1e-5)), np.where(np.isfinite(a), -50, np.nan))
                out[band] = np.stack([a[oy:oy + WINDOW, ox:ox + WINDOW] for oy, ox in offs]).astype(np.float32)
            sar = np.asarray([np.isfinite(out["VV"][i]).all() and np.isfinite(out["VH"][i]).all() for i in range(n)],
                             np.float32)
            for band in S1_BANDS:  # the flag says missing; the values only need to be finite
                out[band][sar == 0] = 0
        else:
            out.update({b: np.zeros((n, WINDOW, WINDOW), np.float32) for b in S1_BANDS})
        for band in S2_BANDS:
            out[band][optical == 0] = 0
        out["optical_available"], out["sar_available"] = optical, sar
        return out


# ------------------------------------------------------------------------------ the model
class MapModel:
    """The exported SavedModel's `serving_default` (raw float32 bands), class names, its folder."""

    def __init__(self, model_dir):
        from .predict import Model, PredictError, resolve_model_dir

        try:
            model = Model(resolve_model_dir(model_dir))  # a folder without any SavedModel: before TF loads
        except PredictError as e:
            raise MapError(str(e)) from None
        except Exception as e:  # noqa: BLE001 — TensorFlow's load errors: not a SavedModel of ours
            raise MapError(f"--model {model_dir}: not a tf_fusion.export SavedModel "
                           f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
        from . import serving

        if serving.SIGNATURE_RAW not in model._loaded.signatures:
            raise MapError(f"--model {model.dir}: no {serving.SIGNATURE_RAW!r} signature; not a tf_fusion.export model")
        self.dir, self.class_names = model.dir, model.class_names
        self._model = model
        self.signature = model._loaded.signatures[serving.SIGNATURE_RAW]

    def __call__(self, inputs: dict) -> dict:
        import tensorflow as tf

        from . import serving

        x = serving.check_inputs(inputs, serving.SIGNATURE_RAW)
        return {k: v.numpy() for k, v in self.signature(**{k: tf.constant(v) for k, v in x.items()}).items()}


def predict_block(model: MapModel, inputs: dict, batch: int) -> dict:
    """Per window: probabilities [n, C], p_optical, p_sar, entropy, labels bitmask; NaN (bitmask
    nodata) where neither modality is there. Batches through the model."""
    n = len(inputs["optical_available"])
    c = len(model.class_names)
    res = {"probabilities": np.full((n, c), np.nan, np.float32), "p_optical": np.full(n, np.nan, np.float32),
           "p_sar": np.full(n, np.nan, np.float32), "entropy": np.full(n, np.nan, np.float32),
           "labels": np.full(n, LABEL_NODATA, np.uint32),
           "optical_available": inputs["optical_available"], "sar_available": inputs["sar_available"]}
    todo = np.flatnonzero((inputs["optical_available"] + inputs["sar_available"]) > 0)
    weights = (np.uint32(1) << np.arange(c, dtype=np.uint32))
    for start in range(0, len(todo), batch):
        idx = todo[start:start + batch]
        out = model({k: v[idx] for k, v in inputs.items()})
        res["probabilities"][idx] = out["probabilities"]
        res["p_optical"][idx] = out["p_optical_in_distribution"]
        res["p_sar"][idx] = out["p_sar_in_distribution"]
        res["entropy"][idx] = out["entropy"]
        res["labels"][idx] = (out["labels"].astype(np.uint32) * weights).sum(axis=1, dtype=np.uint32)
    return res


# ------------------------------------------------------------------------------ one scene
@dataclasses.dataclass
class Job:
    s2: str | None
    s1: str | None
    out: str
    stride: int = WINDOW
    bounds: tuple | None = None
    bounds_crs: str | None = None
    batch: int = 32
    block: int = 8
    s1_linear: bool = False
    skip_bad: bool = False


def open_scene(job: Job) -> Scene:
    if not job.s2 and not job.s1:
        raise MapError("give --s2, --s1 or both")
    s2 = find_s2(job.s2) if job.s2 else None
    s1 = find_s1(job.s1) if job.s1 else None
    if s2:
        crs, transform, width, height = s2.crs, s2.transform, s2.width, s2.height
    else:
        crs, transform, width, height = _s1_grid(s1["VV"])
    grid = make_grid(crs, transform, width, height, job.stride, job.bounds, job.bounds_crs)
    return Scene(s2, s1, grid, job.s1_linear)


def _s1_grid(path):
    """Without S2: the 10 m grid over the S1 image in its own (projected) CRS."""
    import rasterio
    from affine import Affine

    with rasterio.Env(**GDAL_ENV), rasterio.open(path) as src:
        if src.crs is None or not src.crs.is_projected:
            raise MapError(f"--s1 {path}: without --s2 the map's grid is S1's own CRS, which must be projected "
                           f"(metres); got {src.crs.to_string() if src.crs else 'no CRS'}")
        left, bottom, right, top = src.bounds
    return src.crs, Affine(10, 0, left, 0, -10, top), int((right - left) // 10), int((top - bottom) // 10)


def _blocks(grid: Grid, size: int) -> list[list[tuple[int, int]]]:
    return [[(r, c) for r in range(br, min(br + size, grid.rows)) for c in range(bc, min(bc + size, grid.cols))]
            for br in range(0, grid.rows, size) for bc in range(0, grid.cols, size)]


def _identity(job: Job, scene: Scene, model: MapModel) -> dict:
    """What makes two runs the same job: a rerun reuses the committed blocks only when equal."""
    return {"format": FORMAT, "model": os.path.abspath(model.dir), "class_names": model.class_names,
            "s2": scene.s2.describe() if scene.s2 else None,
            "s1": {b: os.path.abspath(p) for b, p in scene.s1_paths.items()} if scene.s1_paths else None,
            "s1_linear": job.s1_linear, "grid": scene.grid.describe(), "batch": job.batch, "block": job.block}


def map_scene(job: Job, model: MapModel, *, progress: bool = True, log=print, err=None, after_block=None) -> dict:
    """Map one scene into job.out; returns summary.json's content. `after_block(i)`: called after
    block i is committed (tests: a kill there)."""
    err = err or sys.stderr
    with using(job.out, log):
        atomic.remove_leftovers(job.out)
        blocks_dir = os.path.join(job.out, BLOCKS_DIR)
        with open_scene(job) as scene:
            ident = _identity(job, scene, model)
            job_path = os.path.join(blocks_dir, JOB_FILE)
            if os.path.exists(job_path):
                with open(job_path, encoding="utf-8") as f:
                    old = json.load(f)
                if old != ident:
                    differs = sorted(k for k in ident if old.get(k) != ident[k])
                    raise MapError(f"{job.out} holds the blocks of another map ({', '.join(differs)} differ); "
                                   f"use another --out or remove {blocks_dir}")
            else:
                os.makedirs(blocks_dir, exist_ok=True)
                atomic.remove_leftovers(blocks_dir)
                atomic.write_json(job_path, ident)
            atomic.remove_leftovers(blocks_dir)
            blocks = _blocks(scene.grid, job.block)
            _run_blocks(scene, model, job, blocks, blocks_dir, progress, err, after_block)
            return _finish(job, scene, model, blocks, blocks_dir, ident)


def _block_path(blocks_dir: str, i: int) -> str:
    return os.path.join(blocks_dir, f"{i:06d}.npz")


def _run_blocks(scene, model, job, blocks, blocks_dir, progress, err, after_block) -> None:
    from tqdm import tqdm

    done = [os.path.exists(_block_path(blocks_dir, i)) for i in range(len(blocks))]
    total = sum(map(len, blocks))
    bar = tqdm(total=total, initial=sum(len(b) for b, d in zip(blocks, done) if d), unit="win", desc="map",
               disable=not progress, dynamic_ncols=True, mininterval=0.5, file=err)
    todo = [i for i in range(len(blocks)) if not done[i]]

    def read(i):  # in the reader thread: GDAL reads and warps without the GIL while the model runs
        try:
            return scene.read_block(blocks[i])
        except BadBlock as e:
            return e

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="map-read")
    try:
        ahead = pool.submit(read, todo[0]) if todo else None
        for j, i in enumerate(todo):
            positions = blocks[i]
            inputs = ahead.result()
            ahead = pool.submit(read, todo[j + 1]) if j + 1 < len(todo) else None  # one block ahead, no more
            try:
                if isinstance(inputs, BadBlock):
                    raise inputs
                res = predict_block(model, inputs, job.batch)
                res["bad"] = np.asarray("")
            except BadBlock as e:
                rows, cols = sorted({r for r, _ in positions}), sorted({c for _, c in positions})
                where = f"block {i} (window rows {rows[0]}-{rows[-1]}, cols {cols[0]}-{cols[-1]})"
                if not job.skip_bad:
                    raise MapError(f"{where}: read error in {e}; pass --skip-bad to mark it nodata and go on") from None
                bar.write(f"error: {where}: read error in {e}; marked nodata", file=err)
                res = predict_block(model, _nothing(len(positions)), job.batch)
                res["bad"] = np.asarray(f"{where}: {e}")
            arrays = {k: np.asarray(v) for k, v in res.items()}
            atomic.write_with(_block_path(blocks_dir, i), lambda tmp: np.savez(tmp, **arrays), suffix=".npz")
            bar.update(len(positions))
            if after_block:
                after_block(i)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # the files stay open until the reader is done
        bar.close()


def _nothing(n: int) -> dict:
    x = {b: np.zeros((n, BAND_SIZE[b], BAND_SIZE[b]), np.float32) for b in S2_BANDS + S1_BANDS}
    x["optical_available"] = x["sar_available"] = np.zeros(n, np.float32)
    return x


def _assemble(grid: Grid, blocks, blocks_dir: str, n_classes: int) -> dict:
    shape = (grid.rows, grid.cols)
    full = {"probabilities": np.full((n_classes, *shape), np.nan, np.float32),
            **{k: np.full(shape, np.nan, np.float32) for k in ("p_optical", "p_sar", "entropy")},
            "labels": np.full(shape, LABEL_NODATA, np.uint32),
            "optical_available": np.zeros(shape, np.float32), "sar_available": np.zeros(shape, np.float32)}
    bad = []
    for i, positions in enumerate(blocks):
        with np.load(_block_path(blocks_dir, i)) as z:
            rr = np.asarray([r for r, _ in positions])
            cc = np.asarray([c for _, c in positions])
            full["probabilities"][:, rr, cc] = z["probabilities"].T
            for k in ("p_optical", "p_sar", "entropy", "labels", "optical_available", "sar_available"):
                full[k][rr, cc] = z[k]
            if str(z["bad"]):
                bad.append(str(z["bad"]))
    full["bad"] = bad
    return full


def _finish(job: Job, scene: Scene, model: MapModel, blocks, blocks_dir, ident) -> dict:
    g = scene.grid
    names = model.class_names
    full = _assemble(g, blocks, blocks_dir, len(names))
    transform = g.window_transform()
    bands = np.concatenate([full["probabilities"], full["p_optical"][None], full["p_sar"][None], full["entropy"][None]])
    descriptions = [*names, "p_optical", "p_sar", "entropy"]
    _write_raster(os.path.join(job.out, MAP), bands, g.crs, transform, np.nan, descriptions)
    _write_raster(os.path.join(job.out, LABELS), full["labels"][None], g.crs, transform, int(LABEL_NODATA),
                  ["labels bitmask (bit i = class i of class_names)"],
                  tags={"class_names": json.dumps(names)})
    _quicklook(os.path.join(job.out, QUICKLOOK), scene, full, names)
    valid = ~np.isnan(full["entropy"])
    n_valid = int(valid.sum())
    opt = full["optical_available"] > 0
    sar = full["sar_available"] > 0
    bits = full["labels"][valid]
    share = lambda m, d: round(float(m) / d, 6) if d else None  # noqa: E731
    summary = {
        "windows": int(g.rows * g.cols), "windows_processed": n_valid, "grid": [g.rows, g.cols],
        "stride_px": g.stride, "pixel_size_m": float(transform.a), "crs": g.crs.to_string(),
        "class_share": {name: share(((bits >> np.uint32(i)) & 1).sum(), n_valid) for i, name in enumerate(names)},
        "top_class_share": {name: share((np.nanargmax(np.nan_to_num(full["probabilities"], nan=-1), axis=0)[valid] == i).sum(),
                                        n_valid) for i, name in enumerate(names)},
        "optical_available_share": share(opt.sum(), g.rows * g.cols),
        "sar_available_share": share(sar.sum(), g.rows * g.cols),
        "optical_ood_share": share((full["p_optical"][opt] < OOD_THRESHOLD).sum(), int(opt.sum())),
        "sar_ood_share": share((full["p_sar"][sar] < OOD_THRESHOLD).sum(), int(sar.sum())),
        "ood_threshold": OOD_THRESHOLD, "bad_blocks": full["bad"],
        "model": ident["model"], "s2": ident["s2"], "s1": ident["s1"], "s1_linear": job.s1_linear,
        "bounds": list(job.bounds) if job.bounds else None, "bounds_crs": job.bounds_crs,
        "outputs": {"map": MAP, "bands": descriptions, "labels": LABELS, "quicklook": QUICKLOOK},
    }
    atomic.write_json(os.path.join(job.out, SUMMARY), summary)
    return summary


def _write_raster(path, data, crs, transform, nodata, descriptions, tags=None) -> None:
    import rasterio

    def save(tmp):
        with rasterio.Env(**GDAL_ENV), rasterio.open(tmp, "w", driver="COG", width=data.shape[2], height=data.shape[1],
                                                     count=data.shape[0], dtype=data.dtype, crs=crs, transform=transform,
                                                     nodata=nodata, compress="DEFLATE", blocksize=256) as dst:
            dst.write(data)
            for i, d in enumerate(descriptions, 1):
                dst.set_band_description(i, d)
            if tags:
                dst.update_tags(**tags)

    atomic.write_with(path, save, suffix=".tif")


def _rgb(scene: Scene, max_px: int = 800) -> np.ndarray | None:
    """A true-colour view of the mapped area (B04, B03, B02, offset applied), at most max_px wide."""
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    if not scene.s2:
        return None
    g = scene.grid
    h = (g.rows - 1) * g.stride + WINDOW
    w = (g.cols - 1) * g.stride + WINDOW
    k = max(1, math.ceil(max(h, w) / max_px))
    out = []
    for band in ("B04", "B03", "B02"):
        bf = scene.s2.bands[band]
        try:
            a = scene.files[bf.path].read(bf.index, window=Window(g.col0, g.row0, w, h), out_shape=(h // k, w // k),
                                          resampling=Resampling.nearest).astype(np.float32)
        except Exception:  # noqa: BLE001 — a damaged file (--skip-bad): the quicklook goes without the RGB
            return None
        out.append(np.where(a > 0, np.maximum(a + bf.offset, 0), 0))
    return np.clip(np.stack(out, -1) / 2500, 0, 1)


def _quicklook(path, scene: Scene, full: dict, names) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    g = scene.grid
    extent = (0, g.cols, g.rows, 0)
    fig, axes = plt.subplots(2, 2, figsize=(12, 10.5), dpi=80)
    ax = axes[0, 0]
    rgb = _rgb(scene)
    if rgb is not None:
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title("S2 true colour (B04, B03, B02)")
    else:
        ax.set_title("no S2 input" if not scene.s2 else "S2 true colour: B04/B03/B02 unreadable")
    valid = ~np.isnan(full["entropy"])
    top = np.where(valid, np.argmax(np.nan_to_num(full["probabilities"], nan=-1), axis=0), -1)
    palette = plt.get_cmap("tab20")(np.arange(20))[: len(names)]
    cmap = ListedColormap(np.vstack([[1, 1, 1, 0], palette]))
    axes[0, 1].imshow(top + 1, cmap=cmap, vmin=0, vmax=len(names), extent=extent, interpolation="nearest")
    axes[0, 1].set_title("top class (Eq. 3)")
    present = [i for i in range(len(names)) if (top == i).any()]
    axes[0, 1].legend(handles=[Patch(color=palette[i], label=names[i] if len(names[i]) <= 48 else names[i][:46] + "…")
                               for i in present], loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    for ax, key, title, cm, vmax in ((axes[1, 0], "entropy", "entropy (bits)", "magma", None),
                                     (axes[1, 1], "p_optical", "p_optical (blank: no optical input)", "viridis", 1)):
        data = full[key]
        if key == "p_optical":  # no optical input there: the model's 0 is not a judgement
            data = np.where(full["optical_available"] > 0, data, np.nan)
        im = ax.imshow(np.ma.masked_invalid(data), cmap=cm, vmin=0, vmax=vmax or max(float(np.nanmax(data)) if valid.any() else 1, 1e-6),
                       extent=extent, interpolation="nearest")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None},
                                                                bbox_inches="tight"), suffix=".png")
    plt.close(fig)


# ------------------------------------------------------------------------------ many scenes
def read_scenes(path) -> list[tuple[str | None, str | None, str]]:
    """`s2,s1,name` rows (header optional; s2 or s1 may be empty), paths relative to the CSV."""
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [[c.strip() for c in r] for r in csv.reader(f) if any(c.strip() for c in r)]
    except OSError as e:
        raise MapError(f"--scenes {path}: cannot read ({e.strerror})") from None
    if rows and [c.lower() for c in rows[0]] == ["s2", "s1", "name"]:
        rows = rows[1:]
    scenes, names = [], set()
    for lineno, row in enumerate(rows, 1):
        if len(row) != 3 or not (row[0] or row[1]) or not re.fullmatch(r"[\w.-]+", row[2] or ""):
            raise MapError(f"--scenes {path}: row {lineno}: expected 's2,s1,name' (s2 or s1 may be empty, name a "
                           f"folder name); got {row}")
        if row[2] in names:
            raise MapError(f"--scenes {path}: row {lineno}: name {row[2]!r} used twice")
        names.add(row[2])
        scenes.append(tuple(os.path.join(base, c) if c else None for c in row[:2]) + (row[2],))
    if not scenes:
        raise MapError(f"--scenes {path}: no rows")
    return scenes


# ------------------------------------------------------------------------------ the command
def parse_args(argv=None):
    p = cli.parser("tf_fusion.map", "Map a whole Sentinel-2 L2A / Sentinel-1 scene with an exported SavedModel: "
                   "class probabilities, labels, p_optical, p_sar and entropy per 120 px window, as a COG.",
                   "python -m tf_fusion.map --model models/fusion --s2 S2A_MSIL2A_...SAFE --s1 s1_scene --out maps/scene",
                   "python -m tf_fusion.map --model models/fusion --scenes scenes.csv --out maps")
    p.add_argument("--model", required=True, help="an exported model: MODEL_BASE/VERSION, or MODEL_BASE (newest version)")
    p.add_argument("--s2", help="a Sentinel-2 L2A .SAFE folder, a folder of per-band files (B02.tif, *_B02.tif) or "
                                "a multi-band GeoTIFF with band descriptions")
    p.add_argument("--s1", help="a folder with VV and VH GeoTIFFs (dB; any CRS, reprojected onto the S2 10 m grid)")
    p.add_argument("--scenes", help="CSV of s2,s1,name rows: map each scene into OUT/NAME")
    p.add_argument("--out", required=True, help="output folder (a rerun of the same command resumes it)")
    p.add_argument("--stride", type=int, default=WINDOW, help=f"px between windows, a multiple of 6 (default {WINDOW})")
    p.add_argument("--bounds", help="MINX,MINY,MAXX,MAXY: map only the windows that touch this box")
    p.add_argument("--bounds-crs", help="CRS of --bounds, e.g. EPSG:4326 (default: the S2 grid's)")
    p.add_argument("--batch", type=int, default=32, help="windows per model call (default 32)")
    p.add_argument("--block", type=int, default=8, help="a block, the unit of commit, is BLOCK x BLOCK windows (default 8)")
    p.add_argument("--s1-linear", action="store_true", help="the S1 files hold linear power, not dB")
    p.add_argument("--skip-bad", action="store_true", help="a block that cannot be read becomes nodata (listed at the end)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--runner", choices=("direct", "dataflow", "flink", "spark"),
                   help="run the per-window code as an Apache Beam pipeline on this runner (the `scale` extra); "
                        "further --flags go to Beam's pipeline options (e.g. --project, --region, --temp_location)")
    args, beam_args = p.parse_known_args(argv)
    if beam_args and not args.runner:
        p.error(f"unrecognized arguments: {' '.join(beam_args)}")
    args.beam_args = beam_args
    if args.scenes and (args.s2 or args.s1):
        p.error("give --scenes or --s2/--s1, not both")
    if not args.scenes and not (args.s2 or args.s1):
        p.error("give --s2, --s1 (or both), or --scenes")
    if args.batch < 1 or args.block < 1:
        p.error("--batch and --block must be positive")
    if args.bounds_crs and not args.bounds:
        p.error("--bounds-crs needs --bounds")
    return args


def run(args, log=print, after_block=None) -> list[str]:
    """Map every scene of the command; returns the bad blocks skipped (--skip-bad)."""
    bounds = parse_bounds(args.bounds) if args.bounds else None
    if args.scenes:
        scenes = [(s2, s1, os.path.join(args.out, name)) for s2, s1, name in read_scenes(args.scenes)]
    else:
        scenes = [(args.s2, args.s1, args.out)]
    jobs = [Job(s2, s1, out, stride=args.stride, bounds=bounds, bounds_crs=args.bounds_crs, batch=args.batch,
                block=args.block, s1_linear=args.s1_linear, skip_bad=args.skip_bad) for s2, s1, out in scenes]
    for job in jobs:  # every scene's inputs checked before the model loads (seconds) or a scene is mapped
        open_scene(job).close()
    if getattr(args, "runner", None):
        from . import map_beam

        with contextlib.ExitStack() as stack:
            for job in jobs:
                stack.enter_context(using(job.out, log))
            map_beam.run(jobs, args.model, args.runner, args.beam_args, log=log)
        return [b for job in jobs for b in _summary(job.out)["bad_blocks"]]
    model = MapModel(args.model)
    bad = []
    for job in jobs:
        out = job.out
        t = time.perf_counter()
        summary = map_scene(job, model, progress=not args.quiet, log=log, after_block=after_block)
        log(f"{out}: {summary['windows_processed']} of {summary['windows']} windows mapped "
            f"({summary['grid'][0]} x {summary['grid'][1]}) in {time.perf_counter() - t:.1f} s; "
            f"optical OOD {summary['optical_ood_share']}, SAR OOD {summary['sar_ood_share']}")
        bad += summary["bad_blocks"]
    return bad


def _summary(out: str) -> dict:
    with open(os.path.join(out, SUMMARY), encoding="utf-8") as f:
        return json.load(f)


def main(argv=None) -> int:
    args = parse_args(argv)
    bad = []

    def action():
        bad.extend(run(args))

    code = cli.run(action)
    if code == 0 and bad:
        print(f"{len(bad)} block(s) could not be read and are nodata:", file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
