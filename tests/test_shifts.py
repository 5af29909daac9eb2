"""The generic corruptions the gate is calibrated with (`tf_fusion.shifts.CORRUPTIONS`), each
checked for what its docstring promises, with NumPy on the output."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tf_fusion import shifts  # noqa: E402

B, H, W, C = 64, 6, 5, 12


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(B, H, W, C)).astype(np.float32)


def _apply(name, x, seed=(3, 4)):
    return np.asarray(shifts.CORRUPTIONS[name](tf.constant(x), tf.constant(seed, tf.int64)))


def test_constant_fill_is_one_value_per_patch_and_band(x):
    y = _apply("constant_fill", x)
    assert np.all(y == y[:, :1, :1, :]) and np.all(np.abs(y) <= 3) and y[:, 0, 0, :].std() > 1


def test_uniform_noise_replaces_the_patch_with_u_minus_2_2(x):
    y = _apply("uniform_noise", x)
    assert np.all(np.abs(y) <= 2) and abs(y.mean()) < 0.05 and y.var() == pytest.approx(16 / 12, rel=0.05)
    assert abs(np.corrcoef(x.ravel(), y.ravel())[0, 1]) < 0.05


@pytest.mark.parametrize("bands", [C, 2])  # optical, and SAR's two bands (none dropped: P = ¼ without the rule)
def test_band_dropout_zeroes_whole_bands_at_least_one_and_keeps_one(x, bands):
    x = x[..., :bands]
    y = _apply("band_dropout", x)
    dropped = np.all(y == 0, axis=(1, 2))  # [B, C]
    kept = np.all(y == x, axis=(1, 2))
    assert np.all(dropped | kept) and dropped.any(axis=1).all() and kept.any(axis=1).all()
    assert 0.4 < dropped.mean() < 0.6


def test_pixel_shuffle_keeps_the_pixels_and_moves_them(x):
    y = _apply("pixel_shuffle", x)
    for i in range(B):
        a, b = x[i].reshape(-1, C), y[i].reshape(-1, C)  # whole pixel vectors: one permutation for all bands
        assert np.array_equal(a[np.lexsort(a.T)], b[np.lexsort(b.T)])
    assert not np.array_equal(x, y)


def test_intensity_shift_moves_every_band_of_a_patch_by_one_amount_of_1_to_3_stds(x):
    d = _apply("intensity_shift", x) - x
    per_patch = d[:, :1, :1, :1]
    np.testing.assert_allclose(d, np.broadcast_to(per_patch, d.shape), atol=1e-5)
    assert np.all((np.abs(per_patch) >= 1 - 1e-5) & (np.abs(per_patch) <= 3 + 1e-5))
    assert (per_patch > 0).any() and (per_patch < 0).any()


def test_corrupt_cycles_through_the_corruptions_deterministically(x):
    inputs = {"s2": tf.constant(x), "s1": tf.constant(x[..., :2])}
    names = list(shifts.CORRUPTIONS)
    for index in range(len(names) + 1):
        out = shifts.corrupt(inputs, index, seed=9)
        again = shifts.corrupt(inputs, index, seed=9)
        for key in ("s2", "s1"):
            assert np.array_equal(np.asarray(out[key]), np.asarray(again[key]))
            assert not np.array_equal(np.asarray(out[key]), np.asarray(inputs[key]))
    flat = np.asarray(shifts.corrupt(inputs, 0, seed=9)["s2"])  # index 0 and 5: constant fill
    assert names[0] == "constant_fill" and np.all(flat == flat[:, :1, :1, :])
    assert np.all(np.asarray(shifts.corrupt(inputs, 5, seed=9)["s2"]) == np.asarray(shifts.corrupt(inputs, 5, seed=9)["s2"])[:, :1, :1, :])
