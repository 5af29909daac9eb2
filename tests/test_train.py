"""`python -m tf_fusion.train --experiment smoke` end to end: it learns, logs, checkpoints, and a
run interrupted at any write resumes to exactly the files of an uninterrupted run."""
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import f1_score

from conftest import REPO
from smoke import SMOKE, smoke_overrides, summary

keras = pytest.importorskip("keras")
from tf_fusion import atomic, train  # noqa: E402

# A short deterministic run for the resume tests: 2 epochs of 3 steps, with dropout so that the
# dropout generators' state matters (the second epoch is the one a resume must continue exactly).
SHORT = ["--set", "training.epochs=2", "--set", "training.steps_per_epoch=3", "--set", "model.dropout=0.3"]
ONE_REFERENCE = pytest.mark.xdist_group("train-reference")  # the tests reading `reference` share one worker, so one run


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _train(run_dir, cache, *extra, capsys=None) -> int:
    return train.main(["--experiment", SMOKE, "--run-dir", str(run_dir), *smoke_overrides(cache), *map(str, extra)])


def test_smoke_learns_and_beats_constant_predictors(smoke_run, smoke_data):
    rows = _history(smoke_run)
    assert [int(r["epoch"]) for r in rows] == list(range(len(rows))) and len(rows) >= 4
    assert float(rows[-1]["loss"]) < 0.8 * float(rows[0]["loss"])
    for key in ("loss_fuse", "loss_opt", "loss_sar", "val_f1_samples", "val_opt_f1_samples", "val_sar_f1_macro"):
        assert key in rows[0]
    best = max(float(r["val_f1_samples"]) for r in rows)
    assert summary(smoke_run)["best"] == pytest.approx(best)

    # the best constant predictions on the same validation labels, scored by scikit-learn
    from tf_fusion.data import make_dataset

    y = np.concatenate([b[1].numpy() for b in make_dataset(smoke_data, "val", batch_size=64)])
    prior = y.mean(0)
    constants = [np.ones_like(y[0]), (prior >= 0.5).astype(float), *np.eye(y.shape[1])]
    constants += [(prior >= np.sort(prior)[-k]).astype(float) for k in range(1, y.shape[1] + 1)]
    best_constant = max(f1_score(y, np.tile(c, (len(y), 1)), average="samples", zero_division=0) for c in constants)
    assert best > best_constant + 0.05, (best, best_constant)
    for name in ("config.yaml", "best.keras", "final.keras"):
        assert (smoke_run / name).exists()
    assert any(f.startswith("events") for _, _, files in os.walk(smoke_run / "logs") for f in files)


def test_best_keras_is_the_best_epoch(smoke_run, smoke_data):
    """best.keras holds the weights of the epoch with the best val_f1_samples: re-scored here."""
    from sklearn.metrics import f1_score as f1

    from tf_fusion.data import make_dataset
    from tf_fusion.model import gate_inputs

    model = keras.saving.load_model(smoke_run / "best.keras", compile=False)
    xs, ys = zip(*[(x, y.numpy()) for x, y in make_dataset(smoke_data, "val", batch_size=64, image_size=model.image_size)])
    p = np.concatenate([np.asarray(model(gate_inputs(x, 1.0, 1.0))["probabilities"]) for x in xs])
    assert f1(np.concatenate(ys), p > 0.5, average="samples", zero_division=0) == pytest.approx(summary(smoke_run)["best"], abs=1e-5)


@pytest.mark.slow
@ONE_REFERENCE
def test_console_line_shows_loss_parts_and_fused_f1(reference, smoke_cache, tmp_path, capsys):
    # a bad setting fails before anything is written, so the corrected command is not blocked
    assert _train(tmp_path / "run", smoke_cache, "--set", "data.batch_size=0") == 2
    assert "data.batch_size must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    # the three-pass step is traced once in the 2-epoch run (the optimizer's slots exist before
    # it: FusionModel.compile)
    assert reference.traces == 1
    lines = [line for line in reference.stdout.splitlines() if line.startswith("epoch 1/2")]
    assert len(lines) == 1, lines
    assert "(fuse " in lines[0] and "opt " in lines[0] and "sar " in lines[0] and "val F1 (samples)" in lines[0]
    assert "val_opt_f1_macro" not in lines[0]  # the other metrics stay in TensorBoard and history.csv


