"""The comparison's baselines that are not gated fusion: early fusion, EmbraceNet, input sensor
dropout and the single-modality ensemble (their registry entries: `tf_fusion.methods`).

Both take the gated network's inputs ``{"s2", "s1", "lambda_opt", "lambda_sar"}`` (so one
evaluation feeds every method) and are trained with one weighted BCE pass (`SinglePassModel`):

- ``EarlyFusionModel`` (BigEarthNet-MM): the 12 S2 and 2 S1 bands stacked into one backbone.
  Each modality is multiplied by its λ first, so a missing modality is an all-zeros input.
- ``EmbraceNetModel`` (Choi & Lee, Information Fusion 2019): a pooled branch per modality, a
  docking layer (Dense + ReLU) per modality to a common width, and the embracement: every feature
  of the fused vector comes from one modality, drawn per sample and feature from a multinomial
  with the selection probabilities p_m ∝ λ_m (the λ inputs are the modalities' availability), then
  the sigmoid classifier. Training drops modalities at random: with probability
  ``modality_dropout`` a batch keeps one modality per sample (as the reference implementation
  does); the draws also happen at inference, from a seeded generator, so a missing modality
  (λ = 0, p = 0) is never selected and cannot influence the output.
- ``SensorDropoutModel`` (input sensor dropout; Mena et al. 2024–2025, multi-source crop and
  land-cover models): the early-fusion network with the availability flags as two more input
  channels (constant maps). In training each sample drops its optical input with probability
  ``sensor_dropout`` and, exclusively, its SAR input with the same probability (never both, so
  ``sensor_dropout`` ≤ 0.5): the dropped input is zeros and its flag 0. At test time the flags are
  the scenario's (a missing modality: zeros and 0; a corrupted one: the noise and 1).
- ``EnsembleModel``: an optical-only and a SAR-only network (a backbone and a sigmoid classifier
  each), trained side by side on their own BCE (no gradient flows between them: the loss is the
  sum of two losses of disjoint weights); the prediction is the mean of the available modalities'
  probabilities, weighted by the flags (one missing: the other alone; none: 0.5).
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from .backbones import build_backbone
from .metrics import FScores
from .passes import NO_EVIDENCE
from .model import (INPUT_KEYS, ConfiguredModel, Gate, check_dropout, gate_inputs, minimize,
                    model_inputs, per_sample_bce, probabilities, regularization, sample_weights,
                    sensor_dropout_keep)


class SinglePassModel(ConfiguredModel):
    """One weighted BCE pass per batch (λ from the inputs when present, else 1); logs ``loss``
    and, in evaluation, ``f{1,2}_{samples,micro,macro}``. Subclasses build the functional graph
    (output ``{"probabilities"}``) and call ``_init_metrics``."""

    def _init_metrics(self, num_classes: int) -> None:
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.val_metrics = FScores(num_classes)

    def _feed(self, x, training):
        if "lambda_opt" not in x or "lambda_sar" not in x:
            x = gate_inputs(x, x.get("lambda_opt", 1.0), x.get("lambda_sar", 1.0))
        return {k: x[k] for k in INPUT_KEYS}

    def _forward(self, x, training):
        return self(self._feed(x, training), training=training)["probabilities"]

    def _per_sample_loss(self, y, x):
        """The training loss per sample, [B] (one BCE of ``probabilities``; the ensemble's differs)."""
        return per_sample_bce(y, self._forward(x, training=True))

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        sw = sample_weights(sample_weight)
        with tf.GradientTape() as tape:
            per_sample = self._per_sample_loss(y, x)
            loss = tf.nn.compute_average_loss(per_sample, sample_weight=sw)
            reg = regularization(self)
            if reg is not None:
                loss = loss + tf.nn.scale_regularization_loss(reg)
                per_sample = per_sample + reg
            scaled_loss = self.optimizer.scale_loss(loss)
        minimize(self, tape, scaled_loss)
        self.loss_tracker.update_state(per_sample, sample_weight=sw)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        sw = sample_weights(sample_weight)
        probs = self._forward(x, training=False)
        self.loss_tracker.update_state(per_sample_bce(y, probs), sample_weight=sw)
        self.val_metrics.update_state(y, probs, sample_weight=sw)
        return self.get_metrics_result()

    @property
    def metrics(self):
        if not hasattr(self, "val_metrics"):  # during the functional __init__
            return []
        return [self.loss_tracker, self.val_metrics]


def classify(x, num_classes: int, dropout: float):
    """The baselines' classifier on their pooled features: dropout, the Dense `logits` layer, the
    sigmoid (the layer names every baseline's saved model carries)."""
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return probabilities(layers.Dense(num_classes, dtype="float32", name="logits")(x))


@keras.saving.register_keras_serializable(package="tf_fusion")
class EarlyFusionModel(SinglePassModel):
    """Early-fusion baseline (BigEarthNet-MM style): s2 and s1 bands stacked on the channel axis
    (both already S×S) → one backbone → Dense → sigmoid (see the module docstring)."""

    _config_args = ("backbone", "num_classes", "image_size", "s2_channels", "s1_channels", "dropout", "synchronized_bn")

    def __init__(self, backbone: str = "tiny", num_classes: int = 12, image_size: int = 120,
                 s2_channels: int = 12, s1_channels: int = 2, dropout: float = 0.0,
                 synchronized_bn: bool = True, **kwargs):
        check_dropout(dropout)
        encoder = build_backbone(backbone, (image_size, image_size, s2_channels + s1_channels),
                                 "early_", synchronized_bn=synchronized_bn)
        inputs = model_inputs(image_size, s2_channels, s1_channels)
        s2 = Gate(name="gate_opt")([inputs["s2"], inputs["lambda_opt"]])
        s1 = Gate(name="gate_sar")([inputs["s1"], inputs["lambda_sar"]])
        x = encoder(layers.Concatenate(axis=-1, name="stacked_bands")([s2, s1]))
        super().__init__(inputs=inputs, outputs={"probabilities": classify(x, num_classes, dropout)}, **kwargs)
        self._keep_config(locals())
        self.encoder = encoder
        self._init_metrics(num_classes)


@keras.saving.register_keras_serializable(package="tf_fusion")
class Embracement(layers.Layer):
    """``[dockings [B, W, M], availability [B, M]]`` → [B, W]: each feature taken from one
    modality, drawn from the multinomial with p_m = availability_m / Σ availability (uniform
    over the available modalities; a modality with p = 0 is never drawn). All-zero availability
    gives zeros."""

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, inputs):
        dockings, availability = inputs
        availability = ops.cast(availability, "float32")
        none = ops.all(ops.equal(availability, 0), axis=-1, keepdims=True)
        # log p (−inf where p = 0); rows with nothing available draw from a placeholder uniform
        log_p = ops.where(ops.greater(availability, 0), 0.0, -1e9)
        log_p = ops.where(none, ops.zeros_like(log_p), log_p)
        width, modalities = dockings.shape[1], dockings.shape[2]
        draws = keras.random.categorical(log_p, width, seed=self.seed_generator)  # [B, W]
        toggles = ops.one_hot(draws, modalities, dtype=dockings.dtype)  # [B, W, M]
        fused = ops.sum(dockings * toggles, axis=-1)
        return ops.where(none, ops.zeros_like(fused), fused)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0][:2]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="tf_fusion")
