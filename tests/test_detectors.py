"""Post-hoc OOD detectors (`tf_fusion.detectors`): every score against a direct NumPy computation,
the calibrators against scikit-learn, the in-graph layer against the NumPy path (eager, traced,
functional, after a .keras round trip), the run-folder errors and the seeded kNN reference.
Tiny arrays; no model is trained."""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402
from sklearn.covariance import LedoitWolf  # noqa: E402
from sklearn.isotonic import IsotonicRegression  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from tf_fusion import detector_registry as det_registry  # noqa: E402
from tf_fusion import detectors as det  # noqa: E402
from tf_fusion.runs import RunError  # noqa: E402

D, C = 8, 5


def _labels(rng, n, c=C, rate=0.35):
    y = rng.random((n, c)) < rate
    y[:, -1] = False  # a class no training patch carries
    y[np.arange(n), rng.integers(0, c - 1, n)] = True  # every patch carries at least one class
    return y


def _brute_knn(x, reference, k):
    """k-th smallest Euclidean distance of each row of x to the rows of reference, by sorting all."""
    d = np.sqrt(((x[:, None, :] - reference[None, :, :]) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, k - 1]


# ------------------------------------------------------------------------------------ the scores
def test_logit_scores_by_hand():
    logits = np.array([[0.0, 2.0, -1.0], [3.0, -3.0, 1.0]])
    assert det.raw_score("max_logit", logits=logits).tolist() == [2.0, 3.0]
    energy = [math.log(1 + math.exp(0)) + math.log(1 + math.exp(2)) + math.log(1 + math.exp(-1)),
              math.log(1 + math.exp(3)) + math.log(1 + math.exp(-3)) + math.log(1 + math.exp(1))]
    np.testing.assert_allclose(det.raw_score("joint_energy", logits=logits), energy, rtol=1e-12)
    p = 1.0 / (1.0 + np.exp(-logits))
    np.testing.assert_allclose(det.raw_score("confidence", logits=logits), np.maximum(p, 1 - p).mean(axis=1),
                               rtol=1e-12)
    # no overflow for large logits: softplus(1000) = 1000, confidence of ±1000 = 1
    big = np.array([[1000.0, -1000.0]])
    np.testing.assert_allclose(det.raw_score("joint_energy", logits=big), [1000.0])
    np.testing.assert_allclose(det.raw_score("confidence", logits=big), [1.0])
    assert det.fit("joint_energy", None, None, None) == {}  # nothing to fit


def test_mahalanobis_with_a_known_covariance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(D, D))
    cov = a @ a.T + np.eye(D)  # constructed, symmetric positive definite
    mean = rng.normal(size=D)
    z = rng.normal(size=(6, D)) * 2
    stats = {"mean": mean, "precision": np.linalg.inv(cov)}
    expected = -np.array([(v - mean) @ np.linalg.solve(cov, v - mean) for v in z])
    np.testing.assert_allclose(det.raw_score("mahalanobis", embedding=z, stats=stats), expected, rtol=1e-9)
    # diagonal covariance: the closed form −Σ (z_i − μ_i)² / σ_i²
    var = np.arange(1.0, D + 1)
    diag = {"mean": mean, "precision": np.diag(1 / var)}
    np.testing.assert_allclose(det.raw_score("mahalanobis", embedding=z, stats=diag),
                               -(((z - mean) ** 2) / var).sum(axis=1), rtol=1e-9)


