"""Is the gate blind? The chosen detector checked on validation data once it is fitted.

Eq. 3 moves only where p falls, and a detector can fail a modality in two ways: it does not
separate a shift from clear data (AUROC near 0.5, or below: inverted), or it separates it without
moving p (a calibration fitted on other shifts leaves p high). After the detectors are fitted
(`python -m tf_fusion.ood`, `evaluate`, the demo job) this check scores the run's gate
(`ood.detector`) per modality on `val` against two shifts of validation data:

- ``unknown_classes``: `ood_val`, the OOD-training classes;
- ``replaced``: `val` with that modality's normalised input replaced by N(0, 1), as the test
  scenario "corrupted" does;

and prints one warning line per modality and shift where the AUROC of a lower p is below
``MIN_AUROC`` or the median p of the shifted patches is above ``MAX_MEDIAN_P``, naming the
detector, the figure and what to try. The figures go to RUN/detectors/validation.json and the
evaluation report. The check only warns: nothing is ever chosen from it (the N(0, 1) replacement
is one of the evaluation's own shifts, so it must not feed a choice).
"""
from __future__ import annotations

import math
import os

import numpy as np

from . import gate
from .config import DEFAULTS
from .protocol import MODALITIES, OPTICAL, SAR, scenario_by_name

MIN_AUROC = 0.7  # below: the gate does not separate the shift
MAX_MEDIAN_P = 0.5  # above: it separates without closing the gate (Eq. 3 barely moves)
LIMIT = 5000  # patches read per subset (records are shuffled within a subset: a fair sample)
FILE = "validation.json"  # in RUN/detectors
SHIFTS = {"unknown_classes": "unknown classes (ood_val)", "replaced": "its input replaced by N(0, 1)"}
REPLACED = {OPTICAL: scenario_by_name("corrupted_optical"), SAR: scenario_by_name("corrupted_sar")}
# what to try instead: the default gate (README, "Which gate"), or for the default itself its
# member with the normalised features (Mahalanobis++), which also held in every world
DEFAULT_GATE = DEFAULTS["ood"]["detector"]
ALTERNATIVE = {DEFAULT_GATE: "binary_head+mahalanobis_normalized"}


def auroc(p_clear, p_shifted) -> float:
    """AUROC of a LOWER p flagging the shifted patches against the clear ones (0.5: chance;
    ties count half, so a constant p gives 0.5). NaN when either side is empty."""
    from sklearn.metrics import roc_auc_score

    p_clear, p_shifted = np.asarray(p_clear, np.float64), np.asarray(p_shifted, np.float64)
    if not len(p_clear) or not len(p_shifted):
        return float("nan")
    y = np.r_[np.zeros(len(p_clear)), np.ones(len(p_shifted))]
    return float(roc_auc_score(y, -np.r_[p_clear, p_shifted]))


def judge(detector: str, figures: dict) -> list[str]:
    """The warning lines for ``figures`` ({modality: {shift: {"auroc", "median_p"}}})."""
    lines = []
    other = ALTERNATIVE.get(detector, DEFAULT_GATE)
    for modality, shifts in figures.items():
        for shift, f in shifts.items():
            what = f"the {modality} gate ({detector}) on val vs {SHIFTS[shift]}"
            if not f["auroc"] >= MIN_AUROC:  # NaN included: nothing to separate it with
                lines.append(f"warning: {what} does not separate them: AUROC {f['auroc']:.2f} < {MIN_AUROC}; "
                             f"try --set ood.detector={other}")
            elif f["median_p"] > MAX_MEDIAN_P:
                lines.append(f"warning: {what} separates them (AUROC {f['auroc']:.2f}) without closing the gate: "
                             f"median p {f['median_p']:.2f} > {MAX_MEDIAN_P}, so Eq. 3 barely moves; try "
                             f"--set ood.detector={other}")
    return lines