class EmbraceNetModel(SinglePassModel):
    """EmbraceNet (see the module docstring). ``width``: the docking / embracement size;
    ``modality_dropout``: the share of training batches that keep one modality per sample."""

    _config_args = ("backbone", "num_classes", "image_size", "s2_channels", "s1_channels", "dropout",
                    "synchronized_bn", "width", "modality_dropout", "seed")

    def __init__(self, backbone: str = "tiny", num_classes: int = 12, image_size: int = 120,
                 s2_channels: int = 12, s1_channels: int = 2, dropout: float = 0.0,
                 synchronized_bn: bool = True, width: int = 512, modality_dropout: float = 0.5, seed: int = 0,
                 **kwargs):
        check_dropout(dropout)
        if not 0.0 <= modality_dropout <= 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1], got {modality_dropout}")
        encoder_opt = build_backbone(backbone, (image_size, image_size, s2_channels), "opt_",
                                     synchronized_bn=synchronized_bn)
        encoder_sar = build_backbone(backbone, (image_size, image_size, s1_channels), "sar_",
                                     synchronized_bn=synchronized_bn)
        inputs = model_inputs(image_size, s2_channels, s1_channels)
        dock_opt = layers.Dense(width, activation="relu", name="docking_opt")(encoder_opt(inputs["s2"]))
        dock_sar = layers.Dense(width, activation="relu", name="docking_sar")(encoder_sar(inputs["s1"]))
        dockings = ops.stack([dock_opt, dock_sar], axis=-1)
        availability = layers.Concatenate(name="availability")([inputs["lambda_opt"], inputs["lambda_sar"]])
        x = Embracement(seed=seed, name="embracement")([dockings, availability])
        super().__init__(inputs=inputs, outputs={"probabilities": classify(x, num_classes, dropout)}, **kwargs)
        self._keep_config(locals())
        self.encoder_opt, self.encoder_sar = encoder_opt, encoder_sar
        self.dropout_generator = keras.random.SeedGenerator(seed + 1)
        self._init_metrics(num_classes)

    def _feed(self, x, training):
        x = super()._feed(x, training)
        if not training or not self.modality_dropout:
            return x
        # with probability `modality_dropout` this batch keeps one modality per sample
        batch = ops.shape(x["s2"])[0]
        drop = ops.less(keras.random.uniform((), seed=self.dropout_generator), self.modality_dropout)
        keep_opt = ops.cast(ops.less(keras.random.uniform((batch, 1), seed=self.dropout_generator), 0.5), "float32")
        lam_opt = ops.where(drop, keep_opt, ops.cast(x["lambda_opt"], "float32"))
        lam_sar = ops.where(drop, 1.0 - keep_opt, ops.cast(x["lambda_sar"], "float32"))
        return {**x, "lambda_opt": lam_opt, "lambda_sar": lam_sar}


