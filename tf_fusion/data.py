"""tf.data input pipeline over the shards written by `tfrecords_builder`.

`make_dataset(DIR, "train", batch_size=64, training=True)` yields `(inputs, labels)` batches:

- `inputs["s2"]`: float32 [B, S, S, 12], the optical bands in `S2_BANDS` order
  (B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B11, B12: ascending band number, B8A after
  B08, B10 absent — the order of `tfrecords_builder.nomenclature.S2_BANDS`);
- `inputs["s1"]`: float32 [B, S, S, 2], (VV, VH) backscatter;
- `inputs["s2_name"]`: string [B], only with `include_names=True`;
- `labels`: float32 [B, n_in], the multi-hot restricted to the manifest partition's
  in-distribution classes in their index order (`in_distribution_classes(manifest)`).

Per batch: the serialized examples are batched first and parsed with one `tf.io.parse_example`;
each band is decoded with `tf.io.decode_raw(little_endian=True)` and the bands of one native
resolution (10 m 120², 20 m 60², 60 m 20²) are stacked as channel-major planes, normalised as
(x − mean) / std with the manifest's `band_stats` in float32 (non-finite SAR values first replaced
by the band mean, i.e. 0 after), and resized to S×S together in one `tf.image.resize` call per
group (10 m bands and S1 only when S != 120); one concat puts the planes in `S2_BANDS` order and
one transpose makes them channels-last (`make_preprocess_fn`, which the exported serving signature
reuses on raw request bands). Training adds seeded random flips and 90° rotations (the 8
symmetries of the square), one per sample, applied identically to its S2 and S1 images.
"""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from tfrecords_builder import nomenclature

from . import config as cfg

S2_BANDS = nomenclature.S2_BANDS  # channel order of inputs["s2"]
S1_BANDS = nomenclature.S1_BANDS  # channel order of inputs["s1"]
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
NATIVE_SIZE = 120
RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area")
_PARTITION_KEYS = ("in_distribution", "ood_train", "ood_test")
_COMPRESSION = {None: "", "": "", "gzip": "GZIP", "GZIP": "GZIP"}


class ManifestError(cfg.ConfigError):
    """The data folder's manifest is missing, of another schema, or does not match the request."""


# ----------------------------------------------------------------------------------- manifest
def _partition_json(partition) -> dict:
    if hasattr(partition, "to_json"):  # a tfrecords_builder.nomenclature.Partition
        partition = partition.to_json()
    try:
        return {k: [int(i) for i in partition[k]] for k in _PARTITION_KEYS}
    except (KeyError, TypeError, ValueError):
        raise ManifestError(f"bad partition {partition!r}: expected {{{', '.join(_PARTITION_KEYS)}: [class indices]}}") from None


