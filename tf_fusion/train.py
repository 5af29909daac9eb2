"""`python -m tf_fusion.train --experiment NAME [--data DIR] [--run-dir DIR] [--set key=value ...]`.

Trains the fusion network of an experiment into a run folder holding the resolved config
(`config.yaml`), TensorBoard logs (`logs/`), the best checkpoint by the configured validation
metric (`best.keras`), the last model (`final.keras`), `history.csv` and `summary.json`.
Kill it and run the same command again: it continues from the last finished epoch.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time

from . import config as cfg
from .sources import prepare_data

RUNS_DIR = "runs"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tf_fusion.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="a name in experiments/ (demo, smoke, paper, ...) or a YAML path")
    p.add_argument("--data", help="tfrecords_builder output folder (sets data.dir)")
    p.add_argument("--run-dir", help=f"run folder (default {RUNS_DIR}/<experiment name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set training.epochs=2 (repeatable)")
    return p.parse_args(argv)


def resolve(args) -> tuple[dict, str]:
    config = cfg.load_experiment(args.experiment, list(args.set) + ([f"data.dir={args.data}"] if args.data else []))
    return config, args.run_dir or os.path.join(RUNS_DIR, config["name"])


# ------------------------------------------------------------------------------ run folder
def open_run_dir(run_dir: str, config: dict) -> bool:
    """Create the run folder or re-open it for the same experiment; True if training finished there."""
    path = os.path.join(run_dir, "config.yaml")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = cfg.yaml.safe_load(f)
        if _training_identity(previous) != _training_identity(config):
            raise cfg.ConfigError(f"{run_dir} holds a run of a different config; choose another --run-dir "
                                  f"(only training.epochs may change when continuing a run)")
        finished = os.path.exists(os.path.join(run_dir, "summary.json"))
        if finished and previous["training"]["epochs"] == config["training"]["epochs"]:
            cfg.dump(config, path)  # the OOD and evaluation settings that follow may have changed
            return True
        if finished:
            os.remove(os.path.join(run_dir, "summary.json"))
    os.makedirs(run_dir, exist_ok=True)
    cfg.dump(config, path)
    return False


def _training_identity(config: dict) -> dict:
    """What makes two runs the same training: data, model and training settings but the epoch count."""
    c = json.loads(json.dumps({k: config.get(k) for k in ("data", "model", "training")}))
    c["training"].pop("epochs", None)
    return c


def _best_so_far(history_csv: str, monitor: str, mode: str):
    """The best monitored value of epochs already logged (so a resumed run keeps the right best.keras)."""
    if not os.path.exists(history_csv):
        return None
    with open(history_csv, newline="") as f:
        values = [float(row[monitor]) for row in csv.DictReader(f) if row.get(monitor) not in (None, "", "nan")]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


# ------------------------------------------------------------------------------ building blocks
def make_strategy(name):
    import tensorflow as tf

    if name in (None, "none", "default"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise cfg.ConfigError(f"training.distribute must be null or 'mirrored', got {name!r}")


def set_precision(policy):
    import keras

    if policy not in (None, "float32", "mixed_float16", "mixed_bfloat16"):
        raise cfg.ConfigError(f"training.mixed_precision must be null, mixed_float16 or mixed_bfloat16, got {policy!r}")
    keras.mixed_precision.set_global_policy(policy or "float32")


def build_model(config: dict, num_classes: int):
    from .model import EarlyFusionModel, FusionModel

    m, t = config["model"], config["training"]
    kwargs = dict(backbone=m["backbone"], num_classes=num_classes, image_size=config["data"]["image_size"])
    if m["kind"] == "late_fusion":
        w = t["pass_weights"]
        return FusionModel(dropout=m["dropout"], pass_weights=(w["fuse"], w["opt"], w["sar"]), **kwargs)
    if m["kind"] == "early_fusion":
        return EarlyFusionModel(**kwargs)
    raise cfg.ConfigError(f"model.kind must be late_fusion or early_fusion, got {m['kind']!r}")


def make_optimizer(training: dict, total_steps: int):
    import keras

    lr = training["learning_rate"]
    if training["lr_schedule"] == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps))
    elif training["lr_schedule"] != "constant":
        raise cfg.ConfigError(f"training.lr_schedule must be constant or cosine, got {training['lr_schedule']!r}")
    name, wd = training["optimizer"], training["weight_decay"]
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=wd)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=wd or None)
    raise cfg.ConfigError(f"training.optimizer must be adam, adamw or sgd, got {name!r}")


def datasets(config: dict, data_dir: str, manifest: dict, global_batch: int):
    from . import data as tfdata

    d = config["data"]
    common = dict(batch_size=global_batch, image_size=d["image_size"], resize_method=d["resize_method"],
                  seed=d["seed"], deterministic=d["deterministic"], manifest=manifest)
    train = tfdata.make_dataset(data_dir, "train", training=True, augment=d["augment"],
                                shuffle_buffer=d["shuffle_buffer"], repeat=True, **common)
    val = tfdata.make_dataset(data_dir, "val", training=False, **common)
    return train, val


# ------------------------------------------------------------------------------ training
def train(config: dict, run_dir: str, log=print) -> dict:
    """Train the experiment's network into `run_dir` (resuming it); returns summary.json's content."""
    data_dir = prepare_data(config, log)
    if open_run_dir(run_dir, config):
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
        if os.path.realpath(summary["data_dir"]) != os.path.realpath(data_dir):
            raise cfg.ConfigError(f"{run_dir} was trained on {summary['data_dir']}, not on this experiment's "
                                  f"data {data_dir}; choose another --run-dir")
        log(f"{run_dir}: already trained for {config['training']['epochs']} epochs; nothing to do")
        return summary

    import keras

    from . import data as tfdata

    manifest = tfdata.load_manifest(data_dir, partition=config["data"]["partition"])
    classes = tfdata.in_distribution_classes(manifest)
    t = config["training"]
    keras.utils.set_random_seed(t["seed"])
    set_precision(t["mixed_precision"])
    strategy = make_strategy(t["distribute"])
    batch = config["data"]["batch_size"]
    steps = t["steps_per_epoch"] or math.ceil(manifest["subsets"]["train"]["count"] / batch)
    ds_train, ds_val = datasets(config, data_dir, manifest, batch)
    with strategy.scope():
        model = build_model(config, len(classes))
        model.compile(optimizer=make_optimizer(t, steps * t["epochs"]))

    history_csv = os.path.join(run_dir, "history.csv")
    best = keras.callbacks.ModelCheckpoint(os.path.join(run_dir, "best.keras"), monitor=t["monitor"],
                                           mode=t["monitor_mode"], save_best_only=True)
    previous_best = _best_so_far(history_csv, t["monitor"], t["monitor_mode"])
    if previous_best is not None:
        best.best = previous_best
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup")),
        best,
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")),
        keras.callbacks.CSVLogger(history_csv, append=True),
    ]
    log(f"training {config['name']}: {model.count_params():,} parameters, {len(classes)} classes, "
        f"{steps} steps/epoch, {t['epochs']} epochs, data {data_dir}, run {run_dir}")
    start = time.time()
    model.fit(ds_train, validation_data=ds_val, epochs=t["epochs"], steps_per_epoch=steps,
              callbacks=callbacks, verbose=2, shuffle=False)
    model.save(os.path.join(run_dir, "final.keras"))
    summary = {
        "experiment": config["name"],
        "data_dir": os.path.abspath(data_dir),
        "classes": classes,
        "epochs": t["epochs"],
        "monitor": t["monitor"],
        "best": _best_so_far(history_csv, t["monitor"], t["monitor_mode"]),
        "train_seconds_last_session": round(time.time() - start, 1),
        "best_model": "best.keras",
        "final_model": "final.keras",
    }
    with open(os.path.join(run_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    log(f"done: best {t['monitor']} = {summary['best']}; {run_dir}/best.keras")
    return summary


def train_and_evaluate(config: dict, run_dir: str, overrides=(), log=print) -> None:
    """The whole job (the demo): train, train the baseline experiment beside it, evaluate, then
    export the adaptive model to RUN/export/1 (`tf_fusion.export`)."""
    train(config, run_dir, log)
    ev = config["evaluation"]
    if not ev["after_training"]:
        return
    baseline_dir = None
    if ev["baseline_experiment"]:
        baseline = cfg.load_experiment(ev["baseline_experiment"], overrides)
        baseline_dir = os.path.join(os.path.dirname(os.path.normpath(run_dir)), baseline["name"])
        log(f"training the baseline {baseline['name']} into {baseline_dir}")
        train(baseline, baseline_dir, log)
    from .evaluate import evaluate

    evaluate(run_dir, baseline_dir, log=log)
    if config["model"]["kind"] == "late_fusion":  # the adaptive model, ready for TF Serving
        from .export import EXPORT_SUBDIR, export_run

        export_run(run_dir, os.path.join(run_dir, EXPORT_SUBDIR), overwrite=True, log=log)


def main(argv=None) -> int:
    args = parse_args(argv)

    def run():
        config, run_dir = resolve(args)
        train_and_evaluate(config, run_dir, list(args.set) + ([f"data.dir={args.data}"] if args.data else []))

    return cfg.run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
