"""`python -m tf_fusion.train --experiment smoke` end to end: it learns, logs, checkpoints and resumes."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn.metrics import f1_score

from conftest import REPO


def _train(run_dir, cache, *extra, check=True):
    cmd = [sys.executable, "-m", "tf_fusion.train", "--experiment", "smoke", "--run-dir", str(run_dir),
           "--set", f"data.cache_dir={cache}", *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    _train(base / "run", base / "cache")
    return base / "run", base / "cache"


def test_smoke_learns_and_beats_constant_predictors(smoke_run):
    run, _ = smoke_run
    rows = _history(run)
    assert [int(r["epoch"]) for r in rows] == list(range(len(rows))) and len(rows) >= 4
    assert float(rows[-1]["loss"]) < 0.8 * float(rows[0]["loss"])
    for key in ("loss_fuse", "loss_opt", "loss_sar", "val_f1_samples", "val_opt_f1_samples", "val_sar_f1_macro"):
        assert key in rows[0]
    summary = json.loads((run / "summary.json").read_text())
    best = max(float(r["val_f1_samples"]) for r in rows)
    assert summary["best"] == pytest.approx(best)

    # the best constant predictions on the same validation labels, scored by scikit-learn
    from tf_fusion.data import make_dataset

    y = np.concatenate([b[1].numpy() for b in make_dataset(summary["data_dir"], "val", batch_size=64)])
    prior = y.mean(0)
    constants = [np.ones_like(y[0]), (prior >= 0.5).astype(float), *np.eye(y.shape[1])]
    constants += [(prior >= np.sort(prior)[-k]).astype(float) for k in range(1, y.shape[1] + 1)]
    best_constant = max(f1_score(y, np.tile(c, (len(y), 1)), average="samples", zero_division=0) for c in constants)
    assert best > best_constant + 0.05, (best, best_constant)
    for name in ("config.yaml", "best.keras", "final.keras"):
        assert (run / name).exists()
    assert any(f.startswith("events") for _, _, files in os.walk(run / "logs") for f in files)


def test_finished_run_is_not_redone_and_other_config_is_refused(smoke_run):
    run, cache = smoke_run
    before = (run / "best.keras").stat().st_mtime_ns
    proc = _train(run, cache)
    assert "already trained" in proc.stdout and (run / "best.keras").stat().st_mtime_ns == before
    proc = _train(run, cache, "--set", "training.learning_rate=0.1", check=False)
    assert proc.returncode == 2 and "different config" in proc.stderr


def test_finished_run_on_other_data_is_refused(smoke_run, tmp_path):
    """E.g. a run trained on a synthetic cache of an older generator: never reused silently."""
    run, cache = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, "data_dir": str(tmp_path / "old-build")}))
    proc = _train(copy, cache, check=False)
    assert proc.returncode == 2 and "was trained on" in proc.stderr and "old-build" in proc.stderr


def test_resume_after_kill_continues_from_last_epoch(smoke_run, tmp_path):
    _, cache = smoke_run  # the synthetic build is reused from the cache
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tf_fusion.train", "--experiment", "smoke", "--run-dir", str(run),
           "--set", f"data.cache_dir={cache}", "--set", "training.epochs=5"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run / "history.csv").exists() and len(_history(run)) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    killed_after = len(_history(run))
    assert 2 <= killed_after < 5 and not (run / "summary.json").exists()
    _train(run, cache, "--set", "training.epochs=5")
    epochs = [int(r["epoch"]) for r in _history(run)]
    assert epochs == list(range(5)), epochs  # each epoch once: it continued, it did not start over


def test_unknown_experiment_and_key_are_clear_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tf_fusion.train", "--experiment", "nope"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown experiment 'nope'" in proc.stderr
    proc = _train(tmp_path / "r", tmp_path / "c", "--set", "training.epoch=2", check=False)
    assert proc.returncode == 2 and "unknown key 'training.epoch' (did you mean 'epochs'?)" in proc.stderr
