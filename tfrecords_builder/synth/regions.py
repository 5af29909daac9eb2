"""Regions of a synthetic archive (`synth --regions N`): a country per region, and how its climate
shifts the land covers' signatures (those of the archive's world, `worlds`).

Three physically plausible effects, each a relative change of the endmember signatures in
`spectra`:
- phenology: the red-edge / NIR plateau of vegetation (B05 half as much as B06-B09), higher where
  the growing season is longer or wetter;
- soil brightness: every optical band of bare and sparse soils and dry grass;
- moisture: lower SWIR reflectance (B11, B12) and higher C-band backscatter (VV, VH, in dB) of
  vegetation and soils, as water in soil and leaves absorbs SWIR and raises the dielectric constant.
Water, urban surfaces, clouds and snow are left alone. The regions are deterministic: region r is
country `REGION_ORDER[r]`, the most contrasting climates first.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ..nomenclature import S2_BANDS
from . import worlds

VEGETATION = ("green_crop", "orchard_canopy", "pasture", "broadleaf", "conifer", "canopy_shadow", "shrub",
              "heather", "garden", "marsh_veg")
SOILS = ("bare_soil", "orchard_soil", "sparse_soil", "dry_grass")
PHENOLOGY_BANDS = {"B05": 0.5, "B06": 1.0, "B07": 1.0, "B08": 1.0, "B8A": 1.0, "B09": 1.0}  # share of the effect
SWIR_BANDS = ("B11", "B12")


@dataclasses.dataclass(frozen=True)
class Climate:
    phenology: float  # relative change of vegetation red-edge / NIR
    soil: float  # relative change of soil brightness
    moisture: float  # relative decrease of vegetation and soil SWIR
    sar_db: float  # backscatter offset of vegetation and soils, dB


# The first three regions differ pairwise by 0.25 or more in every relative effect and by 2.5 dB in
# backscatter, so that any hold-out among them is a clear shift; later ones are milder.
CLIMATES = {
    "Ireland": Climate(+0.25, 0.00, +0.30, +2.5),  # Atlantic: long green season, wet soils
    "Portugal": Climate(-0.25, +0.25, -0.30, -2.5),  # Mediterranean: dry summer, bright dry soils
    "Finland": Climate(0.00, -0.25, 0.00, 0.0),  # boreal: short season, dark organic soils
    "Serbia": Climate(-0.15, +0.15, -0.20, -1.5),  # continental, dry summer
    "Austria": Climate(+0.10, -0.05, +0.10, +1.0),  # alpine foreland
    "Lithuania": Climate(+0.05, -0.15, +0.10, +1.0),
    "Belgium": Climate(+0.15, +0.05, +0.15, +1.5),
    "Switzerland": Climate(+0.05, -0.10, +0.05, +0.5),
    "Luxembourg": Climate(+0.10, +0.10, 0.00, 0.0),
    "Kosovo": Climate(-0.20, +0.20, -0.25, -2.0),
}
REGION_ORDER = ("Ireland", "Portugal", "Finland", "Serbia", "Austria", "Lithuania", "Belgium", "Switzerland",
                "Luxembourg", "Kosovo")
MAX_REGIONS = len(REGION_ORDER)


def check_regions(regions) -> None:
    """0 (no regions) or 2 … MAX_REGIONS."""
    if isinstance(regions, bool) or not isinstance(regions, (int, np.integer)) or not (
            regions == 0 or 2 <= regions <= MAX_REGIONS):
        raise ValueError(f"regions must be 0 or 2-{MAX_REGIONS}, got {regions!r}")


@functools.lru_cache(maxsize=None)
def signatures(country: str, world: int = 0) -> tuple[dict, dict]:
    """(S2, S1) endmember signatures of `country`'s climate in `world`, as float32 arrays by endmember."""
    c = CLIMATES[country]
    base2, base1 = worlds.base_signatures(world)
    s2 = {k: v.copy() for k, v in base2.items()}
    s1 = {k: v.copy() for k, v in base1.items()}
    band = {b: i for i, b in enumerate(S2_BANDS)}
    for name in VEGETATION:
        for b, share in PHENOLOGY_BANDS.items():
            s2[name][band[b]] *= 1 + share * c.phenology
    for name in SOILS:
        s2[name] *= 1 + c.soil
    for name in VEGETATION + SOILS:
        for b in SWIR_BANDS:
            s2[name][band[b]] *= 1 - c.moisture
        s1[name] += c.sar_db
    return ({k: v.astype(np.float32) for k, v in s2.items()}, {k: v.astype(np.float32) for k, v in s1.items()})
