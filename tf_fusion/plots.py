"""The evaluation's plots (PNG), from arrays of one run's predictions.

``arrays`` is a plain dict; every key is optional:

* ``"entropy"``: ``{METHOD: {SCENARIO: 1-D array}}`` — per-sample average entropy in bits
  (:func:`tf_fusion.scores.entropy_bits`) → ``entropy_histograms.png``.
* ``"reliability"``: ``{METHOD: (y_true [N, C], p [N, C])}`` on the clear test set →
  ``reliability.png``.
* ``"ood_roc"``: ``{"optical": (labels, scores), "sar": (labels, scores)}`` for the OOD detectors,
  ``labels`` 1 = in-distribution, 0 = OOD, ``scores`` the detector's in-distribution probability
  → ``ood_roc.png``.

``plot_detector_roc`` draws one scenario of `evaluate --detectors` (`tf_fusion.detector_report`):
a panel per detector, in the same (labels, scores) form per modality.

No pyplot: figures are drawn on ``matplotlib.figure.Figure`` (Agg), so nothing global changes and
no display is needed.
"""
from __future__ import annotations

import math
import os
from typing import Mapping

import numpy as np

from . import scores
from .protocol import METHODS, SCENARIOS, method_label, ordered, scenario_label


def _figure(width: float, height: float, grid: dict | None = None):
    """A figure of width × height inches. ``grid``: a regular grid's margins in inches (left,
    right, bottom, top) and its wspace/hspace, set once instead of the constrained layout solver,
    which took most of a grid figure's drawing time (an evaluation draws several per run)."""
    from matplotlib.figure import Figure

    if grid is None:
        return Figure(figsize=(width, height), dpi=110, layout="constrained")
    fig = Figure(figsize=(width, height), dpi=110)
    fig.subplots_adjust(left=grid["left"] / width, right=1 - grid["right"] / width, bottom=grid["bottom"] / height,
                        top=1 - grid["top"] / height, wspace=grid["wspace"], hspace=grid["hspace"])
    return fig


def _save(fig, path: str) -> str:
    from .atomic import write_with

    write_with(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
    return path


def plot_entropy_histograms(entropy: Mapping, path: str, bins: int = 25) -> str:
    """Grid of histograms: rows scenarios, columns methods, per-sample average entropy in bits."""
    methods = ordered(entropy, METHODS)
    scen = ordered(dict.fromkeys(s for per in entropy.values() for s in per), SCENARIOS)
    nr, nc = max(len(scen), 1), max(len(methods), 1)
    width, height = 2.3 * nc + 0.6, 1.55 * nr + 0.7
    fig = _figure(width, height, grid=dict(left=0.62, right=0.12, bottom=0.45, top=0.7, wspace=0.1, hspace=0.12))
    # the same limits on every panel, set below, rather than shared axes: sharing links every
    # pair of the (scenarios × methods) panels and made drawing quadratic in their number
    axes = np.atleast_2d(fig.subplots(nr, nc, squeeze=False))
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
                heights = np.histogram(np.clip(vals, 0, 1), bins=edges)[0] / vals.size
                ax.stairs(heights, edges, fill=True, color="C0", alpha=0.85)  # one artist, not one per bin
                top = max(top, float(np.max(heights)))
                ax.axvline(vals.mean(), color="C3", lw=1)
                right = vals.mean() < 0.5   # the note goes where the mass is not
                ax.text(0.97 if right else 0.03, 0.95, f"mean {vals.mean():.3f}\nn={vals.size}",
                        ha="right" if right else "left", va="top", transform=ax.transAxes,
                        fontsize=7, zorder=5,
                        bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.8))
            ax.set_xlim(0, 1)
            ax.tick_params(labelsize=7, labelleft=j == 0, labelbottom=i == nr - 1)
            if i == 0:
                ax.set_title(method_label(m), fontsize=9)
            if j == 0:
                ax.set_ylabel(scenario_label(s), fontsize=8)
            if i == nr - 1:
                ax.set_xlabel("avg. entropy [bit]", fontsize=8)
    ymax = 1.35 * top if top > 0 else 1.0  # one scale: room for the notes
    yticks = np.round(np.linspace(0, ymax / 1.35, 3), 2)
    for ax in axes.ravel():  # fixed ticks: no tick search per panel
        ax.set_ylim(0, ymax)
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks(yticks)
    fig.suptitle("Per-sample average entropy (fraction of samples per bin)", fontsize=10, y=1 - 0.12 / height, va="top")
    return _save(fig, path)


def plot_reliability(reliability: Mapping, path: str, n_bins: int = 15) -> str:
    """Reliability diagram per method (clear test set): observed frequency vs mean predicted
    probability of the per-class predictions, with the cell count per bin (log scale) behind."""
    methods = ordered(reliability, METHODS)
    n = max(len(methods), 1)
    nc = min(n, 3)
    nr = int(math.ceil(n / nc))
    width, height = 3.2 * nc, 3.1 * nr
    fig = _figure(width, height, grid=dict(left=0.5, right=0.45, bottom=0.45, top=0.55, wspace=0.55, hspace=0.45))
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
        ax.set_title(f"{method_label(m)}  (ECE {ece:.3f})", fontsize=9)
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


