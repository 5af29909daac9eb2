"""tf_fusion.data against an independent NumPy reading of the same records (tfrecords_builder.iter_records)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tfrecords_builder import ManifestError, iter_records, load_manifest, records, tfrecord

tf = pytest.importorskip("tensorflow")
from tf_fusion import data  # noqa: E402

RES_10M = ("B02", "B03", "B04", "B08")
RES_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
RES_60M = ("B01", "B09")


@pytest.fixture(scope="session")
def built(small_shards):
    manifest = json.loads((small_shards / "manifest.json").read_text())
    assert len(manifest["subsets"]["train"]["shards"]) >= 3
    return small_shards


@pytest.fixture(scope="session")
def recs(built):
    """s2_name → record (numpy, native shape) for every subset."""
    manifest = load_manifest(built)
    return {r["s2_name"]: r for s in manifest["subsets"] for r in iter_records(str(built), s)}


@pytest.fixture(scope="session")
def manifest(built):
    return load_manifest(built)


def _all(ds):
    """Concatenate every batch of a dataset into numpy arrays."""
    xs, ys = [], []
    for x, y in ds:
        xs.append({k: v.numpy() for k, v in x.items()})
        ys.append(y.numpy())
    return {k: np.concatenate([x[k] for x in xs]) for k in xs[0]}, np.concatenate(ys)


def _norm(x, band, manifest):
    s = manifest["band_stats"][band]
    return (np.asarray(x, np.float32) - np.float32(s["mean"])) / np.float32(s["std"])


def _tf_resize(band_array, size, method):
    """One band alone, resized by TensorFlow: the reference for the batched, stacked resize."""
    x = tf.constant(band_array.astype(np.float32)[None, :, :, None])
    return tf.image.resize(x, [size, size], method=method).numpy()[0, :, :, 0]


def test_channel_order_shapes_and_10m_bands(built, recs, manifest):
    ds = data.make_dataset(built, "train", batch_size=8, include_names=True)
    spec = ds.element_spec[0]
    assert spec["s2"].shape.as_list() == [None, 120, 120, 12] and spec["s1"].shape.as_list() == [None, 120, 120, 2]
    x, y = _all(ds)
    n = manifest["subsets"]["train"]["count"]
    assert x["s2"].shape == (n, 120, 120, 12) and x["s2"].dtype == np.float32
    assert x["s1"].shape == (n, 120, 120, 2) and x["s1"].dtype == np.float32
    assert y.shape == (n, 12) and y.dtype == np.float32
    assert sorted(x["s2_name"].astype(str)) == sorted(r["s2_name"] for r in iter_records(str(built), "train"))
    assert data.S2_BANDS == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
    for i, name in enumerate(x["s2_name"].astype(str)):
        rec = recs[name]
        for b in RES_10M:
            np.testing.assert_allclose(x["s2"][i, ..., data.S2_BANDS.index(b)], _norm(rec[b], b, manifest), atol=1e-5, rtol=0)
        for c, b in enumerate(data.S1_BANDS):
            np.testing.assert_allclose(x["s1"][i, ..., c], _norm(rec[b], b, manifest), atol=1e-5, rtol=0)


# The pipeline normalises at native resolution and then resamples (cheaper); the reference
# resamples the raw band alone and then normalises. Equal up to float32 rounding for bilinear and
# bicubic; TF's area kernel accumulates weights that miss 1 by ~1e-6, hence its looser bound.
@pytest.mark.parametrize("method,atol", [("bilinear", 1e-5), ("bicubic", 1e-5), ("area", 1e-4)])
def test_resampling_matches_per_band_resize(built, recs, manifest, method, atol):
    x, _ = _all(data.make_dataset(built, "val", batch_size=4, include_names=True, resize_method=method))
    for i, name in enumerate(x["s2_name"].astype(str)[:3]):
        for b in RES_20M + RES_60M:
            want = _norm(_tf_resize(recs[name][b], 120, method), b, manifest)
            np.testing.assert_allclose(x["s2"][i, ..., data.S2_BANDS.index(b)], want, atol=atol, rtol=1e-6)


def test_nearest_replicates_pixels(built, recs, manifest):
    x, _ = _all(data.make_dataset(built, "val", batch_size=16, include_names=True, resize_method="nearest"))
    for i, name in enumerate(x["s2_name"].astype(str)):
        for bands, k in ((RES_60M, 6), (RES_20M, 2)):
            for b in bands:
                want = _norm(np.repeat(np.repeat(recs[name][b], k, axis=0), k, axis=1), b, manifest)
                np.testing.assert_array_equal(x["s2"][i, ..., data.S2_BANDS.index(b)], want)


def test_smaller_image_size_resizes_every_band(built, recs, manifest):
    x, _ = _all(data.make_dataset(built, "test", batch_size=16, include_names=True, image_size=64))
    assert x["s2"].shape[1:] == (64, 64, 12) and x["s1"].shape[1:] == (64, 64, 2)
    name = x["s2_name"].astype(str)[0]
    for b in ("B02", "B05", "B01"):
        np.testing.assert_allclose(x["s2"][0, ..., data.S2_BANDS.index(b)],
                                   _norm(_tf_resize(recs[name][b], 64, "bilinear"), b, manifest), atol=1e-5, rtol=0)
    np.testing.assert_allclose(x["s1"][0, ..., 1], _norm(_tf_resize(recs[name]["VH"], 64, "bilinear"), "VH", manifest),
                               atol=1e-5, rtol=0)


def test_bad_resize_method(built):
    with pytest.raises(ValueError, match="'lanczos3'"):
        data.make_dataset(built, "train", batch_size=4, resize_method="lanczos3")


@pytest.mark.parametrize("subset", ["train", "ood_test"])
def test_labels_are_the_in_distribution_slice(built, recs, manifest, subset):
    x, y = _all(data.make_dataset(built, subset, batch_size=16, include_names=True))
    in_dist = manifest["partition"]["in_distribution"]
    assert manifest.in_distribution_classes() == [manifest["class_names"][i] for i in in_dist]
    for name, row in zip(x["s2_name"].astype(str), y):
        multi_hot = np.array([c in recs[name]["labels"] for c in manifest["class_names"]], np.float32)
        np.testing.assert_array_equal(row, multi_hot[in_dist])
    if subset == "ood_test":
        assert not y.any()
    else:
        assert y.sum(axis=1).min() >= 1


# The 8 symmetries of the square on [H, W, C].
DIHEDRAL = [lambda a, k=k, f=f: np.rot90(a[:, ::-1] if f else a, k, axes=(0, 1)) for f in (0, 1) for k in range(4)]


def test_augmentation_is_shared_by_s2_and_s1_and_varies(built):
    plain, _ = _all(data.make_dataset(built, "train", batch_size=32, include_names=True, deterministic=True))
    aug, _ = _all(data.make_dataset(built, "train", batch_size=32, include_names=True, deterministic=True,
                                    augment=True, seed=11))
    assert list(plain["s2_name"]) == list(aug["s2_name"])  # training=False: no shuffling
    used = []
    for i in range(len(plain["s2"])):
        matches = [t for t, fn in enumerate(DIHEDRAL) if np.array_equal(fn(plain["s2"][i]), aug["s2"][i])]
        assert len(matches) == 1, f"sample {i}: augmented s2 is {len(matches)} symmetries of the original"
        assert np.array_equal(DIHEDRAL[matches[0]](plain["s1"][i]), aug["s1"][i]), f"sample {i}: s1 transformed differently"
        used.append(matches[0])
    assert len(set(used)) >= 4, used


def test_deterministic_runs_repeat_exactly(built):
    def run(seed):
        ds = data.make_dataset(built, "train", batch_size=8, training=True, deterministic=True, seed=seed,
                               include_names=True, shuffle_buffer=64)
        return [(x["s2_name"].numpy(), x["s2"].numpy(), x["s1"].numpy(), y.numpy()) for x, y in ds]

    a, b, c = run(5), run(5), run(6)
    assert len(a) == len(b)
    for u, v in zip(a, b):
        for p, q in zip(u, v):
            np.testing.assert_array_equal(p, q)
    assert [list(u[0]) for u in a] != [list(u[0]) for u in c]


def test_repeat_and_drop_remainder(built, manifest):
    n = manifest["subsets"]["val"]["count"]
    ds = data.make_dataset(built, "val", batch_size=3, training=True, repeat=True, drop_remainder=True, shuffle_buffer=8)
    assert ds.element_spec[1].shape.as_list() == [3, 12]
    assert ds.element_spec[0]["s2"].shape.as_list() == [3, 120, 120, 12]  # static through augmentation too
    batches = list(ds.take(2 * n // 3 + 2))
    assert all(y.shape[0] == 3 for _, y in batches)
    both = data.make_dataset(built, ["val", "test"], batch_size=64)
    assert sum(y.shape[0] for _, y in both) == n + manifest["subsets"]["test"]["count"]


def _rewrite_train(built, tmp_path, edit, compression=None):
    """A copy of the build whose train subset is one shard of edited records, listed in its manifest."""
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    manifest = json.loads((out / "manifest.json").read_text())
    recs = list(iter_records(str(built), "train"))
    index = {n: i for i, n in enumerate(manifest["class_names"])}
    name = "train-edited.tfrecord" + (".gz" if compression else "")
    with tfrecord.Writer(str(out / name), compression) as w:
        for r in recs:
            edit(r)
            arrays = {b: r[b] for b in data.S2_BANDS + data.S1_BANDS}
            w.write(records.encode(r["s2_name"], r["s1_name"], r["subset"], [index[c] for c in r["labels"]], arrays))
    manifest["compression"] = compression
    manifest["subsets"]["train"]["shards"] = [{"file": name, "records": len(recs), "bytes": w.size, "sha256": w.sha256}]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_non_finite_sar_values_become_the_mean(built, tmp_path, manifest):
    def poison(r):
        for b in ("VV", "VH"):
            r[b] = r[b].copy()
            r[b][0, :3] = [np.nan, np.inf, -np.inf]

    out = _rewrite_train(built, tmp_path, poison)
    x, _ = _all(data.make_dataset(out, "train", batch_size=8, include_names=True))
    ref, _ = _all(data.make_dataset(built, "train", batch_size=8, include_names=True))
    assert np.isfinite(x["s1"]).all() and np.isfinite(x["s2"]).all()
    np.testing.assert_array_equal(x["s1"][:, 0, :3, :], 0.0)
    # everything else unchanged (samples matched by name: shard layouts differ)
    a, b = np.argsort(x["s2_name"]), np.argsort(ref["s2_name"])
    np.testing.assert_array_equal(x["s1"][a][:, 1:], ref["s1"][b][:, 1:])
    np.testing.assert_array_equal(x["s1"][a][:, 0, 3:], ref["s1"][b][:, 0, 3:])
    np.testing.assert_array_equal(x["s2"][a], ref["s2"][b])
    # bilinear resizing to another size does not spread the bad values either
    small, _ = _all(data.make_dataset(out, "train", batch_size=8, image_size=50))
    assert np.isfinite(small["s1"]).all()


def test_gzip_shards(built, tmp_path):
    out = _rewrite_train(built, tmp_path, lambda r: None, compression="gzip")
    a, ya = _all(data.make_dataset(out, "train", batch_size=8, deterministic=True, include_names=True))
    b, yb = _all(data.make_dataset(built, "train", batch_size=64, deterministic=True, include_names=True))
    order_a, order_b = np.argsort(a["s2_name"]), np.argsort(b["s2_name"])
    np.testing.assert_array_equal(a["s2"][order_a], b["s2"][order_b])
    np.testing.assert_array_equal(ya[order_a], yb[order_b])


def test_manifest_errors(built, tmp_path, manifest):
    with pytest.raises(ManifestError, match="no manifest"):
        data.make_dataset(tmp_path, "train", batch_size=4)
    with pytest.raises(ManifestError, match=r"unknown subset 'nope'; available: train \(\d+\)"):
        data.make_dataset(built, "nope", batch_size=4)
    from tfrecords_builder import check_manifest

    empty = check_manifest(dict(manifest.to_json(), subsets={**manifest["subsets"], "snow": {"count": 0, "shards": []}}),
                           built)
    with pytest.raises(ManifestError, match="subset 'snow' is empty"):
        data.make_dataset(empty, "snow", batch_size=4)
