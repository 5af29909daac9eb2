"""Eq. 3 (`expected_prediction`) and the adaptive graph: exact corner cases, agreement with the
fusion model's three gate settings, one encoder call, shared weights, availability flags,
entropy/confidence against `tf_fusion.scores`, and a .keras round trip. Tiny models, 32×32."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from conftest import count_branch_calls  # noqa: E402
from tf_fusion import scores  # noqa: E402
from tf_fusion.adaptive import (BernoulliEntropy, Confidence, ExpectedPrediction,  # noqa: E402
                                build_adaptive_model, expected_prediction)
from tf_fusion.model import FusionModel, gate_inputs  # noqa: E402
from tf_fusion.ood import build_ood_head  # noqa: E402
from tf_fusion.passes import PASSES  # noqa: E402

FUSE, OPT, SAR = (p.output for p in PASSES)  # probabilities_non_adaptive, _optical_only, _sar_only


def _eq3(p_o, p_s, y_fuse, y_opt, y_sar):
    """`expected_prediction` with the three predictions given by position (PASSES order)."""
    return expected_prediction(p_o, p_s, dict(zip((p.name for p in PASSES), (y_fuse, y_opt, y_sar))))

SIZE, CLASSES, B = 32, 5, 6


def _eq3_numpy(p_o, p_s, y_fuse, y_opt, y_sar):
    p_o, p_s = (np.asarray(p, np.float64).reshape(-1, 1) for p in (p_o, p_s))
    return (p_o * p_s * y_fuse + p_o * (1 - p_s) * y_opt + (1 - p_o) * p_s * y_sar
            + (1 - p_o) * (1 - p_s) * 0.5)


def _random_terms(rng, n=64, c=7):
    return [rng.random((n, 1)).astype("float32"), rng.random((n, 1)).astype("float32"),
            *(rng.random((n, c)).astype("float32") for _ in range(3))]


def test_expected_prediction_is_the_four_term_expectation():
    rng = np.random.default_rng(0)
    p_o, p_s, yf, yo, ys = _random_terms(rng)
    want = _eq3_numpy(p_o, p_s, yf, yo, ys)
    got = np.asarray(_eq3(p_o, p_s, yf, yo, ys))
    assert got.dtype == np.float32 and got.shape == yf.shape
    np.testing.assert_allclose(got, want, atol=1e-6)
    # [B] probabilities and tf tensors work the same
    got_flat = _eq3(tf.constant(p_o[:, 0]), tf.constant(p_s[:, 0]), tf.constant(yf), yo, ys)
    np.testing.assert_array_equal(np.asarray(got_flat), got)
    # as a layer
    layer_out = ExpectedPrediction()([p_o, p_s, {"fuse": yf, "opt": yo, "sar": ys}])
    np.testing.assert_array_equal(np.asarray(layer_out), got)


def test_expected_prediction_corners_are_exact():
    rng = np.random.default_rng(1)
    _, _, yf, yo, ys = _random_terms(rng)
    zeros, ones = np.zeros((len(yf), 1), "float32"), np.ones((len(yf), 1), "float32")
    none = np.asarray(_eq3(zeros, zeros, yf, yo, ys))
    np.testing.assert_array_equal(none, np.full_like(yf, 0.5))  # no evidence: exactly 0.5
    np.testing.assert_array_equal(np.asarray(_eq3(ones, ones, yf, yo, ys)), yf)
    np.testing.assert_array_equal(np.asarray(_eq3(ones, zeros, yf, yo, ys)), yo)
    np.testing.assert_array_equal(np.asarray(_eq3(zeros, ones, yf, yo, ys)), ys)
    # a term of weight 0 contributes exactly 0 even if its prediction is not finite
    bad = np.full_like(yf, np.nan)
    np.testing.assert_array_equal(np.asarray(_eq3(zeros, zeros, bad, bad, bad)), np.full_like(yf, 0.5))
    p_s = rng.random((len(yf), 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(_eq3(zeros, p_s, bad, bad, ys)),
                                  np.asarray(_eq3(zeros, p_s, yf, yo, ys)))


def test_entropy_and_confidence_layers_match_scores():
    rng = np.random.default_rng(2)
    p = rng.random((50, 9)).astype("float32")
    p[0, :3] = [0.0, 1.0, 0.5]
    ent = np.asarray(BernoulliEntropy()(p))
    conf = np.asarray(Confidence()(p))
    assert ent.shape == conf.shape == (50,) and ent.dtype == conf.dtype == np.float32
    np.testing.assert_allclose(ent, scores.entropy_bits(p), atol=1e-6)
    np.testing.assert_allclose(conf, scores.confidence(p), atol=1e-6)


# ------------------------------------------------------------------------------ the graph
@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    fusion = FusionModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE, dropout=0.2)
    head_opt = build_ood_head(fusion.encoder_opt.output.shape[-1], (32, 8), 0.5, name="ood_opt")
    head_sar = build_ood_head(fusion.encoder_sar.output.shape[-1], (32, 8), 0.5, name="ood_sar")
    # non-trivial batch-norm statistics, so inference mode differs from training mode
    for layer in fusion.encoder_opt.layers + fusion.encoder_sar.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.1, "float32"))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, "float32"))
    return fusion, head_opt, head_sar


def _inputs(seed=0, n=B):
    rng = np.random.default_rng(seed)
    return {"s2": rng.normal(size=(n, SIZE, SIZE, 12)).astype("float32"),
            "s1": rng.normal(size=(n, SIZE, SIZE, 2)).astype("float32")}


def _reference(models, x):
    fusion, head_opt, head_sar = models
    ref = {}
    for key, (lo, ls) in ((FUSE, (1, 1)), (OPT, (1, 0)), (SAR, (0, 1))):
        ref[key] = np.asarray(fusion(gate_inputs(x, lo, ls), training=False)["probabilities"])
    ref["p_optical"] = np.asarray(head_opt(fusion.encoder_opt(x["s2"], training=False), training=False))
    ref["p_sar"] = np.asarray(head_sar(fusion.encoder_sar(x["s1"], training=False), training=False))
    ref["probabilities"] = np.asarray(_eq3(ref["p_optical"], ref["p_sar"], ref[FUSE], ref[OPT], ref[SAR]))
    return ref


def test_adaptive_outputs_equal_the_fusion_model_and_heads(models):
    adaptive = build_adaptive_model(*models)
    x = _inputs()
    out = {k: np.asarray(v) for k, v in adaptive(x, training=False).items()}
    ref = _reference(models, x)
    assert set(out) == set(ref) | {"entropy", "confidence"}
    for key, want in ref.items():
        assert out[key].dtype == np.float32, key
        assert out[key].shape == want.shape, key
        np.testing.assert_allclose(out[key], want, atol=1e-6, err_msg=key)
    assert out["p_optical"].shape == (B, 1) and ((out["p_optical"] >= 0) & (out["p_optical"] <= 1)).all()
    np.testing.assert_allclose(out["entropy"], scores.entropy_bits(out["probabilities"]), atol=1e-6)
    np.testing.assert_allclose(out["confidence"], scores.confidence(out["probabilities"]), atol=1e-6)
    assert out["entropy"].shape == out["confidence"].shape == (B,)
    # predict() batches it the same way, and calls default to inference mode (dropout off)
    pred = adaptive.predict(x, batch_size=4, verbose=0)
    np.testing.assert_allclose(pred["probabilities"], ref["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(adaptive(x)["probabilities"]), out["probabilities"])


def test_adaptive_model_shares_weights_and_runs_each_encoder_once(models, monkeypatch):
    fusion, head_opt, head_sar = models
    adaptive = build_adaptive_model(*models)
    for layer in (fusion.encoder_opt, fusion.encoder_sar, fusion.fusion_head, head_opt, head_sar):
        assert adaptive.get_layer(layer.name) is layer
    assert adaptive.count_params() == fusion.count_params() + head_opt.count_params() + head_sar.count_params()
    ids = {id(v) for v in fusion.weights + head_opt.weights + head_sar.weights}
    assert {id(v) for v in adaptive.weights} == ids

    # at run time (eager and traced): count the calls of each encoder
    calls = count_branch_calls(monkeypatch, fusion)
    adaptive(_inputs(1))
    assert calls == {"opt": 1, "sar": 1, "head": len(PASSES)}
    calls.update(opt=0, sar=0, head=0)
    tf.function(lambda x: adaptive(x, training=False))(_inputs(1))  # one trace
    assert calls == {"opt": 1, "sar": 1, "head": len(PASSES)}


def test_availability_flags_fall_back_to_the_other_modality(models):
    adaptive = build_adaptive_model(*models, with_availability=True)
    x = _inputs(2)
    ref = _reference(models, x)
    ones, zeros = np.ones((B, 1), "float32"), np.zeros((B, 1), "float32")

    both = adaptive({**x, "optical_available": ones, "sar_available": ones})
    np.testing.assert_allclose(np.asarray(both["probabilities"]), ref["probabilities"], atol=1e-6)

    # optical missing (its input filled with NaN, as a missing image may arrive): SAR fallback
    no_opt = {k: np.asarray(v) for k, v in adaptive({**x, "s2": np.full_like(x["s2"], np.nan),
                                                     "optical_available": zeros, "sar_available": ones}).items()}
    np.testing.assert_array_equal(no_opt["p_optical"], zeros)
    np.testing.assert_allclose(no_opt["p_sar"], ref["p_sar"], atol=1e-6)
    fallback = np.asarray(_eq3(zeros, no_opt["p_sar"], ref[FUSE], ref[OPT], no_opt[SAR]))
    np.testing.assert_array_equal(no_opt["probabilities"], fallback)
    np.testing.assert_allclose(no_opt["probabilities"], ref["p_sar"] * ref[SAR] + (1 - ref["p_sar"]) * 0.5, atol=1e-6)
    assert np.isfinite(no_opt["entropy"]).all() and np.isfinite(no_opt["confidence"]).all()

    # SAR missing: optical fallback; per-sample flags
    flags = np.array([[1], [0], [1], [0], [1], [0]], "float32")
    mixed = {k: np.asarray(v) for k, v in adaptive({**x, "optical_available": ones, "sar_available": flags}).items()}
    np.testing.assert_array_equal(mixed["p_sar"][flags[:, 0] == 0], 0.0)
    want = np.where(flags == 1, ref["probabilities"],
                    ref["p_optical"] * ref[OPT] + (1 - ref["p_optical"]) * 0.5)
    np.testing.assert_allclose(mixed["probabilities"], want, atol=1e-6)

    # both missing: exactly 0.5
    none = adaptive({**x, "optical_available": zeros, "sar_available": zeros})
    np.testing.assert_array_equal(np.asarray(none["probabilities"]), np.full((B, CLASSES), 0.5, "float32"))
    np.testing.assert_allclose(np.asarray(none["entropy"]), 1.0, atol=1e-6)


def test_keras_round_trip(models, tmp_path):
    x = _inputs(3)
    for with_availability in (False, True):
        adaptive = build_adaptive_model(*models, with_availability=with_availability)
        feed = dict(x)
        if with_availability:
            feed.update(optical_available=np.array([[1], [0], [1], [1], [0], [1]], "float32"),
                        sar_available=np.ones((B, 1), "float32"))
        before = {k: np.asarray(v) for k, v in adaptive(feed).items()}
        path = tmp_path / f"adaptive_{with_availability}.keras"
        adaptive.save(path)
        loaded = keras.saving.load_model(path)
        after = {k: np.asarray(v) for k, v in loaded(feed).items()}
        assert set(after) == set(before)
        for key in before:
            np.testing.assert_allclose(after[key], before[key], atol=1e-6, err_msg=key)


def test_rejects_a_model_without_branches():
    from tf_fusion.baselines import EarlyFusionModel

    keras.utils.set_random_seed(0)
    early = EarlyFusionModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE)
    head = build_ood_head(64, (8,), 0.0)
    with pytest.raises(TypeError, match="FusionModel"):
        build_adaptive_model(early, head, head)


def test_with_availability_the_non_adaptive_output_closes_missing_gates(models):
    """The authors' protocol: non-adaptive fusion with a modality missing is the fusion head with
    that gate closed — the other modality's pass, bitwise — and exactly 0.5 with neither."""
    adaptive = build_adaptive_model(*models, with_availability=True)
    x = _inputs(4)
    ref = _reference(models, x)
    flags = {"optical_available": np.array([[1], [0], [1], [0], [1], [0]], "float32"),
             "sar_available": np.array([[1], [1], [0], [0], [1], [1]], "float32")}
    out = {k: np.asarray(v) for k, v in adaptive({**x, **flags}).items()}
    want = np.where(flags["optical_available"] * flags["sar_available"] == 1, ref[FUSE],
                    np.where(flags["optical_available"] == 1, ref[OPT], np.where(flags["sar_available"] == 1, ref[SAR], 0.5)))
    np.testing.assert_allclose(out[FUSE], want, atol=1e-6)
    np.testing.assert_array_equal(out[FUSE][3], np.full(CLASSES, 0.5, "float32"))
