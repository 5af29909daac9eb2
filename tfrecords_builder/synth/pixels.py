"""The pixel model: one pair's S2 bands (uint16) and S1 bands (float32 dB) from its land covers.

Covers (19-class indices, or dropped 43-class names) get regions of a warped Voronoi mosaic, each
mixing two endmembers of `spectra` with a texture; clouds touch only the optical image, snow both;
then sensor noise at each band's native size (optical) and gamma speckle (SAR). A world >= 1
(`worlds`) changes the signatures, the clouds and the speckle; world 0 draws and computes exactly
as the generator always did.
"""
from __future__ import annotations

import numpy as np

from ..nomenclature import BAND_SIZE, S1_BANDS, S2_BANDS
from . import regions, worlds
from .spectra import CLOUD, COVERS, DROPPED_COVERS, ENDMEMBERS, SNOW, SNOW_VISIBILITY
from .textures import PATCH_PX, TEXTURES, XX, YY, shifted, smooth

SPECKLE_LOOKS = worlds.DEFAULT_LOOKS  # equivalent number of looks of the GRD backscatter (world 0)
OPTICAL_NOISE = 0.025  # multiplicative per-pixel noise of the optical bands

_S2_SIG = {k: np.asarray(v[0], np.float32) for k, v in ENDMEMBERS.items()}
_S1_SIG = {k: np.asarray(v[1], np.float32) for k, v in ENDMEMBERS.items()}


def synthesize(rng, covers: list, kind: str, climate: str | None = None, world: int = 0) -> tuple[dict, dict]:
    """BAND -> native-resolution array for S2 (uint16) and S1 (float32 dB) of one pair.

    `covers` holds 19-class indices and dropped 43-class names; each gets regions of the
    10 m scene. Clouds touch only the optical image, snow both; noise is added at native size.
    `climate`: a country of `regions.CLIMATES` whose shifted signatures the covers take (None: the
    library's own); the random draws are the same either way. `world`: see `worlds` (0: the
    library's signatures, today's clouds and speckle).
    """
    cover_map = _segment(rng, len(covers), sum(isinstance(c, int) for c in covers))
    if climate:
        signatures = regions.signatures(climate, world)
    else:
        signatures = worlds.signatures(world) if world else (_S2_SIG, _S1_SIG)
    s2, s1 = _compose(rng, covers, cover_map, *signatures)
    w = worlds.world(world) if world else None
    # a world's clouds draw from their own generator, so a pair's ground, noise and speckle are
    # the same whether it is clear or cloudy (world 0 keeps its one stream)
    cloud_rng = np.random.default_rng(rng.integers(2**63)) if w else rng
    if kind in ("cloudy", "very_cloudy"):
        if w is None:
            _add_clouds(rng, s2, full=(kind == "very_cloudy"))
        else:
            _add_world_clouds(cloud_rng, s2, w, full=(kind == "very_cloudy"))
    elif kind == "snow":
        visibility = np.asarray([SNOW_VISIBILITY.get(c, 0.95) for c in covers], np.float32)[cover_map]
        _add_snow(rng, s2, s1, visibility)
    return _optical_bands(rng, s2), _sar_bands(rng, s1, w.speckle_looks if w else SPECKLE_LOOKS)


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
        xw = XX + 50 * (smooth(rng, 4) - 0.5)
        yw = YY + 50 * (smooth(rng, 4) - 0.5)
        dist = (xw[None] - sx[:, None, None]) ** 2 + (yw[None] - sy[:, None, None]) ** 2
        cover_map = owner[dist.argmin(0)]
        share = np.bincount(cover_map.ravel(), minlength=n_covers) / PATCH_PX**2
        unlabelled = share[n_labelled:].sum() if 0 < n_labelled < n_covers else 0.0
        if share.min() >= min_share and unlabelled <= max_unlabelled:
            break
    return cover_map


def _cover_spec(cover):
    return COVERS[cover] if isinstance(cover, int) else DROPPED_COVERS[cover]


def _compose(rng, covers: list, cover_map: np.ndarray, s2_sig: dict, s1_sig: dict) -> tuple[np.ndarray, np.ndarray]:
    """10 m optical (12, H, W) reflectance and SAR (2, H, W) dB from the covers' endmembers."""
    n = len(covers)
    a2, b2 = np.empty((n, 12), np.float32), np.empty((n, 12), np.float32)
    a1, b1 = np.empty((n, 2), np.float32), np.empty((n, 2), np.float32)
    frac = np.zeros((PATCH_PX, PATCH_PX), np.float32)
    for i, cover in enumerate(covers):
        a, b, texture, mix = _cover_spec(cover)
        gain = rng.normal(1.0, 0.05)  # regions of one cover differ a little in brightness
        a2[i], b2[i] = s2_sig[a] * gain, s2_sig[b] * gain
        shift = rng.normal(0.0, 0.7)
        a1[i], b1[i] = s1_sig[a] + shift, s1_sig[b] + shift
        t = TEXTURES[texture](rng)
        frac = np.where(cover_map == i, np.clip(2 * mix * t, 0, 1), frac)
    s2 = a2.T[:, cover_map] * (1 - frac) + b2.T[:, cover_map] * frac
    s1 = a1.T[:, cover_map] * (1 - frac) + b1.T[:, cover_map] * frac
    s2 *= rng.uniform(0.92, 1.08)  # illumination / phenology of the acquisition
    return s2, s1


