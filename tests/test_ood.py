"""OOD heads: `python -m tf_fusion.ood --run RUN` on the session's smoke run, the intensity
augmentation, class balancing, TensorBoard logging of the validation AUROC, reuse of trained
heads, and a fusion model left untouched by their training."""
from __future__ import annotations

import copy
import json
import os
import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from tf_fusion import config as cfg  # noqa: E402
from tf_fusion import ood  # noqa: E402
from tf_fusion.runs import Run  # noqa: E402
from tfrecords_builder import S2_BANDS  # noqa: E402


def test_cli_trains_and_saves_both_heads(smoke_run, smoke_data):
    run = smoke_run
    for name in ("ood_opt.keras", "ood_sar.keras", "ood.json"):
        assert (run / name).exists(), name
    state = json.loads((run / "ood.json").read_text())
    post_hoc = ("detector", "calibration", "calibrate_on", "knn_k", "knn_reference")  # not settings of the heads
    assert state["config"] == {k: v for k, v in Run(run).config["ood"].items() if k not in post_hoc}
    assert state["val_auroc_optical"] > 0.5  # urban/industrial vs vegetation is easy

    heads = Run(run).ood_heads()
    assert heads["optical"][1] == pytest.approx(state["val_auroc_optical"])
    from tf_fusion.data import make_dataset

    fusion = keras.saving.load_model(run / "best.keras", compile=False)
    inputs, _ = next(iter(make_dataset(smoke_data, "val", batch_size=8, image_size=fusion.image_size)))
    for key, modality, encoder in (("s2", "optical", fusion.encoder_opt), ("s1", "sar", fusion.encoder_sar)):
        p = np.asarray(heads[modality][0](encoder(inputs[key], training=False)))
        assert p.shape == (8, 1) and p.dtype == np.float32
        assert ((p >= 0) & (p <= 1)).all()
    # two hidden layers as in the paper, with dropout
    dense = [l for l in heads["optical"][0].layers if isinstance(l, keras.layers.Dense)]
    assert [d.units for d in dense] == [512, 64, 1]
    assert sum(isinstance(l, keras.layers.Dropout) for l in heads["optical"][0].layers) == 2


def test_validation_auroc_is_in_tensorboard(smoke_run):
    run = smoke_run
    for name in ("ood_opt", "ood_sar"):
        files = [os.path.join(d, f) for d, _, fs in os.walk(run / "logs" / name) for f in fs if f.startswith("events")]
        assert files, name
    val_dir = run / "logs" / "ood_opt" / "validation"
    values = []
    for f in sorted(os.listdir(val_dir)):
        for event in tf.compat.v1.train.summary_iterator(str(val_dir / f)):
            for v in event.summary.value:
                if v.tag == "epoch_auc":
                    values.append(float(tf.make_ndarray(v.tensor)))
    assert len(values) == Run(run).config["ood"]["epochs"] and values[-1] > 0.5


def test_finished_heads_are_loaded_not_retrained(smoke_run, capsys):
    before = (smoke_run / "ood_opt.keras").stat().st_mtime_ns
    assert ood.main(["--run", str(smoke_run)]) == 0
    out = capsys.readouterr().out
    assert "already trained" in out and "val AUROC optical" in out
    assert (smoke_run / "ood_opt.keras").stat().st_mtime_ns == before


def test_training_the_heads_leaves_the_fusion_model_bit_identical(smoke_run, smoke_data, tmp_path):
    """Frozen means frozen: kernels and batch-norm statistics of both branches, and the head."""
    fusion = keras.saving.load_model(smoke_run / "best.keras", compile=False)
    before = [w.numpy().copy() for w in fusion.weights]
    settings = {**Run(smoke_run).config["ood"], "epochs": 1}
    head, _ = ood.train_ood_head(fusion, "optical", smoke_data, settings, str(tmp_path), log=lambda *_: None,
                                 image_size=fusion.image_size)
    assert any(w.numpy().any() for w in head.weights)
    for b, w in zip(before, fusion.weights):
        np.testing.assert_array_equal(b, w.numpy(), err_msg=w.path)
    assert fusion.encoder_opt.trainable and fusion.trainable  # nothing of the caller's model was switched off


