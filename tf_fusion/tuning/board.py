"""TensorBoard's HParams view of a search (`tensorboard --logdir RUN/tuning`).

Each trial is one HParams session (KerasTuner's TensorBoard integration, regrouped below); the
experiment summary written once at the log root names the columns worth a look: every
hyperparameter of both stages and the objectives, instead of all ~50 scalars the trials log.
"""
from __future__ import annotations

import glob
import os

import keras

from ..passes import PASSES
from . import space

HYPERBAND_HPS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round")
# (group, tag, column title) of the metrics in the table; groups are relative to a session folder
METRICS = (
    ("validation", "epoch_robust_f1", "fusion: val robust F1 (mean over the passes)"),
    *(("validation", f"epoch_{p.metric('f1_samples')}", f"fusion: val F1 {p.label}") for p in PASSES),
    ("validation", "epoch_loss", "fusion: val loss (Eq. 2)"),
    ("validation", "epoch_auroc", "OOD: val AUROC (mean)"),
    ("validation", "epoch_auroc_optical", "OOD: val AUROC optical"),
    ("validation", "epoch_auroc_sar", "OOD: val AUROC SAR"),
)


def hparams_sessions(callbacks, hp, log_root: str) -> list:
    """`callbacks` with KerasTuner's HParams callback replaced by one whose session group is the
    trial's log path (e.g. `fusion/3`): KerasTuner groups by the bare trial id, and both stages
    number their trials from 0, so TensorBoard would merge fusion trial 0 with OOD trial 0."""
    from tensorboard.plugins.hparams import api as hparams_api

    out = [cb for cb in (callbacks or []) if not isinstance(cb, hparams_api.KerasCallback)]
    for cb in list(out):
        if isinstance(cb, keras.callbacks.TensorBoard):
            group = os.path.relpath(os.path.dirname(os.path.normpath(cb.log_dir)), log_root)
            out.insert(out.index(cb) + 1, hparams_api.KerasCallback(cb.log_dir, dict(hp.values), trial_id=group))
    return out


def write_experiment_summary(log_root: str, config: dict) -> None:
    """The HParams experiment (columns of the table and parallel-coordinates view), written once."""
    if glob.glob(os.path.join(log_root, "events.out.tfevents.*")):
        return
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams_api

    names = [p.hp_name for stage in space.STAGES for key, p in space.PARAMS[stage].items()
             if space.searched(config, stage, key)]
    if config["tuning"]["tuner"] == "hyperband":
        names += HYPERBAND_HPS
    columns = list(METRICS)
    objective = "epoch_" + config["tuning"]["objective"][len("val_"):]
    if objective not in [tag for _, tag, _ in columns]:
        columns.insert(0, ("validation", objective, f"fusion: objective {config['tuning']['objective']}"))
    metrics = [hparams_api.Metric(tag, group=group, display_name=title) for group, tag, title in columns]
    os.makedirs(log_root, exist_ok=True)
    writer = tf.summary.create_file_writer(log_root)
    with writer.as_default():
        hparams_api.hparams_config(hparams=[hparams_api.HParam(n) for n in names], metrics=metrics)
    writer.close()
