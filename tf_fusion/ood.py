"""OOD detectors (paper §2.2): one small binary head per modality on its frozen branch embedding.

`python -m tf_fusion.ood --run RUN_DIR` trains them for a finished training run: the head of each
modality reads that modality's encoder output (the encoders are frozen, batch norm in inference
mode) and predicts P(in-distribution). Positives are the `train` subset, negatives the
`ood_train` subset (patches of the OOD-training classes only). The OOD samples' optical input is
rescaled by a random factor U(lo, hi) in reflectance units (`ood.augment_range`), which makes the
optical head sensitive to brightness shifts such as clouds, and their SAR backscatter is shifted
by U(lo, hi) dB (`ood.sar_augment_db`), so that the SAR head also sees darker-than-usual scenes; with `ood.balance` each class gets
the same total sample weight. Each epoch reports the AUROC of `val` (in) against `ood_val` (out);
TensorBoard logs go to RUN_DIR/logs/ood_opt and RUN_DIR/logs/ood_sar. The heads are saved as
RUN_DIR/ood_opt.keras and RUN_DIR/ood_sar.keras (with RUN_DIR/ood.json); a head already there,
trained with the same `ood` settings, is loaded instead of retrained.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from . import config as cfg
from . import data as tfdata
from . import model as _model  # noqa: F401  registers FusionModel & co. for load_model

HEAD_FILES = {"optical": "ood_opt.keras", "sar": "ood_sar.keras"}
HEAD_NAMES = {"optical": "ood_opt", "sar": "ood_sar"}
STATE_FILE = "ood.json"
_INPUT_KEY = {"optical": "s2", "sar": "s1"}
_ENCODER = {"optical": "encoder_opt", "sar": "encoder_sar"}
_RESULT_KEY = {"optical": ("head_opt", "val_auroc_optical"), "sar": ("head_sar", "val_auroc_sar")}


def build_ood_head(input_dim: int, hidden=(512, 64), dropout: float = 0.5, name: str = "ood_opt") -> keras.Model:
    """Embedding [B, input_dim] → (Dense(relu) → Dropout) per hidden size → Dense(1, sigmoid):
    float32 [B, 1], the probability that the sample is in-distribution."""
    inputs = keras.Input((int(input_dim),), name=f"{name}_embedding")
    x = inputs
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
    key = "augment_range" if modality == "optical" else "sar_augment_db"
    bounds = ood_cfg.get(key)
    if not bounds:
        return None
    if len(bounds) != 2 or not bounds[0] <= bounds[1] or (modality == "optical" and not bounds[0] > 0):
        need = "0 < lo <= hi" if modality == "optical" else "lo <= hi"
        raise cfg.ConfigError(f"ood.{key} must be [lo, hi] with {need}, got {list(bounds)}")
    lo, hi = (float(v) for v in bounds)
    if modality == "optical":
        mean, std = tfdata._band_stats(manifest, tfdata.S2_BANDS)
        return lambda x, u: rescale_intensity(x, lo + (hi - lo) * u, mean, std)
    _, std = tfdata._band_stats(manifest, tfdata.S1_BANDS)
    return lambda x, u: shift_backscatter(x, lo + (hi - lo) * u, std)


def _labelled(data_dir, manifest, subset, key, label, weight, batch_size, *, training, seed,
              intensity=None, **data_kwargs):
    """Batches of (x = inputs[key], label [B, 1], weight [B]) of one subset; each sample changed
    by ``intensity(x, U(0, 1))`` when given (the OOD samples' intensity augmentation)."""
    ds = tfdata.make_dataset(data_dir, subset, batch_size=batch_size, training=training, seed=seed,
                             manifest=manifest, **data_kwargs)
    seeds = tf.data.Dataset.random(seed=seed + 7, rerandomize_each_iteration=True).batch(2)

    def to_example(batch, batch_seed):
        x = batch[0][key]
        n = tf.shape(x)[0]
        if intensity is not None:
            x = intensity(x, tf.random.stateless_uniform([n], seed=batch_seed))
        return x, tf.fill([n, 1], float(label)), tf.fill([n], float(weight))

    return tf.data.Dataset.zip(ds, seeds).map(to_example, num_parallel_calls=tf.data.AUTOTUNE,
                                              deterministic=data_kwargs.get("deterministic", False))


def ood_datasets(data_dir, manifest, modality: str, ood_cfg: dict, *, image_size=120,
                 resize_method="bilinear", augment=True, deterministic=False, log=print):
    """(train, val or None) datasets of ``(x, label[, weight])`` for one modality's head.

    train: `train` (label 1) and `ood_train` (label 0) mixed per sample in proportion to their
    sizes (one epoch = one pass over both), weights from ``balance_weights``, the OOD optical
    inputs intensity-augmented (``intensity_augmentation``); val: `val` (1) then `ood_val` (0), unweighted, no augmentation.
    """
    key, seed, batch = _INPUT_KEY[modality], int(ood_cfg["seed"]), int(ood_cfg["batch_size"])
    n_in, n_out = tfdata.subset_size(manifest, "train"), tfdata.subset_size(manifest, "ood_train")
    if not n_in or not n_out:
        raise tfdata.ManifestError(f"{data_dir}: OOD heads need non-empty train and ood_train subsets "
                                   f"(have {n_in} and {n_out} records)")
    w_in, w_out = balance_weights(n_in, n_out, ood_cfg["balance"])
    common = dict(image_size=image_size, resize_method=resize_method, deterministic=deterministic)
    shift = intensity_augmentation(modality, ood_cfg, manifest)
    pos = _labelled(data_dir, manifest, "train", key, 1.0, w_in, batch, training=True, seed=seed,
                    augment=augment, **common)
    neg = _labelled(data_dir, manifest, "ood_train", key, 0.0, w_out, batch, training=True, seed=seed + 100,
                    augment=augment, intensity=shift, **common)
    train = tf.data.Dataset.sample_from_datasets(
        [pos.unbatch(), neg.unbatch()], weights=[n_in / (n_in + n_out), n_out / (n_in + n_out)],
        seed=seed, stop_on_empty_dataset=False)
    # the exact length (one pass over both subsets), so Keras knows where an epoch ends
    steps = -(-(n_in + n_out) // batch)
    train = train.batch(batch).apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)

    v_in, v_out = tfdata.subset_size(manifest, "val"), tfdata.subset_size(manifest, "ood_val")
    if not v_in or not v_out:
        message = (f"OOD head {modality}: no validation (val has {v_in}, ood_val {v_out} records); "
                   f"the validation AUROC is not available")
        warnings.warn(message, stacklevel=2)
        log(f"warning: {message}")
        return train, None
    val = [_labelled(data_dir, manifest, subset, key, label, 1.0, batch, training=False, seed=seed, **common)
           for subset, label in (("val", 1.0), ("ood_val", 0.0))]
    steps = -(-v_in // batch) + -(-v_out // batch)
    val = (val[0].concatenate(val[1]).map(lambda x, y, w: (x, y))
           .apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE))
    return train, val


# ------------------------------------------------------------------------------ training
class FrozenEncoderHead(keras.Model):
    """``x`` → head(encoder(x)) with the encoder frozen: called with ``training=False`` (batch
    norm uses its moving statistics) and no gradient flowing into it. Used only to fit a head."""

    def __init__(self, encoder, head, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head

    def call(self, x, training=None):
        z = ops.stop_gradient(self.encoder(x, training=False))
        return self.head(z, training=training)


def _frozen(encoder):
    """Context: ``encoder`` (and every layer in it) non-trainable, restored afterwards."""
    class _Ctx:
        def __enter__(self):
            self.saved = [(l, l.trainable) for l in encoder._flatten_layers(include_self=True, recursive=True)]
            encoder.trainable = False

        def __exit__(self, *exc):
            for layer, trainable in self.saved:  # outer first: setting a model's flag sets its layers
                layer.trainable = trainable
    return _Ctx()


def _read_state(run_dir) -> dict:
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_state(run_dir, state: dict) -> None:
    path = os.path.join(run_dir, STATE_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1)
    os.replace(path + ".tmp", path)


def _nan_if_none(value) -> float:
    return float("nan") if value is None else float(value)


def new_ood_head(fusion, modality: str, ood_cfg: dict) -> keras.Model:
    """The untrained head of one modality for these ``ood`` settings (one place that knows what a
    head reads, so ``train_ood_head`` and the tuner build the same head)."""
    encoder = getattr(fusion, _ENCODER[modality])
    return build_ood_head(encoder.output.shape[-1], tuple(ood_cfg["hidden"]), ood_cfg["dropout"],
                          name=HEAD_NAMES[modality])


def train_ood_head(fusion, modality: str, data_dir, manifest, ood_cfg: dict, run_dir, log=print, *,
                   head=None, **data_kwargs) -> tuple[keras.Model, float]:
    """Train the head of one modality ("optical" or "sar") on its frozen encoder; (head, final val AUROC).

    head: an already built head (``new_ood_head``) to train instead of a new one; the tuner
    builds its trial's heads in ``HyperModel.build``."""
    encoder = getattr(fusion, _ENCODER[modality])
    name = HEAD_NAMES[modality]
    if head is None:  # a given head comes with its caller's seeding (the tuner's per execution)
        keras.utils.set_random_seed(int(ood_cfg["seed"]))
        head = new_ood_head(fusion, modality, ood_cfg)
    train, val = ood_datasets(data_dir, manifest, modality, ood_cfg, log=log, **data_kwargs)
    epochs = int(ood_cfg["epochs"])

    def report(epoch, logs):
        text = ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()) if k in ("loss", "auc", "val_loss", "val_auc"))
        log(f"{name} epoch {epoch + 1}/{epochs}: {text}")

    with _frozen(encoder):
        trainer = FrozenEncoderHead(encoder, head, name=f"{name}_trainer")
        trainer.compile(optimizer=keras.optimizers.Adam(float(ood_cfg["learning_rate"])),
                        loss=keras.losses.BinaryCrossentropy(), metrics=[keras.metrics.AUC(name="auc")])
        history = trainer.fit(train, validation_data=val, epochs=epochs, verbose=0, shuffle=False,
                              callbacks=[keras.callbacks.TensorBoard(os.path.join(run_dir, "logs", name)),
                                         keras.callbacks.LambdaCallback(on_epoch_end=report)])
    auroc = history.history.get("val_auc", [float("nan")])[-1]
    path = os.path.join(run_dir, HEAD_FILES[modality])
    tmp = path[: -len(".keras")] + ".tmp.keras"
    head.save(tmp)
    os.replace(tmp, path)
    return head, float(auroc)