def _p(predict, manifest, config: dict, subset: str, scenarios=()) -> dict:
    """{modality: p [n]} of the gate on at most ``LIMIT`` patches of ``subset`` (both modalities
    available; each of ``scenarios``' changes applied to the inputs first, each with its seed)."""
    from . import data as tfdata
    from .shifts import apply_scenario, gate_availability

    d, ev = config["data"], config["evaluation"]
    ds = tfdata.make_dataset(manifest, subset, batch_size=ev["batch_size"], deterministic=True,
                             image_size=d["image_size"], resize_method=d["resize_method"])
    parts = {m: [] for m in MODALITIES}
    with tfdata.shard_errors(manifest, [subset]):
        for i, (inputs, _) in enumerate(ds.take(math.ceil(LIMIT / ev["batch_size"]))):
            for k, scenario in enumerate(scenarios, 1):
                inputs = apply_scenario(inputs, scenario, seed=(ev["seed"], 10_000 * k + i))
            out = predict(gate_availability(inputs, 1.0, 1.0))
            for m, key in ((OPTICAL, "p_optical"), (SAR, "p_sar")):
                parts[m].append(np.asarray(out[key]).reshape(-1))
    return {m: np.concatenate(v) if v else np.zeros(0) for m, v in parts.items()}


def check(run, predict, manifest, log=print) -> dict:
    """Score the run's gate (``predict``: the adaptive graph with availability inputs, e.g.
    evaluate's traced one) on validation data, print a warning line per blind spot, write
    RUN/detectors/validation.json and return its content."""
    from . import atomic
    from .runs import DETECTORS

    config = run.config
    detector = gate.label(config["ood"]["detector"])
    if not manifest.subset_size("val"):
        log(f"{run.path}: no val patches; the gate is not checked")
        return {}
    # every detector reads its own modality only (its branch, its single-modality pass), so one
    # pass with both inputs replaced gives each modality's p under its own replacement
    clear = _p(predict, manifest, config, "val")
    shifted = {"unknown_classes": _p(predict, manifest, config, "ood_val") if manifest.subset_size("ood_val") else None,
               "replaced": _p(predict, manifest, config, "val", tuple(REPLACED[m] for m in MODALITIES))}
    figures = {m: {} for m in MODALITIES}
    for m in MODALITIES:
        for shift, values in shifted.items():
            if values is None:
                continue
            figures[m][shift] = {"auroc": auroc(clear[m], values[m]), "median_p": float(np.median(values[m])),
                                 "median_p_val": float(np.median(clear[m])), "n": int(len(values[m]))}
    warnings = judge(detector, figures)
    result = {"detector": detector, "min_auroc": MIN_AUROC, "max_median_p": MAX_MEDIAN_P,
              "n_val": int(len(clear[OPTICAL])), "figures": figures, "warnings": warnings}
    atomic.write_json(os.path.join(run.file(DETECTORS), FILE), result)
    for line in warnings:
        log(line)
    if not warnings:
        log(f"{run.path}: the gate ({detector}) separates unknown classes and N(0, 1) inputs from val in both "
            f"modalities and closes for them (validation.json)")
    return result


def render(result: dict) -> str:
    """The report's section: the figures per modality and shift, and the warnings."""
    if not result or not result.get("figures"):
        return ""
    lines = [f"## The gate on validation data ({result['detector']})", "",
             "AUROC of a lower p on the shifted patches against val, and the median p of each "
             f"(the check warns below AUROC {result['min_auroc']} or above median p {result['max_median_p']}).", "",
             "| modality | shift | AUROC | median p (shifted) | median p (val) |", "| --- | --- | --- | --- | --- |"]
    for m, shifts in result["figures"].items():
        for shift, f in shifts.items():
            lines.append(f"| {m} | {SHIFTS[shift]} | {f['auroc']:.3f} | {f['median_p']:.3f} | {f['median_p_val']:.3f} |")
    lines += [""] + [f"- {w[len('warning: '):]}" for w in result["warnings"]] + [""]
    return "\n".join(lines) + "\n"


def check_run(run, log=print) -> dict:
    """``check`` for a run on its own (`python -m tf_fusion.ood`): its gate fitted if it is a
    post-hoc detector that was not yet, the adaptive graph built around it."""
    import tensorflow as tf

    from . import detector_runs
    from .adaptive import BINARY_HEAD, build_adaptive_model

    fusion, manifest = run.load_model(), run.manifest()
    post_hoc = [n for n in gate.detectors(run.config["ood"]["detector"]) if n != BINARY_HEAD]
    fitted = detector_runs.fit_run(run, post_hoc, log, fusion, manifest) if post_hoc else {}
    adaptive = build_adaptive_model(fusion, *detector_runs.gate_layers(run, fitted), with_availability=True)
    predict = tf.function(lambda x: adaptive(x, training=False), reduce_retracing=True)
    return check(run, predict, manifest, log)
