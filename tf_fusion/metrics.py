"""Multi-label metrics Keras lacks: the samples-averaged F-beta score."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tf_fusion")
class SamplesFBeta(keras.metrics.Metric):
    """Samples-averaged F-beta of multi-label predictions at a fixed threshold.

    For every sample, over its classes: ``pred = y_pred > threshold`` (strictly greater, the same
    convention as ``keras.metrics.FBetaScore``), ``tp, fp, fn`` counted against ``y_true`` and

        F_beta = (1 + beta²)·tp / ((1 + beta²)·tp + beta²·fn + fp),

    then the (optionally ``sample_weight``-weighted) mean over all samples seen. This is
    ``sklearn.metrics.fbeta_score(y_true, pred, beta=beta, average="samples",
    zero_division=zero_division)`` (scikit-learn ≥ 1.3): a sample whose denominator is 0 — no true
    and no predicted label — scores ``zero_division`` (default 0.0, scikit-learn's default);
    every other sample without a true positive (only false positives or only false negatives)
    scores 0.

    State is a running weighted sum of per-sample scores and a running weight (sample count),
    both ``aggregation="sum"`` variables, so the result is exact under ``tf.distribute``
    strategies (replica states are summed when read).
    """

    def __init__(self, beta: float = 1.0, threshold: float = 0.5, zero_division: float = 0.0,
                 name: str | None = None, dtype=None):
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        super().__init__(name=name or f"f{beta:g}_samples", dtype=dtype)
        self.beta = float(beta)
        self.threshold = float(threshold)
        self.zero_division = float(zero_division)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(ops.convert_to_tensor(y_true), self.dtype)
        pred = ops.cast(ops.greater(ops.convert_to_tensor(y_pred), self.threshold), self.dtype)
        tp = ops.sum(pred * y_true, axis=-1)
        fp = ops.sum(pred * (1.0 - y_true), axis=-1)
        fn = ops.sum((1.0 - pred) * y_true, axis=-1)
        b2 = self.beta ** 2
        num = (1.0 + b2) * tp
        den = num + b2 * fn + fp
        score = ops.where(den > 0, num / ops.maximum(den, 1e-12),
                          ops.cast(self.zero_division, self.dtype))
        if sample_weight is None:
            weight = ops.ones_like(score)
        else:
            weight = ops.broadcast_to(ops.reshape(ops.cast(sample_weight, self.dtype), (-1,)),
                                      ops.shape(score))
        self.total.assign_add(ops.sum(score * weight))
        self.count.assign_add(ops.sum(weight))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(ops.zeros_like(self.total))
        self.count.assign(ops.zeros_like(self.count))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "beta": self.beta,
                "threshold": self.threshold, "zero_division": self.zero_division}
