"""What a test scenario does to a batch of normalised inputs, and the adaptive graph's inputs.

Evaluation applies these to every scenario's batches; the gate check (`tf_fusion.gate_check`)
applies the same N(0, 1) replacement to `val` to warn when a gate is blind to it.
"""
from __future__ import annotations

from .protocol import INPUT_KEY


def apply_scenario(inputs: dict, scenario, seed):
    """The scenario's change to a batch of normalised inputs (stateless noise from ``seed``):
    a missing modality becomes zeros, a corrupted one N(0, 1) noise, a noisy one gets Gaussian
    noise of std ``scenario.strength`` added; the other modality is untouched."""
    import tensorflow as tf

    if scenario.change is None:
        return inputs
    key = INPUT_KEY[scenario.modality]
    x = inputs[key]
    noise = tf.random.stateless_normal(tf.shape(x), seed=seed, dtype=x.dtype)
    changed = {"missing": tf.zeros_like(x), "replaced": noise, "noise": x + scenario.strength * noise}[scenario.change]
    return {**inputs, key: changed}


def gate_availability(x: dict, optical: float, sar: float) -> dict:
    """The adaptive graph's inputs: images plus per-sample availability flags."""
    from .model import gate_inputs

    gated = gate_inputs(x, optical, sar)
    return {"s2": x["s2"], "s1": x["s1"], "optical_available": gated["lambda_opt"], "sar_available": gated["lambda_sar"]}


# --------------------------------------------------------------------------- generic corruptions
# Shifts made from `val` at calibration time, so that a gate learns "far from what the network was
# trained on" rather than "looks like the OOD-training classes". None of them is one of the
# evaluation's shifts (N(0, 1) replacement, additive Gaussian noise, clouds, snow, unknown classes):
# fitting on them is not fitting on the test. Each maps a normalised batch [B, H, W, C] to a
# corrupted one of the same shape, drawn from a stateless ``seed`` (same seed, same corruption).
def _constant_fill(x, seed):
    """Every band of a patch one flat value, drawn per (patch, band) from U(−3, 3) band stds."""
    import tensorflow as tf

    shape = tf.shape(x)
    value = tf.random.stateless_uniform([shape[0], 1, 1, shape[3]], seed, -3.0, 3.0, dtype=x.dtype)
    return tf.broadcast_to(value, shape)


def _uniform_noise(x, seed):
    """The patch replaced by i.i.d. U(−2, 2) values: noise, but not the evaluation's Gaussian."""
    import tensorflow as tf

    return tf.random.stateless_uniform(tf.shape(x), seed, -2.0, 2.0, dtype=x.dtype)


def _band_dropout(x, seed):
    """Each band set to its training mean (0 once normalised) with probability ½; at least one
    band dropped and one kept (SAR's two: one of them)."""
    import tensorflow as tf

    shape = tf.shape(x)
    u = tf.random.stateless_uniform([shape[0], 1, 1, shape[3]], seed, dtype=x.dtype)
    top, bottom = tf.reduce_max(u, axis=-1, keepdims=True), tf.reduce_min(u, axis=-1, keepdims=True)
    drop = ((u < 0.5) | (u >= top)) & (u > bottom)  # the largest draw drops, the smallest stays
    return tf.where(drop, tf.zeros_like(x), x)


def _pixel_shuffle(x, seed):
    """The patch's pixels permuted (one permutation for all bands): each band's histogram kept,
    its spatial structure gone."""
    import tensorflow as tf

    shape = tf.shape(x)
    flat = tf.reshape(x, [shape[0], shape[1] * shape[2], shape[3]])
    order = tf.argsort(tf.random.stateless_uniform([shape[1] * shape[2]], seed))
    return tf.reshape(tf.gather(flat, order, axis=1), shape)


def _intensity_shift(x, seed):
    """Every band of a patch shifted by ±U(1, 3) band stds (the sign drawn per patch): a gross
    calibration error of the sensor, brighter or darker."""
    import tensorflow as tf

    shape = tf.shape(x)
    u = tf.random.stateless_uniform([shape[0], 2], seed, dtype=x.dtype)
    shift = tf.where(u[:, :1] < 0.5, -1.0, 1.0) * (1.0 + 2.0 * u[:, 1:])
    return x + tf.reshape(shift, [shape[0], 1, 1, 1])


CORRUPTIONS = {"constant_fill": _constant_fill, "uniform_noise": _uniform_noise, "band_dropout": _band_dropout,
               "pixel_shuffle": _pixel_shuffle, "intensity_shift": _intensity_shift}


def corrupt(inputs: dict, index: int, seed) -> dict:
    """Batch ``index`` of `val` corrupted for calibration: corruption ``index mod 5`` (in
    ``CORRUPTIONS`` order) applied to both modalities' inputs, each with its own seed. Each
    modality's detector reads its own input only, so one pass serves both."""
    import tensorflow as tf

    fn = list(CORRUPTIONS.values())[index % len(CORRUPTIONS)]
    base = tf.constant([int(seed), int(index)], tf.int64)
    return {**inputs, **{key: fn(inputs[key], base + [0, (i + 1) * 1_000_003])
                         for i, key in enumerate(sorted(INPUT_KEY.values()))}}
