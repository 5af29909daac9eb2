"""Training an experiment into a run folder, one committed epoch at a time.

Each epoch is its own `fit` call on data drawn from (data.seed, epoch) and with every random
generator of the step (Keras' global seed, the dropout layers' seed generators) reset from
(training.seed, epoch); at its end `Run.commit_epoch` makes the checkpoint, the history row and
the best-so-far value durable together. A killed run, rerun with the same command, loads the last
commit and continues with the next epoch — the same data, the same dropout masks, the same
weights as an uninterrupted run (with `data.deterministic: true`; otherwise tf.data's parallel
interleave is free to reorder records within an epoch).
"""
from __future__ import annotations

import os
import time

import keras
from keras import ops

from .data import shard_errors
from .passes import FUSED, PASSES
from .runs import Run, RunError, using
from .sources import prepare_data
from .task import Task, epoch_seed, make_strategy, set_precision


def reseed(model, seed: int) -> None:
    """Keras' global generators and every seed generator in ``model`` (dropout) start from ``seed``."""
    keras.utils.set_random_seed(seed)
    for i, layer in enumerate(_layers(model)):
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            generator.state.assign(ops.cast([seed + i, 0], generator.state.dtype))


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


class EpochLine(keras.callbacks.Callback):
    """The console line of an epoch: the loss parts and the fused validation F1 (the rest of the
    metrics are in TensorBoard and history.csv)."""

    def __init__(self, log, epochs: int):
        super().__init__()
        self.log, self.epochs, self.started = log, epochs, time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = ", ".join(f"{p.name} {logs[f'loss_{p.name}']:.4f}" for p in PASSES if f"loss_{p.name}" in logs)
        f1 = logs.get(f"val_{FUSED.metric('f1_samples')}")
        text = f"epoch {epoch + 1}/{self.epochs}: loss {logs.get('loss', float('nan')):.4f}" + (f" ({parts})" if parts else "")
        if "val_loss" in logs:
            text += f", val loss {logs['val_loss']:.4f}"
        if f1 is not None:
            text += f", val F1 (samples) {f1:.4f}"
        self.log(f"{text} [{time.time() - self.started:.1f} s]")


class Commit(keras.callbacks.Callback):
    """Commits each finished epoch to the run folder (`Run.commit_epoch`)."""

    def __init__(self, run: Run, monitor: str, mode: str):
        super().__init__()
        self.run, self.monitor, self.mode = run, monitor, mode

    def on_epoch_end(self, epoch, logs=None):
        self.run.commit_epoch(self.model, epoch, logs or {}, self.monitor, self.mode)


def train(config: dict, run_dir, log=print) -> dict:
    """Train ``config`` into ``run_dir`` (resuming it), holding its lock (`runs.using`); returns
    summary.json's content."""
    with using(run_dir, log):
        Run(run_dir).check(config)  # a different config is refused before the data are made
        return _train(config, run_dir, log)


def _train(config: dict, run_dir, log) -> dict:
    manifest = prepare_data(config, log)
    task = Task(config, manifest)  # checks what can only be checked against the data, before writing
    run = Run(run_dir)
    if run.start(config):
        summary = run.summary
        if os.path.realpath(summary["data_dir"]) != os.path.realpath(manifest.dir):
            raise RunError(f"{run.path} was trained on {summary['data_dir']}, not on this experiment's "
                           f"data {manifest.dir}; choose another --run-dir")
        log(f"{run.path}: already trained for {config['training']['epochs']} epochs; nothing to do")
        return summary

    t = config["training"]
    set_precision(t["mixed_precision"])
    strategy = make_strategy(t["distribute"])
    state = run.read_state()
    done = state.get("epochs_done", 0)
    with strategy.scope():
        if done:
            run.publish(state)  # a kill between a commit and its derived files
            model = run.load_model(run.checkpoint(), compile=True)
        else:
            keras.utils.set_random_seed(t["seed"])
            model = task.build_model()
            model.compile(optimizer=task.build_optimizer())
    resumed = f", resuming after epoch {done}" if done else ""
    log(f"training {config['name']}: {model.count_params():,} parameters, {task.num_classes} classes, "
        f"{task.steps_per_epoch} steps/epoch, {t['epochs']} epochs{resumed}; data {manifest.dir}, run {run.path}")
    callbacks = [keras.callbacks.TensorBoard(run.file("logs")), EpochLine(log, t["epochs"]),
                 Commit(run, t["monitor"], t["monitor_mode"])]
    val = task.val_dataset()
    start = time.time()
    for epoch in range(done, t["epochs"]):
        reseed(model, epoch_seed(t["seed"], epoch))
        with shard_errors(manifest, ["train", "val"]):
            model.fit(task.train_dataset(epoch), validation_data=val, initial_epoch=epoch, epochs=epoch + 1,
                      steps_per_epoch=task.steps_per_epoch, callbacks=callbacks, verbose=0, shuffle=False)
    summary = run.finish({"experiment": config["name"], "data_dir": manifest.dir, "classes": task.classes,
                          "train_seconds_last_session": round(time.time() - start, 1)})
    log(f"done: best {t['monitor']} = {summary['best']} (epoch {(summary['best_epoch'] or 0) + 1}); {run.file('best.keras')}")
    return summary

