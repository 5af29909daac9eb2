"""Backbones, the gated fusion graph, Eq. 2's train step, serialization, distribution, mixed precision.

Tiny models and 32×32 inputs throughout; the MirroredStrategy check runs in a subprocess because
the two logical CPU devices must be configured before TensorFlow initialises its devices.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from tf_fusion.backbones import BACKBONES, build_backbone  # noqa: E402
from tf_fusion.baselines import EarlyFusionModel  # noqa: E402
from tf_fusion.model import FusionModel, Squash, gate_inputs  # noqa: E402
from tf_fusion.passes import PASSES  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, CLASSES = 32, 5
GATES = [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (0.0, 0.0)]


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = {"s2": rng.normal(size=(n, SIZE, SIZE, 12)).astype("float32"),
         "s1": rng.normal(size=(n, SIZE, SIZE, 2)).astype("float32")}
    y = (rng.random((n, CLASSES)) < 0.4).astype("float32")
    return x, y


def _tiny(**kwargs):
    keras.utils.set_random_seed(0)
    return FusionModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE, **kwargs)


# --- backbones -------------------------------------------------------------------------------

# ResNet50 with 12 and 2 channels: the stage-5 case of the fusion-stage test below
@pytest.mark.parametrize("name,dim", [("tiny", 64), pytest.param("resnet18", 512, marks=pytest.mark.slow)])
def test_backbones_any_channel_count(name, dim):
    for channels in (12, 2):
        model = build_backbone(name, (SIZE, SIZE, channels), "opt_")
        assert model.name == f"opt_{name}"
        assert tuple(model.output.shape) == (None, dim)
        out = model(np.zeros((2, SIZE, SIZE, channels), "float32"))
        assert tuple(out.shape) == (2, dim) and out.dtype == "float32"
    assert set(BACKBONES) == {"tiny", "resnet18", "resnet50"}


def test_resnet18_is_torchvision_sized():
    # torchvision resnet18 without fc: 11,176,512 parameters for 3 input channels; Keras also
    # counts the BN moving mean/variance (2 × 4,800).
    model = build_backbone("resnet18", (SIZE, SIZE, 3), "x_")
    assert model.count_params() == 11_176_512 + 9_600


def test_unknown_backbone_names_known_ones():
    with pytest.raises(ValueError, match=r"'vgg16'.*resnet18, resnet50, tiny"):
        build_backbone("vgg16", (SIZE, SIZE, 12), "opt_")


# --- Eq. 1: squashing and gates --------------------------------------------------------------

def test_squash_is_eq1():
    z = np.linspace(-20, 20, 401).astype("float32")
    expected = 2.0 * (1.0 / (1.0 + np.exp(-z.astype("float64"))) - 0.5)
    np.testing.assert_allclose(np.asarray(Squash()(z)), expected, atol=1e-6)


def test_gates_zero_exactly_the_gated_half():
    model = _tiny()
    head = model.fusion_head
    fused = keras.Model(head.inputs, head.get_layer("fused_features").output)
    rng = np.random.default_rng(1)
    z_opt = rng.normal(size=(6, 64)).astype("float32") * 5
    z_sar = rng.normal(size=(6, 64)).astype("float32") * 5
    z_opt[0, 0] = np.nan  # a closed gate also hides non-finite features
    for lo, ls in GATES:
        out = np.asarray(fused([z_opt, z_sar, np.full((6, 1), lo, "float32"), np.full((6, 1), ls, "float32")]))
        opt_half, sar_half = out[:, :64], out[:, 64:]
        if lo == 0:
            assert np.all(opt_half == 0.0)
        else:
            np.testing.assert_allclose(opt_half[1:], np.tanh(z_opt[1:] / 2), atol=1e-6)
        if ls == 0:
            assert np.all(sar_half == 0.0)
        else:
            np.testing.assert_allclose(sar_half, np.tanh(z_sar / 2), atol=1e-6)
    # per-sample gates: row i gated by its own λ
    lam = np.array([[1], [0], [1], [0], [1], [0]], "float32")
    out = np.asarray(fused([z_opt, z_sar, lam, np.ones((6, 1), "float32")]))
    assert np.all(out[lam[:, 0] == 0, :64] == 0.0) and np.all(out[2::2, :64] != 0.0)


@pytest.mark.parametrize("cls", [FusionModel, EarlyFusionModel])
def test_closed_gate_output_does_not_depend_on_that_modality(cls):
    keras.utils.set_random_seed(0)
    model = cls(backbone="tiny", num_classes=CLASSES, image_size=SIZE)
    x, _ = _batch()
    x2 = {"s2": x["s2"] * 3.0 + 1.0, "s1": x["s1"]}
    x3 = {"s2": x["s2"], "s1": -x["s1"] + 2.0}
    p = lambda inputs, lo, ls: np.asarray(model(gate_inputs(inputs, lo, ls))["probabilities"])  # noqa: E731
    assert np.array_equal(p(x, 0.0, 1.0), p(x2, 0.0, 1.0))  # bitwise
    assert np.array_equal(p(x, 1.0, 0.0), p(x3, 1.0, 0.0))
    assert not np.array_equal(p(x, 1.0, 1.0), p(x2, 1.0, 1.0))
    assert not np.array_equal(p(x, 1.0, 1.0), p(x3, 1.0, 1.0))


def test_gate_inputs_shapes():
    x, _ = _batch(3)
    g = gate_inputs(x, 1, np.array([1.0, 0.0, 1.0]))
    assert g["lambda_opt"].shape == (3, 1) and g["lambda_opt"].dtype == tf.float32
    np.testing.assert_array_equal(np.asarray(g["lambda_sar"])[:, 0], [1, 0, 1])
    assert set(g) == {"s2", "s1", "lambda_opt", "lambda_sar"}


# What a branch ends with at fusion stage 1 … 5 on 32×32 inputs (stage 5: the pooled embedding).
# ResNets as He et al. (2016) Table 1 lays them out: a stride-4 stem of 64 channels, then stages
# of stride 1, 2, 2, 2 and widths 64 … 512 (×4 in ResNet50's bottlenecks); tiny: a stride-2 stem
# of 16, stages (16, /2), (32, /2), (64, /2), (64, /1).
BRANCH_SHAPES = {
    "tiny": [(16, 16, 16), (8, 8, 16), (4, 4, 32), (2, 2, 64), (64,)],
    "resnet18": [(8, 8, 64), (8, 8, 64), (4, 4, 128), (2, 2, 256), (512,)],
    "resnet50": [(8, 8, 64), (8, 8, 256), (4, 4, 512), (2, 2, 1024), (2048,)],
}


@pytest.mark.parametrize("backbone", ["tiny", pytest.param("resnet18", marks=pytest.mark.slow),
                                      pytest.param("resnet50", marks=pytest.mark.slow)])
@pytest.mark.parametrize("stage", [1, 2, 3, 4, 5])
def test_every_fusion_stage_builds_and_a_closed_gate_zeroes_its_maps(backbone, stage):
    """Branches end after the stem and stage − 1 residual stages (feature maps), or pooled at
    stage 5, whatever the channel count (12 optical, 2 SAR); the fused maps of a closed gate are
    exactly zero, even for non-finite features."""
    keras.utils.set_random_seed(0)
    model = FusionModel(backbone=backbone, num_classes=CLASSES, image_size=SIZE, fusion_stage=stage)
    x, _ = _batch(2)
    out = model(gate_inputs(x, 1.0, 1.0))
    assert out["probabilities"].shape == (2, CLASSES) and out["probabilities"].dtype == "float32"
    for key in ("embedding_opt", "embedding_sar"):
        assert tuple(out[key].shape) == (2, *BRANCH_SHAPES[backbone][stage - 1]), key
    assert model.encoder_opt.name == f"opt_{backbone}" and model.encoder_sar.name == f"sar_{backbone}"
    head = model.fusion_head
    fused = keras.Model(head.inputs, head.get_layer("fused_features").output)
    z_opt, z_sar = (np.array(out[k]) for k in ("embedding_opt", "embedding_sar"))
    z_opt[0].flat[0] = np.nan
    ones, zeros = np.ones((2, 1), "float32"), np.zeros((2, 1), "float32")
    channels = z_opt.shape[-1]
    maps = np.asarray(fused([z_opt, z_sar, zeros, ones]))
    assert maps.shape[-1] == channels + z_sar.shape[-1]
    assert np.all(maps[..., :channels] == 0.0) and np.isfinite(maps).all()
    assert np.all(np.asarray(fused([z_opt, z_sar, ones, zeros]))[..., channels:] == 0.0)


def test_model_outputs():
    model = _tiny()
    x, _ = _batch(4)
    out = model(gate_inputs(x, 1, 1))
    assert set(out) == {"probabilities", "embedding_opt", "embedding_sar"}
    assert out["probabilities"].shape == (4, CLASSES) and out["probabilities"].dtype == "float32"
    assert out["embedding_opt"].shape == (4, 64) and out["embedding_sar"].shape == (4, 64)
    assert model.encoder_opt.name == "opt_tiny" and model.encoder_sar.name == "sar_tiny"
    assert model.fusion_head.name == "fusion_head"


# --- Eq. 2 -----------------------------------------------------------------------------------

# stage 3: a shared trunk after the fusion point, run once per pass; tiny has batch norm as the
# ResNets do, so the equality does not depend on the backbone
@pytest.mark.parametrize("stage", [5, 3])
def test_one_encoder_pass_gradient_equals_three_full_passes(stage):
    """Shared branches, the head (and below stage 5 the trunk) once per pass: the same loss and
    gradient as three full forward passes of the whole network (fp32, 1e-5)."""
    keras.utils.set_random_seed(0)
    weights_eq2 = (2.0, 0.5, 1.5)  # w_opt ≠ w_sar: a pass weighted by the other's weight shows
    model = FusionModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE, pass_weights=weights_eq2,
                        fusion_stage=stage)
    x, y = _batch(8, seed=3)
    weights = model.trainable_weights

    with tf.GradientTape() as tape:  # reference: the full model, three times
        bce = keras.losses.BinaryCrossentropy()
        ref = sum(w * bce(y, model(gate_inputs(x, lo, ls), training=True)["probabilities"])
                  for w, (lo, ls) in zip(weights_eq2, GATES[:3]))
    ref_grads = tape.gradient(ref, weights)

    with tf.GradientTape() as tape:
        loss, per_sample = model.compute_eq2_loss(x, y, training=True)
    grads = tape.gradient(loss, weights)

    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5)
    assert set(per_sample) == {*(p.name for p in PASSES), "loss"}
    assert len(grads) == len(ref_grads) == len(weights)
    for g, r, v in zip(grads, ref_grads, weights):
        assert g is not None, v.path
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5, rtol=1e-5, err_msg=v.path)


def test_eq2_weights_come_from_the_config_by_pass_name():
    """The model `Task` builds from `training.pass_weights` {fuse: 2, opt: 0.5, sar: 1.5} has the
    Eq. 2 loss 2·BCE_fused + 0.5·BCE_optical + 1.5·BCE_SAR, each BCE computed in NumPy from the
    network's output at that gate setting (λ_opt, λ_sar) = (1, 1), (1, 0), (0, 1)."""
    from types import SimpleNamespace

    from tf_fusion import config as cfg
    from tf_fusion.task import Task

    config = cfg.load_experiment("smoke", ["training.pass_weights={fuse: 2, opt: 0.5, sar: 1.5}",
                                           f"data.image_size={SIZE}", "model.dropout=0.0"])
    manifest = SimpleNamespace(in_distribution_classes=lambda: [f"class {i}" for i in range(CLASSES)],
                               subset_size=lambda subset: 64)
    keras.utils.set_random_seed(0)
    model = Task(config, manifest).build_model()
    x, y = _batch(8, seed=5)

    def bce(p):  # mean over classes, Keras' clipping of probabilities to [1e-7, 1 - 1e-7]
        p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=1)

    out = {gates: model(gate_inputs(x, *gates), training=False)["probabilities"] for gates in GATES[:3]}
    expected = (2.0 * bce(out[(1.0, 1.0)]) + 0.5 * bce(out[(1.0, 0.0)]) + 1.5 * bce(out[(0.0, 1.0)])).mean()
    loss, per_sample = model.compute_eq2_loss(x, y, training=False)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(per_sample["sar"]), bce(out[(0.0, 1.0)]), rtol=1e-5)


