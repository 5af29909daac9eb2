"""The run folder: what `python -m tf_fusion.train` writes, and how every other command reads it.

    RUN/config.yaml      the resolved config, read back through `config.load_experiment`
    RUN/state/           the resume state: state.json (the commit record) and the checkpoint
                         (model + optimizer) of the last committed epoch
    RUN/history.csv      one row per committed epoch (written from state.json)
    RUN/best.keras       the best committed epoch by `training.monitor`
    RUN/final.keras      the last epoch (written when training ends)
    RUN/summary.json     written last: its presence means training is finished
    RUN/logs/            TensorBoard
    RUN/ood_opt.keras, ood_sar.keras, ood.json   the OOD heads and the settings they were trained with
    RUN/detectors/NAME_MODALITY.npz              a fitted post-hoc detector: statistics, calibrator, the
                                                 settings it was fitted with (written and read back by
                                                 `tf_fusion.detectors.save` / `load`, atomically)
    RUN/report/, RUN/export/                     evaluation and SavedModels
    RUN/baseline/        the job's baseline run (`train` with `evaluation.baseline_experiment`)
    RUN/.lock            held by the command using the run (`using`): one at a time

One command at a time uses a run (or study) folder: train, ood, evaluate and export hold RUN/.lock
(`tfrecords_builder.OutputLock`, re-entrant within one process, so one job's nested steps share
it); a second command refuses at once, naming the holder, and the lock of a command that died is
taken over with a note.

Every file is written atomically (`tf_fusion.atomic`). An epoch is committed by ONE rename, of
state.json, after its checkpoint is on disk; the history, `best.keras` and the best-so-far value
are derived from that record. A kill at any moment therefore leaves either the previous commit or
the new one, and reopening the run republishes what the record says — so a rerun ends with
exactly the files an uninterrupted run has and never trains a committed epoch again.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os

from tfrecords_builder import OutputLock

from . import atomic
from . import config as cfg

CONFIG, SUMMARY, BEST, FINAL, HISTORY = "config.yaml", "summary.json", "best.keras", "final.keras", "history.csv"
STATE_DIR, STATE = "state", "state.json"
LOCK, BASELINE = ".lock", "baseline"
LOGS, REPORT, EXPORT, DETECTORS = "logs", "report", "export", "detectors"
OOD_STATE = "ood.json"
OOD_HEADS = {"optical": "ood_opt.keras", "sar": "ood_sar.keras"}
RUNS_DIR = "runs"


class RunError(cfg.ConfigError):
    """A run folder that cannot be used for what was asked; the message names it and the remedy."""


def default_dir(config: dict) -> str:
    return os.path.join(RUNS_DIR, config["name"])


@contextlib.contextmanager
def using(path, log=print, create: bool = True):
    """Hold the lock of the run or study folder ``path`` (PATH/.lock) for the block: a live holder
    elsewhere is a one-line `LockHeld` naming it, a dead one's lock is taken over with a note to
    ``log``. ``create``: make the folder (else a missing folder is not locked: nothing to protect,
    and the command's own check says what is missing). A folder made here that holds nothing but
    the lock when the block ends (an error before the first write) is removed again."""
    path = os.fspath(path)
    made = False
    if not os.path.isdir(path):
        if not create:
            yield
            return
        os.makedirs(path)
        made = True
    held = OutputLock(os.path.join(path, LOCK), folder=path, reentrant=True)
    held.acquire(log=log)
    try:
        yield
    finally:
        if made and held.outermost and os.listdir(path) == [LOCK]:
            with contextlib.suppress(OSError):
                os.remove(held.path)
                os.rmdir(path)
        held.release()


def training_identity(config: dict) -> dict:
    """What makes two runs the same training: data, model and training settings but the epoch count."""
    c = json.loads(json.dumps({k: config[k] for k in ("data", "model", "training")}))
    c["training"].pop("epochs")
    return c


class Run:
    """One run folder (see the module docstring)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._config = None

    def file(self, *parts) -> str:
        return os.path.join(self.path, *parts)

    def __repr__(self) -> str:
        return f"Run({self.path!r})"

    # ------------------------------------------------------------------------------ reading
    @classmethod
    def finished_run(cls, path) -> "Run":
        """The run at ``path``, which must have finished training (RunError naming what is missing)."""
        run = cls(path)
        for name in (CONFIG, SUMMARY, BEST):
            if not os.path.exists(run.file(name)):
                raise RunError(f"{run.path}: no {name} (is it a finished `python -m tf_fusion.train` run?)")
        return run

    @property
    def config(self) -> dict:
        """The resolved config, read back through the experiment loader (defaults added since the
        run was written are filled in, unknown keys refused)."""
        if self._config is None:
            self._config = cfg.load_experiment(self.file(CONFIG))
        return self._config

    @property
    def finished(self) -> bool:
        return os.path.exists(self.file(SUMMARY))

    @property
    def summary(self) -> dict:
        with open(self.file(SUMMARY), encoding="utf-8") as f:
            return json.load(f)

    @property
    def data_dir(self) -> str:
        return self.summary["data_dir"]

    def manifest(self):
        """The manifest of the data this run was trained on, checked against its partition."""
        from tfrecords_builder import load_manifest

        return load_manifest(self.data_dir, partition=self.config["data"]["partition"])

    def load_model(self, which: str = BEST, compile: bool = False):
        import keras

        from . import baselines, model  # noqa: F401  register the project's models and layers for loading

        return keras.saving.load_model(self.file(which), compile=compile)

    def history(self) -> list[dict]:
        return list(self.read_state().get("history", []))

    # ------------------------------------------------------------------------------ training
    def check(self, config: dict) -> bool:
        """Can ``config`` be trained here? Reads only: True when the folder already finished
        training for ``config``'s epochs, False when it is new or continues; RunError naming the
        folder when it holds a different config (only training.epochs may change, and only grow)."""
        path = self.file(CONFIG)
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunError(f"{self.path}: not a directory; choose another --run-dir")
        if not os.path.exists(path):
            return False
        try:
            previous = cfg.load_experiment(path)
        except cfg.ConfigError as e:
            raise RunError(f"{self.path}: its {CONFIG} is unusable ({e}); choose another --run-dir") from None
        if training_identity(previous) != training_identity(config):
            raise RunError(f"{self.path} holds a run of a different config; choose another --run-dir "
                           f"(only training.epochs may change when continuing a run)")
        done = self.read_state().get("epochs_done", 0)
        if self.finished and done == config["training"]["epochs"]:
            return True
        if done > config["training"]["epochs"]:
            raise RunError(f"{self.path} already trained {done} epochs; training.epochs can only grow "
                           f"(got {config['training']['epochs']})")
        return False

    def start(self, config: dict) -> bool:
        """Create the folder or reopen it for the same training; True when it already finished
        training for ``config``'s epochs. A different config is refused (`check`)."""
        path = self.file(CONFIG)
        if self.check(config):
            atomic.write_yaml(path, config)  # the OOD and evaluation settings that follow may have changed
            return True
        if self.finished:
            os.remove(self.file(SUMMARY))  # more epochs: the run continues and is no longer finished
        os.makedirs(self.file(STATE_DIR), exist_ok=True)
        for folder in (self.path, self.file(STATE_DIR)):
            atomic.remove_leftovers(folder)
        atomic.write_yaml(path, config)
        self._config = config
        return False

    def read_state(self) -> dict:
        path = self.file(STATE_DIR, STATE)
        if not os.path.exists(path):
            return {}
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def checkpoint(self) -> str | None:
        """The checkpoint of the last committed epoch (None before the first commit)."""
        state = self.read_state()
        return self.file(STATE_DIR, state["checkpoint"]) if state.get("checkpoint") else None

    def commit_epoch(self, model, epoch: int, logs: dict, monitor: str, mode: str, extra=None) -> dict:
        """Commit epoch ``epoch`` (0-based): its checkpoint, its history row and the best-so-far
        value become durable together (one rename of state.json), then the derived files are
        published. ``extra``: more state to keep with the commit (e.g. random generator states)."""
        state = self.read_state()
        done = state.get("epochs_done", 0)
        if epoch != done:
            raise RunError(f"{self.path}: committing epoch {epoch + 1} after {done} committed epochs")
        name = f"epoch-{epoch + 1:05d}.keras"
        atomic.write_with(self.file(STATE_DIR, name), model.save, suffix=".keras")
        row = {"epoch": epoch, **{k: _number(v) for k, v in sorted(logs.items())}}
        value = row.get(monitor)
        best = state.get("best")
        if value is not None and not math.isnan(value) and (best is None or _better(value, best["value"], mode)):
            best = {"value": value, "epoch": epoch, "checkpoint": name}
        state = {"epochs_done": epoch + 1, "checkpoint": name, "history": [*state.get("history", []), row],
                 "best": best, "monitor": monitor, **(extra or {})}
        atomic.write_json(self.file(STATE_DIR, STATE), state)  # the commit
        self.publish(state)
        return state

    def publish(self, state: dict | None = None) -> None:
        """Write what the commit record implies: history.csv, best.keras; delete the checkpoints
        it no longer names (including one a kill left uncommitted)."""
        state = self.read_state() if state is None else state
        if not state:
            return
        atomic.write_text(self.file(HISTORY), _csv(state["history"]))
        best = state.get("best")
        if best:
            atomic.link_or_copy(self.file(STATE_DIR, best["checkpoint"]), self.file(BEST))
        keep = {STATE, state["checkpoint"], best["checkpoint"] if best else None}
        for entry in os.scandir(self.file(STATE_DIR)):
            if entry.name not in keep:
                os.remove(entry.path)

    def finish(self, summary: dict) -> dict:
        """final.keras from the last commit, then summary.json (written last: the run is done)."""
        state = self.read_state()
        atomic.link_or_copy(self.file(STATE_DIR, state["checkpoint"]), self.file(FINAL))
        best = state.get("best")
        summary = {**summary, "epochs": state["epochs_done"], "monitor": state["monitor"],
                   "best": best["value"] if best else None, "best_epoch": best["epoch"] if best else None,
                   "best_model": BEST, "final_model": FINAL}
        atomic.write_json(self.file(SUMMARY), summary)
        return summary

    # ------------------------------------------------------------------------------ OOD heads
    def ood_state(self) -> dict:
        path = self.file(OOD_STATE)
        if not os.path.exists(path):
            return {}
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def save_ood_head(self, modality: str, head, auroc: float, settings: dict) -> None:
        """The trained head of one modality, and in ood.json the settings and validation AUROC."""
        atomic.write_with(self.file(OOD_HEADS[modality]), head.save, suffix=".keras")
        state = self.ood_state()
        if state.get("config") != settings:
            state = {"config": settings}
        state[f"val_auroc_{modality}"] = None if math.isnan(auroc) else float(auroc)
        atomic.write_json(self.file(OOD_STATE), state)

    def ood_heads(self, settings: dict | None = None) -> dict | None:
        """{modality: (head, val AUROC or NaN)} of the saved heads — trained with ``settings``
        when given — or None when one is missing or was trained with other settings."""
        import keras

        state = self.ood_state()
        if settings is not None and state.get("config") != settings:
            return None
        out = {}
        for modality, name in OOD_HEADS.items():
            key = f"val_auroc_{modality}"
            if not os.path.exists(self.file(name)) or key not in state:
                return None
            value = state[key]
            out[modality] = (keras.saving.load_model(self.file(name), compile=False),
                             float("nan") if value is None else float(value))
        return out


def _number(v) -> float:
    return float(v.numpy() if hasattr(v, "numpy") else v)


def _better(value: float, best: float, mode: str) -> bool:
    return value > best if mode == "max" else value < best


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    fields = list(rows[0])
    for row in rows[1:]:
        fields += [k for k in row if k not in fields]
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
