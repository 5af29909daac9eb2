"""Result tables (markdown) and plots (PNG) from an evaluation's ``results.json``.

``results`` is ``{"methods": {METHOD: {SCENARIO: {METRIC: value}}}}`` where a value is a float
(one run) or ``{"mean": m, "std": s}`` (aggregated over seeds, see
:func:`tf_fusion.scores.aggregate_seeds`, which also sets ``"n_seeds"``). Any subset of methods,
scenarios and metrics may be present; absent ones render as "–".

``arrays`` (optional, for the plots) is a plain dict; every key is optional:

* ``"entropy"``: ``{METHOD: {SCENARIO: 1-D array}}`` — per-sample average entropy in bits
  (:func:`tf_fusion.scores.entropy_bits`) → ``entropy_histograms.png``.
* ``"reliability"``: ``{METHOD: (y_true [N, C], p [N, C])}`` on the clear test set →
  ``reliability.png``.
* ``"ood_roc"``: ``{"optical": (labels, scores), "sar": (labels, scores)}`` for the OOD detectors,
  ``labels`` 1 = in-distribution, 0 = OOD, ``scores`` the detector's in-distribution probability
  → ``ood_roc.png``.

Usage from the shell: ``python -m tf_fusion.report RESULTS_JSON [OUT_DIR]`` (table only).
No pyplot: figures are drawn on ``matplotlib.figure.Figure`` (Agg), so nothing global changes and
no display is needed.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Mapping

import numpy as np

from tf_fusion import paper_figures as pf
from tf_fusion import scores

SCENARIOS = ("clear", "ood_classes", "cloudy", "very_cloudy", "snow", "missing_sar",
             "missing_optical", "corrupted_optical", "corrupted_sar")
SCENARIO_LABELS = {
    "clear": "Clear",
    "ood_classes": "OOD classes (clear)",
    "cloudy": "Clouds and shadows",
    "very_cloudy": "Cloudy, hand-picked",
    "snow": "Snow and ice",
    "missing_sar": "Missing SAR",
    "missing_optical": "Missing optical",
    "corrupted_optical": "Optical corrupted",
    "corrupted_sar": "SAR corrupted",
}
METHODS = ("baseline", "non_adaptive", "adaptive", "optical_only", "sar_only")
# Extension baselines: a column only when the results contain them.
EXTRA_METHODS = ("baseline_early", "embracenet")
METHOD_LABELS = {
    "baseline": "Baseline Fusion",
    "baseline_early": "Baseline Fusion (early)",
    "embracenet": "EmbraceNet",
    "non_adaptive": "Non-Adaptive Fusion",
    "adaptive": "Adaptive Fusion",
    "optical_only": "Optical Only",
    "sar_only": "SAR Only",
}
METRICS = ("f1_samples", "f1_micro", "f1_macro", "f2_samples", "f2_micro", "f2_macro",
           "avg_entropy", "avg_confidence", "ece", "auroc_confidence", "auroc_entropy",
           "aupr_confidence", "aupr_entropy", "ood_auroc_optical", "ood_auroc_sar")
METRIC_LABELS = {
    "f1_samples": "F1 (samples)¹",
    "f1_micro": "F1 (micro)",
    "f1_macro": "F1 (macro)",
    "f2_samples": "F2 (samples)¹",
    "f2_micro": "F2 (micro)",
    "f2_macro": "F2 (macro)",
    "avg_entropy": "Avg. entropy [bit]",
    "avg_confidence": "Avg. confidence",
    "ece": "ECE",
    "auroc_confidence": "AUROC vs clear (conf.)",
    "auroc_entropy": "AUROC vs clear (entropy)",
    "aupr_confidence": "AUPR vs clear (conf.)²",
    "aupr_entropy": "AUPR vs clear (entropy)",
    "ood_auroc_optical": "OOD detector AUROC (optical)",
    "ood_auroc_sar": "OOD detector AUROC (SAR)",
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
  decimals. Its "Baseline Fusion (late)" is our Baseline Fusion; fusion after ResNet stage 4.
* "{dash}" — not measured / not applicable (e.g. no F-scores on OOD classes, single-modality
  models on data without their modality).

Threshold 0.5 for the F-scores. Entropy is the binary entropy of each class's Bernoulli
prediction in **bits** (0 … 1), averaged over classes and samples; confidence is max(p, 1 − p)
averaged likewise. ECE: expected calibration error of the per-class probabilities (15 equal-width
bins). AUROC/AUPR "vs clear": the scenario's samples (positive) against the clear test samples,
scored by lower average confidence or higher average entropy. OOD detector AUROC: the optical /
SAR in-distribution head on its own.

¹ The paper does not say how its "F1 Score" / "F2 Score" are averaged; they are shown beside our
samples-averaged scores, which is an assumption.
² In the extension's Table 3 the AUPR by confidence stays near 0.6 even where the AUROC is 0.99
(missing optical, late fusion), so its orientation there may differ from ours (lower confidence
= shifted = positive).
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


def table_methods(results: Mapping) -> list[str]:
    """The columns: the five of the paper's Table 1 always, the extension baselines if present,
    then any other method found in ``results`` (in their own order)."""
    present = list(results.get("methods", {}))
    cols = list(METHODS) + [m for m in EXTRA_METHODS if m in present]
    return cols + [m for m in present if m not in cols]


def render_table(results: Mapping, all_scenarios: bool = False) -> str:
    """Markdown table in the layout of the paper's Table 1 (see the module docstring).

    Scenario blocks come in ``SCENARIOS`` order (then any others found in ``results``); a block is
    shown when ``results`` has a value for it (or always, with ``all_scenarios``). Inside a block
    a metric row is shown when we or the publications have a value for it.
    """
    methods = table_methods(results)
    found = {s for per in results.get("methods", {}).values() for s, d in per.items() if d}
    scen = [s for s in SCENARIOS if all_scenarios or s in found]
    scen += sorted(s for s in found if s not in SCENARIOS)
    header = ["Scenario", "Metric"] + [METHOD_LABELS.get(m, m) for m in methods]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":--", ":--"] + [":-:"] * len(methods)) + "|"]
    seen_metrics = {mt for per in results.get("methods", {}).values()
                    for d in per.values() for mt in d}
    metrics = list(METRICS) + sorted(mt for mt in seen_metrics if mt not in METRICS)
    for s in scen:
        first = True
        for mt in metrics:
            ours, ref = _has_any(results, methods, s, mt)
            if not (ours or ref):
                continue
            label = f"**{SCENARIO_LABELS.get(s, s)}**" if first else ""
            first = False
            row = [label, METRIC_LABELS.get(mt, mt)] + [_cell(results, m, s, mt) for m in methods]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _legend(results: Mapping) -> str:
    n = results.get("n_seeds")
    aggregated = any(isinstance(v, Mapping) for per in results.get("methods", {}).values()
                     for d in per.values() for v in d.values())
    if aggregated:
        kind = f" as mean ± std (ddof = 1) over {n} runs" if n else " as mean ± std over runs"
    else:
        kind = " (one run)"
    return LEGEND.format(ours_kind=kind, dash=DASH)


def _mean(results, method, scenario, metric):
    v = _ours(results, method, scenario, metric)
    return v[0] if isinstance(v, tuple) else v


def paper_findings(results: Mapping) -> list[tuple[str, bool | None]]:
    """The seed paper's qualitative findings, checked on these results: ``[(claim with our
    figures, True / False / None when a value is missing)]``."""
    m = lambda method, scenario, metric: _mean(results, method, scenario, metric)  # noqa: E731
    out = []
    ad, na, opt = (m(k, "very_cloudy", "f1_samples") for k in ("adaptive", "non_adaptive", "optical_only"))
    if None in (ad, na, opt):
        out.append(("very cloudy: adaptive F1 (samples) >= non-adaptive + 0.05 and above optical-only", None))
    else:
        out.append((f"very cloudy: adaptive F1 (samples) {ad:.3f} >= non-adaptive {na:.3f} + 0.05 and above "
                    f"optical-only {opt:.3f}", ad >= na + 0.05 and ad > opt))
    rises = {k: (m(k, "ood_classes", "avg_entropy"), m(k, "clear", "avg_entropy")) for k in table_methods(results)}
    rises = {k: a - b for k, (a, b) in rises.items() if a is not None and b is not None}
    if "adaptive" not in rises or len(rises) < 2:
        out.append(("OOD classes: the adaptive entropy rises over clear more than any other method's", None))
    else:
        others = {k: v for k, v in rises.items() if k != "adaptive"}
        top = max(others, key=others.get)
        out.append((f"OOD classes: the adaptive entropy rises over clear by {rises['adaptive']:.3f}, more than any "
                    f"other method's (largest: {top} {others[top]:.3f})", rises["adaptive"] > others[top]))
    ad, na = m("adaptive", "clear", "f1_samples"), m("non_adaptive", "clear", "f1_samples")
    if None in (ad, na):
        out.append(("clear: adaptive F1 (samples) within 0.03 of non-adaptive", None))
    else:
        out.append((f"clear: adaptive F1 (samples) {ad:.3f} within 0.03 of non-adaptive {na:.3f}", abs(ad - na) <= 0.03))
    return out


def render_findings(results: Mapping) -> str:
    marks = {True: "yes", False: "NO", None: "n/a"}
    lines = ["The paper's qualitative findings on these results:", ""]
    lines += [f"- [{marks[ok]}] {claim}" for claim, ok in paper_findings(results)]
    return "\n".join(lines) + "\n"


def render_markdown(results: Mapping, title: str = "Results") -> str:
    """The complete ``table.md``: title, table, the paper's findings checked, and the legend."""
    return f"# {title}\n\n{render_table(results)}\n{render_findings(results)}\n{_legend(results)}"