def train_ood_heads(fusion, data_dir, manifest, ood_cfg: dict, run_dir, log=print, *, image_size=None,
                    resize_method="bilinear", augment=True, deterministic=False) -> dict:
    """Train (or load, if already trained with the same ``ood_cfg``) both OOD heads of a run.

    fusion: the trained ``FusionModel`` (its encoders are used frozen, and left as they were);
    manifest: the loaded manifest of ``data_dir``; ood_cfg: the config's ``ood`` section.
    image_size defaults to the model's; resize_method / augment (the dihedral flips) /
    deterministic as for the training data. Returns ``{"head_opt", "head_sar",
    "val_auroc_optical", "val_auroc_sar"}`` (AUROC of the last epoch; NaN without validation).
    """
    os.makedirs(run_dir, exist_ok=True)
    ood_cfg = {**cfg.DEFAULTS["ood"], **ood_cfg}
    settings = json.loads(json.dumps(ood_cfg))
    state = _read_state(run_dir)
    if state.get("config") != settings:
        if state:
            log(f"{run_dir}: OOD settings changed since the saved heads; retraining them")
        state = {"config": settings}
    data_kwargs = dict(image_size=image_size or getattr(fusion, "image_size", None) or fusion.encoder_opt.input.shape[1],
                       resize_method=resize_method, augment=augment, deterministic=deterministic)
    out = {}
    for modality in ("optical", "sar"):
        head_key, auroc_key = _RESULT_KEY[modality]
        path = os.path.join(run_dir, HEAD_FILES[modality])
        if os.path.exists(path) and auroc_key in state:
            log(f"{path}: already trained; loading it (delete it to retrain)")
            out[head_key] = keras.saving.load_model(path, compile=False)
            out[auroc_key] = _nan_if_none(state[auroc_key])
            continue
        log(f"training OOD head {HEAD_NAMES[modality]} ({modality}) on the frozen {_ENCODER[modality]}: "
            f"{tfdata.subset_size(manifest, 'train')} in-distribution vs {tfdata.subset_size(manifest, 'ood_train')} OOD patches, "
            f"{ood_cfg['epochs']} epochs")
        head, auroc = train_ood_head(fusion, modality, data_dir, manifest, ood_cfg, run_dir, log, **data_kwargs)
        out[head_key], out[auroc_key] = head, auroc
        state[auroc_key] = None if math.isnan(auroc) else auroc
        _write_state(run_dir, state)
        log(f"{path}: val AUROC (val vs ood_val) {auroc:.4f}")
    return out


