"""The two-stage search of `python -m tf_fusion.tune`, resumable and distributable.

Layout of RUN/tuning/:
  search.yaml                    the config this search runs (a different one is refused)
  fusion/                        stage 1's KerasTuner project: oracle.json, trial_N/ (trial.json,
                                 checkpoint), trials-<tuner>.jsonl (one line per finished trial of
                                 that tuner process), best_trial.json (written when it is complete)
  ood/fusion_trial_N/            stage 2's project, on the encoders of fusion trial N (the best one;
                                 if a resumed stage 1 finds a better trial, stage 2 starts afresh)
  logs/fusion/<trial>/execution0 TensorBoard logs with the HParams session of each trial
  logs/ood/fusion_trial_N/<trial>/execution0
  best.json, best.yaml           the best values; best.yaml is an experiment `tf_fusion.train` takes

Resume: KerasTuner reloads its oracle from the same folder (`overwrite=False`); finished trials
are kept, an interrupted one is run again. Distributed: KerasTuner's chief/worker mode
(KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT); the chief serves stage 1 on
PORT and stage 2 on PORT + 1, and between the stages workers wait for the chief's
`best_trial.json` on the shared run folder.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings

from .. import atomic
from .. import config as cfg
from . import space

def _save_json_whole(path, obj):
    """KerasTuner's `utils.save_json`, written whole: its own opens the file for writing in place,
    so a kill in the middle leaves an empty oracle.json (or trial.json) that the resumed search
    cannot read (`JSONDecodeError` in `Oracle.reload`). KerasTuner writes all its JSON state here."""
    text = json.dumps(obj)
    atomic.write_text(os.fspath(path), text)
    return text


def keep_keras_tuner_state_whole() -> None:
    """Route KerasTuner's JSON state through `_save_json_whole` (idempotent; `make_tuner` does it
    before any tuner exists)."""
    from keras_tuner.src import utils as kt_utils

    kt_utils.save_json = _save_json_whole


BEST_TRIAL = "best_trial.json"
SEARCH_FILE = "search.yaml"
_WAIT_LOG_SECONDS = 60
IDLE_WAIT = (0.05, 1.0)  # seconds: a worker's first and longest wait between oracle requests that gave no trial


# ------------------------------------------------------------------------------ distribution
def role() -> str | None:
    """None (a single process), "chief" or "worker", from KerasTuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(v)]
    if missing:
        raise cfg.ConfigError(f"KERASTUNER_ORACLE_IP is set ({os.environ['KERASTUNER_ORACLE_IP']!r}) but "
                              f"{' and '.join(missing)} not; set all three for distributed tuning")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


@contextlib.contextmanager
def oracle_port(offset: int):
    """KERASTUNER_ORACLE_PORT + offset while a stage's tuner is built and searches: each stage has
    its own server, so a worker can never reach the other stage's oracle."""
    port = os.environ.get("KERASTUNER_ORACLE_PORT")
    if port is None or not offset:
        yield
        return
    os.environ["KERASTUNER_ORACLE_PORT"] = str(int(port) + offset)
    try:
        yield
    finally:
        os.environ["KERASTUNER_ORACLE_PORT"] = port


# ------------------------------------------------------------------------------ the search folder
def _identity(config: dict) -> dict:
    """What makes two searches the same: everything but the trial counts (which may grow)."""
    c = json.loads(json.dumps({k: config[k] for k in ("data", "model", "training", "ood", "tuning")}))
    for key in ("max_trials", "ood_max_trials"):
        c["tuning"].pop(key, None)
    return c