def _count_calls(monkeypatch, layer) -> list:
    """Count the calls of ``layer`` (one per branch evaluation when run eagerly)."""
    calls = []
    original = layer.call

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(layer, "call", counted)
    return calls


def test_train_and_test_steps_run_each_branch_once_per_batch(monkeypatch):
    """Eq. 2's claim: three passes of the head, one evaluation of each branch per batch."""
    model = _tiny(pass_weights=(2.0, 1.0, 1.0))
    counts = {"opt": _count_calls(monkeypatch, model.encoder_opt), "sar": _count_calls(monkeypatch, model.encoder_sar)}
    head = _count_calls(monkeypatch, model.fusion_head)
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    x, y = _batch(12, seed=9)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)  # 3 batches
    assert (len(counts["opt"]), len(counts["sar"]), len(head)) == (3, 3, 3 * len(PASSES))
    model.evaluate(x, y, batch_size=6, verbose=0)  # 2 batches
    assert (len(counts["opt"]), len(counts["sar"]), len(head)) == (5, 5, 5 * len(PASSES))


@pytest.mark.slow  # two fits and a resume
@pytest.mark.parametrize("cls", [FusionModel, EarlyFusionModel])
def test_fit_traces_the_train_step_once_and_a_loaded_model_resumes_its_optimizer(cls, monkeypatch, tmp_path):
    """compile creates the optimizer's slots (inside the first traced step they would make
    TensorFlow trace it twice); a saved compiled model loads with its optimizer state."""
    keras.utils.set_random_seed(0)
    model = cls(backbone="tiny", num_classes=CLASSES, image_size=SIZE)
    traces = []
    step = model.train_step
    monkeypatch.setattr(model, "train_step", lambda data: traces.append(data) or step(data))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = _batch(8, seed=3)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    assert len(traces) == 1
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert int(loaded.optimizer.iterations) == 4
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_zero_weight_passes_are_skipped():
    x, y = _batch(8, seed=5)
    baseline = _tiny(pass_weights=(2.0, 0.0, 0.0))
    loss, per_sample = baseline.compute_eq2_loss(x, y, training=True)
    assert set(per_sample) == {"fuse", "loss"}
    p = baseline(gate_inputs(x, 1, 1), training=True)["probabilities"]
    np.testing.assert_allclose(float(loss), 2.0 * _bce(y, np.asarray(p)).mean(), rtol=1e-5)

    opt_only = _tiny(pass_weights=(0.0, 1.0, 0.0))
    with tf.GradientTape() as tape:
        _, per_sample = opt_only.compute_eq2_loss(x, y, training=True)
        loss = per_sample["loss"]
    assert set(per_sample) == {"opt", "loss"}
    grads = tape.gradient(loss, opt_only.encoder_sar.trainable_weights)
    assert all(g is None for g in grads)  # the SAR encoder never ran
    before = [w.numpy().copy() for w in opt_only.encoder_sar.weights]
    opt_only.compile(optimizer=keras.optimizers.SGD(0.1))
    logs = opt_only.train_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "loss_opt"}
    for b, w in zip(before, opt_only.encoder_sar.weights):
        np.testing.assert_array_equal(b, w.numpy())