def test_finished_run_is_not_redone_and_other_config_is_refused(smoke_run, smoke_cache, capsys):
    before = (smoke_run / "best.keras").stat().st_mtime_ns
    assert _train(smoke_run, smoke_cache) == 0
    assert "already trained" in capsys.readouterr().out and (smoke_run / "best.keras").stat().st_mtime_ns == before
    assert _train(smoke_run, smoke_cache, "--set", "training.learning_rate=0.1") == 2
    assert "different config" in capsys.readouterr().err


def test_finished_run_on_other_data_is_refused(smoke_run, smoke_cache, tmp_path, capsys):
    """E.g. a run trained on a synthetic cache of an older generator: never reused silently."""
    copy = tmp_path / "run"
    shutil.copytree(smoke_run, copy)
    (copy / "summary.json").write_text(json.dumps({**summary(copy), "data_dir": str(tmp_path / "old-build")}))
    assert _train(copy, smoke_cache) == 2
    err = capsys.readouterr().err
    assert "was trained on" in err and "old-build" in err


def test_unknown_experiment_and_key_are_clear_errors(tmp_path, capsys):
    assert train.main(["--experiment", "nope"]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err
    assert _train(tmp_path / "r", tmp_path / "c", "--set", "training.epoch=2") == 2
    assert "unknown key 'training.epoch' (did you mean 'epochs'?)" in capsys.readouterr().err


# ------------------------------------------------------------------------------ resuming
def _weights(run_dir, name="final.keras"):
    return [w.numpy() for w in keras.saving.load_model(os.path.join(run_dir, name), compile=True).weights]


def _optimizer(run_dir):
    model = keras.saving.load_model(os.path.join(run_dir, "final.keras"), compile=True)
    return [v.numpy() for v in model.optimizer.variables]


class Killed(BaseException):
    """Stands for a kill: nothing after it runs, nothing catches it."""


@pytest.fixture(scope="module")
def reference(smoke_cache, tmp_path_factory):
    """An uninterrupted SHORT run through `train.main`: its folder, the files it publishes in
    order, what it printed and how often it traced FusionModel.train_step."""
    from tf_fusion.model import FusionModel

    run = tmp_path_factory.mktemp("reference") / "run"
    writes, traces = [], []
    original, step = atomic._publish, FusionModel.train_step

    def counted(tmp, path):
        writes.append(os.path.relpath(path, run))
        return original(tmp, path)

    atomic._publish = counted
    FusionModel.train_step = lambda self, data: traces.append(data) or step(self, data)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            assert _train(run, smoke_cache, *SHORT) == 0
    finally:
        atomic._publish, FusionModel.train_step = original, step
    return SimpleNamespace(run=run, writes=writes, stdout=out.getvalue(), traces=len(traces))


def _same_run(run, ref):
    """Exactly the files an uninterrupted run has: each epoch once in the history with the same
    values, the same best value and weights, the same final weights and optimizer state."""
    assert _history(run) == _history(ref)
    got, want = summary(run), summary(ref)
    for key in ("best", "best_epoch", "epochs", "monitor"):
        assert got[key] == want[key], key
    for name in ("final.keras", "best.keras"):
        for a, b in zip(_weights(run, name), _weights(ref, name)):
            np.testing.assert_array_equal(a, b, err_msg=name)
    for a, b in zip(_optimizer(run), _optimizer(ref)):
        np.testing.assert_array_equal(a, b)
    assert not [f for f in os.listdir(run) if ".tmp" in f]


def _committed(run) -> int:
    path = run / "state" / "state.json"
    return json.loads(path.read_text())["epochs_done"] if path.exists() else 0


@pytest.mark.slow
@ONE_REFERENCE
def test_a_kill_9_and_a_kill_at_any_write_resume_to_the_same_run(reference, smoke_cache, tmp_path):
    """`python -m tf_fusion.train` killed (SIGKILL) once its first epoch is committed, then the
    same command killed at each write of an epoch boundary in turn (the second epoch's
    checkpoint, commit record, history and best model) and at each write after the last epoch
    (final model, summary), resumed after every kill: it ends as the uninterrupted run."""
    ref, writes = reference.run, reference.writes
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tf_fusion.train", "--experiment", SMOKE, "--run-dir", str(run),
           *smoke_overrides(smoke_cache), *SHORT]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run / "history.csv").exists() and len(_history(run)) >= 1:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (run / "summary.json").exists()
    killed_at = _committed(run)  # 1, unless the kill came after the second epoch's commit
    # (file, epochs committed when it is written): the reference run's writes from epoch 2 on
    state, targets = 0, []
    for w in writes:
        if w in ("final.keras", "summary.json") or (state == 1 and w.startswith("state/")) or (state == 2 and w in ("history.csv", "best.keras")):
            targets.append((w, state))
        if w.endswith("state.json"):
            state += 1
    # best.keras is published again only when the second epoch is the better one (the 392-pair
    # smoke build's reference run: it is not, so the resumed run must keep epoch 1's best)
    second_is_best = summary(ref)["best_epoch"] == 1
    assert [w for w, _ in targets] == ["state/epoch-00002.keras", "state/state.json", "history.csv",
                                       *(["best.keras"] if second_is_best else []), "final.keras", "summary.json"], targets
    original = atomic._publish
    for target in [t for t in targets if t[1] >= killed_at]:
        def maybe_kill(tmp, path, target=target):
            if (os.path.relpath(path, run), _committed(run)) == target:
                raise Killed(path)
            return original(tmp, path)

        atomic._publish = maybe_kill
        try:
            with pytest.raises(Killed):
                _train(run, smoke_cache, *SHORT)
        finally:
            atomic._publish = original
    assert _train(run, smoke_cache, *SHORT) == 0
    _same_run(run, ref)


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_path(smoke_cache, tmp_path, capsys, monkeypatch):
    import errno

    def full(tmp, path):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(atomic, "_publish", full)
    assert _train(tmp_path / "run", smoke_cache, "--set", "training.epochs=1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if line.startswith(("error", "Traceback"))] == [
        f"error: {tmp_path / 'run' / 'config.yaml'}: No space left on device"]


