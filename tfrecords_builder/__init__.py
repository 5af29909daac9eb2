"""BigEarthNet-MM (v1 folders + JSON, v2 parquet) → sharded TFRecords with subsets and a manifest.

`__all__` is the package's public API, the only names `tf_fusion` imports: the nomenclature, the
manifest contract, the NumPy record reader, GeoTIFF reading and archive pairing for prediction,
the cached synthetic build (and its BuildError), the synthetic scene for maps, and the folder lock (one command at a time per folder).
"""
from .archive import MetadataError
from .build import BuildError
from .images import GDAL_ENV, BadPair, read_patch
from .layout import band_paths
from .lock import LockHeld, OutputLock
from .manifest import SCHEMA_VERSION, Manifest, ManifestError, check_manifest, load_manifest
from .nomenclature import (BAND_DTYPE, BAND_SIZE, BANDS, CLASS_NAMES, DEFAULT_PARTITION, MODALITY_BANDS, S1_BANDS,
                           S2_BANDS, Partition)
from .pairs import Pair, find_pairs
from .records import iter_records
from .synth import GENERATOR_VERSION, ensure_synthetic_build, write_scene

__version__ = "0.1.0"
__all__ = [
    "CLASS_NAMES", "S2_BANDS", "S1_BANDS", "BANDS", "MODALITY_BANDS", "BAND_SIZE", "BAND_DTYPE",
    "Partition", "DEFAULT_PARTITION",
    "SCHEMA_VERSION", "Manifest", "ManifestError", "load_manifest", "check_manifest",
    "iter_records",
    "BadPair", "read_patch", "band_paths", "GDAL_ENV",
    "Pair", "find_pairs", "MetadataError",
    "GENERATOR_VERSION", "ensure_synthetic_build", "BuildError", "write_scene",
    "OutputLock", "LockHeld",
    "__version__",
]