def test_mahalanobis_fit_is_ledoit_wolf_and_recovers_a_known_gaussian():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, D)) @ rng.normal(size=(D, D)) + 3.0
    stats = det.fit("mahalanobis", x, None, None)
    lw = LedoitWolf().fit(x)
    np.testing.assert_allclose(stats["mean"], x.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["precision"], np.linalg.inv(lw.covariance_), rtol=1e-4, atol=1e-5)
    # data whose covariance we know: the fitted Gaussian scores like the true one
    cov = np.diag([1.0, 4.0, 0.25])
    big = rng.multivariate_normal([1.0, -2.0, 0.5], cov, size=20000)
    fitted = det.fit("mahalanobis", big, None, None)
    z = rng.normal(size=(10, 3))
    np.testing.assert_allclose(det.raw_score("mahalanobis", z, stats=fitted),
                               -((((z - [1.0, -2.0, 0.5]) ** 2) / np.diag(cov)).sum(axis=1)), rtol=0.05)
    # D ≥ N: the shrunk covariance is still invertible (finite, positive definite precision)
    small = det.fit("mahalanobis", rng.normal(size=(10, 20)), None, None)
    assert np.isfinite(small["precision"]).all()
    assert np.linalg.eigvalsh(small["precision"].astype(np.float64)).min() > 0


def test_class_conditional_mahalanobis():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, D))
    y = _labels(rng, 200)
    stats = det.fit("mahalanobis_class", x, y.astype(np.int64), None)
    classes = [c for c in range(C) if y[:, c].any()]
    assert stats["classes"].tolist() == classes == list(range(C - 1))  # the empty class has no mean
    means = np.array([x[y[:, c]].mean(axis=0) for c in classes])
    np.testing.assert_allclose(stats["means"], means, rtol=1e-5, atol=1e-6)
    # one shared covariance of the class-centred rows, a patch counting once per class it carries
    centred = np.concatenate([x[i] - means[j] for i in range(len(x)) for j, c in enumerate(classes) if y[i, c]]
                             ).reshape(-1, D)
    assert len(centred) == y[:, classes].sum()
    lw = LedoitWolf(assume_centered=True).fit(centred)
    np.testing.assert_allclose(stats["precision"], np.linalg.inv(lw.covariance_), rtol=1e-4, atol=1e-5)
    # the score with a known covariance: −min over classes, by an explicit loop
    a = rng.normal(size=(D, D))
    cov = a @ a.T + np.eye(D)
    known = {"classes": np.arange(3), "means": rng.normal(size=(3, D)) * 3, "precision": np.linalg.inv(cov)}
    z = rng.normal(size=(7, D)) * 3
    expected = [-min((v - m) @ np.linalg.solve(cov, v - m) for m in known["means"]) for v in z]
    np.testing.assert_allclose(det.raw_score("mahalanobis_class", z, stats=known), expected, rtol=1e-9)


def test_knn_against_brute_force():
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(40, D))
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    z = rng.normal(size=(9, D)) * 5
    z_unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    for k in (1, 4, 40):
        score = det.raw_score("knn", z, stats={"k": np.asarray(k), "reference": reference})
        np.testing.assert_allclose(score, -_brute_knn(z_unit, reference, k), rtol=1e-9, atol=1e-12)
    # fitted: a reference bound above N keeps every (normalised) training embedding
    x = rng.normal(size=(50, D))
    stats = det.fit("knn", x, None, {"knn_k": 3, "knn_reference": 2000})
    np.testing.assert_allclose(stats["reference"], x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(det.raw_score("knn", z, stats=stats),
                               -_brute_knn(z_unit, stats["reference"].astype(np.float64), 3), rtol=1e-9)


def test_knn_reference_is_bounded_and_seeded():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, D))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    settings = {"knn_k": 5, "knn_reference": 100, "seed": 7}
    a, b = (det.fit("knn", x, None, settings)["reference"] for _ in range(2))
    other = det.fit("knn", x, None, {**settings, "seed": 8})["reference"]
    assert a.shape == (100, D) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)  # same seed, same reference
    assert not np.array_equal(a, other)
    rows = {tuple(np.round(r, 5)) for r in unit.astype(np.float32)}
    assert all(tuple(np.round(r, 5)) in rows for r in a)  # distinct training rows, normalised
    assert len({tuple(r) for r in a}) == 100
    idx = det.reference_indices(500, 100, 7)
    assert len(idx) == 100 == len(set(idx.tolist())) and idx.max() < 500
    assert len(det.reference_indices(30, 100, 7)) == 30  # never more than there is
    with pytest.raises(ValueError, match="knn_k=5 needs at least 5 training embeddings, got 4"):
        det.fit("knn", x[:4], None, settings)


