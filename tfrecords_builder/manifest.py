"""`manifest.json`: the contract between the builder and everything that reads its output.

The builder writes it last (`build.py`); its presence means the build is complete. Every reader —
`inspect`, `iter_records`, `tf_fusion` — goes through `load_manifest`, which checks the schema
version, the keys, the class partition (when the reader asks for one), the band shapes and the
band statistics once, and hands back a `Manifest`. A problem is one `ManifestError` line naming
the file and what is wrong.

Shard entries must be plain file names inside the build folder: a name with a directory part, an
absolute path or a symlink that leads out of the folder is refused (at load, and by `shard_path`),
so a tampered manifest can never make a reader open (or hash) a file elsewhere.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping

import numpy as np

from .nomenclature import BAND_DTYPE, BAND_SIZE, BANDS, CLASS_NAMES, Partition

SCHEMA_VERSION = 1
FILE = "manifest.json"
COMPRESSIONS = (None, "gzip")
REMEDY = "python -m tfrecords_builder inspect {dir}"
_REQUIRED = ("schema_version", "class_names", "partition", "bands", "subsets", "band_stats", "compression")
_SHARD_KEYS = {"file": str, "records": int, "bytes": int, "sha256": str}


class ManifestError(ValueError):
    """The build folder's manifest is missing, unreadable, of another schema, or does not match
    what the reader asks for; the message is one line naming the file."""


class Manifest(Mapping):
    """A checked `manifest.json` (read-only mapping of its JSON) with typed accessors.

    `dir` is the build folder; shard paths are resolved against it and checked to stay inside.
    """

    def __init__(self, data: dict, build_dir: str):
        self._data = data
        self.dir = os.path.abspath(os.fspath(build_dir))
        self.path = os.path.join(self.dir, FILE)

    # --- Mapping over the JSON (manifest["subsets"]["train"]["count"] keeps working) ---------
    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def to_json(self) -> dict:
        return self._data

    # --- the contract -------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self._data["class_names"])

    @property
    def partition(self) -> Partition:
        return Partition.from_json(self._data["partition"])

    @property
    def compression(self) -> str | None:
        return self._data["compression"]

    @property
    def holdout(self) -> dict | None:
        """The region-shift hold-out: countries, country_map, per-country counts of `region_shift`
        and `region_shift_ood`, and the held-out drops; None for a build without one."""
        return self._data.get("holdout")

    def in_distribution_classes(self) -> list[str]:
        """Names of the in-distribution classes, in the order of the label vector."""
        return [self.class_names[i] for i in self.partition.in_distribution]

    def subset_size(self, subset: str) -> int:
        """Records in `subset`; 0 when the build has none (optional subsets such as `snow`)."""
        return int(self._data["subsets"].get(subset, {}).get("count") or 0)

    def shards(self, subsets, empty_ok: bool = False) -> list[dict]:
        """Shard entries (file, records, bytes, sha256) of one subset or a list of subsets, each
        with `path`, the checked absolute path; ManifestError for an unknown subset, and for an
        empty one unless `empty_ok`."""
        names = [subsets] if isinstance(subsets, str) else list(subsets)
        available = ", ".join(f"{k} ({v.get('count', 0)})" for k, v in self._data["subsets"].items())
        if not names:
            raise ManifestError(f"{self.path}: no subset requested; available: {available}")
        out = []
        for name in names:
            entry = self._data["subsets"].get(name)
            if entry is None:
                raise ManifestError(f"{self.path}: unknown subset {name!r}; available: {available}")
            if not empty_ok and (not entry.get("count") or not entry.get("shards")):
                raise ManifestError(f"{self.path}: subset {name!r} is empty (0 records); available: {available}")
            out += [{**shard, "path": self.shard_path(shard["file"])} for shard in entry["shards"]]
        return out

    def shard_path(self, name: str) -> str:
        """DIR/name for a shard entry, refused unless it is a plain file name that resolves inside
        the build folder (symlinks followed)."""
        if not isinstance(name, str) or not name or os.path.basename(name) != name or name in (".", ".."):
            raise ManifestError(f"{self.path}: shard path {name!r} leaves the build folder {self.dir} "
                                f"(shard entries are plain file names)")
        path = os.path.join(self.dir, name)
        real, root = os.path.realpath(path), os.path.realpath(self.dir)
        if os.path.dirname(real) != root:
            raise ManifestError(f"{self.path}: shard path {name!r} leaves the build folder {self.dir} "
                                f"(it resolves to {real})")
        return path

    def band_shape(self, band: str) -> tuple[int, int]:
        return tuple(int(n) for n in self._data["bands"][band]["shape"])

    def band_dtype(self, band: str) -> str:
        return str(self._data["bands"][band]["dtype"])

    def band_stats(self, bands) -> tuple[np.ndarray, np.ndarray]:
        """float32 (mean, std) of `bands` over the train subset, in the order given."""
        stats = self._data["band_stats"]
        return (np.array([stats[b]["mean"] for b in bands], np.float32),
                np.array([stats[b]["std"] for b in bands], np.float32))

    def remedy(self) -> str:
        """The command that says what is wrong with this build."""
        return REMEDY.format(dir=self.dir)

    def check_shards(self, subsets, level: str = "size") -> None:
        """Check every shard of ``subsets`` before (or after) a reader trusts it; ManifestError
        naming the first bad shard and the remedy. ``level``: "size" (it exists with its
        recorded byte count: a deleted or cut shard, at the cost of one stat), "records" (also
        every record's CRCs and the record count) or "sha256" (every byte)."""
        for shard in self.shards(subsets, empty_ok=True):
            problem = shard_problem(shard, self.compression, level)
            if problem:
                raise ManifestError(f"{shard['path']}: {problem}; check the build: {self.remedy()}")


def shard_problem(shard: dict, compression, level: str = "sha256") -> str | None:
    """What is wrong with one shard entry (with its checked `path`) at ``level`` (see
    `Manifest.check_shards`), or None."""
    if level not in ("size", "records", "sha256"):
        raise ValueError(f"level must be size, records or sha256; got {level!r}")
    path = shard["path"]
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return "missing"
    if size != shard["bytes"]:
        return f"{size} bytes, the manifest lists {shard['bytes']} (truncated or changed)"
    if level == "sha256":
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != shard["sha256"]:
            return "sha256 mismatch (file changed or corrupt)"
    if level in ("records", "sha256"):
        from . import tfrecord

        try:
            n = sum(1 for _ in tfrecord.read_records(path, compression))
        except (ValueError, OSError, EOFError) as e:
            return str(e).replace(f"{path}: ", "")
        if n != shard["records"]:
            return f"{n} records, the manifest lists {shard['records']}"
    return None


# ----------------------------------------------------------------------------------- loading
def manifest_path(build_dir) -> str:
    return os.path.join(os.fspath(build_dir), FILE)


def load_manifest(build_dir, partition: Partition | dict | None = None) -> Manifest:
    """DIR/manifest.json, checked (see the module docstring); `partition`: the class partition
    the reader needs, refused if the data was built with another one."""
    path = manifest_path(build_dir)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest (is {os.fspath(build_dir)} a finished tfrecords_builder build?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot read ({e.strerror})") from None
    return check_manifest(data, build_dir, partition)


def check_manifest(data, build_dir, partition: Partition | dict | None = None) -> Manifest:
    """A `Manifest` of already loaded JSON `data` (e.g. written by a test), checked as on load."""
    path = manifest_path(build_dir)
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object, found {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema_version {version!r}, this reader needs {SCHEMA_VERSION}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ManifestError(f"{path}: no {missing[0]!r} entry (keys found: {sorted(data)})")
    for key in ("bands", "subsets", "band_stats"):
        if not isinstance(data[key], dict):
            raise ManifestError(f"{path}: {key!r} is not a JSON object")
    if data["compression"] not in COMPRESSIONS:
        raise ManifestError(f"{path}: unknown compression {data['compression']!r} (expected null or 'gzip')")
    if list(data["class_names"]) != list(CLASS_NAMES):
        raise ManifestError(f"{path}: class_names differ from BigEarthNet's 19 classes in official order")
    try:
        have = Partition.from_json(data["partition"])
    except ValueError as e:
        raise ManifestError(f"{path}: {e}") from None
    if partition is not None:
        want = partition if isinstance(partition, Partition) else _partition(partition, path)
        if want != have:
            raise ManifestError(f"{path}: partition mismatch: requested {want.to_json()}, "
                                f"the data was built with {have.to_json()}")
    for band in BANDS:
        entry = data["bands"].get(band)
        if entry is None:
            raise ManifestError(f"{path}: bands lacks {band!r} (has {sorted(data['bands'])})")
        if list(entry.get("shape", [])) != [BAND_SIZE[band]] * 2 or entry.get("dtype") != BAND_DTYPE[band]:
            raise ManifestError(f"{path}: band {band} is {entry.get('dtype')} {entry.get('shape')}; "
                                f"BigEarthNet's is {BAND_DTYPE[band]} {[BAND_SIZE[band]] * 2}")
        stats = data["band_stats"].get(band)
        if stats is None:
            raise ManifestError(f"{path}: band_stats lacks {band!r} (has {sorted(data['band_stats'])})")
        mean, std = stats.get("mean"), stats.get("std")
        if not (_finite(mean) and _finite(std) and std > 0):
            raise ManifestError(f"{path}: band_stats of {band} are unusable: mean {mean!r}, std {std!r}")
    holdout = data.get("holdout")
    if holdout is not None and not (isinstance(holdout, dict) and isinstance(holdout.get("countries"), list)
                                    and holdout["countries"]):
        raise ManifestError(f"{path}: 'holdout' names no countries: {holdout!r}")
    m = Manifest(data, build_dir)
    for name, entry in data["subsets"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("count"), int) or not isinstance(entry.get("shards"), list):
            raise ManifestError(f"{path}: subset {name!r} has no count/shards")
        for shard in entry["shards"]:
            if not isinstance(shard, dict) or not all(isinstance(shard.get(k), t) for k, t in _SHARD_KEYS.items()):
                raise ManifestError(f"{path}: subset {name!r} has a shard entry without "
                                    f"{', '.join(_SHARD_KEYS)}: {shard!r}")
            m.shard_path(shard["file"])  # refuses a path that leaves the build folder
        total = sum(s["records"] for s in entry["shards"])
        if total != entry["count"]:
            raise ManifestError(f"{path}: subset {name!r} lists {entry['count']} records but its shards hold {total}")
    return m


def _partition(d, path) -> Partition:
    try:
        return Partition.from_json(d)
    except ValueError as e:
        raise ManifestError(f"{path}: requested {e}") from None


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