@keras.saving.register_keras_serializable(package="tf_fusion")
class SensorDropoutModel(SinglePassModel):
    """Input sensor dropout (see the module docstring): early fusion of the gated s2 and s1 bands
    and the two availability flags as constant maps; ``sensor_dropout``: the probability with
    which a training sample loses each modality (exclusively; at most 0.5)."""

    _config_args = ("backbone", "num_classes", "image_size", "s2_channels", "s1_channels", "dropout",
                    "synchronized_bn", "sensor_dropout", "seed")

    def __init__(self, backbone: str = "tiny", num_classes: int = 12, image_size: int = 120,
                 s2_channels: int = 12, s1_channels: int = 2, dropout: float = 0.0,
                 synchronized_bn: bool = True, sensor_dropout: float = 0.25, seed: int = 0, **kwargs):
        check_dropout(dropout)
        if not 0.0 <= sensor_dropout <= 0.5:
            raise ValueError(f"sensor_dropout must be in [0, 0.5] (never both modalities), got {sensor_dropout}")
        encoder = build_backbone(backbone, (image_size, image_size, s2_channels + s1_channels + 2), "isd_",
                                 synchronized_bn=synchronized_bn)
        inputs = model_inputs(image_size, s2_channels, s1_channels)
        s2 = Gate(name="gate_opt")([inputs["s2"], inputs["lambda_opt"]])
        s1 = Gate(name="gate_sar")([inputs["s1"], inputs["lambda_sar"]])
        ones = ops.ones_like(inputs["s1"][..., :1])
        flags = [Gate(name=f"flag_{m}")([ones, inputs[f"lambda_{m}"]]) for m in ("opt", "sar")]
        x = encoder(layers.Concatenate(axis=-1, name="stacked_bands")([s2, s1, *flags]))
        super().__init__(inputs=inputs, outputs={"probabilities": classify(x, num_classes, dropout)}, **kwargs)
        self._keep_config(locals())
        self.encoder = encoder
        self.dropout_generator = keras.random.SeedGenerator(seed + 1)
        self._init_metrics(num_classes)

    def _feed(self, x, training):
        x = super()._feed(x, training)
        if not training or not self.sensor_dropout:
            return x
        keep_opt, keep_sar = sensor_dropout_keep(x["s2"], self.sensor_dropout, self.dropout_generator)
        return {**x, "lambda_opt": ops.cast(x["lambda_opt"], "float32") * keep_opt,
                "lambda_sar": ops.cast(x["lambda_sar"], "float32") * keep_sar}