def _softplus_sum(z):
    """The joint energy Σ_c log(1 + e^{z_c}), written out."""
    return np.sum(np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0), axis=1)


def test_mahalanobis_normalized_is_the_class_gaussian_of_unit_embeddings():
    """Mahalanobis++ (Mueller & Hein 2025): every embedding divided by its norm, then class means,
    one shared Ledoit–Wolf covariance of the class-centred unit vectors, −min_c distance."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(250, D)) * rng.uniform(0.2, 5.0, size=(250, 1)) + 1.0  # norms spread out
    y = _labels(rng, 250)
    unit = x / np.sqrt((x ** 2).sum(axis=1, keepdims=True))
    classes = [c for c in range(C) if y[:, c].any()]
    means = np.array([unit[y[:, c]].mean(axis=0) for c in classes])
    centred = np.concatenate([unit[y[:, c]] - means[j] for j, c in enumerate(classes)])
    cov = LedoitWolf(assume_centered=True).fit(centred).covariance_
    z = rng.normal(size=(9, D)) * 4
    z_unit = z / np.sqrt((z ** 2).sum(axis=1, keepdims=True))
    expected = [-min((v - m) @ np.linalg.solve(cov, v - m) for m in means) for v in z_unit]

    stats = det.fit("mahalanobis_normalized", x, y, None)
    np.testing.assert_allclose(stats["means"], means, rtol=1e-5, atol=1e-6)
    score = det.raw_score("mahalanobis_normalized", z, stats=stats)
    np.testing.assert_allclose(score, expected, rtol=1e-4)  # float32 stats
    np.testing.assert_allclose(det.raw_score("mahalanobis_normalized", 7.0 * z, stats=stats), score, rtol=1e-9)


def test_vim_is_the_papers_virtual_logit_with_the_sigmoid_energy():
    """ViM (Wang et al. 2022), built here from scratch: origin o with W o + b = 0 (minimum norm),
    the principal subspace of the training x − o by SVD, the residual's norm, α = mean max
    logit / mean residual on train; score = Σ softplus(logits) − α·residual."""
    rng = np.random.default_rng(13)
    f, c, n = 20, 6, 300
    kernel, bias = rng.normal(size=(f, c)), rng.normal(size=c) + 2.0
    train = np.abs(rng.normal(size=(n, 5)) @ rng.normal(size=(5, f)) + 0.1 * rng.normal(size=(n, f)))
    o = -np.linalg.lstsq(kernel.T, bias, rcond=None)[0]  # Wᵀ-space: logits = x @ kernel + bias
    np.testing.assert_allclose(o @ kernel + bias, 0, atol=1e-9)
    k = f // 2  # the paper's rule below 768 features
    v = np.linalg.svd(train - o, full_matrices=False)[2][:k].T  # [f, k] principal directions

    def residual(x):
        u = x - o
        return np.sqrt(((u - u @ v @ v.T) ** 2).sum(axis=1))

    alpha = (train @ kernel + bias).max(axis=1).mean() / residual(train).mean()
    x = np.abs(rng.normal(size=(8, f)) * 2)
    logits = x @ kernel + bias
    expected = _softplus_sum(logits) - alpha * residual(x)

    stats = det.fit("vim", None, None, None, features=train, classifier=(kernel, bias))
    assert stats["basis"].shape == (f, k) and float(stats["alpha"]) == pytest.approx(alpha, rel=1e-9)
    np.testing.assert_allclose(det.raw_score("vim", logits=logits, features=x, stats=stats), expected, rtol=1e-5)
    assert [det_registry.ViM.dim(w) for w in (64, 767, 768, 2047, 2048, 4096)] == [32, 383, 512, 512, 1000, 1000]


def test_scale_is_the_papers_scaled_activations_with_the_sigmoid_energy():
    """SCALE (Xu et al. 2024), from the paper: r = Σ a / Σ of the activations above the 85th
    percentile (the top F − round(0.85 F)), the activations scaled by e^r before the classifier,
    score = Σ softplus of those logits."""
    rng = np.random.default_rng(14)
    f, c = 40, 6
    kernel, bias = rng.normal(size=(f, c)) / 3, rng.normal(size=c)
    a = np.maximum(rng.normal(0.3, 1.0, size=(10, f)), 0)  # post-ReLU: many exact zeros
    a[3] = 0.0  # no activation at all: r = 1
    top = f - round(0.85 * f)
    above = np.array([np.sort(row)[::-1][:top].sum() for row in a])
    r = np.where(above > 0, a.sum(axis=1) / np.where(above > 0, above, 1), 1.0)
    expected = _softplus_sum((a * np.exp(r)[:, None]) @ kernel + bias)

    stats = det.fit("scale", None, None, None, classifier=(kernel, bias))
    got = det.raw_score("scale", logits=a @ kernel + bias, features=a, stats=stats)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_one_class_and_one_entry_make_a_detector(tmp_path):
    """A detector registered here alone — −‖z − μ‖, μ the training mean — is fitted, scored,
    calibrated, saved in a run, computed in a DetectorProbability layer and round-tripped through
    a .keras file, with no other change anywhere."""

    class NegativeNorm(det_registry.Detector):
        name, reads, stats_keys, train_pass = "negative_norm", ("embedding",), ("center",), True

        @classmethod
        def fit(cls, inputs, labels, settings):
            return {"center": cls.training(inputs, "embedding").mean(axis=0)}

        @classmethod
        def score(cls, inputs, stats):
            x = cls.matrix(inputs, "embedding", len(stats["center"]))
            return -np.linalg.norm(x - stats["center"], axis=1)

        @classmethod
        def graph_constants(cls, stats):
            return {"center": np.asarray(stats["center"], np.float64)}

        @classmethod
        def graph_score(cls, inputs, constants, static):
            return -keras.ops.sqrt(keras.ops.sum(keras.ops.square(inputs["embedding"] - constants["center"]), axis=-1))

        @classmethod
        def widths(cls, shapes):
            return {"embedding": shapes["center"][0]}

    det_registry.register(NegativeNorm)
    try:
        with pytest.raises(ValueError, match="a detector needs a new name; got 'negative_norm'"):
            det_registry.register(NegativeNorm)
        rng = np.random.default_rng(15)
        stats = det.fit("negative_norm", rng.normal(size=(200, D)), None, None)
        e_in, e_out = rng.normal(size=(60, D)), rng.normal(4.0, 1.0, size=(60, D))
        calibrator = det.fit_calibrator(det.raw_score("negative_norm", e_in, stats=stats),
                                        det.raw_score("negative_norm", e_out, stats=stats))
        det.save(tmp_path, "negative_norm", "sar", stats, calibrator, None)
        stats, calibrator = det.load(tmp_path, "negative_norm", "sar", None)
        z = np.concatenate([e_in[:5], e_out[:5]]).astype(np.float32)
        want = calibrator(det.raw_score("negative_norm", z, stats=stats))
        assert want[:5].min() > 0.5 > want[5:].max()
        inputs = [keras.Input((D,)), keras.Input((C,))]
        model = keras.Model(inputs, det.DetectorProbability.from_fitted("negative_norm", stats, calibrator)(inputs))
        model.save(tmp_path / "toy.keras")
        loaded = keras.saving.load_model(tmp_path / "toy.keras")
        np.testing.assert_allclose(loaded.predict([z, np.zeros((10, C))], verbose=0)[:, 0], want, atol=1e-5)
    finally:
        det_registry.DETECTORS.pop("negative_norm")


def test_the_registry_imports_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
            "from tf_fusion import config, detector_registry as r, gate; "
            "c = config.load_experiment('smoke', ['ood.detector=[binary_head, vim]']); "
            "assert gate.parse(c['ood']['detector'])['sar'] == ('binary_head', 'vim'); print(len(r.DETECTORS))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0 and proc.stdout.strip() == str(len(det.DETECTORS)), proc.stderr[-2000:]


# ------------------------------------------------------------------------------------ calibration
def _scores(rng, n_in=300, n_out=120):
    return rng.normal(1.0, 1.0, n_in), rng.normal(-1.0, 1.5, n_out)


@pytest.mark.parametrize("method", det.CALIBRATIONS)
def test_calibrated_p_is_monotone_and_in_unit_interval(method):
    rng = np.random.default_rng(5)
    s_in, s_out = _scores(rng)
    grid = np.linspace(-50, 50, 20001)  # far beyond the fitted range on both sides
    p = det.fit_calibrator(s_in, s_out, method)(grid)
    assert ((p >= 0) & (p <= 1)).all()
    assert (np.diff(p) >= 0).all()
    assert p[0] < 0.5 < p[-1]  # it does separate
    # a score that ranks OOD above in-distribution still gives a non-decreasing p
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flipped = det.fit_calibrator(-s_in, -s_out, method)(grid)
    assert (np.diff(flipped) >= 0).all() and ((flipped >= 0) & (flipped <= 1)).all()


def test_logistic_calibrator_is_sklearns_balanced_logistic_regression():
    rng = np.random.default_rng(6)
    s_in, s_out = _scores(rng)
    s = np.concatenate([s_in, s_out])[:, None]
    y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    scaler = StandardScaler().fit(s)
    lr = LogisticRegression(class_weight="balanced").fit(scaler.transform(s), y)
    grid = np.linspace(-8, 8, 101)[:, None]
    np.testing.assert_allclose(det.fit_calibrator(s_in, s_out)(grid[:, 0]),
                               lr.predict_proba(scaler.transform(grid))[:, 1], rtol=1e-10, atol=1e-12)
    with pytest.warns(UserWarning, match="ranks OOD above in-distribution"):
        assert (det.fit_calibrator(-s_in, -s_out)(grid[:, 0]) == 0.5).all()


@pytest.mark.parametrize("method", det.CALIBRATIONS)
def test_calibration_against_groups_weighs_each_group_equally(method):
    """With `out_groups` (ood_val and the corruptions of val) each group carries half the OOD
    side whatever its size: repeating one group's scores ten times changes nothing. The logistic
    calibrator is scikit-learn's on those weights (each in-distribution score 1, each of the G
    groups n_in / G in all), the
    score standardised by the in-distribution scores; corruptions far out (1e4) do not flatten
    the slope between in and ood_val."""
    rng = np.random.default_rng(8)
    s_in, s_ood = _scores(rng)
    s_far = rng.normal(-1e4, 10, 60)  # the corruptions: far beyond everything
    groups = np.r_[np.zeros(len(s_ood)), np.ones(len(s_far))]
    grid = np.linspace(-6, 6, 61)
    p = det.fit_calibrator(s_in, np.r_[s_ood, s_far], method, out_groups=groups)(grid)
    more = det.fit_calibrator(s_in, np.r_[s_ood, np.tile(s_far, 10)], method,
                              out_groups=np.r_[np.zeros(len(s_ood)), np.ones(10 * len(s_far))])(grid)
    np.testing.assert_allclose(p, more, atol=1e-6)
    if method == "logistic":
        s = np.r_[s_in, s_ood, s_far]
        y = np.r_[np.ones(len(s_in)), np.zeros(len(s_ood) + len(s_far))]
        w = np.r_[np.ones(len(s_in)), np.full(len(s_ood), len(s_in) / (2 * len(s_ood))),
                  np.full(len(s_far), len(s_in) / (2 * len(s_far)))]
        mean, std = s_in.mean(), s_in.std()
        lr = LogisticRegression().fit(((s - mean) / std)[:, None], y, sample_weight=w)
        np.testing.assert_allclose(p, lr.predict_proba(((grid - mean) / std)[:, None])[:, 1], rtol=1e-6, atol=1e-9)
        plain = det.fit_calibrator(s_in, np.r_[s_ood, s_far])(grid)  # one scale for all: the far group sets it
        assert np.ptp(p) > 0.5 > np.ptp(plain)
    with pytest.raises(ValueError, match="out_groups needs one label per OOD score; got 3 for 180"):
        det.fit_calibrator(s_in, np.r_[s_ood, s_far], method, out_groups=[0, 1, 1])


def _sklearn_isotonic(s_in, s_out):
    s = np.concatenate([s_in, s_out])
    y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    weight = np.where(y == 1, len(s) / (2 * len(s_in)), len(s) / (2 * len(s_out)))  # balanced classes
    return IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0, y_max=1).fit(s, y, sample_weight=weight)


def test_isotonic_calibrator_and_its_graph_twin_equal_sklearn():
    rng = np.random.default_rng(7)
    s_in, s_out = (s.astype(np.float32).astype(np.float64) for s in _scores(rng))  # float32-exact
    # and two small cases whose lowest / highest threshold starts a steep segment (not a flat one)
    cases = [(s_in, s_out), (np.array([1.0, 3, 4, 5]), np.array([0.0, 2])), (np.array([0.0, -2]), -np.arange(1.0, 6))]
    for s_in, s_out in cases:
        iso = _sklearn_isotonic(s_in, s_out)
        calibrator = det.fit_calibrator(s_in, s_out, "isotonic")
        grid = np.concatenate([np.linspace(-9, 9, 3001), s_in, s_out]).astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(calibrator(grid), iso.predict(grid), atol=1e-12)
        layer = det.DetectorProbability.from_fitted("max_logit", {}, calibrator)
        graph = np.asarray(layer.calibrate(tf.constant(grid, tf.float32)))
        np.testing.assert_allclose(graph, iso.predict(grid), atol=1e-6)
    # one threshold (every score equal): a constant, in the graph too
    flat = det.fit_calibrator(np.zeros(5), np.zeros(3), "isotonic")
    layer = det.DetectorProbability.from_fitted("max_logit", {}, flat)
    np.testing.assert_allclose(np.asarray(layer.calibrate(tf.constant([-1.0, 0.0, 2.0]))), flat([-1.0, 0.0, 2.0]),
                               atol=1e-7)


# ------------------------------------------------------------------------------------ the layer
def _classifier_inputs(f=12, c=C, seed=9):
    """Non-negative features near a 4-dimensional subspace (in) or spread out (out, a larger
    ``spread``) and a classifier (kernel [f, c], bias [c]): what vim and scale read."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(4, f))
    kernel, bias = rng.normal(size=(f, c)) / 2, rng.normal(size=c) + 1.0

    def features(n, spread=0.1):
        return np.abs(rng.normal(size=(n, 4)) @ basis + spread * rng.normal(size=(n, f)))

    return features, (kernel, bias)


