"""BigEarthNet-MM (v1 folders + JSON, v2 parquet) → sharded TFRecords with subsets and a manifest."""
from .records import SCHEMA_VERSION, iter_records, load_manifest

__version__ = "0.1.0"
__all__ = ["iter_records", "load_manifest", "SCHEMA_VERSION", "__version__"]