def _first_difference(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return f"{prefix[:-1]}: {a!r} then, {b!r} now" if a != b else None


def open_search_dir(tuning_dir: str, config: dict, writer: bool) -> None:
    """Create RUN/tuning or re-open it for the same search (a different one is refused). Only the
    `writer` (a single process or the chief) records the config."""
    path = os.path.join(tuning_dir, SEARCH_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = cfg.yaml.safe_load(f)
        diff = _first_difference(_identity(previous), _identity(config))
        if diff:
            raise cfg.ConfigError(f"{tuning_dir} holds a search of a different config ({diff}); choose another "
                                  f"--run-dir (only tuning.max_trials and tuning.ood_max_trials may change)")
    if writer:
        atomic.write_yaml(path, config)


def _read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------------------ tuners
class _PatientWorker:
    """Mixed into KerasTuner's tuners: a worker the oracle answers IDLE (Hyperband holding a
    round until its trials end) asks again after a wait that doubles from IDLE_WAIT[0] to
    IDLE_WAIT[1]. KerasTuner asks again at once: in the tests' chief + 2 workers Hyperband search
    that spin cost 15 of 75 CPU seconds, half of them the chief's, answering thousands of
    requests per worker."""

    _idle_wait = 0.0

    def pre_create_trial(self):
        super().pre_create_trial()
        if self._idle_wait:  # the last request gave no trial
            time.sleep(self._idle_wait)
        self._idle_wait = min(2 * self._idle_wait, IDLE_WAIT[1]) if self._idle_wait else IDLE_WAIT[0]

    def on_trial_begin(self, trial):
        self._idle_wait = 0.0
        super().on_trial_begin(trial)


class _Reporting:
    """Mixed into KerasTuner's tuners: a progress line per trial, and a record of every finished
    trial in `<stage>/trials-<tuner_id>.jsonl` (written after the oracle has recorded it)."""

    stage = ""
    objective_name = ""

    def _say(self, message: str) -> None:
        self.hypermodel.log(message)

    def run_trial(self, trial, *args, **kwargs):
        self.hypermodel.start_trial(trial.trial_id, self.get_trial_dir(trial.trial_id))
        values = space.from_hp_values(self.stage, trial.hyperparameters.values)
        self._say(f"{self.stage} trial {trial.trial_id} on {self.tuner_id}: {space.describe(values)}")
        self._started = time.time()
        return super().run_trial(trial, *args, **kwargs)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        seconds = round(time.time() - getattr(self, "_started", time.time()), 1)
        results = self.hypermodel.results or [math.nan]
        value = float(sum(results) / len(results))
        status = str(getattr(trial.status, "value", trial.status))
        record = {"trial_id": trial.trial_id, "tuner_id": self.tuner_id, "status": status,
                  "objective": self.objective_name, "value": None if math.isnan(value) else value,
                  "seconds": seconds, "hyperparameters": trial.hyperparameters.values}
        with open(os.path.join(self.project_dir, f"trials-{self.tuner_id}.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if status == "COMPLETED":
            self._say(f"{self.stage} trial {trial.trial_id} done in {seconds:.0f} s: {self.objective_name} {value:.4f}")
        else:
            why = (trial.message or "").strip().splitlines()[-1:] or ["no message"]
            self._say(f"{self.stage} trial {trial.trial_id} {status.lower()} after {seconds:.0f} s: {why[0]}")


def make_tuner(stage: str, hypermodel, objective: str, direction: str, tuning: dict, directory: str,
               project_name: str, max_trials: int, max_epochs: int, strategy=None):
    """A KerasTuner tuner of kind `tuning.tuner` over `hypermodel`, its project in directory/project_name
    (reloaded if it is there)."""
    import keras_tuner as kt

    keep_keras_tuner_state_whole()
    bases = {"random": kt.RandomSearch, "bayesian": kt.BayesianOptimization, "hyperband": kt.Hyperband}
    kind = tuning["tuner"]
    if kind not in bases:
        raise cfg.ConfigError(f"tuning.tuner must be one of {', '.join(bases)}, got {kind!r}")
    cls = type(f"{bases[kind].__name__}WithProgress", (_Reporting, _PatientWorker, bases[kind]),
               {"stage": stage, "objective_name": objective})
    kwargs = dict(hypermodel=hypermodel, objective=kt.Objective(objective, direction),
                  seed=int(tuning["seed"]) + 1,  # KerasTuner takes seed 0 for "no seed" (a random one)
                  directory=directory, project_name=project_name, overwrite=False,
                  executions_per_trial=int(tuning["executions_per_trial"]), distribution_strategy=strategy)
    if kind == "hyperband":
        kwargs.update(max_epochs=int(max_epochs), factor=int(tuning["hyperband_factor"]))
    else:
        kwargs["max_trials"] = int(max_trials)
    return cls(**kwargs)


def tensorboard_callback(log_dir: str):
    """KerasTuner gives each trial a copy writing to LOG_DIR/<trial>/execution0, plus the HParams session."""
    import keras

    return keras.callbacks.TensorBoard(log_dir, write_graph=False)


def completed_trials(tuner) -> int:
    return sum(1 for t in tuner.oracle.trials.values() if str(getattr(t.status, "value", t.status)) == "COMPLETED")


# ------------------------------------------------------------------------------ one stage
def run_stage(tuner, stage_dir: str, max_trials: int, who: str | None, log, *search_args, **search_kwargs) -> dict:
    """Run (or resume, or skip if complete) one stage; its best trial as written to best_trial.json."""
    marker_path = os.path.join(stage_dir, BEST_TRIAL)
    marker = _read_json(marker_path)
    if marker and marker["max_trials"] == max_trials:
        log(f"{tuner.stage}: complete ({marker['trials']} trials); best trial {marker['trial_id']}, "
            f"{marker['objective']} {marker['value']:.4f}")
        return marker
    if who != "worker":
        if marker:
            os.remove(marker_path)
        done = completed_trials(tuner)
        if done:
            log(f"{tuner.stage}: resuming, {done} trials already done")
    tuner.search(*search_args, **search_kwargs)
    if who == "worker":
        return _wait_for_marker(marker_path, max_trials, tuner.stage, log)
    best = [t for t in tuner.oracle.get_best_trials(1) if t.score is not None]
    if not best:
        raise cfg.ConfigError(f"{tuner.stage}: no trial completed (see the errors above and "
                              f"{stage_dir}/trial_*/trial.json; delete {stage_dir} to run the stage again)")
    marker = {"trial_id": best[0].trial_id, "objective": tuner.objective_name, "value": float(best[0].score),
              "hyperparameters": best[0].hyperparameters.values, "max_trials": max_trials,
              "trials": completed_trials(tuner)}
    atomic.write_json(marker_path, marker)
    log(f"{tuner.stage}: best trial {marker['trial_id']} of {marker['trials']}, {marker['objective']} "
        f"{marker['value']:.4f}: {space.describe(space.from_hp_values(tuner.stage, marker['hyperparameters']))}")
    return marker


def _wait_for_marker(path: str, max_trials: int, stage: str, log) -> dict:
    """A worker whose search ended waits until the chief has closed the stage (other workers may
    still be running its last trials)."""
    last = time.time()
    while True:
        marker = _read_json(path)
        if marker and marker["max_trials"] == max_trials:
            return marker
        if time.time() - last > _WAIT_LOG_SECONDS:
            log(f"{stage}: waiting for the chief to close the stage ({path})")
            last = time.time()
        time.sleep(1.0)


def load_trial_model(tuner, trial_id: str):
    """The model of a finished trial (built by the HyperModel, its best checkpoint loaded);
    read from the shared folder, so a worker needs no oracle for it."""
    from keras_tuner.engine import trial as kt_trial

    trial = kt_trial.Trial.load(os.path.join(tuner.get_trial_dir(trial_id), "trial.json"))
    with warnings.catch_warnings():  # the checkpoint's optimizer state is not needed to freeze the encoders
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        return tuner.load_model(trial)