def _bce(y, p, eps=1e-7):
    """Binary cross-entropy per sample (mean over classes), written out in NumPy (Keras clips to eps)."""
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=1)


@pytest.mark.slow
def test_fit_and_evaluate_logs():
    """The logged validation losses and F-scores of every pass, against NumPy and scikit-learn on
    the model's own predictions at that pass's gate setting."""
    from sklearn.metrics import fbeta_score

    model = _tiny(dropout=0.2, pass_weights=(2.0, 0.5, 1.0))
    x, y = _batch(16, seed=6)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = model.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), verbose=0)
    names = [f"f{b}_{a}" for b in (1, 2) for a in ("samples", "micro", "macro")]
    expected_val = {"loss", *(f"loss_{p.name}" for p in PASSES), *(p.metric(n) for p in PASSES for n in names)}
    assert set(hist.history) == {"loss", *(f"loss_{p.name}" for p in PASSES), *(f"val_{n}" for n in expected_val)}
    logs = model.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)  # two batches: the metrics accumulate
    assert set(logs) == expected_val
    total = 0.0
    for p, w in zip(PASSES, (2.0, 0.5, 1.0)):
        probs = np.asarray(model(gate_inputs(x, p.lambda_opt, p.lambda_sar))["probabilities"])
        bce = _bce(y, probs).mean()
        np.testing.assert_allclose(logs[f"loss_{p.name}"], bce, rtol=1e-4, err_msg=p.name)
        total += w * bce
        for n in names:
            beta, average = int(n[1]), n.split("_")[1]
            want = fbeta_score(y, probs > 0.5, beta=beta, average=average, zero_division=0)
            np.testing.assert_allclose(logs[p.metric(n)], want, atol=1e-6, err_msg=p.metric(n))
    np.testing.assert_allclose(logs["loss"], total, rtol=1e-4)

    early = EarlyFusionModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE)
    early.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = early.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), verbose=0)
    assert set(hist.history) == {"loss", "val_loss", *(f"val_{n}" for n in names)}


