"""tf.data input pipeline over the shards written by `tfrecords_builder`.

`make_dataset(DIR, "train", batch_size=64, training=True)` yields `(inputs, labels)` batches:

- `inputs["s2"]`: float32 [B, S, S, 12], the optical bands in `S2_BANDS` order
  (B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B11, B12: ascending band number, B8A after
  B08, B10 absent — the order of `tfrecords_builder.nomenclature.S2_BANDS`);
- `inputs["s1"]`: float32 [B, S, S, 2], (VV, VH) backscatter;
- `inputs["s2_name"]`: string [B], only with `include_names=True`;
- `labels`: float32 [B, n_in], the multi-hot restricted to the manifest partition's
  in-distribution classes in their index order (`Manifest.in_distribution_classes()`).

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

import contextlib
import os

import numpy as np
import tensorflow as tf

from tfrecords_builder import BAND_SIZE, S1_BANDS, S2_BANDS, Manifest, ManifestError, load_manifest

NATIVE_SIZE = 120
RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area")
_COMPRESSION = {None: "", "gzip": "GZIP"}


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


def _band_stats(band_stats: dict, bands) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([band_stats[b]["mean"] for b in bands], np.float32),
            np.array([band_stats[b]["std"] for b in bands], np.float32))


def _normalise_group(planes, band_stats, bands, image_size, method, guard=False):
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
    h = w = BAND_SIZE[bands[0]]
    mean, std = (a.reshape(-1, 1, 1, 1) for a in _band_stats(band_stats, bands))
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


def make_preprocess_fn(band_stats: dict, *, image_size=NATIVE_SIZE, resize_method="bilinear"):
    """{BAND: [B, h, w] at native resolution} → {"s2": [B, S, S, 12], "s1": [B, S, S, 2]}.

    The one place of resampling and normalisation: the training pipeline (`make_parse_fn`, after
    decoding the record bytes) and the exported serving signature (`tf_fusion.export`, on the raw
    bands of a request) both call it, so served inputs are exactly the trained ones. `band_stats`:
    BAND → {"mean", "std"}, the manifest's (native band shapes are BigEarthNet's, which the
    manifest reader has checked). S2 bands are
    grouped by native shape (10 m, 20 m, 60 m): one normalise/resize per group, then one concat of
    channel-major slices in S2_BANDS order and one transpose to channels-last. Non-finite SAR
    values become the band mean (0 after normalising).
    """
    check_resize_method(resize_method)
    image_size = int(image_size)
    if image_size < 1:
        raise ValueError(f"image_size must be positive; got {image_size}")
    groups: dict[int, list[str]] = {}
    for b in S2_BANDS:
        groups.setdefault(BAND_SIZE[b], []).append(b)
    where = {b: (shape, i) for shape, bands in groups.items() for i, b in enumerate(bands)}
    runs = _runs(S2_BANDS, where)

    def preprocess(bands):
        planes = {shape: _normalise_group([bands[b] for b in names], band_stats, names, image_size, resize_method)
                  for shape, names in groups.items()}
        s2 = tf.concat([planes[g][a:b] for g, a, b in runs], axis=0) if len(runs) > 1 else planes[runs[0][0]]
        s1 = _normalise_group([bands[b] for b in S1_BANDS], band_stats, list(S1_BANDS), image_size, resize_method,
                              guard=True)
        return {"s2": tf.transpose(s2, [1, 2, 3, 0]), "s1": tf.transpose(s1, [1, 2, 3, 0])}

    return preprocess


def make_parse_fn(manifest: Manifest, *, image_size=NATIVE_SIZE, resize_method="bilinear", include_names=False):
    """serialized [B] strings → (inputs, labels) as `make_dataset` yields them (no augmentation)."""
    preprocess = make_preprocess_fn(manifest["band_stats"], image_size=image_size, resize_method=resize_method)
    image_size = int(image_size)
    in_dist = list(manifest.partition.in_distribution)
    spec = {b: tf.io.FixedLenFeature([], tf.string) for b in S2_BANDS + S1_BANDS}
    spec["labels"] = tf.io.FixedLenFeature([len(manifest.class_names)], tf.int64)
    if include_names:
        spec["s2_name"] = tf.io.FixedLenFeature([], tf.string)
    shapes = {b: manifest.band_shape(b) for b in S2_BANDS + S1_BANDS}
    dtypes = {b: tf.as_dtype(manifest.band_dtype(b)) for b in S2_BANDS + S1_BANDS}

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
def make_dataset(source, subset, *, batch_size, training=False, image_size=NATIVE_SIZE,
                 resize_method="bilinear", seed=0, deterministic=False, shuffle_buffer=2048,
                 augment=None, repeat=False, drop_remainder=False, include_names=False,
                 verify: str = "size") -> tf.data.Dataset:
    """Batched `(inputs, labels)` of one subset (or a list of subsets) of a tfrecords_builder build.

    source: a `Manifest` (from `tfrecords_builder.load_manifest`) or the build folder.
    subset: a subset name of the manifest, or a list of names (their shards read together).
    training: shuffle shards and records (seeded; `shuffle_buffer` records) and, unless
      `augment=False`, augment. `augment=True` without `training` augments in file order.
    deterministic: a fixed element order (and, with `training`, the same shuffles and
      augmentations on every run with the same `seed`); False lets tf.data hand out whichever
      batch is ready first, so even without `training` two passes may differ in order — pass
      True when predictions must line up with another pass (or use `include_names`).
    resize_method: "bilinear" (default), "nearest", "bicubic" or "area".
    repeat: repeat forever (training loops counted in steps); drop_remainder: only full batches.
    verify: how the shards are checked against the manifest before reading — "size" (each exists
      with its recorded byte count: catches a deleted or truncated shard at no cost), "sha256"
      (every byte, `data.verify: true`), or "none".
    """
    manifest = source if isinstance(source, Manifest) else load_manifest(os.fspath(source))
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    augment = training if augment is None else bool(augment)
    parse = make_parse_fn(manifest, image_size=image_size, resize_method=resize_method, include_names=include_names)
    if verify != "none":
        manifest.check_shards(subset, verify)
    files = [shard["path"] for shard in manifest.shards(subset)]
    compression = _COMPRESSION[manifest.compression]
    seed = int(seed)

    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
        cycle_length=min(len(files), 8), block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic)
    if training and shuffle_buffer and shuffle_buffer > 1:
        ds = ds.shuffle(int(shuffle_buffer), seed=seed + 1, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if not repeat:
        # A finite pass has a known length: Keras then knows where it ends, and a pass that
        # yields fewer records than the manifest lists fails instead of scoring fewer samples.
        records = sum(shard["records"] for shard in manifest.shards(subset))
        batches = records // batch_size if drop_remainder else -(-records // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
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


@contextlib.contextmanager
def shard_errors(manifest, subsets):
    """A corrupt or vanished shard met while reading becomes one ManifestError line naming it
    (TensorFlow's own message names no file): the shards are checked record by record."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.NotFoundError, tf.errors.FailedPreconditionError) as e:
        manifest.check_shards(subsets, "records")  # raises, naming the shard
        raise ManifestError(f"reading {', '.join(subsets)} of {manifest.dir} failed ({str(e.message).splitlines()[0]}); "
                            f"check the build: {manifest.remedy()}") from None
