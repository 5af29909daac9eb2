"""OOD detectors (paper §2.2): one small binary head per modality on its frozen branch output.

`python -m tf_fusion.ood --run RUN_DIR` trains them for a finished training run: the head of each
modality reads that modality's branch output (the branch frozen, batch norm in inference mode)
and predicts P(in-distribution). Positives are the `train` subset, negatives the `ood_train`
subset (patches of the OOD-training classes only). The OOD samples' optical input is rescaled by
a random factor U(lo, hi) in reflectance units (`ood.augment_range`), which makes the optical
head sensitive to brightness shifts such as clouds, and their SAR backscatter is shifted by
U(lo, hi) dB (`ood.sar_augment_db`), so that the SAR head also sees darker-than-usual scenes;
with `ood.balance` each class gets the same total sample weight. Each epoch reports the AUROC of
`val` (in) against `ood_val` (out) in TensorBoard (RUN/logs/ood_opt, RUN/logs/ood_sar). The run
folder keeps the heads and the settings they were trained with (`Run.save_ood_head`); heads
trained with the same `ood` settings are loaded instead of retrained.
"""
from __future__ import annotations

import os
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tfrecords_builder import ManifestError, S1_BANDS, S2_BANDS

from . import cli
from . import data as tfdata
from .protocol import INPUT_KEY, OPTICAL, SAR
from .runs import Run, RunError, using

MODALITIES = (OPTICAL, SAR)
HEAD_NAMES = {OPTICAL: "ood_opt", SAR: "ood_sar"}
_ENCODER = {OPTICAL: "encoder_opt", SAR: "encoder_sar"}


def build_ood_head(input_shape, hidden=(512, 64), dropout: float = 0.5, name: str = "ood_opt") -> keras.Model:
    """Branch output (an embedding [B, D], or below fusion stage 5 a feature map, flattened as
    the authors do) → (Dense(relu) → Dropout) per hidden size → Dense(1, sigmoid): float32
    [B, 1], the probability that the sample is in-distribution."""
    shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(int(n) for n in input_shape)
    inputs = keras.Input(shape, name=f"{name}_embedding")
    x = layers.Flatten(name=f"{name}_flatten")(inputs) if len(shape) > 1 else inputs
    for i, units in enumerate(hidden):
        x = layers.Dense(int(units), activation="relu", name=f"{name}_dense{i}")(x)
        if dropout:
            x = layers.Dropout(float(dropout), name=f"{name}_dropout{i}")(x)
    p = layers.Dense(1, activation="sigmoid", dtype="float32", name=f"{name}_p_in")(x)
    return keras.Model(inputs, p, name=name)