@keras.saving.register_keras_serializable(package="tf_fusion")
class AvailableMean(layers.Layer):
    """``[p_opt, p_sar, a_opt, a_sar]`` → (a_opt · p_opt + a_sar · p_sar) / (a_opt + a_sar), and
    ``NO_EVIDENCE`` (0.5) where no modality is available."""

    def call(self, inputs):
        p_o, p_s, a_o, a_s = (ops.cast(t, "float32") for t in inputs)
        total = a_o + a_s
        mean = (a_o * p_o + a_s * p_s) / ops.maximum(total, 1e-12)
        return ops.where(ops.greater(total, 0), mean, ops.full_like(mean, NO_EVIDENCE))

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


@keras.saving.register_keras_serializable(package="tf_fusion")
class EnsembleModel(SinglePassModel):
    """The single-modality ensemble (see the module docstring): ``network_opt`` on s2 and
    ``network_sar`` on s1, each trained on its own BCE; outputs ``probabilities`` (the mean over
    the available modalities), ``probabilities_optical`` and ``probabilities_sar``."""

    _config_args = ("backbone", "num_classes", "image_size", "s2_channels", "s1_channels", "dropout", "synchronized_bn")

    def __init__(self, backbone: str = "tiny", num_classes: int = 12, image_size: int = 120,
                 s2_channels: int = 12, s1_channels: int = 2, dropout: float = 0.0,
                 synchronized_bn: bool = True, **kwargs):
        check_dropout(dropout)

        def network(channels, prefix):
            image = keras.Input((image_size, image_size, channels), name=f"{prefix}image")
            x = build_backbone(backbone, (image_size, image_size, channels), prefix,
                               synchronized_bn=synchronized_bn)(image)
            if dropout:
                x = layers.Dropout(dropout, name=f"{prefix}dropout")(x)
            logits = layers.Dense(num_classes, dtype="float32", name=f"{prefix}logits")(x)
            return keras.Model(image, probabilities(logits), name=f"{prefix}network")

        network_opt, network_sar = network(s2_channels, "opt_"), network(s1_channels, "sar_")
        inputs = model_inputs(image_size, s2_channels, s1_channels)
        p_o, p_s = network_opt(inputs["s2"]), network_sar(inputs["s1"])
        mean = AvailableMean(name="available_mean")([p_o, p_s, inputs["lambda_opt"], inputs["lambda_sar"]])
        super().__init__(inputs=inputs, outputs={"probabilities": mean, "probabilities_optical": p_o,
                                                 "probabilities_sar": p_s}, **kwargs)
        self._keep_config(locals())
        self.network_opt, self.network_sar = network_opt, network_sar
        self._init_metrics(num_classes)

    def _per_sample_loss(self, y, x):
        out = self(self._feed(x, True), training=True)
        return per_sample_bce(y, out["probabilities_optical"]) + per_sample_bce(y, out["probabilities_sar"])
