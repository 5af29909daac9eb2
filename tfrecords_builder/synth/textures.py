"""Random fields on the 10 m grid of one patch, and the land-cover textures made from them.

A texture gives t in [0, 1] per 10 m pixel; a cover's share of its endmember b is 2 * mix * t
(`spectra.COVERS`). Everything is drawn from the generator it is given, so a pair's pixels depend
only on its own seed.
"""
from __future__ import annotations

import functools

import numpy as np

from ..nomenclature import BAND_SIZE

PATCH_PX = BAND_SIZE["B02"]  # a patch at 10 m: 120 x 120 pixels
YY, XX = np.mgrid[0:PATCH_PX, 0:PATCH_PX].astype(np.float32)


@functools.lru_cache(maxsize=None)
def upsampler(k: int, n: int = PATCH_PX) -> np.ndarray:
    """(n, k) interpolation matrix from k control points; smoothstep weights, no kinks (n: a
    patch's side by default; the scene writer's tiles too)."""
    pos = (np.arange(n) + 0.5) / n * (k - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, k - 2)
    w = pos - i0
    w = (w * w * (3 - 2 * w)).astype(np.float32)
    u = np.zeros((n, k), np.float32)
    u[np.arange(n), i0] = 1 - w
    u[np.arange(n), i0 + 1] = w
    return u


def smooth(rng, k: int) -> np.ndarray:
    """Smooth random field in [0, 1] with about k - 1 bumps across the patch."""
    u = upsampler(k)
    return u @ rng.random((k, k), dtype=np.float32) @ u.T


def shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
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
    return XX * np.cos(angle) + YY * np.sin(angle)


def _tex_smooth(rng):
    return 0.3 + 0.8 * (smooth(rng, 6) - 0.5) + 0.2 * rng.random(XX.shape, dtype=np.float32)


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
    return _sharpen(smooth(rng, 14), 3)


def _tex_mottled_fine(rng):
    return _sharpen(smooth(rng, 30), 2.5)


def _tex_canopy(rng):
    """Speckled canopy: crowns and gaps at pixel scale over a gentle trend."""
    return 0.7 * rng.random(XX.shape, dtype=np.float32) ** 2 + 0.6 * smooth(rng, 5)


def _tex_scattered(rng):
    """Scattered trees or shrubs (20 m crowns) on an open background."""
    dots = (rng.random((PATCH_PX // 2, PATCH_PX // 2)) < rng.uniform(0.15, 0.3)).astype(np.float32)
    return np.repeat(np.repeat(dots, 2, 0), 2, 1)


def _blocks(rng, size_lo, size_hi, fill):
    size = int(rng.integers(size_lo, size_hi))
    n = PATCH_PX // size + 2
    gaps = (rng.random((n, n)) > fill).astype(np.float32)
    t = np.repeat(np.repeat(gaps, size, 0), size, 1)[:PATCH_PX, :PATCH_PX]
    street = (XX % (3 * size) < 1.5) | (YY % (3 * size) < 1.5)
    return np.where(street, 1.0, t).astype(np.float32)


def _tex_blocks(rng):
    """Urban blocks: buildings, gardens and streets on a grid."""
    return _blocks(rng, 3, 6, 0.6)


def _tex_big_blocks(rng):
    """Industrial halls: larger, brighter blocks with parking lots."""
    return _blocks(rng, 6, 12, 0.7)


def _tex_waves(rng):
    u = _rotated(rng)
    return 0.5 + 0.3 * np.sin(2 * np.pi * u / rng.uniform(10, 25)) + 0.2 * (smooth(rng, 5) - 0.5)


TEXTURES = {
    "smooth": _tex_smooth, "stripes": _tex_stripes, "rows": _tex_rows, "parcels": _tex_parcels,
    "mottled": _tex_mottled, "mottled_fine": _tex_mottled_fine, "canopy": _tex_canopy,
    "scattered": _tex_scattered, "blocks": _tex_blocks, "big_blocks": _tex_big_blocks, "waves": _tex_waves,
}