def _fitted(name, method, d=16, c=C):
    """A fitted detector and calibrator on synthetic data, and fresh test inputs (not the
    calibration samples): (embedding, logits, features)."""
    rng = np.random.default_rng(8)
    features, classifier = _classifier_inputs(c=c)
    x = rng.normal(size=(400, d))
    stats = det.fit(name, x, _labels(rng, 400, c), {"knn_k": 4, "knn_reference": 150, "seed": 1},
                    features=features(400), classifier=classifier)

    def inputs(n):
        e = np.concatenate([rng.normal(size=(n, d)), rng.normal(1.0, 1.6, size=(n, d))]).astype(np.float32)
        lg = np.concatenate([rng.normal(0, 3, size=(n, c)), rng.normal(0, 1, size=(n, c))]).astype(np.float32)
        ft = np.concatenate([features(n), features(n, 1.0)]).astype(np.float32)
        return e, lg, ft

    e_val, l_val, f_val = inputs(80)
    s = det.raw_score(name, e_val, l_val, stats, f_val)
    calibrator = det.fit_calibrator(s[:80], s[80:], method)
    return stats, calibrator, inputs(50)


@pytest.mark.parametrize("method", det.CALIBRATIONS)
@pytest.mark.parametrize("name", det.POST_HOC)
def test_layer_equals_the_numpy_path(name, method, tmp_path):
    stats, calibrator, (e, lg, ft) = _fitted(name, method)
    s64 = det.raw_score(name, e, lg, stats, ft)
    expected = calibrator(s64)
    layer = det.DetectorProbability.from_fitted(name, stats, calibrator, name=f"p_{name}")
    assert not layer.trainable_weights and layer.non_trainable_weights

    traced = tf.function(lambda a, b, f: layer([a, b, f]))
    inputs = [keras.Input((e.shape[1],), name="embedding"), keras.Input((lg.shape[1],), name="logits"),
              keras.Input((ft.shape[1],), name="features")]
    model = keras.Model(inputs, layer(inputs))
    assert model.output.shape == (None, 1)
    file = str(tmp_path / "detector.keras")
    model.save(file)
    loaded = keras.saving.load_model(file)
    outputs = {"eager": layer([e, lg, ft]), "traced": traced(tf.constant(e), tf.constant(lg), tf.constant(ft)),
               "functional": model([e, lg, ft]), "loaded": loaded.predict([e, lg, ft], verbose=0)}
    assert loaded.get_layer(f"p_{name}").get_config() == layer.get_config()

    if method == "logistic":  # smooth: float32 scoring error stays far below 1e-5
        for how, p in outputs.items():
            p = np.asarray(p)
            assert p.shape == (len(e), 1) and p.dtype == np.float32, how
            np.testing.assert_allclose(p[:, 0], expected, atol=1e-5, err_msg=how)
        return
    # isotonic: a steep segment (two adjacent thresholds of different level) magnifies the
    # float32 rounding of the score and of the thresholds, so: within 1e-5 except on such
    # segments, and everywhere within their slope times that rounding. The interpolation itself
    # is exact (test_isotonic_calibrator_and_its_graph_twin_equal_sklearn).
    s32 = np.asarray(layer.score(e, lg, ft), np.float64)
    np.testing.assert_allclose(s32, s64, rtol=2e-6, atol=1e-6 * np.abs(s64).max())
    slope = np.max(np.diff(calibrator.y) / np.maximum(np.diff(calibrator.x), 1e-300))
    rounding = np.abs(s32 - s64).max() + 3 * np.finfo(np.float32).eps * np.abs(calibrator.x).max()
    for how, p in outputs.items():
        p = np.asarray(p)
        assert p.shape == (len(e), 1) and p.dtype == np.float32, how
        error = np.abs(p[:, 0] - expected)
        assert error.max() <= slope * rounding + 1e-6 and np.mean(error > 1e-5) <= 0.02, how


