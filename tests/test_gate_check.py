"""The gate's check on validation data (`tf_fusion.gate_check`): its AUROC against the
Mann–Whitney count, its verdicts, and on the smoke run the figures recomputed from the paper's
heads applied to the branch outputs directly (val, ood_val and val with N(0, 1) drawn here)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tf_fusion import gate_check


def _mann_whitney(p_clear, p_shifted) -> float:
    """P(p of a shifted patch < p of a clear one), ties counting half: the AUROC of a lower p."""
    a, b = np.asarray(p_clear)[:, None], np.asarray(p_shifted)[None, :]
    return float(np.mean((b < a) + 0.5 * (b == a)))


def test_auroc_is_the_probability_that_a_shifted_patch_has_the_lower_p():
    rng = np.random.default_rng(0)
    clear, shifted = rng.beta(5, 2, 300), rng.beta(2, 5, 200)
    clear[:20] = shifted[:20] = 0.5  # ties
    assert gate_check.auroc(clear, shifted) == pytest.approx(_mann_whitney(clear, shifted), abs=1e-12)
    assert gate_check.auroc(np.full(5, 0.9), np.full(7, 0.9)) == 0.5  # a constant p separates nothing
    assert np.isnan(gate_check.auroc(clear, []))


def test_the_verdicts_name_the_detector_the_figure_and_what_to_try():
    good = {"auroc": 0.95, "median_p": 0.1}
    figures = {"optical": {"unknown_classes": good, "replaced": {"auroc": 0.42, "median_p": 0.9}},
               "sar": {"unknown_classes": {"auroc": 0.99, "median_p": 0.98}, "replaced": good}}
    lines = gate_check.judge("binary_head", figures)
    assert lines == [
        "warning: the optical gate (binary_head) on val vs its input replaced by N(0, 1) does not separate them: "
        "AUROC 0.42 < 0.7; try --set ood.detector=binary_head+mahalanobis_class",
        "warning: the sar gate (binary_head) on val vs unknown classes (ood_val) separates them (AUROC 0.99) without "
        "closing the gate: median p 0.98 > 0.5, so Eq. 3 barely moves; try --set ood.detector=binary_head+mahalanobis_class"]
    assert gate_check.judge("binary_head+mahalanobis_class", {"optical": {"replaced": {"auroc": float("nan"), "median_p": 1.0}}}
                            )[0].endswith("AUROC nan < 0.7; try --set ood.detector=binary_head+mahalanobis_normalized")
    assert gate_check.judge("knn", {"optical": {"replaced": good}, "sar": {"unknown_classes": good}}) == []


def _head_p(run, subset, replace=None, limit=gate_check.LIMIT):
    """p of the paper's heads on the branch outputs of ``subset`` computed here: {modality: [n]};
    ``replace``: that modality's normalised input replaced by NumPy N(0, 1) noise."""
    import keras
    import tensorflow as tf

    from tf_fusion import data as tfdata

    fusion, d = run.load_model(), run.config["data"]
    heads = {m: keras.saving.load_model(run.file(f), compile=False) for m, f in
             (("optical", "ood_opt.keras"), ("sar", "ood_sar.keras"))}
    rng = np.random.default_rng(7)
    out = {"optical": [], "sar": []}
    for x, _ in tfdata.make_dataset(run.manifest(), subset, batch_size=64, deterministic=True,
                                    image_size=d["image_size"], resize_method=d["resize_method"]).take(-(-limit // 64)):
        x = {k: np.asarray(v) for k, v in x.items()}
        if replace:
            key = {"optical": "s2", "sar": "s1"}[replace]
            x[key] = rng.standard_normal(x[key].shape).astype(np.float32)
        z = {"optical": fusion.encoder_opt(tf.constant(x["s2"]), training=False),
             "sar": fusion.encoder_sar(tf.constant(x["s1"]), training=False)}
        for m in out:
            out[m].append(np.asarray(heads[m](z[m], training=False)).reshape(-1))
    return {m: np.concatenate(v) for m, v in out.items()}


def test_the_smoke_runs_gate_figures_recomputed_from_its_heads(smoke_run, smoke_report, tmp_path):
    """evaluate wrote RUN/detectors/validation.json (and the same into results.json and a section
    of table.md); its figures are the binary heads' on the branch outputs, recomputed here; a
    rerun of the check on its own (as `python -m tf_fusion.ood` runs it) prints exactly its warnings."""
    from tf_fusion.runs import Run

    saved = json.loads((smoke_run / "detectors" / gate_check.FILE).read_text())
    assert json.loads((smoke_report / "results.json").read_text())["gate_check"] == saved
    assert saved["detector"] == "binary_head"
    run = Run(smoke_run)
    clear, unknown = _head_p(run, "val"), _head_p(run, "ood_val")
    for m in ("optical", "sar"):
        f = saved["figures"][m]["unknown_classes"]
        assert f["auroc"] == pytest.approx(_mann_whitney(clear[m], unknown[m]), abs=1e-4)
        assert f["median_p"] == pytest.approx(np.median(unknown[m]), abs=1e-4)
        assert f["median_p_val"] == pytest.approx(np.median(clear[m]), abs=1e-4)
        replaced = _head_p(run, "val", replace=m)[m]  # another N(0, 1) draw than the check's
        g = saved["figures"][m]["replaced"]
        assert g["auroc"] == pytest.approx(_mann_whitney(clear[m], replaced), abs=0.05)
        assert g["median_p"] == pytest.approx(np.median(replaced), abs=0.05)
    expected = [(m, s) for m, per in saved["figures"].items() for s, f in per.items()
                if f["auroc"] < 0.7 or f["median_p"] > 0.5]
    assert len(saved["warnings"]) == len(expected)
    for (m, s), line in zip(expected, saved["warnings"]):
        assert line.startswith(f"warning: the {m} gate (binary_head) on val vs {gate_check.SHIFTS[s]}")
    assert "## The gate on validation data (binary_head)" in (smoke_report / "table.md").read_text()

    copy = tmp_path / "run"
    shutil.copytree(smoke_run, copy)
    lines = []
    again = gate_check.check_run(Run(copy), log=lines.append)
    assert again == saved and [line for line in lines if line.startswith("warning")] == saved["warnings"]