# ------------------------------------------------------------------------------ augmentation
def rescale_intensity(x, scale, mean, std):
    """Normalised optical input ``x`` [B, H, W, C] → the normalised image of ``scale · raw``.

    The pipeline feeds ``x = (raw − mean) / std`` per band; rescaling the reflectance by ``s``
    gives ``(s·(x·std + mean) − mean) / std = s·x + (s − 1)·mean / std``. ``scale``: [B] (one
    factor per sample) or a scalar; ``mean``, ``std``: [C] band statistics of the manifest.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    scale = tf.reshape(tf.cast(scale, tf.float32), [-1, 1, 1, 1])
    shift = tf.constant(np.asarray(mean, np.float32) / np.asarray(std, np.float32))
    return x * scale + (scale - 1.0) * shift


def balance_weights(n_in: int, n_out: int, balance: bool = True) -> tuple[float, float]:
    """(weight of an in-distribution sample, weight of an OOD sample): with ``balance`` both
    classes get the same total weight, ``n_in·w_in = n_out·w_out = (n_in + n_out) / 2`` (the
    mean weight stays 1); without, every sample weighs 1."""
    if not balance:
        return 1.0, 1.0
    n = n_in + n_out
    return n / (2.0 * n_in), n / (2.0 * n_out)


# ------------------------------------------------------------------------------ datasets
def shift_backscatter(x, gain_db, std):
    """Normalised SAR input ``x`` [B, H, W, C] (dB) → the normalised image of the backscatter
    scaled by ``gain_db`` decibels, i.e. ``x + gain_db / std`` (``gain_db``: [B] or a scalar;
    ``std``: [C] band statistics of the manifest)."""
    x = tf.convert_to_tensor(x, tf.float32)
    gain = tf.reshape(tf.cast(gain_db, tf.float32), [-1, 1, 1, 1])
    return x + gain / tf.constant(np.asarray(std, np.float32))


def intensity_augmentation(modality: str, ood_cfg: dict, manifest):
    """``shift(x, u)`` with ``u`` ~ U(0, 1) per sample: the intensity change of an OOD
    sample of ``modality``, or None when its range is unset: optical reflectance rescaled by
    U(`ood.augment_range`), SAR backscatter shifted by U(`ood.sar_augment_db`) dB."""
    key = "augment_range" if modality == OPTICAL else "sar_augment_db"
    bounds = ood_cfg.get(key)  # checked by the config loader: null or [lo, hi]
    if not bounds:
        return None
    lo, hi = (float(v) for v in bounds)
    if modality == OPTICAL:
        mean, std = manifest.band_stats(S2_BANDS)
        return lambda x, u: rescale_intensity(x, lo + (hi - lo) * u, mean, std)
    _, std = manifest.band_stats(S1_BANDS)
    return lambda x, u: shift_backscatter(x, lo + (hi - lo) * u, std)


def _labelled(manifest, subset, key, label, weight, batch_size, *, training, seed, intensity=None, **data_kwargs):
    """Batches of (x = inputs[key], label [B, 1], weight [B]) of one subset; each sample changed
    by ``intensity(x, U(0, 1))`` when given (the OOD samples' intensity augmentation)."""
    ds = tfdata.make_dataset(manifest, subset, batch_size=batch_size, training=training, seed=seed, **data_kwargs)
    seeds = tf.data.Dataset.random(seed=seed + 7, rerandomize_each_iteration=True).batch(2)

    def to_example(batch, batch_seed):
        x = batch[0][key]
        n = tf.shape(x)[0]
        if intensity is not None:
            x = intensity(x, tf.random.stateless_uniform([n], seed=batch_seed))
        return x, tf.fill([n, 1], float(label)), tf.fill([n], float(weight))

    return tf.data.Dataset.zip(ds, seeds).map(to_example, num_parallel_calls=tf.data.AUTOTUNE,
                                              deterministic=data_kwargs.get("deterministic", False))


def ood_datasets(manifest, modality: str, ood_cfg: dict, *, image_size=120, resize_method="bilinear", augment=True,
                 deterministic=False, log=print):
    """(train, val or None) datasets of ``(x, label[, weight])`` for one modality's head.

    train: `train` (label 1) and `ood_train` (label 0) mixed per sample in proportion to their
    sizes (one epoch = one pass over both), weights from ``balance_weights``, the OOD inputs
    intensity-augmented (``intensity_augmentation``); val: `val` (1) then `ood_val` (0),
    unweighted, no augmentation.
    """
    key, seed, batch = INPUT_KEY[modality], int(ood_cfg["seed"]), int(ood_cfg["batch_size"])
    n_in, n_out = manifest.subset_size("train"), manifest.subset_size("ood_train")
    if not n_in or not n_out:
        raise ManifestError(f"{manifest.path}: OOD heads need non-empty train and ood_train subsets "
                            f"(have {n_in} and {n_out} records)")
    w_in, w_out = balance_weights(n_in, n_out, ood_cfg["balance"])
    common = dict(image_size=image_size, resize_method=resize_method, deterministic=deterministic)
    shift = intensity_augmentation(modality, ood_cfg, manifest)
    pos = _labelled(manifest, "train", key, 1.0, w_in, batch, training=True, seed=seed, augment=augment, **common)
    neg = _labelled(manifest, "ood_train", key, 0.0, w_out, batch, training=True, seed=seed + 100, augment=augment,
                    intensity=shift, **common)
    train = tf.data.Dataset.sample_from_datasets(
        [pos.unbatch(), neg.unbatch()], weights=[n_in / (n_in + n_out), n_out / (n_in + n_out)],
        seed=seed, stop_on_empty_dataset=False)
    # the exact length (one pass over both subsets), so Keras knows where an epoch ends
    steps = -(-(n_in + n_out) // batch)
    train = train.batch(batch).apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)

    v_in, v_out = manifest.subset_size("val"), manifest.subset_size("ood_val")
    if not v_in or not v_out:
        message = (f"OOD head {modality}: no validation (val has {v_in}, ood_val {v_out} records); "
                   f"the validation AUROC is not available")
        warnings.warn(message, stacklevel=2)
        log(f"warning: {message}")
        return train, None
    val = [_labelled(manifest, subset, key, label, 1.0, batch, training=False, seed=seed, **common)
           for subset, label in (("val", 1.0), ("ood_val", 0.0))]
    steps = -(-v_in // batch) + -(-v_out // batch)
    val = (val[0].concatenate(val[1]).map(lambda x, y, w: (x, y))
           .apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE))
    return train, val


# ------------------------------------------------------------------------------ training
def frozen_copy(encoder) -> keras.Model:
    """A non-trainable copy of a branch (same weights, none shared): its batch norm runs in
    inference mode and nothing the heads' training does can change the fusion model."""
    copy = keras.models.clone_model(encoder)
    copy.set_weights(encoder.get_weights())
    copy.trainable = False
    return copy


def new_ood_head(fusion, modality: str, ood_cfg: dict) -> keras.Model:
    """The untrained head of one modality for these ``ood`` settings (one place that knows what a
    head reads, so ``train_ood_head`` and the tuner build the same head)."""
    encoder = getattr(fusion, _ENCODER[modality])
    return build_ood_head(encoder.output.shape[1:], tuple(ood_cfg["hidden"]), ood_cfg["dropout"],
                          name=HEAD_NAMES[modality])


def train_ood_head(fusion, modality: str, manifest, ood_cfg: dict, log_dir, log=print, *, head=None,
                   **data_kwargs) -> tuple[keras.Model, float]:
    """Train the head of one modality ("optical" or "sar") on its frozen branch; (head, final val
    AUROC). ``head``: an already built head (``new_ood_head``) to train instead of a new one; the
    tuner builds its trial's heads in ``HyperModel.build``. TensorBoard logs go to LOG_DIR/<head>."""
    name = HEAD_NAMES[modality]
    if head is None:  # a given head comes with its caller's seeding (the tuner's per execution)
        keras.utils.set_random_seed(int(ood_cfg["seed"]))
        head = new_ood_head(fusion, modality, ood_cfg)
    train, val = ood_datasets(manifest, modality, ood_cfg, log=log, **data_kwargs)
    epochs = int(ood_cfg["epochs"])

    def report(epoch, logs):
        text = ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()) if k in ("loss", "auc", "val_loss", "val_auc"))
        log(f"{name} epoch {epoch + 1}/{epochs}: {text}")

    encoder = frozen_copy(getattr(fusion, _ENCODER[modality]))
    x = keras.Input(encoder.input.shape[1:], name=f"{name}_input")
    trainer = keras.Model(x, head(encoder(x)), name=f"{name}_trainer")
    trainer.compile(optimizer=keras.optimizers.Adam(float(ood_cfg["learning_rate"])),
                    loss=keras.losses.BinaryCrossentropy(), metrics=[keras.metrics.AUC(name="auc")])
    history = trainer.fit(train, validation_data=val, epochs=epochs, verbose=0, shuffle=False,
                          callbacks=[keras.callbacks.TensorBoard(os.path.join(log_dir, name)),
                                     keras.callbacks.LambdaCallback(on_epoch_end=report)])
    return head, float(history.history.get("val_auc", [float("nan")])[-1])