def _add_clouds(rng, s2: np.ndarray, full: bool) -> None:
    """Bright, flat, soft-edged clouds; partial ones cast a shadow beside them (optical only)."""
    if full:
        alpha = np.clip(0.92 + 0.2 * (smooth(rng, 5) - 0.5), 0, 1)
    else:
        field = smooth(rng, 5)
        threshold = np.quantile(field, 1 - rng.uniform(0.2, 0.55))
        alpha = np.clip((field - threshold) / 0.12, 0, 1) * rng.uniform(0.85, 1.0)
        dy, dx = (int(rng.integers(6, 18)) * int(rng.choice([-1, 1])) for _ in range(2))
        shadow = shifted(alpha, dy, dx) * (1 - alpha)
        s2 *= 1 - 0.6 * shadow
    brightness = 0.85 + 0.3 * smooth(rng, 8)
    s2 *= 1 - alpha
    s2 += np.asarray(CLOUD, np.float32)[:, None, None] * (alpha * brightness)


def _cloud_alpha(rng, full: bool) -> np.ndarray:
    """Cloud cover in [0, 1] per 10 m pixel: nearly all of a very cloudy patch, or soft-edged cells."""
    if full:
        return np.clip(0.92 + 0.2 * (smooth(rng, 5) - 0.5), 0, 1)
    field = smooth(rng, 5)
    threshold = np.quantile(field, 1 - rng.uniform(0.2, 0.55))
    return np.clip((field - threshold) / 0.12, 0, 1) * rng.uniform(0.85, 1.0)


def _add_world_clouds(rng, s2: np.ndarray, w, full: bool) -> None:
    """The clouds of a world >= 1 (`worlds.World.cloud_model`), tops of `w.cloud_spectrum()`.

    opaque: the cloud replaces the ground in every band; haze: per band a share
    `alpha * opacity(lambda)` of the ground's light is replaced by the layer's, with the opacity
    1 - exp(-tau(lambda) alpha) falling with wavelength; shadowed: opaque, and beside each cloud
    its shadow, moved along the world's sun azimuth, removes `shadow_depth` of the ground's light.
    """
    alpha = _cloud_alpha(rng, full)
    brightness = 0.85 + 0.3 * smooth(rng, 8)
    cloud = w.cloud_spectrum()[:, None, None]
    if w.cloud_model == "haze":
        tau = -np.log1p(-w.haze_opacity().astype(np.float64))  # per band, at alpha = 1
        a = (1 - np.exp(-tau[:, None, None] * alpha[None])).astype(np.float32)
    else:
        a = np.broadcast_to(alpha[None], s2.shape)
        if w.cloud_model == "shadowed" and not full:
            distance = rng.uniform(*w.shadow_distance_px)
            azimuth = np.deg2rad(w.shadow_azimuth_deg + rng.normal(0, 5))  # the sun moves little
            dy, dx = int(round(-distance * np.cos(azimuth))), int(round(distance * np.sin(azimuth)))
            shadow = shifted(alpha, dy, dx) * (1 - alpha)
            s2 *= 1 - w.shadow_depth * shadow
    s2 *= 1 - a
    s2 += cloud * (a * brightness)


def _add_snow(rng, s2: np.ndarray, s1: np.ndarray, visibility: np.ndarray) -> None:
    """Snow: bright visible, dark SWIR, and wet-snow backscatter 3-6 dB lower."""
    field = smooth(rng, 4)
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


def _sar_bands(rng, s1_db: np.ndarray, looks: float = SPECKLE_LOOKS) -> dict:
    """Multiplicative gamma speckle (`looks` looks) in linear power, back to dB, float32 within -50..+30."""
    speckle = rng.gamma(looks, 1 / looks, size=s1_db.shape).astype(np.float32)
    db = s1_db + 10 * np.log10(np.maximum(speckle, 1e-5))
    db = np.clip(db, -50, 30).astype(np.float32)
    return {band: np.ascontiguousarray(db[i]) for i, band in enumerate(S1_BANDS)}