def test_layer_rejects_an_embedding_of_another_width():
    stats, calibrator, _ = _fitted("mahalanobis", "logistic")
    layer = det.DetectorProbability.from_fitted("mahalanobis", stats, calibrator)
    with pytest.raises(ValueError, match=r"width 16, got shape \(None, 9\)"):
        layer([keras.Input((9,)), keras.Input((C,))])


# ------------------------------------------------------------------------------------ the run folder
def test_saved_detectors_reload_and_unfitted_or_stale_ones_are_one_line_errors(tmp_path):
    run = tmp_path / "run"
    command = f"python -m tf_fusion.evaluate --run {run} --detectors all"
    settings = {"knn_k": 4, "knn_reference": 150, "seed": 1}
    with pytest.raises(RunError) as e:
        det.load(run, "knn", "optical", settings)
    assert str(e.value) == f"{run}: detector knn (optical) was never fitted; fit it with {command}"
    assert not det.is_fitted(run, "knn", "optical", settings)

    stats, calibrator, (e_in, lg, _) = _fitted("knn", "logistic")
    file = det.save(run, "knn", "optical", stats, calibrator, settings)
    assert file == os.path.join(str(run), "detectors", "knn_optical.npz")
    assert os.listdir(run / "detectors") == ["knn_optical.npz"]  # no temporary left behind
    assert det.is_fitted(run, "knn", "optical", settings)
    stats2, calibrator2 = det.load(run, "knn", "optical", settings)
    assert sorted(stats2) == sorted(stats) and calibrator2 == calibrator
    np.testing.assert_array_equal(det.raw_score("knn", e_in, stats=stats2), det.raw_score("knn", e_in, stats=stats))
    with pytest.raises(RunError, match="never fitted"):
        det.load(run, "knn", "sar", settings)  # per modality

    for changed in ({**settings, "knn_k": 5}, {**settings, "seed": 2}, {**settings, "calibration": "isotonic"}):
        with pytest.raises(RunError) as e:
            det.load(run, "knn", "optical", changed)
        message = str(e.value)
        assert "\n" not in message and message.startswith(f"{run}: detector knn (optical) was fitted with ")
        assert message.endswith(f"; refit it with {command}")

    # a setting a detector does not depend on does not make it stale
    stats, calibrator, _ = _fitted("mahalanobis", "isotonic")
    det.save(run, "mahalanobis", "sar", stats, calibrator, {"calibration": "isotonic"})
    det.load(run, "mahalanobis", "sar", {"calibration": "isotonic", "knn_k": 50, "seed": 9})
    with pytest.raises(RunError, match="refit it with"):
        det.load(run, "mahalanobis", "sar", None)  # default calibration: logistic

    (run / "detectors" / "joint_energy_sar.npz").write_bytes(b"not a zip")
    with pytest.raises(RunError, match=r"joint_energy_sar.npz is unreadable .*refit it with python -m"):
        det.load(run, "joint_energy", "sar", None)


