"""Result tables (markdown) from an evaluation's ``results.json``; the plots are in `plots`.

``results`` is ``{"methods": {METHOD: {SCENARIO: {METRIC: value}}}}`` where a value is a float
(one run) or ``{"mean": m, "std": s}`` (aggregated over seeds, see
:func:`tf_fusion.scores.aggregate_seeds`, which also sets ``"n_seeds"``). Any subset of methods,
scenarios and metrics may be present; absent ones render as "–". Methods and scenarios are named
and ordered as in `tf_fusion.protocol`.

Usage from the shell: ``python -m tf_fusion.report RESULTS_JSON [OUT_DIR]`` writes table.md.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Mapping

import numpy as np

from . import paper_figures as pf
from .gate_check import render as render_gate
from .methods import BASELINE_BY_NAME
from .passes import FUSED
from .protocol import (ADAPTIVE, ADAPTIVE_PAPER, BASELINES, METHODS, OPTICAL, SCENARIOS, method_label, ordered,
                       scenario_label)

METRICS = ("f1_samples", "f1_micro", "f1_macro", "f2_samples", "f2_micro", "f2_macro", "map_macro", "map_micro",
           "avg_entropy", "avg_confidence", "ece", "ece_scaled", "auroc_confidence", "auroc_entropy",
           "aupr_confidence", "aupr_entropy", "fpr95_confidence", "fpr95_entropy",
           "ood_auroc_optical", "ood_auroc_sar", "ood_aupr_optical", "ood_aupr_sar", "ood_fpr95_optical", "ood_fpr95_sar")
SEPARATION = ("auroc_confidence", "auroc_entropy", "aupr_confidence", "aupr_entropy", "fpr95_confidence",
              "fpr95_entropy")  # the extension's Table 3
STAGE_METRICS = ("f1_micro", "f1_macro", "f1_samples", "f2_micro", "f2_macro", "f2_samples", "map_macro",
                 "map_micro")  # the extension's Table 1
METRIC_LABELS = {
    "f1_samples": "F1 (samples)¹",
    "f1_micro": "F1 (micro)",
    "f1_macro": "F1 (macro)",
    "f2_samples": "F2 (samples)¹",
    "f2_micro": "F2 (micro)",
    "f2_macro": "F2 (macro)",
    "map_macro": "mAP (macro)",
    "map_micro": "mAP (micro)",
    "avg_entropy": "Avg. entropy [bit]",
    "avg_confidence": "Avg. confidence",
    "ece": "ECE",
    "ece_scaled": "ECE, temperature-scaled³",
    "auroc_confidence": "AUROC vs clear (conf.)",
    "auroc_entropy": "AUROC vs clear (entropy)",
    "aupr_confidence": "AUPR vs clear (conf.)²",
    "aupr_entropy": "AUPR vs clear (entropy)",
    "fpr95_confidence": "FPR@95 vs clear (conf.)",
    "fpr95_entropy": "FPR@95 vs clear (entropy)",
    "ood_auroc_optical": "OOD detector AUROC (optical)",
    "ood_auroc_sar": "OOD detector AUROC (SAR)",
    "ood_aupr_optical": "OOD detector AUPR (optical)",
    "ood_aupr_sar": "OOD detector AUPR (SAR)",
    "ood_fpr95_optical": "OOD detector FPR@95 (optical)",
    "ood_fpr95_sar": "OOD detector FPR@95 (SAR)",
}
# The paper's Table 1 F-scores (averaging unspecified) are shown beside our samples averaging.
PAPER_METRIC = {"f1_samples": "f1", "f2_samples": "f2", "avg_entropy": "avg_entropy",
                "avg_confidence": "avg_confidence"}
DASH = "–"

LEGEND = """\
**How to read this table.** Rows are grouped by test scenario, columns are methods. Each cell is
our value{ours_kind}; bracketed figures are the published ones for the same method, scenario and
metric where they exist:

* `(0.779)` — the paper's Table 1 (Gawlikowski et al., IGARSS 2022; one run; F-scores printed
  there in % and shown here as fractions).
* `[0.77±0.00]` — the authors' extension, supplement Table 2 (F-scores, entropy, calibration
  error) or Table 3 (separation from the clear test set): mean ± std over five runs, two
  decimals; ResNet50, the gated methods fusing after stage 4. Shown where we measure the same
  way: the authors' protocol (a missing modality: closed gate for the gated methods, zeros for
  early and late fusion, selection probability 0 for EmbraceNet; a corrupted one: replaced by
  N(0, 1) noise); nothing beside the scenarios beyond it (additive noise, region shift).