def check_manifest(manifest: dict, where: str = "manifest", partition=None) -> dict:
    """Validate an already loaded manifest (schema version, optional partition); return it."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: expected a JSON object, found {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{where}: schema_version {version!r}, this reader needs {SCHEMA_VERSION}")
    for key in ("class_names", "partition", "bands", "subsets", "band_stats"):
        if key not in manifest:
            raise ManifestError(f"{where}: no {key!r} entry (keys found: {sorted(manifest)})")
    if partition is not None:
        want, have = _partition_json(partition), _partition_json(manifest["partition"])
        if want != have:
            raise ManifestError(f"{where}: partition mismatch: requested {want}, the data was built with {have}")
    return manifest


def load_manifest(data_dir, partition=None) -> dict:
    """DIR/manifest.json, checked: ManifestError if missing, not schema 1, or built with another partition."""
    path = os.path.join(os.fspath(data_dir), MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest (is {data_dir} a finished tfrecords_builder build?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON: {e}") from None
    return check_manifest(manifest, path, partition)


def in_distribution_classes(manifest) -> list[str]:
    """Names of the in-distribution classes, in the order of the label vector."""
    names = manifest["class_names"]
    return [names[i] for i in manifest["partition"]["in_distribution"]]


def subset_count(manifest, subset) -> int:
    """Records in `subset` (a name or a list of names) — e.g. for steps per epoch; ManifestError
    when one is missing or empty."""
    return sum(s["count"] for s in _subset_entries(manifest, subset, "manifest"))


def subset_size(manifest, subset: str) -> int:
    """Records in `subset`, 0 when the build has none (an optional subset such as `snow`)."""
    return int(manifest["subsets"].get(subset, {}).get("count") or 0)


def _subset_entries(manifest, subset, where) -> list[dict]:
    names = [subset] if isinstance(subset, str) else list(subset)
    available = ", ".join(f"{k} ({v.get('count', 0)})" for k, v in manifest["subsets"].items())
    if not names:
        raise ManifestError(f"{where}: no subset requested; available: {available}")
    out = []
    for name in names:
        entry = manifest["subsets"].get(name)
        if entry is None:
            raise ManifestError(f"{where}: unknown subset {name!r}; available: {available}")
        if not entry.get("count") or not entry.get("shards"):
            raise ManifestError(f"{where}: subset {name!r} is empty (0 records); available: {available}")
        out.append(entry)
    return out


# ----------------------------------------------------------------------------------- decoding
def _band_stats(manifest, bands) -> tuple[np.ndarray, np.ndarray]:
    stats = manifest["band_stats"]
    missing = [b for b in bands if b not in stats]
    if missing:
        raise ManifestError(f"manifest band_stats lacks {missing} (has {sorted(stats)})")
    mean = np.array([stats[b]["mean"] for b in bands], dtype=np.float32)
    std = np.array([stats[b]["std"] for b in bands], dtype=np.float32)
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ManifestError(f"manifest band_stats are unusable: mean {mean.tolist()}, std {std.tolist()}")
    return mean, std


def _band_shape(manifest, band) -> tuple[int, int]:
    entry = manifest["bands"].get(band)
    if entry is None:
        raise ManifestError(f"manifest bands lacks {band!r} (has {sorted(manifest['bands'])})")
    return tuple(int(n) for n in entry["shape"])


def check_resize_method(resize_method) -> str:
    """`resize_method` if allowed (RESIZE_METHODS), else a ValueError echoing it."""
    if resize_method not in RESIZE_METHODS:
        raise ValueError(f"resize_method must be one of {', '.join(RESIZE_METHODS)}; got {resize_method!r}")
    return resize_method


def _runs(order, where):
    """[(group, start, stop)]: `order` as consecutive slices of the groups (`where`: band → (group, index))."""
    out = []
    for band in order:
        group, i = where[band]
        if out and out[-1][0] == group and out[-1][2] == i:
            out[-1][2] += 1
        else:
            out.append([group, i, i + 1])
    return [tuple(r) for r in out]


def _normalise_group(planes, manifest, bands, image_size, method, guard=False):
    """Bands of one native shape → normalised float32 planes [C, B, S, S] (C = len(bands)).

    planes: one [B, h, w] tensor per band (uint16 or float32, as decoded or as served). Stack on a
    leading channel axis, cast, replace non-finite values by the band mean when `guard`, normalise
    (x − mean) / std per band, then, below S×S, resize the whole group in ONE `tf.image.resize`
    call that sees its C·B planes as the channels of a single [h, w, C·B] image (several times
    cheaper than NHWC with C channels). Normalising before resampling equals normalising after it
    up to float32 rounding, since every allowed method is linear with weights summing to 1 (~1e-6
    relative; ~1e-5 for "area", whose weights TF accumulates in float32; "nearest" copies, so it
    is exact).
    """
    h, w = _band_shape(manifest, bands[0])
    mean, std = (a.reshape(-1, 1, 1, 1) for a in _band_stats(manifest, bands))
    x = tf.cast(tf.stack(planes, axis=0), tf.float32)
    if guard:
        x = tf.where(tf.math.is_finite(x), x, mean)
    x = (x - mean) / std
    if (h, w) != (image_size, image_size):
        c, n = len(bands), tf.shape(x)[1]
        x = tf.transpose(tf.reshape(x, [c * n, h, w]), [1, 2, 0])
        x = tf.image.resize(x, [image_size, image_size], method=method)
        x = tf.reshape(tf.transpose(tf.cast(x, tf.float32), [2, 0, 1]), [c, n, image_size, image_size])
    return x


def make_preprocess_fn(manifest, *, image_size=NATIVE_SIZE, resize_method="bilinear"):
    """{BAND: [B, h, w] at native resolution} → {"s2": [B, S, S, 12], "s1": [B, S, S, 2]}.

    The one place of resampling and normalisation: the training pipeline (`make_parse_fn`, after
    decoding the record bytes) and the exported serving signature (`tf_fusion.export`, on the raw
    bands of a request) both call it, so served inputs are exactly the trained ones. S2 bands are
    grouped by native shape (10 m, 20 m, 60 m): one normalise/resize per group, then one concat of
    channel-major slices in S2_BANDS order and one transpose to channels-last. Non-finite SAR
    values become the band mean (0 after normalising).
    """
    check_resize_method(resize_method)
    image_size = int(image_size)
    if image_size < 1:
        raise ValueError(f"image_size must be positive; got {image_size}")
    _band_stats(manifest, S2_BANDS + S1_BANDS)  # fail early on missing or unusable statistics
    groups: dict[tuple[int, int], list[str]] = {}
    for b in S2_BANDS:
        groups.setdefault(_band_shape(manifest, b), []).append(b)
    where = {b: (shape, i) for shape, bands in groups.items() for i, b in enumerate(bands)}
    runs = _runs(S2_BANDS, where)

    def preprocess(bands):
        planes = {shape: _normalise_group([bands[b] for b in names], manifest, names, image_size, resize_method)
                  for shape, names in groups.items()}
        s2 = tf.concat([planes[g][a:b] for g, a, b in runs], axis=0) if len(runs) > 1 else planes[runs[0][0]]
        s1 = _normalise_group([bands[b] for b in S1_BANDS], manifest, list(S1_BANDS), image_size, resize_method,
                              guard=True)
        return {"s2": tf.transpose(s2, [1, 2, 3, 0]), "s1": tf.transpose(s1, [1, 2, 3, 0])}

    return preprocess


def make_parse_fn(manifest, *, image_size=NATIVE_SIZE, resize_method="bilinear", include_names=False):
    """serialized [B] strings → (inputs, labels) as `make_dataset` yields them (no augmentation)."""
    preprocess = make_preprocess_fn(manifest, image_size=image_size, resize_method=resize_method)
    image_size = int(image_size)
    n_classes = len(manifest["class_names"])
    in_dist = [int(i) for i in manifest["partition"]["in_distribution"]]
    spec = {b: tf.io.FixedLenFeature([], tf.string) for b in S2_BANDS + S1_BANDS}
    spec["labels"] = tf.io.FixedLenFeature([n_classes], tf.int64)
    if include_names:
        spec["s2_name"] = tf.io.FixedLenFeature([], tf.string)
    shapes = {b: _band_shape(manifest, b) for b in S2_BANDS + S1_BANDS}
    dtypes = {b: tf.as_dtype(manifest["bands"][b]["dtype"]) for b in S2_BANDS + S1_BANDS}

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        bands = {b: tf.reshape(tf.io.decode_raw(parsed[b], dtypes[b], little_endian=True), [-1, *shapes[b]])
                 for b in S2_BANDS + S1_BANDS}
        inputs = preprocess(bands)
        for x in inputs.values():  # keep a static batch size (drop_remainder) through the reshapes
            x.set_shape([serialized.shape[0], image_size, image_size, None])
        if include_names:
            inputs["s2_name"] = parsed["s2_name"]
        labels = tf.cast(tf.gather(parsed["labels"], in_dist, axis=1), tf.float32)
        return inputs, labels

    return parse


# ------------------------------------------------------------------------------- augmentation
def dihedral_tables(size: int) -> np.ndarray:
    """int32 [8, size²]: for each symmetry of the square (k·90° rotation, after a left-right flip
    for the last 4), the flat source pixel of every flat output pixel."""
    idx = np.arange(size * size, dtype=np.int32).reshape(size, size)
    return np.stack([np.rot90(idx[:, ::-1] if flip else idx, k).reshape(-1) for flip in (0, 1) for k in range(4)])


def augment_batch(inputs, seed):
    """Random flips / 90° rotations: one of the 8 symmetries per sample (stateless, `seed` int [2]),
    the same for its s2 and s1; one gather per image tensor."""
    s2 = inputs["s2"]
    size = s2.shape[1]
    if size is None or size != s2.shape[2]:
        raise ValueError(f"augmentation needs square images of known size; got {s2.shape}")
    which = tf.random.stateless_uniform([tf.shape(s2)[0]], seed=seed, minval=0, maxval=8, dtype=tf.int32)
    index = tf.gather(tf.constant(dihedral_tables(size)), which)  # [B, S²]
    out = dict(inputs)
    for key in ("s2", "s1"):
        x = inputs[key]
        c = x.shape[-1]
        x = tf.gather(tf.reshape(x, [-1, size * size, c]), index, batch_dims=1)
        out[key] = tf.ensure_shape(tf.reshape(x, [-1, size, size, c]), inputs[key].shape)
    return out


# ----------------------------------------------------------------------------------- dataset
def make_dataset(data_dir, subset, *, batch_size, training=False, image_size=NATIVE_SIZE,
                 resize_method="bilinear", seed=0, deterministic=False, shuffle_buffer=2048,
                 augment=None, repeat=False, drop_remainder=False, manifest=None,
                 include_names=False) -> tf.data.Dataset:
    """Batched `(inputs, labels)` of one subset (or a list of subsets) of a tfrecords_builder build.

    subset: a subset name of the manifest, or a list of names (their shards read together).
    training: shuffle shards and records (seeded; `shuffle_buffer` records) and, unless
      `augment=False`, augment. `augment=True` without `training` augments in file order.
    deterministic: a fixed element order (and, with `training`, the same shuffles and
      augmentations on every run with the same `seed`); False lets tf.data hand out whichever
      batch is ready first, so even without `training` two passes may differ in order — pass
      True when predictions must line up with another pass (or use `include_names`).
    resize_method: "bilinear" (default), "nearest", "bicubic" or "area".
    repeat: repeat forever (training loops counted in steps); drop_remainder: only full batches.
    manifest: an already loaded manifest dict (skips reading DIR/manifest.json).
    """
    data_dir = os.fspath(data_dir)
    where = os.path.join(data_dir, MANIFEST)
    manifest = load_manifest(data_dir) if manifest is None else check_manifest(manifest, where)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    augment = training if augment is None else bool(augment)
    parse = make_parse_fn(manifest, image_size=image_size, resize_method=resize_method, include_names=include_names)
    compression = manifest.get("compression")
    if compression not in _COMPRESSION:
        raise ManifestError(f"{where}: unknown compression {compression!r} (expected null or 'gzip')")
    files = [os.path.join(data_dir, shard["file"]) for entry in _subset_entries(manifest, subset, where)
             for shard in entry["shards"]]
    seed = int(seed)

    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=_COMPRESSION[compression]),
        cycle_length=min(len(files), 8), block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic)
    if training and shuffle_buffer and shuffle_buffer > 1:
        ds = ds.shuffle(int(shuffle_buffer), seed=seed + 1, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augment:
        # One stateless seed per batch from a seeded stream: reproducible, new on every pass.
        seeds = tf.data.Dataset.random(seed=seed + 2, rerandomize_each_iteration=True).batch(2)

        def parse_and_augment(serialized, batch_seed):
            inputs, labels = parse(serialized)
            return augment_batch(inputs, batch_seed), labels

        ds = tf.data.Dataset.zip(ds, seeds).map(parse_and_augment, num_parallel_calls=tf.data.AUTOTUNE,
                                                deterministic=deterministic)
    else:
        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    return ds.with_options(options)
