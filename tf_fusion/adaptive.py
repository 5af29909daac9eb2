"""Distribution-shift aware prediction (paper Eq. 3) and the one graph that serves it.

The gates of the fusion network are treated as independent Bernoulli variables,
``λ_opt ~ Ber(p_o)`` and ``λ_sar ~ Ber(p_s)``, where ``p_o`` / ``p_s`` are the OOD heads'
probabilities that each modality is in-distribution, and the prediction is their expectation::

    y = p_o·p_s·f_c(1,1) + p_o·(1−p_s)·f_c(1,0) + (1−p_o)·p_s·f_c(0,1) + (1−p_o)·(1−p_s)·0.5

With neither modality left there is no evidence: that term is the constant 0.5 for every class,
by construction (not the classifier's output at λ = (0, 0)). ``expected_prediction`` is the one
place of this equation; ``ExpectedPrediction`` wraps it as a layer.

``build_adaptive_model(fusion, head_opt, head_sar)`` is one functional graph over the trained
layers (shared, not copied): each encoder runs once, the OOD heads read the embeddings, and the
fusion head is applied to the shared embeddings with the three gate settings.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from .model import Gate  # importing tf_fusion.model also registers its layers for loading

# Gate settings (λ_opt, λ_sar) of the three classifier terms of Eq. 3, by output name.
GATE_SETTINGS = {"probabilities_non_adaptive": (1.0, 1.0),
                 "probabilities_optical": (1.0, 0.0),
                 "probabilities_sar": (0.0, 1.0)}
NO_EVIDENCE = 0.5  # the (λ_opt, λ_sar) = (0, 0) term: no modality, no evidence


def _column(p):
    """A [B] or [B, 1] probability → float32 [B, 1] (broadcasts over the classes)."""
    p = ops.cast(p, "float32")
    return ops.expand_dims(p, -1) if len(p.shape) == 1 else p


def _term(weight, y):
    """``weight · y``, exactly +0.0 where the weight is 0 (even if ``y`` is not finite there)."""
    return ops.where(ops.not_equal(weight, 0), ops.multiply(weight, y), ops.zeros_like(y))


def expected_prediction(p_o, p_s, y_fuse, y_opt, y_sar):
    """Eq. 3: the expected class probabilities under ``λ_opt ~ Ber(p_o)``, ``λ_sar ~ Ber(p_s)``.

    p_o, p_s: [B, 1] or [B] probabilities that the optical / SAR input is in-distribution.
    y_fuse, y_opt, y_sar: [B, C] class probabilities of the fusion head with (λ_opt, λ_sar) =
    (1, 1), (1, 0), (0, 1). Returns float32 [B, C] (a tensor; NumPy inputs are accepted).

    A term whose weight is 0 contributes exactly 0, even where its prediction is not finite (a
    missing modality), so p_o = p_s = 0 gives exactly 0.5 and p_o = p_s = 1 gives exactly y_fuse.
    """
    p_o, p_s = _column(p_o), _column(p_s)
    y_fuse, y_opt, y_sar = (ops.cast(y, "float32") for y in (y_fuse, y_opt, y_sar))
    q_o, q_s = 1.0 - p_o, 1.0 - p_s
    none = ops.multiply(ops.multiply(q_o, q_s), ops.full_like(y_fuse, NO_EVIDENCE))
    return (_term(ops.multiply(p_o, p_s), y_fuse) + _term(ops.multiply(p_o, q_s), y_opt)
            + _term(ops.multiply(q_o, p_s), y_sar) + none)


def bernoulli_entropy(p):
    """Per-sample average over classes of the binary entropy in bits, [B, C] → float32 [B]
    (0·log 0 = 0; the float32 twin of ``tf_fusion.scores.entropy_bits``)."""
    p = ops.clip(ops.cast(p, "float32"), 0.0, 1.0)
    q = 1.0 - p

    def plogp(x):
        positive = ops.greater(x, 0)
        return ops.where(positive, x * ops.log(ops.where(positive, x, ops.ones_like(x))), ops.zeros_like(x))

    return ops.mean(-(plogp(p) + plogp(q)), axis=-1) / ops.log(ops.cast(2.0, "float32"))


def confidence(p):
    """Per-sample average over classes of max(p, 1 − p), [B, C] → float32 [B]
    (the float32 twin of ``tf_fusion.scores.confidence``)."""
    p = ops.clip(ops.cast(p, "float32"), 0.0, 1.0)
    return ops.mean(ops.maximum(p, 1.0 - p), axis=-1)


# ------------------------------------------------------------------------------------ layers
class _Float32Layer(layers.Layer):
    """A layer computing in float32 whatever the mixed-precision policy (probabilities, scores)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)


