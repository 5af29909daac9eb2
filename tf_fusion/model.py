"""The gated SAR-optical fusion graph (paper Eq. 1) and its three-pass training step (Eq. 2).

One functional graph serves every modality combination: the gates ``lambda_opt`` and
``lambda_sar`` are per-sample *inputs* of shape [B, 1]::

    z_opt = f_opt(s2)          z_sar = f_sar(s1)                       (branches, run once)
    fuse  = [λ_opt · σ(z_opt), λ_sar · σ(z_sar)]                       (Eq. 1, ``fusion_head``)
    ŷ     = sigmoid(Dense(Dropout(trunk(fuse))))                      (f_c, ``fusion_head``)

The fusion happens after ResNet stage ``fusion_stage`` (`tf_fusion.backbones`): at stage 5 the
branches end in pooled embeddings and f_c is the classifier; below it they end in feature maps,
which σ and the gates act on elementwise, and f_c also holds the shared trunk (the remaining
residual stages and pooling). ``FusionModel.head_passes`` applies the fusion head to shared
branch outputs for any list of gate settings (rows of ``tf_fusion.passes.PASSES``); the Eq. 2
train step and the Eq. 3 graph (``tf_fusion.adaptive``) both go through it, so the branches run
once per batch in either and the trunk once per gate setting. The baselines that are not gated
fusion (early fusion, EmbraceNet) are in `tf_fusion.baselines`.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from .backbones import FINAL_STAGE, build_branch, build_trunk
from .metrics import FScores
from .passes import FUSED, PASSES

INPUT_KEYS = ("s2", "s1", "lambda_opt", "lambda_sar")
CLASSIFIER = "logits"  # the fusion head's final Dense, f_c's classifier (the OOD detectors read its input)


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


def gate_column(like, value):
    """A float32 [B, 1] column filled with ``value``, B the batch size of ``like`` (any rank ≥ 2).

    The one way a constant λ is made: it works eagerly, inside a traced train step and on
    symbolic Keras tensors (the Eq. 3 graph), and it serializes with the graph.
    """
    first = like[(slice(None),) + (0,) * (len(like.shape) - 2) + (slice(0, 1),)]
    return ops.full_like(ops.cast(first, "float32"), value)


def sensor_dropout_keep(like, rate: float, generator):
    """Input sensor dropout's draw: float32 [B, 1] columns (keep_opt, keep_sar), B the batch of
    ``like``. One uniform u per sample: u < rate drops optical, rate ≤ u < 2·rate drops SAR, so each
    modality is dropped with probability ``rate`` (≤ 0.5) and never both."""
    u = keras.random.uniform((ops.shape(like)[0], 1), seed=generator)
    keep_opt = 1.0 - ops.cast(ops.less(u, rate), "float32")
    keep_sar = 1.0 - ops.cast(ops.logical_and(ops.greater_equal(u, rate), ops.less(u, 2 * rate)), "float32")
    return keep_opt, keep_sar


def gate_inputs(inputs: dict, lambda_opt, lambda_sar) -> dict:
    """A copy of ``inputs`` ({"s2", "s1", ...}) with float32 [B, 1] gate columns added, the
    model's input format. ``lambda_opt`` / ``lambda_sar``: a scalar (the same gate for every
    sample) or one gate per sample ([B] or [B, 1]). NumPy inputs get NumPy gates (Keras refuses
    a mix, and ``model.predict`` batches NumPy), tensors get tensors (``gate_column``)."""
    out = dict(inputs)
    numpy = isinstance(inputs["s2"], np.ndarray)
    batch = len(inputs["s2"]) if numpy else None
    for key, value in (("lambda_opt", lambda_opt), ("lambda_sar", lambda_sar)):
        if numpy:
            out[key] = np.ascontiguousarray(np.broadcast_to(np.asarray(value, "float32").reshape(-1, 1), (batch, 1)))
        elif np.ndim(value) == 0:
            out[key] = gate_column(inputs["s2"], float(value))
        else:
            out[key] = ops.reshape(ops.cast(value, "float32"), (-1, 1))
    return out


def per_sample_bce(y_true, y_prob):
    """Binary cross-entropy of probabilities, mean over classes → [B], in float32 whatever the
    policy (Keras' own, so its clipping; the Eq. 2 passes weight and reduce it themselves)."""
    return keras.losses.binary_crossentropy(ops.cast(y_true, "float32"), ops.cast(y_prob, "float32"))


def sample_weights(sample_weight):
    return None if sample_weight is None else ops.reshape(ops.cast(sample_weight, "float32"), (-1,))


def regularization(model) -> tf.Tensor | None:
    """Sum of the model's regularization / ``add_loss`` losses (None when there are none)."""
    if not model.losses:
        return None
    return tf.add_n([ops.cast(l, "float32") for l in model.losses])


def minimize(model, tape, loss) -> None:
    """One optimizer step on ``loss`` recorded by ``tape``: scaled inside the tape as Keras' own
    train step does (a no-op unless mixed_float16's LossScaleOptimizer; apply_gradients unscales),
    applied to the trainable weights that have a gradient (a branch no active pass uses has none)."""
    weights = model.trainable_weights
    grads = tape.gradient(loss, weights)
    model.optimizer.apply_gradients([(g, v) for g, v in zip(grads, weights) if g is not None])


def _build_fusion_head(shape_opt, shape_sar, num_classes: int, dropout: float, trunk=None) -> keras.Model:
    """f_c with Eq. 1 in front: σ on each branch output, the per-sample gates, concatenation (on
    the channel axis), the shared trunk below stage 5, dropout, the classifier → float32 logits."""
    z_opt = keras.Input(tuple(shape_opt), name="z_opt")
    z_sar = keras.Input(tuple(shape_sar), name="z_sar")
    lam_opt = keras.Input((1,), name="lambda_opt")
    lam_sar = keras.Input((1,), name="lambda_sar")
    g_opt = Gate(name="gate_opt")([Squash(name="squash_opt")(z_opt), lam_opt])
    g_sar = Gate(name="gate_sar")([Squash(name="squash_sar")(z_sar), lam_sar])
    x = layers.Concatenate(name="fused_features")([g_opt, g_sar])
    if trunk is not None:
        x = trunk(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    logits = layers.Dense(num_classes, dtype="float32", name=CLASSIFIER)(x)
    return keras.Model([z_opt, z_sar, lam_opt, lam_sar], logits, name="fusion_head")


def probabilities(logits):
    """The sigmoid per class, in float32 (the one place logits become probabilities)."""
    return ops.sigmoid(ops.cast(logits, "float32"))


def model_inputs(image_size: int, s2_channels: int, s1_channels: int) -> dict:
    return {
        "s2": keras.Input((image_size, image_size, s2_channels), name="s2"),
        "s1": keras.Input((image_size, image_size, s1_channels), name="s1"),
        "lambda_opt": keras.Input((1,), name="lambda_opt"),
        "lambda_sar": keras.Input((1,), name="lambda_sar"),
    }


def check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


class ConfiguredModel(keras.Model):
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

    def compile(self, *args, **kwargs):
        """Keras' compile, and the optimizer's slots created now: Keras leaves that to the first
        traced train step (without a distribution strategy), and a variable created inside a
        tf.function makes TensorFlow trace the three-pass step twice (3 of the 7.6 s first epoch
        of a smoke run)."""
        super().compile(*args, **kwargs)
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config):
        """Loading a compiled model (Keras skips a custom `compile` unless this is given too)."""
        self.compile(**keras.saving.deserialize_keras_object(config))


@keras.saving.register_keras_serializable(package="tf_fusion")
class FusionModel(ConfiguredModel):
    """Two-branch gated late fusion (the paper's network), trained with Eq. 2.

    Inputs ``{"s2": [B,H,W,12], "s1": [B,H,W,2], "lambda_opt": [B,1], "lambda_sar": [B,1]}``
    (see ``gate_inputs``); outputs ``{"probabilities": [B, num_classes] float32,
    "embedding_opt": z_opt, "embedding_sar": z_sar}`` (raw branch outputs, before σ).

    ``pass_weights``: the Eq. 2 weight of each row of ``PASSES`` (w_fuse, w_opt, w_sar); a zero
    weight skips its pass (and a branch no remaining pass needs). ``(w, 0, 0)`` is the
    fused-pass-only baseline. Training logs ``loss`` and ``loss_<pass>`` of the active passes;
    evaluation logs every pass's loss and ``<prefix>f{1,2}_{samples,micro,macro}`` per pass.
    """

    _config_args = ("backbone", "num_classes", "image_size", "s2_channels", "s1_channels", "dropout",
                    "pass_weights", "synchronized_bn", "fusion_stage", "sensor_dropout", "sensor_dropout_seed")

    def __init__(self, backbone: str = "tiny", num_classes: int = 12, image_size: int = 120,
                 s2_channels: int = 12, s1_channels: int = 2, dropout: float = 0.0,
                 pass_weights=(2.0, 1.0, 1.0), synchronized_bn: bool = True, fusion_stage: int = FINAL_STAGE,
                 sensor_dropout: float = 0.0, sensor_dropout_seed: int = 0, **kwargs):
        pass_weights = tuple(float(w) for w in pass_weights)
        if len(pass_weights) != len(PASSES) or min(pass_weights) < 0 or sum(pass_weights) <= 0:
            raise ValueError(f"pass_weights must be {len(PASSES)} non-negative weights "
                             f"({', '.join('w_' + p.name for p in PASSES)}), not all zero; got {pass_weights}")
        check_dropout(dropout)
        # === Layers ===
        encoder_opt = build_branch(backbone, (image_size, image_size, s2_channels), "opt_", fusion_stage,
                                   synchronized_bn=synchronized_bn)
        encoder_sar = build_branch(backbone, (image_size, image_size, s1_channels), "sar_", fusion_stage,
                                   synchronized_bn=synchronized_bn)
        shape_opt, shape_sar = encoder_opt.output.shape[1:], encoder_sar.output.shape[1:]
        trunk = build_trunk(backbone, (*shape_opt[:-1], shape_opt[-1] + shape_sar[-1]), fusion_stage,
                            synchronized_bn=synchronized_bn)
        fusion_head = _build_fusion_head(shape_opt, shape_sar, num_classes, dropout, trunk)
        # === Functional model ===
        inputs = model_inputs(image_size, s2_channels, s1_channels)
        z_opt = encoder_opt(inputs["s2"])
        z_sar = encoder_sar(inputs["s1"])
        probs = probabilities(fusion_head([z_opt, z_sar, inputs["lambda_opt"], inputs["lambda_sar"]]))
        super().__init__(inputs=inputs,
                         outputs={"probabilities": probs, "embedding_opt": z_opt, "embedding_sar": z_sar},
                         **kwargs)
        self._keep_config(locals())
        self.encoder_opt = encoder_opt
        self.encoder_sar = encoder_sar
        self.fusion_head = fusion_head
        if not 0.0 <= sensor_dropout <= 0.5:
            raise ValueError(f"sensor_dropout must be in [0, 0.5] (never both modalities), got {sensor_dropout}")
        if sensor_dropout:  # only then a generator (and its state variable): older models load unchanged
            self.sensor_dropout_generator = keras.random.SeedGenerator(sensor_dropout_seed + 1)
        # === Metrics ===
        self.loss_trackers = {name: keras.metrics.Mean(name=name)
                              for name in ("loss", *(f"loss_{p.name}" for p in PASSES))}
        self.val_metrics = {p.name: FScores(num_classes, prefix=p.prefix) for p in PASSES}

    # --- the passes --------------------------------------------------------------------------

    def active_passes(self) -> list:
        """(pass, weight) of the rows of PASSES with a non-zero Eq. 2 weight."""
        return [(p, w) for p, w in zip(PASSES, self.pass_weights) if w > 0]

    def branches(self, inputs, training=None, need_opt=True, need_sar=True):
        """(z_opt, z_sar): each branch run once. A branch no pass looks at is not run: its gate
        is 0, so zeros stand in for it exactly."""
        z_opt = self.encoder_opt(inputs["s2"], training=training) if need_opt else None
        z_sar = self.encoder_sar(inputs["s1"], training=training) if need_sar else None
        if z_opt is None:
            z_opt = ops.zeros((ops.shape(z_sar)[0], *self.encoder_opt.output.shape[1:]), z_sar.dtype)
        if z_sar is None:
            z_sar = ops.zeros((ops.shape(z_opt)[0], *self.encoder_sar.output.shape[1:]), z_opt.dtype)
        return z_opt, z_sar

    def get_config(self):
        config = super().get_config()
        if not config["sensor_dropout"]:  # the configs of models without it stay as they were
            config.pop("sensor_dropout"), config.pop("sensor_dropout_seed")
        return config

    def head_passes(self, z_opt, z_sar, passes=PASSES, training=None, logits: bool = False, gates=None) -> dict:
        """{pass name: class probabilities (or float32 logits)} of the fusion head on the shared
        branch outputs, one head call per gate setting (eager, traced or symbolic). ``gates``:
        {pass name: ([B, 1], [B, 1])} per-sample gates in place of a pass's constant ones."""
        gates = gates or {}
        out = {p.name: self.fusion_head([z_opt, z_sar, *gates.get(p.name, (gate_column(z_opt, p.lambda_opt),
                                                                          gate_column(z_opt, p.lambda_sar)))],
                                        training=training)
               for p in passes}
        return out if logits else {name: probabilities(v) for name, v in out.items()}

    def classifier_head(self) -> keras.Model:
        """The fusion head with two outputs, ``{"features", "logits"}``: the input of its final
        Dense (``logits``; the classifier the OOD detectors ``vim`` and ``scale`` read) and its
        logits, sharing the head's layers (built on each call, not tracked: nothing new is saved)."""
        head = self.fusion_head
        return keras.Model(head.inputs, {"features": head.get_layer(CLASSIFIER).input, "logits": head.output},
                           name="classifier_head")

    def head_features(self, z_opt, z_sar, passes=PASSES, training=None) -> tuple[dict, dict]:
        """``({pass name: float32 logits}, {pass name: classifier input})`` of the passes, one
        head call per gate setting, as ``head_passes(logits=True)`` plus what the classifier read."""
        head = self.classifier_head()
        out = {p.name: head([z_opt, z_sar, gate_column(z_opt, p.lambda_opt), gate_column(z_opt, p.lambda_sar)],
                            training=training) for p in passes}
        return ({name: v["logits"] for name, v in out.items()},
                {name: ops.cast(v["features"], "float32") for name, v in out.items()})

    # --- Eq. 2 -------------------------------------------------------------------------------

    def _weighted_total(self, per_sample: dict):
        """Σ_pass w_pass · BCE_pass over the passes present in ``per_sample`` ([B])."""
        return tf.add_n([w * per_sample[p.name] for p, w in zip(PASSES, self.pass_weights) if p.name in per_sample
                         and w > 0])

    def compute_eq2_loss(self, inputs, y, training=True, sample_weight=None):
        """Eq. 2 on one batch: branches once, the head on the shared outputs per active pass.

        Returns ``(loss, per_sample)``: ``loss`` is this replica's share of the global-batch
        mean of Σ_k w_k·BCE_k (``tf.nn.compute_average_loss``) plus the scaled regularization
        losses, the value to differentiate; ``per_sample`` maps each active pass name and
        ``"loss"`` (the weighted sum, plus regularization) to [B] losses.
        """
        passes = [p for p, _ in self.active_passes()]
        z_opt, z_sar = self.branches(inputs, training, any(p.lambda_opt for p in passes),
                                     any(p.lambda_sar for p in passes))
        probs = self.head_passes(z_opt, z_sar, passes, training, gates=self.fused_pass_gates(z_opt, training))
        per_sample = {name: per_sample_bce(y, p) for name, p in probs.items()}
        total = self._weighted_total(per_sample)
        loss = tf.nn.compute_average_loss(total, sample_weight=sample_weights(sample_weight))
        reg = regularization(self)
        if reg is not None:
            loss = loss + tf.nn.scale_regularization_loss(reg)
            total = total + reg
        per_sample["loss"] = total
        return loss, per_sample

    def fused_pass_gates(self, z_opt, training) -> dict:
        """With ``sensor_dropout`` (in training): the fused pass's gates drawn per sample by
        input sensor dropout (`sensor_dropout_keep`) instead of (1, 1); else {}."""
        if not training or not self.sensor_dropout:
            return {}
        return {FUSED.name: sensor_dropout_keep(z_opt, self.sensor_dropout, self.sensor_dropout_generator)}

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, per_sample = self.compute_eq2_loss(x, y, training=True, sample_weight=sample_weight)
            scaled_loss = self.optimizer.scale_loss(loss)
        minimize(self, tape, scaled_loss)
        sw = sample_weights(sample_weight)
        logs = {}
        for name, value in per_sample.items():
            key = name if name == "loss" else f"loss_{name}"
            self.loss_trackers[key].update_state(value, sample_weight=sw)
            logs[key] = self.loss_trackers[key].result()
        return logs

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        probs = self.head_passes(*self.branches(x, training=False), PASSES, training=False)
        sw = sample_weights(sample_weight)
        per_sample = {name: per_sample_bce(y, p) for name, p in probs.items()}
        self.loss_trackers["loss"].update_state(self._weighted_total(per_sample), sample_weight=sw)
        for name, value in per_sample.items():
            self.loss_trackers[f"loss_{name}"].update_state(value, sample_weight=sw)
            self.val_metrics[name].update_state(y, probs[name], sample_weight=sw)
        return self.get_metrics_result()  # FScores' six values flattened, in self.metrics' order

    @property
    def metrics(self):
        if not hasattr(self, "val_metrics"):  # during the functional __init__
            return []
        return [*self.loss_trackers.values(), *self.val_metrics.values()]
