"""The two KerasTuner HyperModels. Each builds its trial's model inside `build()` (so KerasTuner
can rebuild and reload the best one) and defines every hyperparameter there.

Stage 1, `FusionHyperModel`: the experiment's fusion network with the trial's pass weights and
learning rate, trained on `train` with the project's Eq. 2 `train_step` and scored on `val`.
Stage 2, `OODHyperModel`: both OOD heads with the trial's sizes, dropout and augmentation range,
trained by the project's own `ood.train_ood_head` on the frozen encoders of the best stage-1
model and scored by their validation AUROC (`val` against `ood_val`).
"""
from __future__ import annotations

import math
import warnings

import keras
import keras_tuner as kt
import numpy as np

from .. import ood
from ..passes import ROBUST_F1, validation_f1_names
from ..task import Task, monitor_names, set_precision
from . import space
from .board import hparams_sessions

ROBUST_PARTS = tuple(validation_f1_names())
OOD_OBJECTIVE = "val_auroc"


def fusion_metric_names(config: dict) -> list[str]:
    """Every validation metric the fusion network logs, plus `val_robust_f1`: the legal stage-1 objectives."""
    return [ROBUST_F1, *monitor_names(config)]


def direction(metric: str) -> str:
    return "min" if "loss" in metric else "max"


class RobustF1(keras.callbacks.Callback):
    """Adds `val_robust_f1` = mean(val samples-F1 of the fused, optical-only and SAR-only passes)
    to the epoch logs. Placed first, so TensorBoard, KerasTuner and History all see it."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and all(k in logs for k in ROBUST_PARTS):
            logs[ROBUST_F1] = float(np.mean([logs[k] for k in ROBUST_PARTS]))


class _TrialContext:
    """Set by the tuner before each trial: its id and folder (progress lines, head files), and
    the objective value of each execution (the tuner reports their mean)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trial_id, self.trial_dir, self.results = "?", None, []

    def start_trial(self, trial_id: str, trial_dir: str) -> None:
        self.trial_id, self.trial_dir, self.results = trial_id, trial_dir, []


class FusionHyperModel(_TrialContext, kt.HyperModel):
    """Stage 1: one trial trains the fusion network of `config` with the trial's values."""

    def __init__(self, config: dict, manifest, epochs: int, objective: str, log_root: str, log=print):
        super().__init__(name="fusion")
        self.config, self.manifest, self.log_root = config, manifest, log_root
        self.epochs, self.objective, self.log = epochs, objective, log

    def trial_config(self, hp) -> dict:
        return space.apply(self.config, "fusion", space.declare(hp, "fusion", self.config))

    def build(self, hp):
        config = self.trial_config(hp)
        t = config["training"]
        set_precision(t["mixed_precision"])  # KerasTuner clears the Keras session (and its policy) per build
        # the same initial weights in every trial (only the hyperparameters differ); other ones for
        # each further execution of a trial (tuning.executions_per_trial)
        keras.utils.set_random_seed(t["seed"] + len(self.results))
        task = Task(config, self.manifest)
        model = task.build_model()
        model.compile(optimizer=task.build_optimizer(self.epochs))
        return model

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        epochs = kwargs.get("epochs", self.epochs)

        def report(epoch, logs):
            self.log(f"  fusion trial {self.trial_id} epoch {epoch + 1}/{epochs}: loss {logs.get('loss', math.nan):.4f}, "
                     f"{self.objective} {logs.get(self.objective, math.nan):.4f}")

        callbacks = [RobustF1(), *hparams_sessions(callbacks, hp, self.log_root),
                     keras.callbacks.LambdaCallback(on_epoch_end=report)]
        with warnings.catch_warnings():  # Keras' notice at the end of `val`, whose length it cannot know
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            history = model.fit(*args, callbacks=callbacks, **kwargs)
        values = [v for v in history.history.get(self.objective, []) if not math.isnan(v)]
        best = (min if direction(self.objective) == "min" else max)(values) if values else math.nan
        self.results.append(float(best))
        return history


class OODHyperModel(_TrialContext, kt.HyperModel):
    """Stage 2: one trial trains both OOD heads with the trial's values on the frozen encoders of
    `fusion`. The model built is the pair of heads ({"optical", "sar"} → P(in-distribution))."""

    def __init__(self, config: dict, fusion, manifest, log_root: str, log=print):
        super().__init__(name="ood")
        self.config, self.fusion, self.manifest, self.log = config, fusion, manifest, log
        self.log_root = log_root
        d = config["data"]
        self.data_kwargs = dict(image_size=d["image_size"], resize_method=d["resize_method"], augment=d["augment"],
                                deterministic=d["deterministic"])

    def trial_ood_config(self, hp) -> dict:
        return space.apply(self.config, "ood", space.declare(hp, "ood", self.config))["ood"]

    def build(self, hp):
        ood_cfg = self.trial_ood_config(hp)
        set_precision(self.config["training"]["mixed_precision"])
        keras.utils.set_random_seed(int(ood_cfg["seed"]) + len(self.results))
        heads = {m: ood.new_ood_head(self.fusion, m, ood_cfg) for m in ood.MODALITIES}
        inputs = {m: keras.Input(h.inputs[0].shape[1:], name=m) for m, h in heads.items()}
        model = keras.Model(inputs, {m: heads[m](inputs[m]) for m in ood.MODALITIES}, name="ood_heads")
        # compiled like the heads' trainers, so Keras callbacks that read `model.optimizer` work
        model.compile(optimizer=keras.optimizers.Adam(float(ood_cfg["learning_rate"])),
                      loss=keras.losses.BinaryCrossentropy())
        return model

    def fit(self, hp, model, *args, callbacks=None, epochs=None, initial_epoch=0, **kwargs):
        """Train the heads with `ood.train_ood_head`; KerasTuner's callbacks (TensorBoard with the
        HParams session, best-checkpoint, ...) see the whole trial as one epoch whose logs are the
        validation AUROCs. `epochs`/`initial_epoch` come from Hyperband (which reloaded the heads
        of `initial_epoch` epochs), else `ood.epochs`."""
        ood_cfg = self.trial_ood_config(hp)
        if epochs is not None:
            ood_cfg = {**ood_cfg, "epochs": max(1, int(epochs) - int(initial_epoch))}
        trial_callbacks = keras.callbacks.CallbackList(hparams_sessions(callbacks, hp, self.log_root), model=model)
        trial_callbacks.on_train_begin()
        logs = {}
        for m in ood.MODALITIES:
            _, auroc = ood.train_ood_head(self.fusion, m, self.manifest, ood_cfg, self.trial_dir, self.log,
                                          head=model.get_layer(ood.HEAD_NAMES[m]), **self.data_kwargs)
            logs[f"{OOD_OBJECTIVE}_{m}"] = float(auroc)
        logs[OOD_OBJECTIVE] = float(np.mean([logs[f"{OOD_OBJECTIVE}_{m}"] for m in ood.MODALITIES]))
        trial_callbacks.on_epoch_begin(0)
        trial_callbacks.on_epoch_end(0, logs)
        trial_callbacks.on_train_end(logs)
        self.results.append(logs[OOD_OBJECTIVE])
        return logs