# --- serialization ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("cls,kwargs", [(FusionModel, {"dropout": 0.3, "pass_weights": (2.0, 0.5, 1.0)}),
                                        (EarlyFusionModel, {"dropout": 0.1})])
def test_keras_file_round_trip(tmp_path, cls, kwargs):
    keras.utils.set_random_seed(0)
    model = cls(backbone="tiny", num_classes=CLASSES, image_size=SIZE, **kwargs)
    x, y = _batch(8, seed=7)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # moves BN statistics off their init
    path = str(tmp_path / "model.keras")
    keras.saving.save_model(model, path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is cls
    assert loaded.get_config() == model.get_config()
    for lo, ls in GATES:
        a, b = model(gate_inputs(x, lo, ls)), loaded(gate_inputs(x, lo, ls))
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    clone = cls.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert len(clone.weights) == len(model.weights)


# --- MirroredStrategy ------------------------------------------------------------------------

_MIRRORED = textwrap.dedent("""
    import json
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from tf_fusion.baselines import EarlyFusionModel
    from tf_fusion.model import FusionModel

    rng = np.random.default_rng(0)
    x = {"s2": rng.normal(size=(24, 32, 32, 12)).astype("float32"),
         "s1": rng.normal(size=(24, 32, 32, 2)).astype("float32")}
    y = (rng.random((24, 5)) < 0.4).astype("float32")

    def run(cls, strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = cls(backbone="tiny", num_classes=5, image_size=32)
            model.compile(optimizer=keras.optimizers.SGD(0.5))
        init = [w.numpy() for w in model.weights]
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        model.fit(ds, epochs=1, verbose=0)  # 3 steps, global batch 8
        logs = model.evaluate(ds, return_dict=True, verbose=0)
        final = [w.numpy() for w in model.weights]
        return final, logs, max(float(np.max(np.abs(a - b))) for a, b in zip(init, final))

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    assert mirrored.num_replicas_in_sync == 2
    out = {}
    for cls in (FusionModel, EarlyFusionModel):
        w1, l1, moved = run(cls, tf.distribute.get_strategy())
        w2, l2, _ = run(cls, mirrored)
        out[cls.__name__] = {
            "n_weights": len(w1),
            "max_weight_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w2)),
            "max_log_diff": max(abs(l1[k] - l2[k]) for k in l1),
            "log_keys_equal": sorted(l1) == sorted(l2),
            "moved": moved,
        }
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_mirrored_two_replicas_equal_one_device():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", _MIRRORED], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    for name, res in json.loads(lines[0][len("RESULT"):]).items():
        assert res["log_keys_equal"], name
        assert res["moved"] > 1e-3, (name, res)  # the three steps did train
        assert res["max_weight_diff"] < 1e-5, (name, res)
        assert res["max_log_diff"] < 1e-5, (name, res)


# --- mixed precision -------------------------------------------------------------------------

@pytest.fixture
def restore_policy():
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_train_step(restore_policy, policy):
    keras.mixed_precision.set_global_policy(policy)
    model = _tiny()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = _batch(8, seed=8)
    before = [w.numpy().copy() for w in model.trainable_weights]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    out = model(gate_inputs(x, 1, 1))
    assert out["probabilities"].dtype == "float32"
    assert out["embedding_opt"].dtype == policy.split("_")[1]
    assert all(np.isfinite(v) for v in model.evaluate(x, y, return_dict=True, verbose=0).values())