# ------------------------------------------------------------------ one command at a time per folder
_HOLD = "import sys, time\nfrom tf_fusion.runs import using\nwith using(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n"

_TRY = ("import sys\nfrom tf_fusion.runs import using\nfrom tfrecords_builder import LockHeld\ntry:\n"
        "    with using(sys.argv[1]):\n        print('took')\nexcept LockHeld as e:\n    print('refused', e)\n")


@contextlib.contextmanager
def _holder(folder):
    """Another process holding ``folder``'s lock, as a running command does: its Popen."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_run_or_study_folder_in_use_is_refused_at_once_naming_the_holder(tmp_path, capsys):
    """train, ood, evaluate, export and study on a folder another command is using: exit 2 and
    one line naming the folder and the holder (pid, host, start), before anything is written."""
    import socket

    from tf_fusion import evaluate, export, ood, study

    run, folder, cache = tmp_path / "run", tmp_path / "study", tmp_path / "cache"
    commands = {
        "train": (run, lambda: train.main(["--experiment", SMOKE, "--run-dir", str(run), *smoke_overrides(cache)])),
        "ood": (run, lambda: ood.main(["--run", str(run)])),
        "evaluate": (run, lambda: evaluate.main(["--run", str(run)])),
        "export": (run, lambda: export.main(["--run", str(run)])),
        "study": (folder, lambda: study.main(["--experiment", "demo_study", "--dir", str(folder), *smoke_overrides(cache)])),
    }
    for where in (run, folder):
        where.mkdir()
    with _holder(run) as on_run, _holder(folder) as on_study:
        for name, (where, command) in commands.items():
            holder = on_run if where == run else on_study
            started = time.time()
            assert command() == 2, name
            line = _one_error_line(capsys.readouterr().err)
            assert line.startswith(f"error: {where}: another command is using it: "), line
            assert f"pid {holder.pid} on {socket.gethostname()} since " in line, line
            assert time.time() - started < 10, name  # at once
            assert os.listdir(where) == [".lock"], name  # nothing written
    assert not cache.exists()  # nor data made


def test_the_lock_of_a_command_that_died_is_taken_over_with_a_note(tmp_path, capsys):
    """A holder killed with SIGKILL leaves its record; the next command takes the lock over with
    one note naming it and goes on (here to evaluate's own complaint about the empty folder)."""
    from tf_fusion import evaluate

    run = tmp_path / "run"
    run.mkdir()
    with _holder(run) as dead:
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait()
    assert evaluate.main(["--run", str(run)]) == 2
    out, err = capsys.readouterr()
    notes = [line for line in out.splitlines() if "stale lock" in line]
    assert len(notes) == 1 and f"pid {dead.pid} " in notes[0] and str(run) in notes[0], out
    assert "no config.yaml" in _one_error_line(err)
    assert evaluate.main(["--run", str(run)]) == 2  # released cleanly: nothing stale any more
    assert "stale" not in capsys.readouterr().out


def test_one_process_nests_its_own_run_lock_and_releases_it_with_the_outermost_hold(tmp_path):
    """A job's nested steps (train → baseline → evaluate → export, a study's runs) share the lock
    of their process; another process is refused until the outermost hold ends."""
    from tf_fusion.runs import using

    run = tmp_path / "run"

    def other():  # another process trying to take it
        return subprocess.run([sys.executable, "-c", _TRY, str(run)], cwd=REPO, capture_output=True, text=True).stdout

    with using(run, log=None):
        with using(run, log=None):
            pass
        refused = other()
        assert refused.startswith(f"refused {run}: another command is using it: `") and f" pid {os.getpid()} " in refused
    assert other() == "took\n"


def test_two_demo_jobs_with_one_parent_train_their_baselines_in_their_own_folders(tmp_path):
    from tf_fusion import config as cfg

    demo = cfg.load_experiment("demo")
    a, b = (train.trainings(demo, tmp_path / "runs" / name) for name in ("a", "b"))
    assert [folder for _, folder in a] == [str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "a" / "baseline")]
    assert [folder for _, folder in b] == [str(tmp_path / "runs" / "b"), str(tmp_path / "runs" / "b" / "baseline")]
    assert [c["name"] for c, _ in a] == ["demo", "demo_baseline"]
    assert train.trainings(cfg.load_experiment(SMOKE), tmp_path / "runs" / "c") == [
        (cfg.load_experiment(SMOKE), str(tmp_path / "runs" / "c"))]  # no baseline: one training


def test_a_job_whose_baseline_folder_holds_another_run_is_refused_before_training(tmp_path, capsys):
    """The whole job is checked before its first training: a baseline folder holding a run of
    another config is one line naming it, and no data are made, nothing is trained."""
    from tf_fusion import config as cfg

    run, cache = tmp_path / "runs" / "a", tmp_path / "cache"
    atomic.write_yaml(str(run / "baseline" / "config.yaml"), cfg.load_experiment(SMOKE))
    before = (run / "baseline" / "config.yaml").read_text()
    fast = ["--set", "data.synthetic.pairs=40", "--set", "training.epochs=1"]  # should the check ever fail
    assert train.main(["--experiment", "demo", "--run-dir", str(run), *smoke_overrides(cache), *fast]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {run / 'baseline'} holds a run of a different config"), line
    assert not cache.exists() and not (run / "config.yaml").exists()
    assert (run / "baseline" / "config.yaml").read_text() == before