# ----------------------------------------------------------------------------------------- plots

def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig, path: str) -> str:
    fig.savefig(path, format="png")
    return path


def plot_entropy_histograms(entropy: Mapping, path: str, bins: int = 25) -> str:
    """Grid of histograms: rows scenarios, columns methods, per-sample average entropy in bits."""
    methods = [m for m in (list(METHODS) + list(EXTRA_METHODS)) if m in entropy]
    methods += [m for m in entropy if m not in methods]
    found = {s for per in entropy.values() for s in per}
    scen = [s for s in SCENARIOS if s in found] + sorted(found - set(SCENARIOS))
    nr, nc = max(len(scen), 1), max(len(methods), 1)
    fig = _figure(2.3 * nc + 0.6, 1.55 * nr + 0.7)
    axes = np.atleast_2d(fig.subplots(nr, nc, sharex=True, sharey=True, squeeze=False))
    edges = np.linspace(0.0, 1.0, bins + 1)
    top = 0.0
    for i, s in enumerate(scen):
        for j, m in enumerate(methods):
            ax = axes[i, j]
            vals = entropy.get(m, {}).get(s)
            vals = None if vals is None else np.asarray(vals, dtype=np.float64).ravel()
            if vals is None or vals.size == 0:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes,
                        color="0.5", fontsize=8)
            else:
                heights, _, _ = ax.hist(np.clip(vals, 0, 1), bins=edges,
                                        weights=np.full(vals.size, 1 / vals.size),
                                        color="C0", alpha=0.85)
                top = max(top, float(np.max(heights)))
                ax.axvline(vals.mean(), color="C3", lw=1)
                right = vals.mean() < 0.5   # the note goes where the mass is not
                ax.text(0.97 if right else 0.03, 0.95, f"mean {vals.mean():.3f}\nn={vals.size}",
                        ha="right" if right else "left", va="top", transform=ax.transAxes,
                        fontsize=7, zorder=5,
                        bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.8))
            ax.set_xlim(0, 1)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(METHOD_LABELS.get(m, m), fontsize=9)
            if j == 0:
                ax.set_ylabel(SCENARIO_LABELS.get(s, s), fontsize=8)
            if i == nr - 1:
                ax.set_xlabel("avg. entropy [bit]", fontsize=8)
    axes[0, 0].set_ylim(0, 1.35 * top if top > 0 else 1.0)   # shared: room for the notes
    fig.suptitle("Per-sample average entropy (fraction of samples per bin)", fontsize=10)
    return _save(fig, path)


