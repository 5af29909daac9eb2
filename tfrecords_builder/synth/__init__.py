"""Synthetic BigEarthNet-MM archives in exactly the real v1.0 or v2.0 (reBEN) layout.

The real archive is 120 GB and cannot be fetched here, so the builder, its tests and the demo run
on these. The package holds the spectral library (`spectra`), random fields and land-cover
textures (`textures`), the pixel model (`pixels`), the climates of regions (`regions`), the worlds
(`worlds`: signatures, clouds and speckle redrawn from a number), what an archive holds before any
pixel (`scenes`), the layout writer (`writer`: GeoTIFF, JSON, lists, parquet, synth.json) and the cached
synthetic build (`cache`).

`writer.GENERATOR_VERSION` changes whenever the same arguments would give other pixels or lists;
synth.json and the cache folder's name carry it, so no cache of an older generator is reused.
"""
from .cache import ensure_synthetic_build
from .scene_writer import write_scene
from .writer import GENERATOR_VERSION, ArchiveInfo, read_archive_info, write_archive

__all__ = ["ensure_synthetic_build", "write_archive", "read_archive_info", "ArchiveInfo", "GENERATOR_VERSION",
           "write_scene"]