def load_ood_heads(run_dir) -> dict | None:
    """The heads saved by ``train_ood_heads``: ``{"head_opt", "head_sar", "val_auroc_optical",
    "val_auroc_sar"}`` (AUROCs NaN when unknown); None if either head file is missing (train
    them with ``train_ood_heads`` or ``python -m tf_fusion.ood --run RUN_DIR``)."""
    paths = [os.path.join(run_dir, HEAD_FILES[m]) for m in ("optical", "sar")]
    if not all(os.path.exists(p) for p in paths):
        return None
    out = {}
    state = _read_state(run_dir)
    for modality, path in zip(("optical", "sar"), paths):
        head_key, auroc_key = _RESULT_KEY[modality]
        out[head_key] = keras.saving.load_model(path, compile=False)
        out[auroc_key] = _nan_if_none(state.get(auroc_key))
    return out


# ------------------------------------------------------------------------------ run folders
def load_run(run_dir) -> tuple[dict, dict, keras.Model]:
    """(resolved config, summary.json, best.keras model) of a finished training run."""
    paths = {name: os.path.join(run_dir, name) for name in ("config.yaml", "summary.json", "best.keras")}
    for name, path in paths.items():
        if not os.path.exists(path):
            raise cfg.ConfigError(f"{run_dir}: no {name} (is it a finished `python -m tf_fusion.train` run?)")
    with open(paths["config.yaml"], encoding="utf-8") as f:
        config = cfg.yaml.safe_load(f) or {}
    with open(paths["summary.json"], encoding="utf-8") as f:
        summary = json.load(f)
    fusion = keras.saving.load_model(paths["best.keras"], compile=False)
    return config, summary, fusion


