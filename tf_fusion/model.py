"""The gated SAR-optical fusion graph (paper Eq. 1) and its three-pass training step (Eq. 2).

One functional graph serves every modality combination: the gates ``lambda_opt`` and
``lambda_sar`` are per-sample *inputs* of shape [B, 1]::

    z_opt = f_opt(s2)          z_sar = f_sar(s1)                       (encoders, run once)
    fuse  = [λ_opt · σ(z_opt), λ_sar · σ(z_sar)]                       (Eq. 1, ``fusion_head``)
    ŷ     = sigmoid(Dense(Dropout(fuse)))                              (f_c, ``fusion_head``)

``FusionModel.train_step`` implements Eq. 2: the encoders run once per batch and the head is
applied to the shared embeddings with (λ_opt, λ_sar) = (1, 1), (1, 0), (0, 1) — three head calls
on B rows, each with its own dropout mask. (Stacking the three settings into one call on 3B rows,
``FusionModel._stack_head_passes = True``, gives the same result; on CPU it measured 25–35 %
slower for the head's forward+backward with ResNet18/50 embeddings because of the concatenation
and split, and equal for ``tiny``; either way the head is < 1 % of a training step.) ``EarlyFusionModel`` is the BigEarthNet-MM style baseline that stacks
both modalities' bands into one backbone.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from .backbones import build_backbone
from .metrics import SamplesFBeta

INPUT_KEYS = ("s2", "s1", "lambda_opt", "lambda_sar")
# (name, λ_opt, λ_sar) of the three passes of Eq. 2, in the order of ``pass_weights``.
PASSES = (("fuse", 1.0, 1.0), ("opt", 1.0, 0.0), ("sar", 0.0, 1.0))
@keras.saving.register_keras_serializable(package="tf_fusion")
class Squash(layers.Layer):
    """Eq. 1's squashing σ(z) = 2·(sigmoid(z) − 0.5), mapping each feature into (−1, 1).

    Computed as the identical tanh(z / 2), which avoids the cancellation of sigmoid(z) − 0.5
    near 0 (it matters in float16).
    """

    def call(self, z):
        return ops.tanh(ops.multiply(z, ops.cast(0.5, z.dtype)))

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="tf_fusion")
class Gate(layers.Layer):
    """``[features, gate]`` → ``gate · features`` with a per-sample gate of shape [B, 1].

    ``features`` may have any rank ≥ 2 ([B, D] embeddings or [B, H, W, C] images); the gate is
    broadcast over all non-batch axes. Where the gate is 0 the output is exactly +0.0 even if the
    features are not finite, so a closed gate removes every trace of its modality.
    """

    def call(self, inputs):
        features, gate = inputs
        gate = ops.cast(gate, features.dtype)
        gate = ops.reshape(gate, (-1,) + (1,) * (len(features.shape) - 1))
        gated = ops.multiply(features, gate)
        return ops.where(ops.not_equal(gate, 0), gated, ops.zeros_like(gated))

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


def gate_inputs(inputs: dict, lambda_opt, lambda_sar) -> dict:
    """A copy of ``inputs`` ({"s2", "s1", ...}) with float32 [B, 1] gate columns added.

    ``lambda_opt`` / ``lambda_sar``: a scalar (same gate for every sample) or a [B] / [B, 1] array.
    NumPy inputs get NumPy gates (so ``model.predict`` can batch them), anything else tensors.
    """
    out = dict(inputs)
    if isinstance(inputs["s2"], np.ndarray):
        batch = inputs["s2"].shape[0]
        for key, value in (("lambda_opt", lambda_opt), ("lambda_sar", lambda_sar)):
            value = np.asarray(value, "float32")
            out[key] = np.ascontiguousarray(np.broadcast_to(value.reshape(-1, 1) if value.ndim else value,
                                                            (batch, 1)))
        return out
    batch = tf.shape(inputs["s2"])[0]
    for key, value in (("lambda_opt", lambda_opt), ("lambda_sar", lambda_sar)):
        value = tf.cast(tf.convert_to_tensor(value), tf.float32)
        out[key] = tf.broadcast_to(tf.reshape(value, (-1, 1)) if value.shape.rank else value,
                                   tf.stack([batch, 1]))
    return out


def per_sample_bce(y_true, y_prob):
    """Binary cross-entropy of probabilities, mean over classes → [B], in float32 whatever the
    policy (Keras' own, so its clipping; the Eq. 2 passes weight and reduce it themselves)."""
    return keras.losses.binary_crossentropy(ops.cast(y_true, "float32"), ops.cast(y_prob, "float32"))


def _f_metrics(prefix: str) -> list[keras.metrics.Metric]:
    """F1 and F2 at threshold 0.5 with samples, micro and macro averaging, named ``{prefix}f1_samples`` …"""
    out = []
    for beta in (1, 2):
        out.append(SamplesFBeta(beta=float(beta), threshold=0.5, name=f"{prefix}f{beta}_samples"))
        for average in ("micro", "macro"):
            out.append(keras.metrics.FBetaScore(average=average, beta=float(beta), threshold=0.5,
                                                name=f"{prefix}f{beta}_{average}"))
    return out


def _build_metrics(metrics, num_classes: int):
    # Create every state variable now (under the caller's strategy scope), not lazily in a
    # replica context inside the first traced step.
    for m in metrics:
        if isinstance(m, keras.metrics.FBetaScore) and not m._built:
            m._build((None, num_classes), (None, num_classes))


def _sample_weight_vector(sample_weight):
    return None if sample_weight is None else ops.reshape(ops.cast(sample_weight, "float32"), (-1,))


def _regularization(model) -> tf.Tensor | None:
    """Sum of the model's regularization / ``add_loss`` losses (None when there are none)."""
    if not model.losses:
        return None
    return tf.add_n([ops.cast(l, "float32") for l in model.losses])


def _apply_gradients(model, tape, scaled_loss):
    """Gradients of ``scaled_loss`` (``optimizer.scale_loss(loss)``, taken inside the tape, as in
    keras' TensorFlowTrainer.train_step: a no-op unless the optimizer is a LossScaleOptimizer —
    mixed_float16 — or has a loss_scale_factor; apply_gradients unscales) applied to the trainable
    weights that have one (an encoder no active pass uses has none)."""
    weights = model.trainable_weights
    grads = tape.gradient(scaled_loss, weights)
    pairs = [(g, v) for g, v in zip(grads, weights) if g is not None]
    model.optimizer.apply_gradients(pairs)


def _build_fusion_head(dim_opt: int, dim_sar: int, num_classes: int, dropout: float) -> keras.Model:
    z_opt = keras.Input((dim_opt,), name="z_opt")
    z_sar = keras.Input((dim_sar,), name="z_sar")
    lam_opt = keras.Input((1,), name="lambda_opt")
    lam_sar = keras.Input((1,), name="lambda_sar")
    g_opt = Gate(name="gate_opt")([Squash(name="squash_opt")(z_opt), lam_opt])
    g_sar = Gate(name="gate_sar")([Squash(name="squash_sar")(z_sar), lam_sar])
    x = layers.Concatenate(name="fused_features")([g_opt, g_sar])
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    probs = layers.Activation("sigmoid", dtype="float32", name="probabilities")(x)
    return keras.Model([z_opt, z_sar, lam_opt, lam_sar], probs, name="fusion_head")


def _model_inputs(image_size: int, s2_channels: int, s1_channels: int) -> dict:
    return {
        "s2": keras.Input((image_size, image_size, s2_channels), name="s2"),
        "s1": keras.Input((image_size, image_size, s1_channels), name="s1"),
        "lambda_opt": keras.Input((1,), name="lambda_opt"),
        "lambda_sar": keras.Input((1,), name="lambda_sar"),
    }


class _ConfiguredModel(keras.Model):
    """get_config/from_config from the constructor arguments listed in `_config_args`."""

    _config_args: tuple = ()

    def _keep_config(self, arguments: dict) -> None:
        """Keep the constructor arguments named in `_config_args` (pass ``locals()``)."""
        for key in self._config_args:
            setattr(self, key, arguments[key])

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        for key in self._config_args:
            value = getattr(self, key)
            config[key] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tf_fusion")
class FusionModel(_ConfiguredModel):
    """Two-branch gated late fusion (the paper's network), trained with Eq. 2.

    Inputs ``{"s2": [B,H,W,12], "s1": [B,H,W,2], "lambda_opt": [B,1], "lambda_sar": [B,1]}``
    (see ``gate_inputs``); outputs ``{"probabilities": [B, num_classes] float32,
    "embedding_opt": z_opt, "embedding_sar": z_sar}`` (raw encoder outputs, before σ).

    ``pass_weights = (w_fuse, w_opt, w_sar)`` of Eq. 2; a zero weight skips its pass (and an
    encoder no remaining pass needs). ``(w, 0, 0)`` is the fused-pass-only baseline.
    Training logs ``loss``, ``loss_fuse``, ``loss_opt``, ``loss_sar`` (the active passes);
    evaluation logs all four plus ``f{1,2}_{samples,micro,macro}`` of the fused prediction and
    the same with ``opt_`` / ``sar_`` prefixes for the single-modality predictions.
    """

    _stack_head_passes = False  # True: one head call on the 3 gate settings stacked (3B rows)
    _config_args = ("backbone", "num_classes", "image_size", "s2_channels", "s1_channels", "dropout",
                    "pass_weights", "synchronized_bn")

    def __init__(self, backbone: str = "tiny", num_classes: int = 12, image_size: int = 120,
                 s2_channels: int = 12, s1_channels: int = 2, dropout: float = 0.0,
                 pass_weights=(2.0, 1.0, 1.0), synchronized_bn: bool = True, **kwargs):
        pass_weights = tuple(float(w) for w in pass_weights)
        if len(pass_weights) != 3 or min(pass_weights) < 0 or sum(pass_weights) <= 0:
            raise ValueError("pass_weights must be three non-negative (w_fuse, w_opt, w_sar), "
                             f"not all zero; got {pass_weights}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        # === Layers ===
        encoder_opt = build_backbone(backbone, (image_size, image_size, s2_channels), "opt_",
                                     synchronized_bn=synchronized_bn)
        encoder_sar = build_backbone(backbone, (image_size, image_size, s1_channels), "sar_",
                                     synchronized_bn=synchronized_bn)
        fusion_head = _build_fusion_head(encoder_opt.output.shape[-1], encoder_sar.output.shape[-1],
                                         num_classes, dropout)
        # === Functional model ===
        inputs = _model_inputs(image_size, s2_channels, s1_channels)
        z_opt = encoder_opt(inputs["s2"])
        z_sar = encoder_sar(inputs["s1"])
        probs = fusion_head([z_opt, z_sar, inputs["lambda_opt"], inputs["lambda_sar"]])
        super().__init__(inputs=inputs,
                         outputs={"probabilities": probs, "embedding_opt": z_opt, "embedding_sar": z_sar},
                         **kwargs)
        self._keep_config(locals())
        self.encoder_opt = encoder_opt
        self.encoder_sar = encoder_sar
        self.fusion_head = fusion_head
        # === Metrics ===
        self.loss_trackers = {name: keras.metrics.Mean(name=name)
                              for name in ("loss", "loss_fuse", "loss_opt", "loss_sar")}
        self.val_metrics = _f_metrics("") + _f_metrics("opt_") + _f_metrics("sar_")
        _build_metrics(self.val_metrics, num_classes)

    # --- Eq. 2 -------------------------------------------------------------------------------

    def active_passes(self) -> list[tuple[str, float, float, float]]:
        """(name, weight, λ_opt, λ_sar) of the passes with non-zero weight."""
        return [(name, w, lo, ls) for (name, lo, ls), w in zip(PASSES, self.pass_weights) if w > 0]

    def _embed(self, inputs, training, need_opt=True, need_sar=True):
        z_opt = self.encoder_opt(inputs["s2"], training=training) if need_opt else None
        z_sar = self.encoder_sar(inputs["s1"], training=training) if need_sar else None
        # An encoder no pass looks at is not run; its gate is 0, so zeros stand in exactly.
        if z_opt is None:
            z_opt = ops.zeros((ops.shape(z_sar)[0], self.encoder_opt.output.shape[-1]), z_sar.dtype)
        if z_sar is None:
            z_sar = ops.zeros((ops.shape(z_opt)[0], self.encoder_sar.output.shape[-1]), z_opt.dtype)
        return z_opt, z_sar

    def head_passes(self, z_opt, z_sar, gates, training=False) -> list:
        """Class probabilities of the fusion head for each (λ_opt, λ_sar) in ``gates`` on the
        shared embeddings (one head call per setting, or one stacked call, see the module doc)."""
        k = len(gates)
        batch = ops.shape(z_opt)[0]
        if not self._stack_head_passes:
            return [self.fusion_head([z_opt, z_sar, ops.full((batch, 1), lo, "float32"),
                                      ops.full((batch, 1), ls, "float32")], training=training)
                    for lo, ls in gates]
        ones = ops.ones((batch, 1), "float32")
        lam_opt = ops.concatenate([ones * lo for lo, _ in gates], axis=0)
        lam_sar = ops.concatenate([ones * ls for _, ls in gates], axis=0)
        if k > 1:
            z_opt = ops.concatenate([z_opt] * k, axis=0)
            z_sar = ops.concatenate([z_sar] * k, axis=0)
        probs = self.fusion_head([z_opt, z_sar, lam_opt, lam_sar], training=training)
        return ops.split(probs, k, axis=0) if k > 1 else [probs]

    def compute_eq2_loss(self, inputs, y, training=True, sample_weight=None):
        """Eq. 2 on one batch: encoders once, the head on the shared embeddings per active pass.

        Returns ``(loss, per_sample)``: ``loss`` is this replica's share of the global-batch
        mean of Σ_k w_k·BCE_k (``tf.nn.compute_average_loss``) plus the scaled regularization
        losses, the value to differentiate; ``per_sample`` maps ``"fuse"``/``"opt"``/``"sar"``
        (active passes) and ``"loss"`` (the weighted sum, plus regularization) to [B] losses.
        """
        passes = self.active_passes()
        need_opt = any(lo > 0 for _, _, lo, _ in passes)
        need_sar = any(ls > 0 for _, _, _, ls in passes)
        z_opt, z_sar = self._embed(inputs, training, need_opt, need_sar)
        probs = self.head_passes(z_opt, z_sar, [(lo, ls) for _, _, lo, ls in passes], training)
        per_sample = {name: per_sample_bce(y, p) for (name, _, _, _), p in zip(passes, probs)}
        total = tf.add_n([w * per_sample[name] for name, w, _, _ in passes])
        sample_weight = _sample_weight_vector(sample_weight)
        loss = tf.nn.compute_average_loss(total, sample_weight=sample_weight)
        reg = _regularization(self)
        if reg is not None:
            loss = loss + tf.nn.scale_regularization_loss(reg)
            total = total + reg
        per_sample["loss"] = total
        return loss, per_sample

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, per_sample = self.compute_eq2_loss(x, y, training=True, sample_weight=sample_weight)
            scaled_loss = self.optimizer.scale_loss(loss)
        _apply_gradients(self, tape, scaled_loss)
        sw = _sample_weight_vector(sample_weight)
        logs = {}
        for name in ("loss", "fuse", "opt", "sar"):
            if name in per_sample:
                key = name if name == "loss" else f"loss_{name}"
                self.loss_trackers[key].update_state(per_sample[name], sample_weight=sw)
                logs[key] = self.loss_trackers[key].result()
        return logs

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        z_opt, z_sar = self._embed(x, training=False)
        probs = dict(zip(("fuse", "opt", "sar"),
                         self.head_passes(z_opt, z_sar, [(lo, ls) for _, lo, ls in PASSES], False)))
        sw = _sample_weight_vector(sample_weight)
        losses = {name: per_sample_bce(y, p) for name, p in probs.items()}
        total = tf.add_n([w * losses[name] for (name, _, _), w in zip(PASSES, self.pass_weights)])
        self.loss_trackers["loss"].update_state(total, sample_weight=sw)
        for name, value in losses.items():
            self.loss_trackers[f"loss_{name}"].update_state(value, sample_weight=sw)
        for i, name in enumerate(("fuse", "opt", "sar")):
            for m in self.val_metrics[6 * i:6 * (i + 1)]:
                m.update_state(y, probs[name], sample_weight=sw)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        if not hasattr(self, "val_metrics"):  # during the functional __init__
            return []
        return [*self.loss_trackers.values(), *self.val_metrics]



@keras.saving.register_keras_serializable(package="tf_fusion")
class EarlyFusionModel(_ConfiguredModel):
    """Early-fusion baseline (BigEarthNet-MM style): s2 and s1 bands stacked on the channel axis
    (both already 120×120) → one backbone → Dense → sigmoid.

    Same inputs as ``FusionModel``; each modality is multiplied by its λ first, so a missing
    modality is an all-zeros input. Output ``{"probabilities"}``. Single-pass weighted BCE
    training (λ from the inputs when present, else 1); logs ``loss`` and, in evaluation,
    ``f{1,2}_{samples,micro,macro}``.
    """

    _config_args = ("backbone", "num_classes", "image_size", "s2_channels", "s1_channels", "dropout", "synchronized_bn")

    def __init__(self, backbone: str = "tiny", num_classes: int = 12, image_size: int = 120,
                 s2_channels: int = 12, s1_channels: int = 2, dropout: float = 0.0,
                 synchronized_bn: bool = True, **kwargs):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        encoder = build_backbone(backbone, (image_size, image_size, s2_channels + s1_channels),
                                 "early_", synchronized_bn=synchronized_bn)
        inputs = _model_inputs(image_size, s2_channels, s1_channels)
        s2 = Gate(name="gate_opt")([inputs["s2"], inputs["lambda_opt"]])
        s1 = Gate(name="gate_sar")([inputs["s1"], inputs["lambda_sar"]])
        x = layers.Concatenate(axis=-1, name="stacked_bands")([s2, s1])
        x = encoder(x)
        if dropout:
            x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Dense(num_classes, name="logits")(x)
        probs = layers.Activation("sigmoid", dtype="float32", name="probabilities")(x)
        super().__init__(inputs=inputs, outputs={"probabilities": probs}, **kwargs)
        self._keep_config(locals())
        self.encoder = encoder
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.val_metrics = _f_metrics("")
        _build_metrics(self.val_metrics, num_classes)

    def _forward(self, x, training):
        if "lambda_opt" not in x or "lambda_sar" not in x:
            x = gate_inputs(x, x.get("lambda_opt", 1.0), x.get("lambda_sar", 1.0))
        return self({k: x[k] for k in INPUT_KEYS}, training=training)["probabilities"]

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        sw = _sample_weight_vector(sample_weight)
        with tf.GradientTape() as tape:
            per_sample = per_sample_bce(y, self._forward(x, training=True))
            loss = tf.nn.compute_average_loss(per_sample, sample_weight=sw)
            reg = _regularization(self)
            if reg is not None:
                loss = loss + tf.nn.scale_regularization_loss(reg)
                per_sample = per_sample + reg
            scaled_loss = self.optimizer.scale_loss(loss)
        _apply_gradients(self, tape, scaled_loss)
        self.loss_tracker.update_state(per_sample, sample_weight=sw)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        sw = _sample_weight_vector(sample_weight)
        probs = self._forward(x, training=False)
        self.loss_tracker.update_state(per_sample_bce(y, probs), sample_weight=sw)
        for m in self.val_metrics:
            m.update_state(y, probs, sample_weight=sw)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        if not hasattr(self, "val_metrics"):
            return []
        return [self.loss_tracker, *self.val_metrics]