* "{dash}" — not measured / not applicable (e.g. no F-scores on OOD classes, single-modality
  models on data without their modality).

Threshold 0.5 for the F-scores. Entropy is the binary entropy of each class's Bernoulli
prediction in **bits** (0 … 1), averaged over classes and samples; confidence is max(p, 1 − p)
averaged likewise. ECE: expected calibration error of the per-class probabilities (15 equal-width
bins). AUROC/AUPR "vs clear": the scenario's samples (positive) against the clear test samples,
scored by lower average confidence or higher average entropy; FPR@95: the share of clear samples
flagged at the threshold that flags 95 % of the scenario's. mAP: average precision of the class
rankings, macro (mean over the classes with a positive) and micro (all cells). OOD detector
AUROC/AUPR/FPR@95: the optical / SAR in-distribution probability on its own.

¹ The paper does not say how its "F1 Score" / "F2 Score" are averaged; they are shown beside our
samples-averaged scores, which is an assumption.
² In the extension's Table 3 the AUPR by confidence stays near 0.6 even where the AUROC is 0.99
(missing optical, late fusion), so its orientation there may differ from ours (lower confidence
= shifted = positive).
³ With `evaluation.temperature_scaling`: the ECE of the same method when the fusion classifier's
logits are divided by one temperature T fitted on `val` (minimum binary cross-entropy; T is in
results.json).
"""


def _is_num(v) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool))


def _ours(results: Mapping, method: str, scenario: str, metric: str):
    """Our value: a float, a (mean, std) tuple, or None."""
    v = results.get("methods", {}).get(method, {}).get(scenario, {}).get(metric)
    if isinstance(v, Mapping):
        if "mean" not in v or not _is_num(v["mean"]):
            return None
        std = v.get("std")
        return (float(v["mean"]), float(std) if _is_num(std) else float("nan"))
    if _is_num(v):
        return float(v)
    return None


def _fmt_ours(v) -> str:
    if v is None:
        return DASH
    if isinstance(v, tuple):
        m, s = v
        if math.isnan(m):
            return "n/a"
        return f"{m:.3f}±{s:.3f}" if not math.isnan(s) else f"{m:.3f}"
    return "n/a" if math.isnan(v) else f"{v:.3f}"


def _fmt_paper(v: float) -> str:
    """At the paper's precision: 3 decimals, a 4th where it carries a digit (F-scores were
    printed in % with 2 decimals: 76.86 → 0.7686, 77.90 → 0.779)."""
    s = f"{v:.4f}"
    return s[:-1] if s.endswith("0") else s


def _paper_ref(scenario: str, metric: str, method: str):
    key = PAPER_METRIC.get(metric)
    return None if key is None else pf.paper_figure(scenario, key, method)


def _cell(results, method, scenario, metric) -> str:
    parts = [_fmt_ours(_ours(results, method, scenario, metric))]
    paper = _paper_ref(scenario, metric, method)
    if paper is not None:
        parts.append(f"({_fmt_paper(paper)})")
    ext = pf.extension_figure(scenario, metric, method)
    if ext is not None:
        parts.append(f"[{ext[0]:.2f}±{ext[1]:.2f}]")
    return " ".join(parts)


def _has_any(results, methods, scenario, metric) -> tuple[bool, bool]:
    """(ours present for any method, a published figure present for any method)."""
    ours = any(_ours(results, m, scenario, metric) is not None for m in methods)
    ref = any(_paper_ref(scenario, metric, m) is not None
              or pf.extension_figure(scenario, metric, m) is not None for m in methods)
    return ours, ref


PAPER_COLUMNS = tuple(pf.PAPER_METHODS)  # always shown, as in the paper's Table 1


def table_methods(results: Mapping) -> list[str]:
    """The columns: the paper's Table 1 methods always, any other method found in ``results``,
    in the order of `protocol.METHODS` (unknown ones last)."""
    present = list(results.get("methods", {}))
    return ordered(list(PAPER_COLUMNS) + [m for m in present if m not in PAPER_COLUMNS], METHODS)


def render_table(results: Mapping, all_scenarios: bool = False, metrics=None, columns=None) -> str:
    """Markdown table in the layout of the paper's Table 1 (see the module docstring).

    Scenario blocks come in ``SCENARIOS`` order (then any others found in ``results``); a block is
    shown when ``results`` has a value for it (or always, with ``all_scenarios``). Inside a block
    a metric row is shown when we or the publications have a value for it. ``metrics``: only
    these rows (default: all); ``columns``: these "methods" of ``results`` (default: the paper's
    methods and any other found, in the comparison's order) — e.g. fusion stages ``stage_1`` ….
    """
    methods = list(columns) if columns is not None else table_methods(results)
    found = {s for per in results.get("methods", {}).values() for s, d in per.items() if d}
    known = [s.name for s in SCENARIOS]
    scen = [s for s in known if all_scenarios or s in found] + sorted(s for s in found if s not in known)
    header = ["Scenario", "Metric"] + [column_label(m) for m in methods]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":--", ":--"] + [":-:"] * len(methods)) + "|"]
    seen_metrics = {mt for per in results.get("methods", {}).values()
                    for d in per.values() for mt in d}
    if metrics is None:
        metrics = list(METRICS) + sorted(mt for mt in seen_metrics if mt not in METRICS)
    for s in scen:
        first = True
        for mt in metrics:
            ours, ref = _has_any(results, methods, s, mt)
            if not (ours or ref):
                continue
            label = f"**{scenario_label(s)}**" if first else ""
            first = False
            row = [label, METRIC_LABELS.get(mt, mt)] + [_cell(results, m, s, mt) for m in methods]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def column_label(name: str) -> str:
    """A method's label, or "Fusion stage k" for the stage columns of the extension's Table 1."""
    if name.startswith("stage_") and name[6:].isdigit():
        return f"Fusion stage {name[6:]}"
    return method_label(name)


def _legend(results: Mapping) -> str:
    n = results.get("n_seeds")
    aggregated = any(isinstance(v, Mapping) for per in results.get("methods", {}).values()
                     for d in per.values() for v in d.values())
    if aggregated:
        kind = f" as mean ± std (ddof = 1) over {n} runs" if n else " as mean ± std over runs"
    else:
        kind = " (one run)"
    present = [b for b in BASELINES if b in results.get("methods", {})]
    treatment = "".join(f"\n* {BASELINE_BY_NAME[b].label}: a missing modality — {BASELINE_BY_NAME[b].missing}; a "
                        f"corrupted one — {BASELINE_BY_NAME[b].corrupted}." for b in present)
    return LEGEND.format(ours_kind=kind, dash=DASH) + (f"\nThe baselines under the protocol (`tf_fusion.methods`):\n"
                                                       f"{treatment}\n" if present else "")


def _mean(results, method, scenario, metric):
    v = _ours(results, method, scenario, metric)
    return v[0] if isinstance(v, tuple) else v


def _finding(claim: str, values, holds) -> tuple[str, bool | None]:
    """(claim, None) when a value is missing, else (claim with our figures, whether it holds)."""
    if any(v is None for v in values):
        return claim, None
    return holds()


def paper_findings(results: Mapping, adaptive: str = ADAPTIVE) -> list[tuple[str, bool | None]]:
    """The seed paper's and its extension's qualitative findings, checked on these results:
    ``[(claim with our figures, True / False / None when a value is missing)]``. ``adaptive``:
    the method checked as the adaptive one (the run's gate, or `adaptive_paper_heads`)."""
    m = lambda method, scenario, metric: _mean(results, method, scenario, metric)  # noqa: E731
    out = []
    ad, na, opt = (m(k, "very_cloudy", "f1_samples") for k in (adaptive, "non_adaptive", "optical_only"))
    out.append(_finding("very cloudy: adaptive F1 (samples) >= non-adaptive + 0.05 and above optical-only", (ad, na, opt),
                        lambda: (f"very cloudy: adaptive F1 (samples) {ad:.3f} >= non-adaptive {na:.3f} + 0.05 and above "
                                 f"optical-only {opt:.3f}", ad >= na + 0.05 and ad > opt)))
    rises = {k: (m(k, "ood_classes", "avg_entropy"), m(k, "clear", "avg_entropy")) for k in table_methods(results)}
    rises = {k: a - b for k, (a, b) in rises.items() if a is not None and b is not None}
    others = {k: v for k, v in rises.items() if k not in (ADAPTIVE, ADAPTIVE_PAPER)}
    top = max(others, key=others.get) if others else None
    out.append(_finding("OOD classes: the adaptive entropy rises over clear more than any other method's",
                        (rises.get(adaptive), top),
                        lambda: (f"OOD classes: the adaptive entropy rises over clear by {rises[adaptive]:.3f}, more than "
                                 f"any other method's (largest: {top} {others[top]:.3f})", rises[adaptive] > others[top])))
    ad, na = m(adaptive, "clear", "f1_samples"), m("non_adaptive", "clear", "f1_samples")
    out.append(_finding("clear: adaptive F1 (samples) within 0.03 of non-adaptive", (ad, na),
                        lambda: (f"clear: adaptive F1 (samples) {ad:.3f} within 0.03 of non-adaptive {na:.3f}",
                                 abs(ad - na) <= 0.03)))
    # the extension's findings, where its baselines were evaluated
    rivals = [c.name for c in METHODS if c.name in (*BASELINES, FUSED.method) or c.modality == OPTICAL]
    base = {k: m(k, "very_cloudy", "f1_samples") for k in rivals}
    base = {k: v for k, v in base.items() if v is not None}
    ad = m(adaptive, "very_cloudy", "f1_samples")
    best = max(base, key=base.get) if base else None
    out.append(_finding("extension, very cloudy: adaptive F1 (samples) above every baseline", (ad, best),
                        lambda: (f"extension, very cloudy: adaptive F1 (samples) {ad:.3f} above every baseline "
                                 f"(best: {best} {base[best]:.3f})", ad > base[best])))
    sar, na, ad, early = (m(k, "missing_optical", "f1_samples") for k in ("sar_only", "non_adaptive", adaptive,
                                                                          "early_fusion"))
    out.append(_finding("extension, missing optical: the gated methods within 0.03 of SAR-only and 0.1 above early fusion",
                        (sar, na, ad, early),
                        lambda: (f"extension, missing optical: non-adaptive {na:.3f} and adaptive {ad:.3f} within 0.03 of "
                                 f"SAR-only {sar:.3f} and 0.1 above early fusion {early:.3f}",
                                 max(abs(na - sar), abs(ad - sar)) <= 0.03 and min(na, ad) >= early + 0.1)))
    ad, na = m(adaptive, "corrupted_optical", "f1_samples"), m("non_adaptive", "corrupted_optical", "f1_samples")
    out.append(_finding("extension, corrupted optical: adaptive F1 (samples) above non-adaptive", (ad, na),
                        lambda: (f"extension, corrupted optical: adaptive F1 (samples) {ad:.3f} above non-adaptive "
                                 f"{na:.3f}", ad > na)))
    # beyond the publications: does each method's uncertainty rise under region shift?
    shift = {k: (m(k, "region_shift", "avg_entropy"), m(k, "clear", "avg_entropy")) for k in table_methods(results)}
    shift = {k: a - b for k, (a, b) in shift.items() if a is not None and b is not None}
    if shift:
        rises = ", ".join(f"{k} {v:+.3f}" for k, v in shift.items())
        out.append(_finding("region shift: the adaptive entropy rises over clear", (shift.get(adaptive),),
                            lambda: (f"region shift: the adaptive entropy rises over clear ({rises})", shift[adaptive] > 0)))
    return out


def render_findings(results: Mapping) -> str:
    """The findings checked for the run's gate; and again for the paper's heads alone where the
    evaluation shows them beside it (`adaptive_paper_heads`): the default first."""
    marks = {True: "yes", False: "NO", None: "n/a"}
    lines = ["The paper's and the extension's qualitative findings on these results:", ""]
    both = ADAPTIVE_PAPER in results.get("methods", {})
    for method, title in ((ADAPTIVE, f"adaptive with the gate {results.get('detector', '')}"),
                          (ADAPTIVE_PAPER, "adaptive with the paper's heads alone"))[: 2 if both else 1]:
        if both:
            lines += [f"{title}:", ""]
        lines += [f"- [{marks[ok]}] {claim}" for claim, ok in paper_findings(results, method)]
        if both:
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def render_markdown(results: Mapping, title: str = "Results") -> str:
    """The complete ``table.md``: title, table, the paper's findings checked, the gate's check on
    validation data (`tf_fusion.gate_check`) and the legend."""
    gate = render_gate(results.get("gate_check"))
    return (f"# {title}\n\n{render_table(results)}\n{render_findings(results)}\n" + (f"{gate}\n" if gate else "")
            + _legend(results))


def write_table(results: Mapping, out_dir: str, title: str = "Results") -> str:
    """``out_dir/table.md`` (written atomically); returns its path."""
    from .atomic import write_text

    path = os.path.join(out_dir, "table.md")
    write_text(path, render_markdown(results, title))
    return path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m tf_fusion.report RESULTS_JSON [OUT_DIR]")
        return 0 if argv else 2
    with open(argv[0], encoding="utf-8") as f:
        results = json.load(f)
    out_dir = argv[1] if len(argv) > 1 else os.path.dirname(os.path.abspath(argv[0]))
    print(write_table(results, out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