def plot_reliability(reliability: Mapping, path: str, n_bins: int = 15) -> str:
    """Reliability diagram per method (clear test set): observed frequency vs mean predicted
    probability of the per-class predictions, with the cell count per bin (log scale) behind."""
    methods = [m for m in (list(METHODS) + list(EXTRA_METHODS)) if m in reliability]
    methods += [m for m in reliability if m not in methods]
    n = max(len(methods), 1)
    nc = min(n, 3)
    nr = int(math.ceil(n / nc))
    fig = _figure(3.2 * nc, 3.1 * nr)
    axes = fig.subplots(nr, nc, squeeze=False)
    for k, m in enumerate(methods):
        ax = axes[k // nc, k % nc]
        y, p = reliability[m]
        from matplotlib.ticker import NullFormatter

        centers, mean_p, freq, counts = scores.reliability_curve(y, p, n_bins)
        ece = scores.expected_calibration_error(y, p, n_bins)
        ax2 = ax.twinx()
        ax2.bar(centers, np.maximum(counts, 0), width=1.0 / n_bins, color="0.85", zorder=0)
        if counts.max() > 0:
            ax2.set_yscale("log")
            ax2.set_ylim(0.8, counts.max() * 1.5)
        ax2.set_ylabel("cells per bin (log)", fontsize=7, color="0.45")
        ax2.tick_params(which="both", labelsize=6, colors="0.45")
        ax2.yaxis.set_minor_formatter(NullFormatter())
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot([0, 1], [0, 1], "--", color="0.4", lw=1, label="perfect calibration")
        ok = counts > 0
        ax.plot(mean_p[ok], freq[ok], "o-", color="C0", ms=3.5, lw=1.4, label="observed")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{METHOD_LABELS.get(m, m)}  (ECE {ece:.3f})", fontsize=9)
        ax.set_xlabel("mean predicted probability", fontsize=8)
        ax.set_ylabel("observed frequency", fontsize=8)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
    for k in range(len(methods), nr * nc):
        axes[k // nc, k % nc].set_visible(False)
    fig.suptitle("Reliability of the per-class probabilities, clear test set", fontsize=10)
    return _save(fig, path)


def plot_ood_roc(ood_roc: Mapping, path: str) -> str:
    """ROC curves of the OOD detectors (positive = in-distribution), AUROC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = _figure(4.4, 4.2)
    ax = fig.subplots()
    names = {"optical": "optical detector", "sar": "SAR detector"}
    for k, (key, (labels, sc)) in enumerate(ood_roc.items()):
        labels = np.asarray(labels).ravel().astype(int)
        sc = np.asarray(sc, dtype=np.float64).ravel()
        if labels.min() == labels.max():
            continue  # ROC undefined with one class only
        fpr, tpr, _ = roc_curve(labels, sc)
        auc = roc_auc_score(labels, sc)
        ax.plot(fpr, tpr, color=f"C{k}", lw=1.6,
                label=f"{names.get(key, key)} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="0.5", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (OOD accepted)")
    ax.set_ylabel("true positive rate (in-distribution accepted)")
    ax.set_title("OOD detectors: in-distribution vs OOD", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def write_report(results: Mapping, out_dir: str, arrays: Mapping | None = None,
                 title: str = "Results") -> dict[str, str]:
    """Write ``out_dir/table.md`` and, from ``arrays`` (see the module docstring), the PNG plots
    ``entropy_histograms.png``, ``reliability.png`` and ``ood_roc.png`` for the keys present.
    Returns ``{name: path}`` of the files written."""
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    path = os.path.join(out_dir, "table.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_markdown(results, title))
    written["table.md"] = path
    arrays = arrays or {}
    if arrays.get("entropy"):
        written["entropy_histograms.png"] = plot_entropy_histograms(
            arrays["entropy"], os.path.join(out_dir, "entropy_histograms.png"))
    if arrays.get("reliability"):
        written["reliability.png"] = plot_reliability(
            arrays["reliability"], os.path.join(out_dir, "reliability.png"))
    if arrays.get("ood_roc"):
        written["ood_roc.png"] = plot_ood_roc(arrays["ood_roc"],
                                              os.path.join(out_dir, "ood_roc.png"))
    return written


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m tf_fusion.report RESULTS_JSON [OUT_DIR]")
        return 0 if argv else 2
    with open(argv[0], encoding="utf-8") as f:
        results = json.load(f)
    out_dir = argv[1] if len(argv) > 1 else os.path.dirname(os.path.abspath(argv[0]))
    for p in write_report(results, out_dir).values():
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
