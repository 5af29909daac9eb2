"""The record schema (one `tf.train.Example` per S2/S1 pair) and a NumPy reader for it.

Features (schema version 1):
- `B01` … `B12`, `B8A`: raw little-endian uint16 bytes at native size (120², 60² or 20²)
- `VV`, `VH`: raw little-endian float32 bytes (dB), 120×120
- `s2_name`, `s1_name`, `subset`: UTF-8 bytes
- `labels`: int64 list of length 19, multi-hot in the official class order
"""
from __future__ import annotations

import numpy as np

from . import tfrecord
from .manifest import ManifestError, load_manifest
from .nomenclature import BAND_DTYPE, BAND_SIZE, BANDS, CLASS_NAMES


def encode(s2_name: str, s1_name: str, subset: str, labels, arrays: dict) -> bytes:
    multi_hot = [0] * len(CLASS_NAMES)
    for i in labels:
        multi_hot[i] = 1
    features = {b: np.ascontiguousarray(arrays[b], dtype=np.dtype(BAND_DTYPE[b]).newbyteorder("<")).tobytes() for b in BANDS}
    features.update(s2_name=s2_name, s1_name=s1_name, subset=subset, labels=multi_hot)
    return tfrecord.encode_example(features)


def decode(payload: bytes, class_names=CLASS_NAMES) -> dict:
    """A record as numpy arrays at native shape and dtype, names as str, labels as class names."""
    ex = tfrecord.decode_example(payload)
    out = {}
    for b in BANDS:
        size = BAND_SIZE[b]
        out[b] = np.frombuffer(ex[b][0], dtype=np.dtype(BAND_DTYPE[b]).newbyteorder("<")).astype(BAND_DTYPE[b]).reshape(size, size)
    for key in ("s2_name", "s1_name", "subset"):
        out[key] = ex[key][0].decode()
    out["labels"] = [name for name, on in zip(class_names, ex["labels"]) if on]
    return out


def iter_records(out_dir, subset: str):
    """Yield every record of `subset` in shard order as a dict of numpy arrays (see `decode`);
    nothing for an empty subset, ManifestError for an unknown one.

    Every shard is checked as it is read: a missing, truncated or corrupt shard (record CRCs), or
    one holding another number of records than the manifest lists, is a one-line ManifestError
    naming the shard and the remedy — never a silent short read.
    """
    m = load_manifest(out_dir)
    for shard in m.shards(subset, empty_ok=True):
        listed, n = int(shard["records"]), 0
        for payload in _payloads(m, shard, subset):
            n += 1
            if n > listed:
                raise _damaged(m, shard, subset, f"holds more records than the {listed} the manifest lists")
            yield decode(payload, m.class_names)
        if n < listed:
            short = listed - n
            raise _damaged(m, shard, subset, f"holds {n} records, {short} record{'s' * (short > 1)} fewer than the "
                                             f"{listed} the manifest lists")


def _payloads(m, shard, subset):
    try:
        yield from tfrecord.read_records(shard["path"], m.compression)
    except FileNotFoundError:
        raise _damaged(m, shard, subset, "missing") from None
    except (ValueError, OSError) as e:
        raise _damaged(m, shard, subset, e.strerror if isinstance(e, OSError) and e.strerror else str(e)) from None


def _damaged(m, shard, subset, what: str) -> ManifestError:
    return ManifestError(f"{shard['path']}: shard of subset {subset!r} is damaged: {what}; "
                         f"check the build with {m.remedy()}")
