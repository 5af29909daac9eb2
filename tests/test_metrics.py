"""SamplesFBeta against scikit-learn (the logged micro/macro scores are checked in test_model)."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from sklearn.metrics import fbeta_score  # noqa: E402

from tf_fusion.metrics import SamplesFBeta  # noqa: E402


def _cases():
    rng = np.random.default_rng(0)
    y_true = (rng.random((64, 7)) < 0.3).astype("float32")
    y_prob = rng.random((64, 7)).astype("float32")
    # Edge rows: no true and no predicted label, all true and all predicted, only false
    # positives, only false negatives, probability exactly at the threshold (not positive).
    y_true[:4] = 0.0
    y_prob[:4] = 0.1
    y_true[4:6] = 1.0
    y_prob[4:6] = 0.9
    y_true[6], y_prob[6] = 0.0, 0.9
    y_true[7], y_prob[7] = 1.0, 0.1
    y_true[8], y_prob[8] = 1.0, 0.5
    return {
        "random": (y_true, y_prob),
        "all_zero_rows": (np.zeros((5, 4), "float32"), np.full((5, 4), 0.2, "float32")),
        "all_one_rows": (np.ones((5, 4), "float32"), np.full((5, 4), 0.8, "float32")),
        "all_one_true_none_predicted": (np.ones((3, 4), "float32"), np.zeros((3, 4), "float32")),
    }


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("beta", [1.0, 2.0])
@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_samples_fbeta_matches_sklearn(case, beta, zero_division):
    y_true, y_prob = _cases()[case]
    expected = fbeta_score(y_true, (y_prob > 0.5).astype(int), beta=beta, average="samples",
                           zero_division=zero_division)
    metric = SamplesFBeta(beta=beta, threshold=0.5, zero_division=zero_division)
    # Accumulated over uneven batches, the result is the mean over all samples.
    for start, stop in ((0, 1), (1, 3), (3, len(y_true))):
        metric.update_state(y_true[start:stop], y_prob[start:stop])
    np.testing.assert_allclose(float(metric.result()), expected, atol=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_samples_fbeta_sample_weight_and_config():
    y_true, y_prob = _cases()["random"]
    w = np.random.default_rng(1).random(len(y_true)).astype("float32")
    expected = fbeta_score(y_true, (y_prob > 0.5).astype(int), beta=2.0, average="samples",
                           sample_weight=w, zero_division=0.0)
    metric = SamplesFBeta(beta=2.0)
    metric.update_state(y_true, y_prob, sample_weight=w)
    np.testing.assert_allclose(float(metric.result()), expected, atol=1e-6)
    assert metric.name == "f2_samples"
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert isinstance(clone, SamplesFBeta)
    assert clone.get_config() == metric.get_config()