POST_HOC_KEYS = ("detector", "calibration", "calibrate_on", "knn_k", "knn_reference")  # `ood` keys of the post-hoc detectors


def ood_settings(config: dict) -> dict:
    """What the heads of a run depend on: the `ood` section but the keys of the post-hoc
    detectors (a change retrains them; choosing another detector does not)."""
    return {k: v for k, v in config["ood"].items() if k not in POST_HOC_KEYS}


def train_ood_heads(run: Run, fusion=None, manifest=None, log=print) -> dict:
    """Both OOD heads of a finished run: loaded when they were trained with the run's current
    `ood` settings, trained (and saved in the run) otherwise. Returns {modality: (head, val AUROC)}
    (AUROC of the last epoch; NaN without validation)."""
    config = run.config
    settings = ood_settings(config)
    heads = run.ood_heads(settings)
    if heads is not None:
        log(f"{run.path}: OOD heads already trained with these settings; loading them")
        return heads
    if run.ood_state() and run.ood_state().get("config") != settings:
        log(f"{run.path}: OOD settings changed since the saved heads; retraining them")
    fusion = fusion or run.load_model()
    if not hasattr(fusion, "encoder_opt"):
        raise RunError(f"{run.path}: OOD heads need the gated late-fusion model; this run trained {type(fusion).__name__}")
    manifest = manifest or run.manifest()
    d = config["data"]
    data_kwargs = dict(image_size=d["image_size"], resize_method=d["resize_method"], augment=d["augment"],
                       deterministic=d["deterministic"])
    out = {}
    for modality in MODALITIES:
        log(f"training OOD head {HEAD_NAMES[modality]} ({modality}) on the frozen {_ENCODER[modality]}: "
            f"{manifest.subset_size('train')} in-distribution vs {manifest.subset_size('ood_train')} OOD patches, "
            f"{settings['epochs']} epochs")
        with tfdata.shard_errors(manifest, ["train", "ood_train", "val", "ood_val"]):
            head, auroc = train_ood_head(fusion, modality, manifest, settings, run.file("logs"), log, **data_kwargs)
        run.save_ood_head(modality, head, auroc, settings)
        log(f"{run.file(HEAD_NAMES[modality] + '.keras')}: val AUROC (val vs ood_val) {auroc:.4f}")
        out[modality] = (head, auroc)
    return out


def main(argv=None) -> int:
    p = cli.parser("tf_fusion.ood", "Train the two OOD detectors (one binary head per modality) of a finished "
                   "training run; heads already trained with the run's settings are kept.",
                   "python -m tf_fusion.ood --run runs/demo")
    p.add_argument("--run", required=True, help="a finished training run folder (python -m tf_fusion.train)")
    args = p.parse_args(argv)

    def job():
        from .gate_check import check_run

        with using(args.run, create=False):
            run = Run.finished_run(args.run)
            heads = train_ood_heads(run)
            print(f"val AUROC optical {heads[OPTICAL][1]:.4f}, sar {heads[SAR][1]:.4f}")
            check_run(run)

    return cli.run(job)


if __name__ == "__main__":
    raise SystemExit(main())