def plot_detector_roc(curves: Mapping, path: str, title: str = "") -> str:
    """One panel per detector, its optical and SAR ROC curves (positive = in-distribution, the
    score = its p): ``curves`` is ``{DETECTOR: {MODALITY: (labels, scores)}}``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    names = list(curves)
    nc = min(len(names), 4) or 1
    nr = int(math.ceil(len(names) / nc)) or 1
    width, height = 2.6 * nc, 2.5 * nr + 0.4
    fig = _figure(width, height, grid=dict(left=0.6, right=0.1, bottom=0.45, top=0.5, wspace=0.08, hspace=0.25))
    axes = fig.subplots(nr, nc, squeeze=False, sharex=True, sharey=True)
    for k, name in enumerate(names):
        ax = axes[k // nc, k % nc]
        for j, (modality, (labels, sc)) in enumerate(curves[name].items()):
            labels = np.asarray(labels).ravel().astype(int)
            sc = np.asarray(sc, dtype=np.float64).ravel()
            if labels.min() == labels.max():
                continue
            fpr, tpr, _ = roc_curve(labels, sc)
            ax.plot(fpr, tpr, color=f"C{j}", lw=1.3,
                    label=f"{'SAR' if modality == 'sar' else modality} {roc_auc_score(labels, sc):.3f}")
        ax.plot([0, 1], [0, 1], "--", color="0.6", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7, loc="lower right", title="AUROC", title_fontsize=7)
        ax.tick_params(labelsize=7)
        if k % nc == 0:
            ax.set_ylabel("in-distribution accepted", fontsize=7)
        if k // nc == nr - 1:
            ax.set_xlabel("shifted accepted", fontsize=7)
    for k in range(len(names), nr * nc):
        axes[k // nc, k % nc].set_visible(False)
    fig.suptitle(f"OOD detectors: {title}" if title else "OOD detectors", fontsize=10)
    return _save(fig, path)


def _mean_std(v):
    if isinstance(v, Mapping):
        return v.get("mean"), v.get("std") or 0.0
    return v, 0.0


def plot_method_bars(results: Mapping, path: str, metric: str = "f1_samples") -> str:
    """Grouped bars: ``metric`` (mean ± std over seeds) of every method on every scenario."""
    methods = ordered(results.get("methods", {}), METHODS)
    scen = ordered(dict.fromkeys(s for m in methods for s in results["methods"][m]), SCENARIOS)
    scen = [s for s in scen if any(_mean_std(results["methods"][m].get(s, {}).get(metric))[0] is not None for m in methods)]
    fig = _figure(max(6.0, 0.9 * len(scen) + 2), 3.8)
    ax = fig.subplots()
    width = 0.8 / max(len(methods), 1)
    for k, m in enumerate(methods):
        values = [_mean_std(results["methods"][m].get(s, {}).get(metric)) for s in scen]
        xs = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(scen))]
        ax.bar(xs, [v if v is not None else 0 for v, _ in values], width, yerr=[e for _, e in values],
               label=method_label(m), color=f"C{k}", capsize=2)
    ax.set_xticks(range(len(scen)), [scenario_label(s) for s in scen], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=4, loc="upper right")
    ax.set_title(f"{metric} per method and scenario (mean ± std over seeds)", fontsize=10)
    return _save(fig, path)


def plot_stages(stages: Mapping, path: str, metric: str = "f1_samples") -> str:
    """One line per scenario: the adaptive method's ``metric`` against the fusion stage."""
    names = sorted(stages, key=lambda n: int(n.split("_")[1]))
    scen = ordered(dict.fromkeys(s for n in names for s in stages[n]), SCENARIOS)
    fig = _figure(5.2, 3.8)
    ax = fig.subplots()
    xs = [int(n.split("_")[1]) for n in names]
    for k, s in enumerate(scen):
        values = [_mean_std(stages[n].get(s, {}).get(metric)) for n in names]
        if all(v is None for v, _ in values):
            continue
        ax.errorbar(xs, [v if v is not None else np.nan for v, _ in values], yerr=[e for _, e in values],
                    marker="o", ms=3, capsize=2, color=f"C{k % 10}", label=scenario_label(s))
    ax.set_xticks(xs)
    ax.set_xlabel("fusion after ResNet stage")
    ax.set_ylabel(f"adaptive {metric.replace('_', ' ')}")
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def write_plots(arrays: Mapping, out_dir: str) -> dict[str, str]:
    """The PNG plots of the keys present in ``arrays`` (see the module docstring); {name: path}."""
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for key, name, plot in (("entropy", "entropy_histograms.png", plot_entropy_histograms),
                            ("reliability", "reliability.png", plot_reliability),
                            ("ood_roc", "ood_roc.png", plot_ood_roc)):
        if arrays.get(key):
            written[name] = plot(arrays[key], os.path.join(out_dir, name))
    return written
