"""The session's one smoke run, shared by every test of the Keras side (a pytest plugin, loaded by
conftest): the `smoke` experiment's synthetic build, a training run through the `train` CLI with
its OOD heads, its evaluation and its SavedModel — each made once, on first use: the build once
for all xdist workers, the run and what derives from it on the one worker of the `smoke-run`
group (the README's `--dist loadgroup`).

Tests must not change these folders; a test that needs to break something copies them first.
Training (and the 392-pair build) is the slow part of the suite: every test that uses them is
marked `slow` here, so `pytest -m "not slow"` (the inner loop) stays fast.
"""
from __future__ import annotations

import fcntl
import json
import os

import pytest

SMOKE = "smoke"
TRAINED = {"smoke_run", "smoke_report", "smoke_export", "smoke_data", "smoke_cache"}  # the build alone takes ~10 s


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if TRAINED & used:
            item.add_marker(pytest.mark.slow)
        if used & {"smoke_run", "smoke_report", "smoke_export"}:
            item.add_marker(pytest.mark.xdist_group("smoke-run"))  # one worker trains the run, once
    # the longest first (the smoke run's group, then the other slow tests), so that the two
    # workers do not wait for one long test at the end
    items.sort(key=lambda item: (item.get_closest_marker("xdist_group") is None, item.get_closest_marker("slow") is None))


def smoke_overrides(cache) -> list[str]:
    return ["--set", f"data.cache_dir={cache}"]


def _prepare(cache):
    from tf_fusion import config as cfg
    from tf_fusion.sources import prepare_data

    return prepare_data(cfg.load_experiment(SMOKE, [f"data.cache_dir={cache}"]), log=lambda *_: None)


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
    """The smoke experiment's synthetic cache, its build done: one folder for the whole session,
    shared by the xdist workers (the first to get the lock writes and builds it, once)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-xdist: the workers' common temporary folder
    cache = root / "smoke-cache"
    cache.mkdir(exist_ok=True)
    with open(root / "smoke-cache.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _prepare(cache)
    return cache


@pytest.fixture(scope="session")
def smoke_data(smoke_cache):
    """The smoke experiment's checked manifest (synthetic archive written and built once)."""
    return _prepare(smoke_cache)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, smoke_cache, smoke_data):
    """A finished smoke training run with both OOD heads: the run folder (pathlib.Path)."""
    from tf_fusion import ood, train

    run = tmp_path_factory.mktemp("smoke") / "run"
    assert train.main(["--experiment", SMOKE, "--run-dir", str(run), *smoke_overrides(smoke_cache)]) == 0
    assert ood.main(["--run", str(run)]) == 0
    return run


@pytest.fixture(scope="session")
def smoke_report(smoke_run):
    """RUN/report of the smoke run, evaluated with the run itself as the late-fusion baseline
    (so that column must equal the non-adaptive one wherever both modalities are there), with
    temperature scaling (smoke.yaml), every OOD detector (fitted into RUN/detectors) and one
    combination of two (binary_head+knn)."""
    from tf_fusion import evaluate

    assert evaluate.main(["--run", str(smoke_run), "--baseline", f"late_fusion={smoke_run}",
                          "--detectors", "all,binary_head+knn"]) == 0
    return smoke_run / "report"


@pytest.fixture(scope="session")
def smoke_export(smoke_run, tmp_path_factory):
    """The smoke run exported as MODEL_BASE/1."""
    from tf_fusion import export

    out = tmp_path_factory.mktemp("models") / "fusion" / "1"
    assert export.main(["--run", str(smoke_run), "--out", str(out)]) == 0
    return out


def summary(run) -> dict:
    with open(os.path.join(run, "summary.json"), encoding="utf-8") as f:
        return json.load(f)
