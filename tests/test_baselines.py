"""The baselines that are not gated fusion: EmbraceNet's embracement and modality dropout, and
its exact indifference to a modality with selection probability 0. Tiny models, 32×32."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from tf_fusion.baselines import Embracement, EmbraceNetModel  # noqa: E402
from tf_fusion.model import gate_inputs  # noqa: E402

SIZE, CLASSES = 32, 5


def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return {"s2": rng.normal(size=(n, SIZE, SIZE, 12)).astype("float32"),
            "s1": rng.normal(size=(n, SIZE, SIZE, 2)).astype("float32")}


@pytest.fixture(scope="module")
def embracenet():
    keras.utils.set_random_seed(0)
    return EmbraceNetModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE, width=32)


def test_a_modality_with_probability_0_is_ignored_exactly(embracenet):
    x = _batch()
    changed_opt = {**x, "s2": x["s2"] * 4.0 + 3.0}
    changed_sar = {**x, "s1": -x["s1"]}
    p = lambda inputs, lo, ls: np.asarray(embracenet(gate_inputs(inputs, lo, ls))["probabilities"])  # noqa: E731
    np.testing.assert_array_equal(p(x, 0.0, 1.0), p(changed_opt, 0.0, 1.0))  # bitwise, whatever was drawn
    np.testing.assert_array_equal(p(x, 1.0, 0.0), p(changed_sar, 1.0, 0.0))
    assert not np.array_equal(p(x, 1.0, 0.0), p(changed_opt, 1.0, 0.0))


def test_embracement_draws_each_feature_from_an_available_modality():
    """Constant dockings 1 (optical) and 2 (SAR): every fused feature is 1 or 2, half of each on
    average with both available, only the available one otherwise, zeros with none."""
    layer = Embracement(seed=3)
    dockings = np.stack([np.ones((400, 64), "float32"), np.full((400, 64), 2.0, "float32")], axis=-1)
    both = np.asarray(layer([dockings, np.ones((400, 2), "float32")]))
    assert set(np.unique(both)) == {1.0, 2.0}
    assert abs((both == 2.0).mean() - 0.5) < 0.02
    sar_only = np.asarray(layer([dockings, np.tile([[0.0, 1.0]], (400, 1)).astype("float32")]))
    assert (sar_only == 2.0).all()
    none = np.asarray(layer([dockings, np.zeros((400, 2), "float32")]))
    assert (none == 0.0).all()


def test_modality_dropout_keeps_one_modality_per_sample_in_training(embracenet):
    x = gate_inputs(_batch(64), 1.0, 1.0)
    keras.utils.set_random_seed(1)
    model = EmbraceNetModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE, width=8, modality_dropout=1.0)
    fed = model._feed(x, training=True)
    lam = np.concatenate([np.asarray(fed["lambda_opt"]), np.asarray(fed["lambda_sar"])], axis=1)
    assert (lam.sum(axis=1) == 1).all() and 10 < lam[:, 0].sum() < 54  # one each, both kinds drawn
    assert np.asarray(model._feed(x, training=False)["lambda_opt"]).all()  # never at inference
    never = EmbraceNetModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE, width=8, modality_dropout=0.0)
    assert np.asarray(never._feed(x, training=True)["lambda_sar"]).all()


@pytest.mark.slow
def test_trains_and_round_trips(embracenet, tmp_path):
    x, y = _batch(8), (np.random.default_rng(2).random((8, CLASSES)) < 0.4).astype("float32")
    embracenet.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = embracenet.fit(x, y, batch_size=4, epochs=1, validation_data=(x, y), verbose=0)
    assert {"loss", "val_loss", "val_f1_samples", "val_f2_macro"} <= set(history.history)
    path = tmp_path / "embracenet.keras"
    embracenet.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is EmbraceNetModel and loaded.get_config() == embracenet.get_config()
    for a, b in zip(embracenet.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------ input sensor dropout
def test_sensor_dropout_drops_each_modality_at_the_set_rate_never_both():
    """Over 40 batches of 500 the share of samples whose optical (SAR) flag the training feed
    sets to 0 is the setting (±0.015, about 3.5 standard errors), and no sample loses both; at
    inference the flags pass through."""
    from tf_fusion.baselines import SensorDropoutModel

    model = SensorDropoutModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE, sensor_dropout=0.25, seed=4)
    x = gate_inputs({"s2": np.zeros((500, 1, 1, 12), "float32"), "s1": np.zeros((500, 1, 1, 2), "float32")}, 1.0, 1.0)
    flags = np.concatenate([np.concatenate([np.asarray(f["lambda_opt"]), np.asarray(f["lambda_sar"])], axis=1)
                            for f in (model._feed(x, training=True) for _ in range(40))])
    dropped = flags == 0
    assert abs(dropped[:, 0].mean() - 0.25) < 0.015 and abs(dropped[:, 1].mean() - 0.25) < 0.015
    assert not dropped.all(axis=1).any()
    assert np.asarray(model._feed(x, training=False)["lambda_sar"]).all()


def test_sensor_dropout_a_dropped_modality_is_exactly_zero_with_flag_0():
    """What the backbone reads (the stacked bands and the two flag maps) against NumPy: the kept
    modality's bands unchanged and flag 1, the dropped one's all zeros and flag 0."""
    from tf_fusion.baselines import SensorDropoutModel

    model = SensorDropoutModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE, sensor_dropout=0.5, seed=1)
    x = gate_inputs(_batch(32), 1.0, 1.0)
    fed = {k: np.asarray(v) for k, v in model._feed(x, training=True).items()}
    read = np.asarray(keras.Model(model.input, model.get_layer("stacked_bands").output)(fed))
    keep_o, keep_s = (np.asarray(fed[k]).reshape(-1, 1, 1, 1) for k in ("lambda_opt", "lambda_sar"))
    assert 0 < keep_o.sum() < 32 and 0 < keep_s.sum() < 32  # both kinds of sample in the batch
    ones = np.ones((32, SIZE, SIZE, 1), "float32")
    expected = np.concatenate([x["s2"] * keep_o, x["s1"] * keep_s, ones * keep_o, ones * keep_s], axis=-1)
    np.testing.assert_array_equal(read, expected)
    assert (read[keep_o[:, 0, 0, 0] == 0][..., :12] == 0).all()


# ------------------------------------------------------------------ the single-modality ensemble
def test_ensemble_averages_the_available_networks_predictions(tmp_path):
    """The ensemble's output against NumPy: the mean of the two networks' predictions (saved and
    read back) with both modalities, the other network alone where one is missing, 0.5 with none."""
    from tf_fusion.baselines import EnsembleModel

    keras.utils.set_random_seed(5)
    model = EnsembleModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE)
    x = _batch()
    np.savez(tmp_path / "p.npz", optical=np.asarray(model.network_opt(x["s2"])), sar=np.asarray(model.network_sar(x["s1"])))
    saved = np.load(tmp_path / "p.npz")
    p = lambda lo, ls: np.asarray(model(gate_inputs(x, lo, ls))["probabilities"])  # noqa: E731
    np.testing.assert_allclose(p(1.0, 1.0), (saved["optical"] + saved["sar"]) / 2, atol=1e-6)
    np.testing.assert_allclose(p(0.0, 1.0), saved["sar"], atol=1e-6)
    np.testing.assert_allclose(p(1.0, 0.0), saved["optical"], atol=1e-6)
    np.testing.assert_array_equal(p(0.0, 0.0), 0.5)
    assert not np.allclose(saved["optical"], saved["sar"], atol=1e-3)  # the cases differ


def test_ensemble_networks_are_trained_on_their_own_loss():
    """No gradient flows between the two networks: the optical network's gradient of the
    training loss is the gradient of its own BCE alone."""
    from tf_fusion.baselines import EnsembleModel
    from tf_fusion.model import per_sample_bce

    keras.utils.set_random_seed(6)
    model = EnsembleModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE)
    x, y = gate_inputs(_batch(), 1.0, 1.0), (np.random.default_rng(3).random((6, CLASSES)) < 0.4).astype("float32")
    with tf.GradientTape(persistent=True) as tape:
        total = tf.reduce_mean(model._per_sample_loss(y, x))
        own = tf.reduce_mean(per_sample_bce(y, model.network_opt(x["s2"], training=True)))
    weights = model.network_opt.trainable_weights
    for a, b in zip(tape.gradient(total, weights), tape.gradient(own, weights)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SensorDropoutModel", "EnsembleModel"])
def test_the_new_baselines_train_and_round_trip(name, tmp_path):
    from tf_fusion import baselines

    keras.utils.set_random_seed(7)
    model = getattr(baselines, name)(backbone="tiny", num_classes=CLASSES, image_size=SIZE)
    x, y = _batch(8), (np.random.default_rng(2).random((8, CLASSES)) < 0.4).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, y, batch_size=4, epochs=1, validation_data=(x, y), verbose=0)
    assert {"loss", "val_loss", "val_f1_samples"} <= set(history.history)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    x = gate_inputs(x, 0.0, 1.0)
    np.testing.assert_allclose(np.asarray(loaded(x)["probabilities"]), np.asarray(model(x)["probabilities"]), atol=1e-6)



def test_sensor_dropout_of_the_gated_networks_fused_pass():
    """`model.isd.fused_pass`: Eq. 2's fused term is the BCE of the fusion head at per-sample gates
    drawn by sensor dropout (the same draw recomputed here, never (0, 0)); the optical pass keeps
    (1, 0); nothing is drawn at inference; a model without it keeps its old config."""
    from tf_fusion.model import FusionModel, per_sample_bce, probabilities

    keras.utils.set_random_seed(8)
    model = FusionModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE, sensor_dropout=0.5, sensor_dropout_seed=2)
    x, y = gate_inputs(_batch(32), 1.0, 1.0), (np.random.default_rng(4).random((32, CLASSES)) < 0.4).astype("float32")
    z = model.branches(x, training=True)
    state = np.asarray(model.sensor_dropout_generator.state)
    keep_o, keep_s = (np.asarray(g) for g in model.fused_pass_gates(z[0], training=True)["fuse"])
    assert 0 < keep_o.sum() < 32 and 0 < keep_s.sum() < 32 and (keep_o + keep_s).min() == 1
    model.sensor_dropout_generator.state.assign(state)  # Eq. 2 draws the same gates
    _, per_sample = model.compute_eq2_loss(x, y, training=True)
    def head(lo, ls):
        return probabilities(model.fusion_head([*z, tf.constant(lo), tf.constant(ls)], training=True))

    np.testing.assert_allclose(np.asarray(per_sample["fuse"]), np.asarray(per_sample_bce(y, head(keep_o, keep_s))),
                               atol=1e-5)
    ones, zeros = np.ones_like(keep_o), np.zeros_like(keep_o)
    np.testing.assert_allclose(np.asarray(per_sample["opt"]), np.asarray(per_sample_bce(y, head(ones, zeros))), atol=1e-5)
    assert model.fused_pass_gates(z[0], training=False) == {}
    assert "sensor_dropout" not in FusionModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE).get_config()