def test_intensity_rescaling_is_a_reflectance_rescaling():
    rng = np.random.default_rng(0)
    mean = rng.uniform(300, 3000, 12).astype("float32")
    std = rng.uniform(100, 700, 12).astype("float32")
    raw = rng.uniform(0, 8000, (4, 6, 6, 12))
    x = ((raw - mean) / std).astype("float32")
    scale = np.array([0.5, 1.0, 1.37, 1.5], "float32")
    want = (scale[:, None, None, None] * raw - mean) / std
    got = np.asarray(ood.rescale_intensity(x, scale, mean, std))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(ood.rescale_intensity(x, 1.0, mean, std)), x)


def test_backscatter_shift_is_a_decibel_gain():
    rng = np.random.default_rng(1)
    mean, std = np.array([-11.1, -18.0], "float32"), np.array([3.1, 3.5], "float32")
    db = rng.uniform(-30, 5, (3, 5, 5, 2))
    gain = np.array([-15.0, 0.0, 4.5], "float32")
    want = (db + gain[:, None, None, None] - mean) / std
    got = np.asarray(ood.shift_backscatter(((db - mean) / std).astype("float32"), gain, std))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key,value", [("augment_range", [0.0, 1.5]), ("augment_range", [2.0, 1.0]),
                                       ("sar_augment_db", [5.0, -15.0]), ("sar_augment_db", [1.0])])
def test_bad_augmentation_range_is_refused(key, value):
    with pytest.raises(cfg.ConfigError, match=rf"ood\.{key} must be null or \[lo, hi\].*{re.escape(str(value))}"):
        cfg.load_experiment("smoke", [f"ood.{key}={value}"])


def test_balancing_weights_give_each_class_equal_total():
    w_in, w_out = ood.balance_weights(149, 22)
    assert 149 * w_in == pytest.approx(22 * w_out) == pytest.approx((149 + 22) / 2)
    assert ood.balance_weights(149, 22, balance=False) == (1.0, 1.0)


def test_training_dataset_mixes_balanced_samples(smoke_data):
    manifest = smoke_data
    settings = {**cfg.DEFAULTS["ood"], "batch_size": 32}
    train, val = ood.ood_datasets(manifest, "optical", settings, image_size=32)
    labels, weights, mixed = [], [], 0
    for x, y, w in train:
        assert x.shape[1:] == (32, 32, len(S2_BANDS))
        labels.append(y.numpy()[:, 0]), weights.append(w.numpy())
        mixed += len(set(labels[-1])) == 2
    labels, weights = np.concatenate(labels), np.concatenate(weights)
    n_in, n_out = manifest["subsets"]["train"]["count"], manifest["subsets"]["ood_train"]["count"]
    assert (labels == 1).sum() == n_in and (labels == 0).sum() == n_out  # one pass over both
    assert weights[labels == 1].sum() == pytest.approx(weights[labels == 0].sum(), rel=1e-5)
    assert mixed >= 2  # mixed per sample, not per batch
    assert sum(1 for _ in val) >= 2

    # no ood_val: no validation, with a warning
    from tfrecords_builder import check_manifest

    data = copy.deepcopy(manifest.to_json())
    data["subsets"]["ood_val"] = {"count": 0, "shards": []}
    empty = check_manifest(data, manifest.dir)
    with pytest.warns(UserWarning, match="no validation"):
        _, val = ood.ood_datasets(empty, "sar", settings, image_size=32, log=lambda *_: None)
    assert val is None


def test_only_ood_optical_samples_are_rescaled(smoke_data):
    manifest = smoke_data
    from tf_fusion.data import make_dataset

    def originals(subset):
        return np.concatenate([b[0]["s2"].numpy() for b in make_dataset(manifest, subset, batch_size=64, image_size=16)])

    settings = {**cfg.DEFAULTS["ood"], "augment_range": [3.0, 3.0]}
    train, _ = ood.ood_datasets(manifest, "optical", settings, image_size=16, augment=False)
    got = {0.0: [], 1.0: []}
    for x, y, _ in train:
        for xi, yi in zip(x.numpy(), y.numpy()[:, 0]):
            got[float(yi)].append(xi)
    expected = {1.0: originals("train"),
                0.0: np.asarray(ood.rescale_intensity(originals("ood_train"), 3.0, *manifest.band_stats(S2_BANDS)))}
    for label, samples in got.items():
        ref = expected[label].reshape(len(expected[label]), -1)
        for xi in samples:
            assert np.abs(ref - xi.reshape(1, -1)).max(axis=1).min() < 1e-4, label


def test_a_run_without_heads_has_none(tmp_path):
    assert Run(tmp_path).ood_heads() is None
