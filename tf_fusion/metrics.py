"""The validation F-scores of one set of predictions, in one Keras metric."""
from __future__ import annotations

import keras
from keras import ops

from .scores import F_METRICS


@keras.saving.register_keras_serializable(package="tf_fusion")
class FScores(keras.metrics.Metric):
    """F1 and F2 of multi-label predictions at a fixed threshold, samples-, micro- and
    macro-averaged: ``result()`` is ``{prefix + name: value for name in F_METRICS}``.

    A class is predicted where ``y_pred > threshold`` (strictly greater, as
    ``keras.metrics.FBetaScore``). One update counts, per class, the (``sample_weight``-weighted)
    true positives, false positives and false negatives, and sums each sample's F-beta:

    * ``samples``: the mean over samples of (1 + β²)·tp / ((1 + β²)·tp + β²·fn + fp), that is
      ``sklearn.metrics.fbeta_score(..., average="samples", zero_division=zero_division)``: a
      sample with no true and no predicted label scores ``zero_division``;
    * ``micro`` and ``macro``: ``keras.metrics.FBetaScore``'s formula (precision and recall with
      its epsilon) on the counts summed over classes, or per class and then averaged.

    One metric instead of six separate ones: the predictions are thresholded and counted once,
    which keeps the traced validation step and the model's construction small. Every state
    variable is a sum (``aggregation="sum"``), so the result is exact under ``tf.distribute``.
    """

    def __init__(self, num_classes: int, threshold: float = 0.5, zero_division: float = 0.0,
                 prefix: str = "", name: str | None = None, dtype=None):
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        super().__init__(name=name or f"{prefix}f_scores", dtype=dtype)
        self.num_classes, self.threshold = int(num_classes), float(threshold)
        self.zero_division, self.prefix = float(zero_division), prefix
        self.betas = tuple(sorted({float(n.split("_")[0][1:]) for n in F_METRICS}))  # "f2_micro" → 2.0
        counts = dict(shape=(self.num_classes,), initializer="zeros")
        self.true_positives = self.add_variable(name="true_positives", **counts)
        self.false_positives = self.add_variable(name="false_positives", **counts)
        self.false_negatives = self.add_variable(name="false_negatives", **counts)
        self.samples_total = self.add_variable(shape=(len(self.betas),), initializer="zeros", name="samples_total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(ops.convert_to_tensor(y_true), self.dtype)
        pred = ops.cast(ops.greater(ops.convert_to_tensor(y_pred), self.threshold), self.dtype)
        if sample_weight is None:
            weight = ops.ones_like(y_true[:, :1])
        else:
            weight = ops.reshape(ops.cast(sample_weight, self.dtype), (-1, 1))
        hits = pred * y_true
        tp, predicted, true = (ops.sum(v * weight, axis=0) for v in (hits, pred, y_true))
        self.true_positives.assign_add(tp)
        self.false_positives.assign_add(predicted - tp)
        self.false_negatives.assign_add(true - tp)
        # per sample [B, 1]: tp, fp, fn; the scores of every beta at once [B, len(betas)]
        tp, predicted, true = (ops.sum(v, axis=-1, keepdims=True) for v in (hits, pred, y_true))
        b2 = ops.convert_to_tensor([[beta ** 2 for beta in self.betas]], self.dtype)
        num = (1.0 + b2) * tp
        den = num + b2 * (true - tp) + (predicted - tp)
        scores = ops.where(den > 0, num / ops.maximum(den, 1e-12), ops.cast(self.zero_division, self.dtype))
        self.samples_total.assign_add(ops.sum(scores * weight, axis=0))
        self.count.assign_add(ops.sum(weight))

    def result(self):
        # keras.metrics.FBetaScore's formula, on [micro counts, per-class counts] and every beta at once
        eps = keras.backend.epsilon()
        tp, fp, fn = (ops.concatenate([ops.sum(v, keepdims=True), v])
                      for v in (self.true_positives, self.false_positives, self.false_negatives))
        precision, recall = tp / (tp + fp + eps), tp / (tp + fn + eps)
        b2 = ops.convert_to_tensor([[beta ** 2] for beta in self.betas], self.dtype)
        f = precision * recall / (b2 * precision + recall + eps) * (1.0 + b2)  # [betas, 1 + C]
        samples = ops.divide_no_nan(self.samples_total, self.count)
        macro = ops.mean(f[:, 1:], axis=1)
        values = {}
        for i, beta in enumerate(self.betas):
            values.update({f"f{beta:g}_samples": samples[i], f"f{beta:g}_micro": f[i, 0], f"f{beta:g}_macro": macro[i]})
        return {self.prefix + name: values[name] for name in F_METRICS}

    def reset_state(self):
        for v in self.variables:
            v.assign(ops.zeros(v.shape, v.dtype))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "num_classes": self.num_classes,
                "threshold": self.threshold, "zero_division": self.zero_division, "prefix": self.prefix}