def test_registry_and_checks_echo_what_they_received():
    assert {n: c.reads for n, c in det.DETECTORS.items()} == {
        "confidence": ("logits",), "max_logit": ("logits",), "joint_energy": ("logits",), "mahalanobis": ("embedding",),
        "mahalanobis_class": ("embedding",), "knn": ("embedding",), "binary_head": ("embedding",),
        "mahalanobis_normalized": ("embedding",), "vim": ("features", "logits", "classifier"),
        "scale": ("features", "logits", "classifier")}
    assert det.POST_HOC == ("confidence", "max_logit", "joint_energy", "mahalanobis", "mahalanobis_class", "knn",
                            "mahalanobis_normalized", "vim", "scale")
    assert det.CALIBRATIONS == ("logistic", "isotonic")
    with pytest.raises(ValueError, match="unknown detector 'energy'"):
        det.raw_score("energy", logits=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="binary_head is the paper's trained head"):
        det.fit("binary_head", np.zeros((3, 2)), None, None)
    with pytest.raises(ValueError, match=r"embedding must be \[N, 4\], got shape \(3, 5\)"):
        det.raw_score("mahalanobis", np.zeros((3, 5)), stats={"mean": np.zeros(4), "precision": np.eye(4)})
    with pytest.raises(ValueError, match=r"needs fitted stats with keys \['k', 'reference'\]; got \['k'\]"):
        det.raw_score("knn", np.zeros((3, 5)), stats={"k": np.asarray(1)})
    with pytest.raises(ValueError, match=r"unknown detector settings \['knn'\]"):
        det.resolve_settings({"knn": 3})
    with pytest.raises(ValueError, match="knn_reference must be an integer ≥ 10, got 5"):
        det.resolve_settings({"knn_reference": 5})
    with pytest.raises(ValueError, match="calibration must be one of .*got 'platt'"):
        det.fit_calibrator([1.0], [0.0], "platt")
    with pytest.raises(ValueError, match=r"multi-hot labels \[4, C\]; got None"):
        det.fit("mahalanobis_class", np.zeros((4, 2)), None, None)
    with pytest.raises(ValueError, match="modality must be one of"):
        det.path("run", "knn", "s2")
