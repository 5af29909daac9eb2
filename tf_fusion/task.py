"""What an experiment trains, built from its resolved config: the Task of TF Model Garden without
its weight. Train, tune and (later) study build models, optimizers and datasets here only.

    task = Task(config, manifest)
    with task.strategy.scope():
        model = task.build_model()
        model.compile(optimizer=task.build_optimizer())
    model.fit(task.train_dataset(epoch), validation_data=task.val_dataset(), ...)
"""
from __future__ import annotations

import math

import numpy as np

from . import config as cfg
from . import methods
from .passes import weights_tuple


def make_strategy(name):
    """The tf.distribute strategy of `training.distribute` (None: the default one)."""
    import tensorflow as tf

    if name is None:
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise cfg.ConfigError(f"training.distribute must be null or 'mirrored', got {name!r}")


def set_precision(policy) -> None:
    """The global Keras dtype policy of `training.mixed_precision` (None: float32)."""
    import keras

    keras.mixed_precision.set_global_policy(policy or "float32")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random in one epoch: a function of (seed, epoch) alone, so a
    resumed run draws exactly what an uninterrupted one draws."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0] >> 1)


def monitor_names(config: dict) -> list[str]:
    """The validation metrics `training.monitor` may name for this model kind."""
    from .passes import PASSES
    from .scores import F_METRICS

    if config["model"]["kind"] != methods.GATED:
        return ["val_loss", *(f"val_{m}" for m in F_METRICS)]
    names = ["val_loss", *(f"val_loss_{p.name}" for p in PASSES)]
    return names + [f"val_{p.metric(m)}" for p in PASSES for m in F_METRICS]


class Task:
    """The experiment's model, optimizer and datasets for one build (its `Manifest`)."""

    def __init__(self, config: dict, manifest):
        self.config = config
        self.manifest = manifest
        self.classes = manifest.in_distribution_classes()
        d, t = config["data"], config["training"]
        self.steps_per_epoch = t["steps_per_epoch"] or math.ceil(manifest.subset_size("train") / d["batch_size"])
        if t["monitor"] not in monitor_names(config):
            raise cfg.ConfigError(f"training.monitor must be one of {', '.join(monitor_names(config))}; "
                                  f"got {t['monitor']!r}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def build_model(self):
        """The gated network, or the model of the baseline whose `model.kind` this is (its registry
        entry's factory, `tf_fusion.methods`)."""
        from .model import FusionModel

        m = self.config["model"]
        kwargs = dict(backbone=m["backbone"], num_classes=self.num_classes, image_size=self.config["data"]["image_size"],
                      dropout=m["dropout"])
        if m["kind"] == methods.GATED:
            return FusionModel(pass_weights=weights_tuple(self.config["training"]["pass_weights"]),
                               fusion_stage=m["fusion_stage"],
                               sensor_dropout=m["isd"]["dropout"] if m["isd"]["fused_pass"] else 0.0,
                               sensor_dropout_seed=self.config["training"]["seed"], **kwargs)
        return methods.for_kind(m["kind"]).build(self.config, **kwargs)

    def build_optimizer(self, epochs: int | None = None):
        import keras

        t = self.config["training"]
        lr = t["learning_rate"]
        if t["lr_schedule"] == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, self.steps_per_epoch * (epochs or t["epochs"])))
        if t["optimizer"] == "adam":
            return keras.optimizers.Adam(lr)
        if t["optimizer"] == "adamw":
            return keras.optimizers.AdamW(lr, weight_decay=t["weight_decay"])
        return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=t["weight_decay"] or None)

    def _data_kwargs(self) -> dict:
        d = self.config["data"]
        return dict(batch_size=d["batch_size"], image_size=d["image_size"], resize_method=d["resize_method"],
                    deterministic=d["deterministic"], verify="sha256" if d["verify"] else "size")

    def train_dataset(self, epoch: int | None = None):
        """The batches of one epoch (`steps_per_epoch` of them), drawn from (data.seed, epoch) alone;
        with ``epoch=None`` one endless stream from data.seed (KerasTuner fits a trial's epochs in
        one call)."""
        from . import data

        d = self.config["data"]
        seed = d["seed"] if epoch is None else epoch_seed(d["seed"], epoch)
        ds = data.make_dataset(self.manifest, "train", training=True, augment=d["augment"],
                               shuffle_buffer=d["shuffle_buffer"], repeat=True, seed=seed, **self._data_kwargs())
        return ds if epoch is None else ds.take(self.steps_per_epoch)

    def val_dataset(self):
        from . import data

        return data.make_dataset(self.manifest, "val", training=False, **self._data_kwargs())

