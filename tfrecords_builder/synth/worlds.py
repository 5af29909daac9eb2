"""Worlds of a synthetic archive (`synth --world N`): what a detector could overfit to, redrawn.

World 0 is the generator as it always was (the library's signatures, bright opaque clouds shaped
like white industrial roofs, 4.4-look speckle); its archives do not change by a byte. World N >= 1
is drawn from N alone (`world(N)`, a generator seeded by N), so any N works:
- class signatures: every endmember of `spectra` gets its own S2 brightness (x 0.83-1.2; the white
  roofs of industrial units x 0.3-1.1, from dark sheet metal to white membranes) and a smooth
  spectral tilt and bend over the band centre wavelengths (up to +-15 %), and its own C-band
  backscatter offset (+-2.5 dB); the same for every patch of the world, so labels stay learnable;
- the cloud model, in a fixed cycle by N (1: opaque, 2: haze, 3: shadowed, 4: opaque, ...):
  `opaque` clouds hide the ground in every band, without shadows; `haze` is semi-transparent, its
  optical thickness falls with wavelength as a power law (Angstrom exponent 1-2: opacity strong in
  the blue, weak in the SWIR); `shadowed` clouds are opaque and cast dark shadows (40-90 % of the
  light removed) offset along the world's sun azimuth;
- cloud brightness: the VNIR reflectance of cloud tops (0.3-0.8; today's clouds are about 0.76)
  and their SWIR relative to today's cloud shape (x 0.6-1.2, water or ice clouds);
- SAR: the speckle's equivalent number of looks (3-8) and a global backscatter offset (+-2 dB,
  calibration).
Climates of `--regions` apply on top of a world's signatures (`regions.signatures`).
"""
from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np

from ..nomenclature import S2_BANDS
from .spectra import CLOUD, ENDMEMBERS

CLOUD_MODELS = ("opaque", "haze", "shadowed")
# Band centre wavelengths (nm) of S2_BANDS, Sentinel-2A.
WAVELENGTH_NM = dict(zip(S2_BANDS, (443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1610, 2190)))
_LAMBDA = np.asarray([WAVELENGTH_NM[b] for b in S2_BANDS], np.float64)
_X = (np.log(_LAMBDA) - np.log(_LAMBDA).mean()) / (np.log(_LAMBDA).max() - np.log(_LAMBDA).mean())  # ~[-1, 1]
_SWIR = np.isin(S2_BANDS, ("B11", "B12"))

DEFAULT_LOOKS = 4.4  # world 0's equivalent number of looks (`pixels.SPECKLE_LOOKS`)
BRIGHTNESS = (1 / 1.2, 1.2)  # S2 brightness factor of an endmember (log-uniform)
BRIGHTNESS_OF = {"white_roof": (0.3, 1.1)}  # industrial roofs: dark metal to white membranes
SHAPE = 0.075  # spectral tilt and bend coefficients: each uniform in +-SHAPE (together +-15 %)
SAR_OFFSET = 2.5  # per-endmember backscatter offset, uniform in +-dB
CLOUD_BRIGHTNESS = (0.3, 0.8)  # VNIR reflectance of cloud tops
HAZE_BRIGHTNESS = (0.5, 0.8)  # a haze layer's reflectance where it would be opaque (whitish, never dark)
CLOUD_VNIR = float(np.mean(CLOUD[:9])) / 10000  # today's cloud VNIR reflectance (0.76)


@dataclasses.dataclass(frozen=True)
class World:
    number: int
    s2_gain: dict  # endmember -> 12 multiplicative factors (S2_BANDS order)
    s1_offset_db: dict  # endmember -> (VV, VH) backscatter offsets, dB
    cloud_model: str  # one of CLOUD_MODELS
    cloud_brightness: float  # VNIR reflectance of cloud tops (haze: of the layer where it would be opaque)
    cloud_swir: float  # B11, B12 of clouds relative to today's cloud shape
    haze_tau: float  # optical thickness at B02 (490 nm) of the thickest haze
    haze_angstrom: float  # tau(lambda) = haze_tau * (lambda / 490 nm) ** -haze_angstrom
    shadow_depth: float  # share of the ground's light a cloud shadow removes
    shadow_azimuth_deg: float  # direction (image axes, clockwise from up) the shadows fall
    shadow_distance_px: tuple  # (lo, hi) shadow offset, 10 m pixels, drawn per patch
    speckle_looks: float  # equivalent number of looks of the SAR speckle
    sar_offset_db: float  # backscatter offset of every surface, dB

    def cloud_spectrum(self) -> np.ndarray:
        """Reflectance x 10000 of the world's cloud tops: today's shape at `cloud_brightness`."""
        s = np.asarray(CLOUD, np.float64) / 10000 * (self.cloud_brightness / CLOUD_VNIR)
        s[_SWIR] *= self.cloud_swir
        return (np.clip(s, 0, 1) * 10000).astype(np.float32)

    def haze_opacity(self) -> np.ndarray:
        """Per band, the thickest haze's opacity 1 - exp(-tau(lambda)) (S2_BANDS order)."""
        tau = self.haze_tau * (_LAMBDA / WAVELENGTH_NM["B02"]) ** -self.haze_angstrom
        return (1 - np.exp(-tau)).astype(np.float32)