def train_for_run(run_dir, log=print) -> dict:
    """``train_ood_heads`` for a training run folder (its config, data and best model)."""
    config, summary, fusion = load_run(run_dir)
    if not hasattr(fusion, "encoder_opt"):
        raise cfg.ConfigError(f"{run_dir}: OOD heads need the gated late-fusion model; this run trained "
                              f"{type(fusion).__name__}")
    data_cfg = {**cfg.DEFAULTS["data"], **(config.get("data") or {})}
    ood_cfg = {**cfg.DEFAULTS["ood"], **(config.get("ood") or {})}
    data_dir = summary.get("data_dir") or data_cfg["dir"]
    manifest = tfdata.load_manifest(data_dir, partition=data_cfg["partition"])
    return train_ood_heads(fusion, data_dir, manifest, ood_cfg, run_dir, log, image_size=fusion.image_size,
                           resize_method=data_cfg["resize_method"], augment=data_cfg["augment"],
                           deterministic=data_cfg["deterministic"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tf_fusion.ood", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished training run folder (python -m tf_fusion.train)")
    args = p.parse_args(argv)
    def run():
        result = train_for_run(args.run)
        print(f"val AUROC optical {result['val_auroc_optical']:.4f}, sar {result['val_auroc_sar']:.4f}")

    return cfg.run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
