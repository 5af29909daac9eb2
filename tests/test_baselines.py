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