def check_world(world) -> None:
    if isinstance(world, bool) or not isinstance(world, (int, np.integer)) or world < 0:
        raise ValueError(f"world must be an integer >= 0, got {world!r}")


def _uniform(rng, lo_hi) -> float:
    return float(rng.uniform(*lo_hi))


@functools.lru_cache(maxsize=None)
def world(number: int) -> World:
    """World `number` >= 1, drawn from a generator seeded by the number alone (see the module)."""
    check_world(number)
    if number == 0:
        raise ValueError("world 0 is the library's own (pixels use it directly)")
    number = int(number)
    s2_gain, s1_offset = {}, {}
    for name in ENDMEMBERS:  # one generator per endmember: adding one to the library moves no other
        rng = np.random.default_rng([number, zlib.crc32(name.encode())])
        lo, hi = BRIGHTNESS_OF.get(name, BRIGHTNESS)
        brightness = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        tilt, bend = rng.uniform(-SHAPE, SHAPE, 2)
        s2_gain[name] = tuple(float(g) for g in brightness * (1 + tilt * _X + bend * (2 * _X**2 - 1)))
        s1_offset[name] = tuple(float(d) for d in rng.uniform(-SAR_OFFSET, SAR_OFFSET, 2))
    rng = np.random.default_rng([number, 0x776F726C64])  # "world"
    model = CLOUD_MODELS[(number - 1) % len(CLOUD_MODELS)]
    cloud = _uniform(rng, CLOUD_BRIGHTNESS)
    haze = _uniform(rng, HAZE_BRIGHTNESS)
    lo = _uniform(rng, (6, 16))
    return World(
        number=number, s2_gain=s2_gain, s1_offset_db=s1_offset, cloud_model=model,
        cloud_brightness=haze if model == "haze" else cloud,
        cloud_swir=_uniform(rng, (0.6, 1.2)),
        haze_tau=_uniform(rng, (0.8, 1.6)),
        haze_angstrom=_uniform(rng, (1.0, 2.0)),
        shadow_depth=_uniform(rng, (0.4, 0.9)),
        shadow_azimuth_deg=_uniform(rng, (0, 360)),
        shadow_distance_px=(lo, lo + _uniform(rng, (4, 12))),
        speckle_looks=_uniform(rng, (3, 8)),
        sar_offset_db=_uniform(rng, (-2, 2)),
    )


@functools.lru_cache(maxsize=None)
def base_signatures(number: int) -> tuple[dict, dict]:
    """(S2, S1) endmember signatures of world `number` as float64 arrays (world 0: the library's)."""
    s2 = {k: np.asarray(v[0], np.float64) for k, v in ENDMEMBERS.items()}
    s1 = {k: np.asarray(v[1], np.float64) for k, v in ENDMEMBERS.items()}
    if number:
        w = world(number)
        for name in ENDMEMBERS:
            s2[name] = np.clip(s2[name] * np.asarray(w.s2_gain[name]), 0, 10000)
            s1[name] = s1[name] + np.asarray(w.s1_offset_db[name]) + w.sar_offset_db
    return s2, s1


@functools.lru_cache(maxsize=None)
def signatures(number: int) -> tuple[dict, dict]:
    """`base_signatures` as the float32 arrays the pixel model mixes."""
    s2, s1 = base_signatures(number)
    return {k: v.astype(np.float32) for k, v in s2.items()}, {k: v.astype(np.float32) for k, v in s1.items()}
