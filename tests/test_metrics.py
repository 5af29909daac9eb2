"""FScores, the validation F-scores, against scikit-learn (test_model checks them as logged by fit)."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from sklearn.metrics import fbeta_score  # noqa: E402

from tf_fusion.metrics import FScores  # noqa: E402


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


def _sklearn(y_true, y_prob, zero_division=0.0, sample_weight=None, prefix=""):
    pred = (y_prob > 0.5).astype(int)
    return {f"{prefix}f{beta}_{average}": fbeta_score(
        y_true, pred, beta=beta, average=average, sample_weight=sample_weight,
        zero_division=zero_division if average == "samples" else 0.0)  # micro/macro: Keras' convention, 0
        for beta in (1, 2) for average in ("samples", "micro", "macro")}


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_f_scores_match_sklearn(case, zero_division):
    y_true, y_prob = _cases()[case]
    metric = FScores(y_true.shape[1], zero_division=zero_division)
    # Accumulated over uneven batches, the result is that of all samples at once.
    for start, stop in ((0, 1), (1, 3), (3, len(y_true))):
        metric.update_state(y_true[start:stop], y_prob[start:stop])
    got = {k: float(v) for k, v in metric.result().items()}
    expected = _sklearn(y_true, y_prob, zero_division)
    assert list(got) == list(expected)  # the documented names, in history.csv's order
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, atol=1e-6, err_msg=name)
    metric.reset_state()
    assert all(float(v) == 0.0 for v in metric.result().values())


def test_f_scores_sample_weight_prefix_and_config():
    y_true, y_prob = _cases()["random"]
    w = np.random.default_rng(1).random(len(y_true)).astype("float32")
    metric = FScores(y_true.shape[1], prefix="opt_")
    metric.update_state(y_true, y_prob, sample_weight=w)
    got = metric.result()
    for name, want in _sklearn(y_true, y_prob, sample_weight=w, prefix="opt_").items():
        np.testing.assert_allclose(float(got[name]), want, atol=1e-6, err_msg=name)
    assert metric.name == "opt_f_scores"
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert isinstance(clone, FScores)
    assert clone.get_config() == metric.get_config()
