"""`python -m tf_fusion.evaluate --run RUN --detectors all`: every OOD detector compared on every
scenario, from evaluation's single pass (`evaluate.predict_scenarios`). Writes, in RUN/report/:

- ``detectors.json``: ``{SCENARIO: {DETECTOR: {MODALITY: {"auroc", "aupr", "fpr95"}}}}`` for every
  scenario but clear: how well the detector's calibrated p separates the scenario's patches
  (positive) from the clear test patches, a lower p meaning shifted (`scores.separation`);
  MODALITY is ``optical`` or ``sar``. Two reserved keys beside the scenarios, over every scenario
  with in-distribution labels (clear included): ``"adaptive"``: ``{SCENARIO: {DETECTOR:
  {"f1_samples", "map_macro"}}}``, the adaptive method (Eq. 3) with that detector's p, and
  ``"non_adaptive"``: ``{SCENARIO: {"f1_samples", "map_macro"}}``, the same network at λ = (1, 1)
  (what a detector's gating gains or costs). Over several seeds (``--seeds``) every number
  becomes ``{"mean", "std"}`` (std with ddof = 1) and ``"n_seeds"`` is added.
- ``detector_scores.npz``: ``SCENARIO/DETECTOR/MODALITY``, the calibrated p [N] (float64, clear
  included) the figures above are computed from, and ``raw/SCENARIO/DETECTOR/MODALITY``, the raw
  score before calibration (higher = more in-distribution; the binary head's raw score is its p).
  Rows follow the scenario's subset in file order, as predictions.npz. First seed only.
- ``detectors.md``: the same as tables (rows scenarios, columns detectors, cells optical / SAR).
- ``detector_roc_SCENARIO.png``: ROC curves of every detector (optical and SAR) against clear.

p is each detector's own, before the availability flags: on the missing-modality scenarios it is
what the detector makes of the zero-filled input, while the adaptive method gives the missing
modality p = 0 (the authors' protocol), exactly as evaluation's adaptive column does.
"""
from __future__ import annotations

import json
import os

import numpy as np

from . import atomic, scores
from .passes import PASSES
from .protocol import MODALITIES, OPTICAL, REFERENCE, SAR, SCENARIOS, ordered, scenario_by_name, scenario_label

JSON, MARKDOWN, SCORES = "detectors.json", "detectors.md", "detector_scores.npz"
ADAPTIVE_KEY, NON_ADAPTIVE_KEY = "adaptive", "non_adaptive"  # reserved keys of detectors.json
FIT_METRICS = ("f1_samples", "map_macro")


def _fit_metrics(labels, p) -> dict:
    return {"f1_samples": scores.f1_samples(labels, p), "map_macro": scores.mean_average_precision(labels, p)["map_macro"]}


def compare(pred: dict, side: dict, names) -> dict:
    """detectors.json's content for one run, from `predict_scenarios`' (pred, side)."""
    from scipy.special import expit

    from .adaptive import expected_prediction

    per = side["scenarios"]
    clear = per[REFERENCE]
    out = {}
    for scenario, s in per.items():
        if scenario != REFERENCE:
            out[scenario] = {n: {m: scores.separation(-clear["p"][n][m], -s["p"][n][m]) for m in MODALITIES}
                             for n in names}
    out[ADAPTIVE_KEY], out[NON_ADAPTIVE_KEY] = {}, {}
    for scenario, s in per.items():
        info = scenario_by_name(scenario)
        if not info.has_labels:
            continue
        labels = pred[scenario]["labels"]
        passes = {p.name: expit(s["logits"][p.method]).astype(np.float32) for p in PASSES}
        available = {m: info.available(m) for m in MODALITIES}
        out[ADAPTIVE_KEY][scenario] = {
            n: _fit_metrics(labels, np.asarray(expected_prediction(s["p"][n][OPTICAL] * available[OPTICAL],
                                                                   s["p"][n][SAR] * available[SAR], passes)))
            for n in names}
        out[NON_ADAPTIVE_KEY][scenario] = _fit_metrics(labels, pred[scenario]["non_adaptive"])
    return out


def aggregate(per_seed: list) -> dict:
    """One run's comparison as is; several runs' as {"mean", "std"} (ddof = 1) per number, with
    "n_seeds" (a number missing or None in some runs is aggregated over those that have it)."""
    if len(per_seed) == 1:
        return per_seed[0]

    def merge(values):
        first = next((v for v in values if v is not None), None)
        if isinstance(first, dict):
            return {k: merge([v.get(k) if isinstance(v, dict) else None for v in values]) for k in first}
        numbers = np.asarray([v for v in values if v is not None], np.float64)
        if not numbers.size:
            return None
        return {"mean": float(numbers.mean()), "std": float(numbers.std(ddof=1)) if numbers.size > 1 else 0.0}

    return {**merge(per_seed), "n_seeds": len(per_seed)}