@keras.saving.register_keras_serializable(package="tf_fusion")
class ExpectedPrediction(_Float32Layer):
    """``[p_o, p_s, y_fuse, y_opt, y_sar]`` → Eq. 3 (``expected_prediction``), float32 [B, C]."""

    def call(self, inputs):
        return expected_prediction(*inputs)

    def compute_output_shape(self, input_shapes):
        return input_shapes[2]


class _PerSampleScore(_Float32Layer):
    """[B, C] class probabilities → [B] float32 score ``_score(p)``."""

    _score = None

    def call(self, p):
        return type(self)._score(p)

    def compute_output_shape(self, input_shape):
        return input_shape[:-1]


@keras.saving.register_keras_serializable(package="tf_fusion")
class BernoulliEntropy(_PerSampleScore):
    """[B, C] class probabilities → [B] average binary entropy in bits (float32)."""

    _score = staticmethod(bernoulli_entropy)


@keras.saving.register_keras_serializable(package="tf_fusion")
class Confidence(_PerSampleScore):
    """[B, C] class probabilities → [B] average max(p, 1 − p) (float32)."""

    _score = staticmethod(confidence)


@keras.saving.register_keras_serializable(package="tf_fusion")
class ConstantGate(_Float32Layer):
    """Any [B, ...] tensor → a float32 [B, 1] column filled with ``value`` (a constant λ)."""

    def __init__(self, value: float, **kwargs):
        super().__init__(**kwargs)
        self.value = float(value)

    def call(self, like):
        return ops.full((ops.shape(like)[0], 1), self.value, "float32")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "value": self.value}


# ------------------------------------------------------------------------------------ model
def build_adaptive_model(fusion, head_opt, head_sar, with_availability: bool = False) -> keras.Model:
    """One functional graph for Eq. 3, sharing the layers of ``fusion`` and the OOD heads.

    fusion: a trained ``FusionModel`` (``encoder_opt``, ``encoder_sar``, ``fusion_head``);
    head_opt / head_sar: OOD heads (``tf_fusion.ood.build_ood_head``), embedding → [B, 1].

    Inputs ``{"s2": [B,H,W,12], "s1": [B,H,W,2]}``, plus, with ``with_availability``,
    ``"optical_available"`` and ``"sar_available"`` (float32 [B, 1], 1 = present, 0 = missing):
    p_o and p_s are multiplied by them, so a missing modality has in-distribution probability
    exactly 0 and Eq. 3 falls back to the other one (or to 0.5 when both are missing), whatever
    its input holds. Outputs (all float32): ``probabilities`` (Eq. 3, [B, C]), ``p_optical`` and
    ``p_sar`` ([B, 1]), ``entropy`` and ``confidence`` of the adaptive probabilities ([B]), and
    ``probabilities_non_adaptive`` / ``probabilities_optical`` / ``probabilities_sar`` (the
    fusion head with λ = (1,1), (1,0), (0,1)). Each encoder runs once per call.
    """
    for attr in ("encoder_opt", "encoder_sar", "fusion_head"):
        if not hasattr(fusion, attr):
            raise TypeError(f"build_adaptive_model needs a gated late-fusion model (FusionModel) with "
                            f"{attr}; got {type(fusion).__name__}")
    inputs = {"s2": keras.Input(tuple(fusion.encoder_opt.input.shape[1:]), name="s2"),
              "s1": keras.Input(tuple(fusion.encoder_sar.input.shape[1:]), name="s1")}
    z_opt = fusion.encoder_opt(inputs["s2"])
    z_sar = fusion.encoder_sar(inputs["s1"])
    p_o = head_opt(z_opt)
    p_s = head_sar(z_sar)
    if with_availability:
        inputs["optical_available"] = keras.Input((1,), name="optical_available")
        inputs["sar_available"] = keras.Input((1,), name="sar_available")
        p_o = Gate(dtype="float32", name="available_opt")([p_o, inputs["optical_available"]])
        p_s = Gate(dtype="float32", name="available_sar")([p_s, inputs["sar_available"]])
    one = ConstantGate(1.0, name="lambda_one")(p_o)
    zero = ConstantGate(0.0, name="lambda_zero")(p_o)
    lam = {1.0: one, 0.0: zero}
    passes = {key: fusion.fusion_head([z_opt, z_sar, lam[lo], lam[ls]])
              for key, (lo, ls) in GATE_SETTINGS.items()}
    probs = ExpectedPrediction(name="expected_prediction")(
        [p_o, p_s, passes["probabilities_non_adaptive"], passes["probabilities_optical"],
         passes["probabilities_sar"]])
    outputs = {
        "probabilities": probs,
        "p_optical": p_o,
        "p_sar": p_s,
        "entropy": BernoulliEntropy(name="entropy")(probs),
        "confidence": Confidence(name="confidence")(probs),
        **passes,
    }
    return keras.Model(inputs, outputs, name="adaptive_fusion")
