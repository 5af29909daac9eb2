"""The run folder's commit record (`tf_fusion.runs.Run`): the best-so-far value survives a new
process. A resumed run is a new `Run` object on the same folder; the best epoch it reports must be
the best of every committed epoch, not of those committed since it started."""
from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tf_fusion.runs import Run  # noqa: E402


def _model(value: float):
    """A one-weight model whose weight says which epoch saved it."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign([[value]])
    return model


@pytest.mark.parametrize("monitor, mode, values", [
    ("val_f1_samples", "max", [0.5, 0.9, 0.4, 0.7]),  # best: epoch 1, before the "kill"
    ("val_loss", "min", [0.6, 0.2, 0.5, 0.3]),
])
def test_the_best_epoch_survives_a_resume_in_a_new_process(tmp_path, monitor, mode, values):
    folder = tmp_path / "run"
    first = Run(folder)
    first.start({"name": "x", "data": {}, "model": {}, "training": {"epochs": 4}})
    for epoch in (0, 1, 2):
        first.commit_epoch(_model(epoch), epoch, {monitor: values[epoch]}, monitor, mode)
    resumed = Run(folder)  # what a rerun after a kill opens: nothing in memory from the first
    resumed.commit_epoch(_model(3), 3, {monitor: values[3]}, monitor, mode)
    summary = resumed.finish({})

    best = int(np.argmax(values) if mode == "max" else np.argmin(values))  # independent of the run
    assert best == 1
    assert summary["best_epoch"] == best and summary["best"] == values[best]
    assert json.loads((folder / "summary.json").read_text())["best_epoch"] == best
    assert resumed.read_state()["best"]["epoch"] == best
    saved = keras.saving.load_model(folder / "best.keras", compile=False)
    assert float(np.asarray(saved.layers[0].kernel)[0, 0]) == best  # the weights of that epoch
    assert [row[monitor] for row in resumed.history()] == values