# ------------------------------------------------------------------------------------ markdown
def _number(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, dict):
        return f"{v['mean']:.3f}±{v['std']:.3f}"
    return f"{v:.3f}"


def _scenarios(comparison: dict) -> list[str]:
    keys = [k for k in comparison if k not in (ADAPTIVE_KEY, NON_ADAPTIVE_KEY, "n_seeds")]
    return ordered(keys, SCENARIOS)


def _table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join([":--"] + [":-:"] * (len(header) - 1)) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


LEGEND = """\
**How to read these tables.** Each detector gives, per modality, p = P(in-distribution): the
paper's binary heads (trained on the OOD-training classes with intensity augmentation) or a
post-hoc score calibrated on `val` (in) against `ood_val` (out), see `tf_fusion.detectors`.
Separation tables: the scenario's patches (positive) against the clear test patches, scored by
a lower p; cells are optical / SAR. AUROC 0.5 is chance; FPR@95 is the share of clear patches
flagged at the threshold that flags 95 % of the scenario's (lower is better). On the missing
scenarios p is the detector's own on the zero-filled input (the adaptive method itself gives a
missing modality p = 0). Adaptive table: Eq. 3 with each detector's p (F1 samples at 0.5 /
macro mAP), beside the non-adaptive prediction λ = (1, 1); on clear, adaptive below non-adaptive
is what the detector's false alarms cost.
"""


def render(comparison: dict, names, title: str = "") -> str:
    """detectors.md: AUROC, AUPR and FPR@95 tables, then the adaptive method's F1 and mAP."""
    seeds = comparison.get("n_seeds")
    lines = [f"# OOD detectors{': ' + title if title else ''}"
             + (f" (mean ± std over {seeds} seeds)" if seeds else ""), ""]
    for metric, label in (("auroc", "AUROC (optical / SAR)"), ("aupr", "AUPR (optical / SAR)"),
                          ("fpr95", "FPR@95 (optical / SAR)")):
        rows = []
        for s in _scenarios(comparison):
            cell = lambda n: " / ".join(_number(comparison[s][n][m][metric]) for m in MODALITIES)  # noqa: E731
            rows.append([scenario_label(s), *(cell(n) for n in names)])
        lines += [f"## {label}, against clear", "", *_table(["Scenario", *names], rows), ""]
    rows = []
    for s in ordered(comparison[ADAPTIVE_KEY], SCENARIOS):
        cell = lambda d: " / ".join(_number(d[k]) for k in FIT_METRICS)  # noqa: E731
        rows.append([scenario_label(s), cell(comparison[NON_ADAPTIVE_KEY][s]),
                     *(cell(comparison[ADAPTIVE_KEY][s][n]) for n in names)])
    lines += ["## Adaptive fusion with each detector: F1 (samples) / mAP (macro)", "",
              *_table(["Scenario", "non-adaptive", *names], rows), "", LEGEND]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ files
def score_arrays(side: dict) -> dict:
    """detector_scores.npz's arrays: SCENARIO/DETECTOR/MODALITY and raw/SCENARIO/DETECTOR/MODALITY."""
    out = {}
    for scenario, s in side["scenarios"].items():
        for kind, prefix in (("p", ""), ("raw", "raw/")):
            for name, per in s[kind].items():
                for m, values in per.items():
                    out[f"{prefix}{scenario}/{name}/{m}"] = np.asarray(values, np.float64)
    return out


def write(out_dir: str, comparison: dict, side: dict, names, title: str = "", runs=()) -> list[str]:
    """Write detectors.json, detectors.md, detector_scores.npz (``side``: the first seed's) and
    the ROC plots into ``out_dir``; returns the paths."""
    from .plots import plot_detector_roc

    os.makedirs(out_dir, exist_ok=True)
    written = [os.path.join(out_dir, name) for name in (JSON, MARKDOWN, SCORES)]
    atomic.write_text(written[0], json.dumps(comparison, indent=1) + "\n")
    atomic.write_text(written[1], render(comparison, names, title)
                      + (f"\nRuns: {', '.join(runs)}\n" if len(runs) > 1 else ""))
    arrays = score_arrays(side)
    atomic.write_with(written[2], lambda tmp: np.savez_compressed(tmp, **arrays), suffix=".npz")
    clear = side["scenarios"][REFERENCE]["p"]
    for scenario, s in side["scenarios"].items():
        if scenario == REFERENCE:
            continue
        curves = {}
        for n in names:
            curves[n] = {}
            for m in MODALITIES:
                labels = np.r_[np.ones(len(clear[n][m])), np.zeros(len(s["p"][n][m]))]
                curves[n][m] = (labels, np.r_[clear[n][m], s["p"][n][m]])
        written.append(plot_detector_roc(curves, os.path.join(out_dir, f"detector_roc_{scenario}.png"),
                                         title=f"{scenario_label(scenario)} against clear"))
    return written
