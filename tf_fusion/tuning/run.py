"""One search from start to end: check the `tuning:` section, prepare the data, run stage 1 (the
fusion network) and stage 2 (the OOD heads on the best stage-1 encoders), write the results.
The same function serves a single process, the chief and the workers (`search.role()`)."""
from __future__ import annotations

import difflib
import os
import warnings

from .. import atomic
from .. import config as cfg
from ..sources import prepare_data
from ..task import Task, make_strategy, set_precision
from . import space

TUNERS = ("random", "bayesian", "hyperband")


def _check_int(tuning: dict, key: str, low: int, nullable: bool = False) -> None:
    value = tuning[key]
    if value is None and nullable:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise cfg.ConfigError(f"tuning.{key} must be {'null or ' if nullable else ''}an integer >= {low}, "
                              f"got {value!r}")


def check_tuning(config: dict) -> None:
    """Refuse a bad `tuning:` section before anything runs; each message echoes what it got."""
    from .hypermodels import fusion_metric_names

    tc = config["tuning"]
    if tc["tuner"] not in TUNERS:
        raise cfg.ConfigError(f"tuning.tuner must be one of {', '.join(TUNERS)}, got {tc['tuner']!r}")
    for key, low in (("max_trials", 1), ("executions_per_trial", 1), ("hyperband_factor", 2), ("seed", 0)):
        _check_int(tc, key, low)
    for key, low in (("ood_max_trials", 0), ("epochs", 1), ("steps_per_epoch", 1)):
        _check_int(tc, key, low, nullable=True)
    known = fusion_metric_names(config)
    if tc["objective"] not in known:
        close = difflib.get_close_matches(str(tc["objective"]), known, n=1)
        raise cfg.ConfigError(f"tuning.objective must be one of {', '.join(known)}, got {tc['objective']!r}"
                              + (f" (did you mean {close[0]!r}?)" if close else ""))
    space.check(config)


def tune(config: dict, run_dir: str, experiment: str, log=print) -> dict | None:
    """Run (or resume) both stages into RUN/tuning; returns best.json's content (None on a worker)."""
    check_tuning(config)
    from . import search

    who = search.role()
    tuning_dir = os.path.join(run_dir, "tuning")
    search.open_search_dir(tuning_dir, config, writer=who != "worker")
    manifest = prepare_data(config, log)

    from . import board

    for subset in ("val", "ood_val"):
        if not manifest.subset_size(subset):
            raise cfg.ConfigError(f"{manifest.dir}: tuning scores trials on {subset}, which is empty")
    set_precision(config["training"]["mixed_precision"])
    # KerasTuner reloads weights only (Hyperband's continued trials, the best model): not a problem
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
    log_root = os.path.join(tuning_dir, "logs")
    if who != "worker":
        board.write_experiment_summary(log_root, config)
    tc = config["tuning"]
    ood_trials = tc["max_trials"] if tc["ood_max_trials"] is None else tc["ood_max_trials"]
    where = f", {who} {os.environ['KERASTUNER_TUNER_ID']}" if who else ""
    counts = ("Hyperband's brackets" if tc["tuner"] == "hyperband"
              else f"{tc['max_trials']} fusion trials, {ood_trials} OOD-head trials")
    log(f"tuning {config['name']} ({tc['tuner']}{where}): {counts}; data {manifest.dir}; search {tuning_dir}")

    fusion_tuner, fusion_best = _fusion_stage(config, manifest, tuning_dir, who, log)
    ood_best = _ood_stage(config, fusion_tuner, fusion_best, manifest, tuning_dir, ood_trials, who, log)
    if who == "worker":
        log("worker done")
        return None
    return _write_results(config, experiment, tuning_dir, fusion_best, ood_best, log)


def _strategy(config: dict):
    name = config["training"]["distribute"]
    return make_strategy(name) if name else None


def _fusion_stage(config, manifest, tuning_dir, who, log):
    """Stage 1; (its tuner, its best trial as in best_trial.json)."""
    from . import hypermodels, search

    t, tc = config["training"], config["tuning"]
    epochs = tc["epochs"] or t["epochs"]
    task = Task({**config, "training": {**t, "steps_per_epoch": tc["steps_per_epoch"] or t["steps_per_epoch"]}},
                manifest)
    steps = task.steps_per_epoch
    log(f"fusion: {'up to ' if tc['tuner'] == 'hyperband' else ''}{epochs} epochs x {steps} steps per trial, "
        f"objective {tc['objective']}")
    log_root = os.path.join(tuning_dir, "logs")
    model = hypermodels.FusionHyperModel(task.config, manifest, epochs, tc["objective"], log_root, log)
    tuner = search.make_tuner("fusion", model, tc["objective"], hypermodels.direction(tc["objective"]), tc,
                              tuning_dir, "fusion", tc["max_trials"], epochs, _strategy(config))
    best = search.run_stage(tuner, tuner.project_dir, tc["max_trials"], who, log, task.train_dataset(),
                            validation_data=task.val_dataset(),
                            epochs=epochs, steps_per_epoch=steps, verbose=0, shuffle=False,
                            callbacks=[search.tensorboard_callback(os.path.join(log_root, "fusion"))])
    return tuner, best


def _ood_stage(config, fusion_tuner, fusion_best, manifest, tuning_dir, trials, who, log):
    """Stage 2 on the frozen encoders of the best fusion trial (its own project per such trial,
    so a better stage-1 trial found on resuming gets a fresh stage 2); its best trial, or None."""
    if not trials:
        return None
    from . import hypermodels, search

    fusion = search.load_trial_model(fusion_tuner, fusion_best["trial_id"])
    project = f"fusion_trial_{fusion_best['trial_id']}"
    with search.oracle_port(1):
        model = hypermodels.OODHyperModel(config, fusion, manifest, os.path.join(tuning_dir, "logs"), log)
        tuner = search.make_tuner("ood", model, hypermodels.OOD_OBJECTIVE, "max", config["tuning"],
                                  os.path.join(tuning_dir, "ood"), project, trials, config["ood"]["epochs"],
                                  _strategy(config))
        return search.run_stage(tuner, tuner.project_dir, trials, who, log, verbose=0,
                                callbacks=[search.tensorboard_callback(os.path.join(tuning_dir, "logs", "ood",
                                                                                    project))])


def _write_results(config, experiment, tuning_dir, fusion_best, ood_best, log) -> dict:
    from . import best

    best_yaml = os.path.join(tuning_dir, "best.yaml")
    resolved = best.write_best_yaml(best_yaml, experiment, config, fusion_best, ood_best)
    result = {"experiment": config["name"], "fusion": fusion_best, "ood": ood_best, "best_yaml": best_yaml,
              "best_experiment": resolved["name"]}
    atomic.write_json(os.path.join(tuning_dir, "best.json"), result)
    log(f"best values: {best_yaml}; train them with: python -m tf_fusion.train --experiment {best_yaml}")
    log(f"trials in TensorBoard: tensorboard --logdir {tuning_dir}")
    return result
