"""The published numbers as plain data: the paper's Table 1 and the authors' extension tables.

Sources (text renderings of the PDFs, in ``../shared/seed``):

* ``paper.txt`` — Gawlikowski et al., IGARSS 2022, Table 1 (single run).
* ``extension-supplement-tables.txt`` — the authors' extended evaluation, supplement Tables 1–3
  (mean ± standard deviation over five runs, two decimals).

Naming (ours):

* scenarios: ``clear`` (paper "Clear", extension "Testing"), ``ood_classes`` (paper "OOD Classes
  (clear)", extension "Unknown Classes"), ``cloudy`` ("Clouds and Shadows" / "Cloudy"),
  ``very_cloudy`` ("Cloudy Handpicked" / "Very Cloudy"), ``snow`` ("Snow and Ice"),
  ``missing_sar`` (extension "Missing SAR"; in supplement Table 1 the data set "Optical Only"),
  ``missing_optical`` ("Missing Optical"; supplement Table 1 "SAR Only"), ``corrupted_optical``
  ("Optical Corrupted"), ``corrupted_sar`` ("SAR Corrupted").
* methods: ``late_fusion`` (paper "Baseline Fusion" = extension "Baseline Fusion (late)", the
  BigEarthNet-MM style late fusion trained on the fused pass only), ``early_fusion``
  (extension "Baseline Fusion (early)"), ``embracenet``, ``non_adaptive``, ``adaptive``,
  ``optical_only``, ``sar_only``.
* metrics: ``f1_micro, f1_macro, f1_samples, f2_micro, f2_macro, f2_samples, avg_entropy``
  (bits), ``avg_confidence``, ``ece`` (extension "Calibration Error"), ``auroc_confidence``,
  ``auroc_entropy``, ``aupr_confidence``, ``aupr_entropy`` (extension "AUROC (avg. conf)" …).
  The paper's Table 1 reports "F1 Score" / "F2 Score" in % without saying which averaging; they
  are stored as fractions under ``f1`` / ``f2``.

A cell the source leaves empty ("-": a single-modality model on data without its modality) is
simply absent from the dicts.
"""
from __future__ import annotations

PAPER_METHODS = ("late_fusion", "non_adaptive", "adaptive", "optical_only", "sar_only")
EXTENSION_METHODS = ("early_fusion", "late_fusion", "embracenet", "optical_only", "sar_only",
                     "non_adaptive", "adaptive")
EXTENSION_STAGES = ("stage_1", "stage_2", "stage_3", "stage_4", "stage_5")

def _paper(late_fusion, non_adaptive, adaptive, optical_only, sar_only, *, percent=False):
    """One row of the paper's Table 1, in its column order; percentages become fractions."""
    vals = (late_fusion, non_adaptive, adaptive, optical_only, sar_only)
    if percent:
        vals = tuple(round(v / 100.0, 6) for v in vals)
    return dict(zip(PAPER_METHODS, vals))


def _approaches(*cells):
    """One row of supplement Tables 2/3 in their column order (see ``EXTENSION_METHODS``);
    ``None`` is a "-" cell and is left out."""
    assert len(cells) == len(EXTENSION_METHODS)
    return {m: c for m, c in zip(EXTENSION_METHODS, cells) if c is not None}


def _stages(*cells):
    """One row of supplement Table 1 (adaptive fusion after ResNet stage 1…5)."""
    assert len(cells) == len(EXTENSION_STAGES)
    return dict(zip(EXTENSION_STAGES, cells))


# Paper, Table 1 (single run). F-scores as fractions (the paper prints %).
PAPER_TABLE1 = {
    "clear": {
        "f1": _paper(77.90, 76.86, 76.52, 75.29, 67.28, percent=True),
        "f2": _paper(77.56, 77.59, 77.07, 75.29, 66.60, percent=True),
        "avg_entropy": _paper(0.318, 0.207, 0.302, 0.303, 0.408),
        "avg_confidence": _paper(0.903, 0.938, 0.903, 0.909, 0.872),
    },
    "ood_classes": {
        "avg_entropy": _paper(0.306, 0.237, 0.932, 0.347, 0.337),
        "avg_confidence": _paper(0.900, 0.922, 0.577, 0.888, 0.895),
    },
    "cloudy": {
        "f1": _paper(71.62, 75.48, 75.25, 68.14, 70.54, percent=True),
        "f2": _paper(71.62, 76.23, 75.94, 68.21, 70.50, percent=True),
        "avg_entropy": _paper(0.343, 0.190, 0.302, 0.320, 0.339),
        "avg_confidence": _paper(0.896, 0.943, 0.906, 0.904, 0.894),
    },
    "very_cloudy": {
        "f1": _paper(38.92, 62.25, 69.56, 38.41, 70.50, percent=True),
        "f2": _paper(37.27, 61.61, 70.52, 36.68, 71.75, percent=True),
        "avg_entropy": _paper(0.310, 0.194, 0.411, 0.348, 0.195),
        "avg_confidence": _paper(0.908, 0.940, 0.866, 0.895, 0.897),
    },
    "snow": {
        "f1": _paper(72.43, 76.24, 75.85, 76.26, 62.99, percent=True),
        "f2": _paper(70.13, 77.30, 76.89, 76.89, 61.84, percent=True),
        "avg_entropy": _paper(0.224, 0.203, 0.255, 0.305, 0.368),
        "avg_confidence": _paper(0.926, 0.939, 0.922, 0.905, 0.882),
    },
}

# Supplement Table 1: adaptive fusion with the fusion after ResNet stage 1…5, (mean, std) over
# five runs. The extension uses stage 4 for the comparison in Tables 2 and 3.
EXTENSION_TABLE1_STAGES = {
    "clear": {
        "f1_micro": _stages((0.76, 0.01), (0.76, 0.00), (0.77, 0.00), (0.77, 0.00), (0.76, 0.00)),
        "f1_macro": _stages((0.71, 0.01), (0.71, 0.01), (0.72, 0.00), (0.72, 0.01), (0.71, 0.01)),
        "f1_samples": _stages((0.77, 0.01), (0.77, 0.00), (0.78, 0.00), (0.78, 0.00), (0.77, 0.00)),
        "f2_micro": _stages((0.75, 0.00), (0.75, 0.00), (0.75, 0.01), (0.76, 0.00), (0.74, 0.00)),
        "f2_macro": _stages((0.68, 0.01), (0.70, 0.01), (0.69, 0.01), (0.71, 0.01), (0.68, 0.01)),
        "f2_samples": _stages((0.77, 0.00), (0.77, 0.00), (0.77, 0.01), (0.77, 0.00), (0.76, 0.00)),
    },
    "cloudy": {
        "f1_micro": _stages((0.75, 0.01), (0.75, 0.01), (0.76, 0.01), (0.76, 0.01), (0.75, 0.01)),
        "f1_macro": _stages((0.62, 0.02), (0.63, 0.02), (0.63, 0.04), (0.64, 0.02), (0.60, 0.02)),
        "f1_samples": _stages((0.75, 0.01), (0.75, 0.01), (0.76, 0.01), (0.76, 0.01), (0.75, 0.00)),
        "f2_micro": _stages((0.73, 0.02), (0.73, 0.02), (0.74, 0.02), (0.74, 0.01), (0.72, 0.01)),
        "f2_macro": _stages((0.58, 0.03), (0.60, 0.02), (0.60, 0.04), (0.61, 0.03), (0.56, 0.02)),
        "f2_samples": _stages((0.75, 0.02), (0.75, 0.01), (0.75, 0.02), (0.76, 0.01), (0.74, 0.01)),
    },
    "very_cloudy": {
        "f1_micro": _stages((0.71, 0.02), (0.66, 0.05), (0.69, 0.02), (0.67, 0.03), (0.67, 0.02)),
        "f1_macro": _stages((0.47, 0.02), (0.41, 0.03), (0.43, 0.02), (0.41, 0.01), (0.43, 0.02)),
        "f1_samples": _stages((0.71, 0.02), (0.65, 0.07), (0.69, 0.03), (0.67, 0.03), (0.67, 0.03)),
        "f2_micro": _stages((0.70, 0.03), (0.63, 0.07), (0.67, 0.03), (0.65, 0.03), (0.63, 0.03)),
        "f2_macro": _stages((0.45, 0.02), (0.40, 0.04), (0.41, 0.02), (0.40, 0.02), (0.40, 0.02)),
        "f2_samples": _stages((0.71, 0.03), (0.65, 0.08), (0.68, 0.03), (0.67, 0.03), (0.66, 0.03)),
    },
    "snow": {
        "f1_micro": _stages((0.78, 0.01), (0.78, 0.01), (0.78, 0.02), (0.78, 0.01), (0.73, 0.01)),
        "f1_macro": _stages((0.52, 0.03), (0.52, 0.03), (0.51, 0.04), (0.53, 0.02), (0.47, 0.03)),
        "f1_samples": _stages((0.77, 0.01), (0.77, 0.02), (0.78, 0.02), (0.78, 0.01), (0.72, 0.01)),
        "f2_micro": _stages((0.77, 0.03), (0.78, 0.02), (0.77, 0.03), (0.79, 0.01), (0.70, 0.02)),
        "f2_macro": _stages((0.49, 0.04), (0.50, 0.02), (0.49, 0.05), (0.51, 0.01), (0.43, 0.03)),
        "f2_samples": _stages((0.78, 0.03), (0.78, 0.02), (0.78, 0.02), (0.79, 0.01), (0.71, 0.02)),
    },
    "missing_sar": {
        "f1_micro": _stages((0.76, 0.01), (0.76, 0.00), (0.76, 0.00), (0.76, 0.00), (0.74, 0.00)),
        "f1_macro": _stages((0.70, 0.01), (0.71, 0.00), (0.70, 0.01), (0.72, 0.00), (0.68, 0.00)),
        "f1_samples": _stages((0.77, 0.01), (0.77, 0.00), (0.77, 0.00), (0.77, 0.00), (0.75, 0.00)),
        "f2_micro": _stages((0.74, 0.01), (0.75, 0.00), (0.74, 0.01), (0.75, 0.01), (0.71, 0.01)),
        "f2_macro": _stages((0.68, 0.01), (0.69, 0.01), (0.68, 0.01), (0.69, 0.00), (0.63, 0.00)),
        "f2_samples": _stages((0.76, 0.01), (0.76, 0.00), (0.76, 0.01), (0.77, 0.00), (0.73, 0.01)),
    },
    "missing_optical": {
        "f1_micro": _stages((0.69, 0.01), (0.67, 0.03), (0.69, 0.02), (0.68, 0.01), (0.67, 0.01)),
        "f1_macro": _stages((0.60, 0.01), (0.59, 0.04), (0.60, 0.02), (0.60, 0.01), (0.56, 0.01)),
        "f1_samples": _stages((0.70, 0.01), (0.68, 0.03), (0.70, 0.02), (0.69, 0.01), (0.68, 0.01)),
        "f2_micro": _stages((0.67, 0.01), (0.65, 0.03), (0.67, 0.03), (0.66, 0.01), (0.63, 0.01)),
        "f2_macro": _stages((0.57, 0.02), (0.56, 0.05), (0.57, 0.03), (0.57, 0.01), (0.52, 0.02)),
        "f2_samples": _stages((0.69, 0.01), (0.67, 0.03), (0.69, 0.03), (0.68, 0.01), (0.65, 0.01)),
    },
    "corrupted_optical": {
        "f1_micro": _stages((0.49, 0.12), (0.57, 0.11), (0.63, 0.09), (0.61, 0.07), (0.66, 0.01)),
        "f1_macro": _stages((0.36, 0.12), (0.46, 0.12), (0.52, 0.11), (0.52, 0.08), (0.54, 0.03)),
        "f1_samples": _stages((0.47, 0.13), (0.56, 0.11), (0.62, 0.10), (0.61, 0.07), (0.66, 0.02)),
        "f2_micro": _stages((0.43, 0.12), (0.53, 0.10), (0.59, 0.09), (0.58, 0.07), (0.62, 0.02)),
        "f2_macro": _stages((0.32, 0.11), (0.43, 0.10), (0.48, 0.10), (0.49, 0.08), (0.50, 0.03)),
        "f2_samples": _stages((0.44, 0.13), (0.54, 0.11), (0.60, 0.10), (0.60, 0.08), (0.64, 0.02)),
    },
    "corrupted_sar": {
        "f1_micro": _stages((0.32, 0.04), (0.45, 0.13), (0.45, 0.15), (0.49, 0.14), (0.54, 0.10)),
        "f1_macro": _stages((0.17, 0.02), (0.30, 0.16), (0.32, 0.17), (0.36, 0.16), (0.39, 0.15)),
        "f1_samples": _stages((0.30, 0.05), (0.43, 0.14), (0.42, 0.16), (0.47, 0.15), (0.55, 0.10)),
        "f2_micro": _stages((0.31, 0.05), (0.41, 0.12), (0.41, 0.15), (0.45, 0.14), (0.48, 0.11)),
        "f2_macro": _stages((0.20, 0.02), (0.31, 0.14), (0.32, 0.14), (0.37, 0.15), (0.37, 0.13)),
        "f2_samples": _stages((0.30, 0.05), (0.41, 0.14), (0.40, 0.16), (0.45, 0.15), (0.51, 0.11)),
    },
}

# Supplement Table 2: the proposed method against the baselines, (mean, std) over five runs.
# Single-modality models are listed only where their modality is available; the baseline fusions
# get zeros for a missing modality. "Unknown Classes" reports only the average entropy.
EXTENSION_TABLE2 = {
    "clear": {
        "f1_micro": _approaches((0.77, 0.00), (0.76, 0.01), (0.76, 0.01), (0.76, 0.01),
                                (0.71, 0.01), (0.77, 0.00), (0.77, 0.00)),
        "f1_macro": _approaches((0.72, 0.01), (0.71, 0.01), (0.72, 0.01), (0.71, 0.00),
                                (0.63, 0.01), (0.73, 0.00), (0.72, 0.01)),
        "f1_samples": _approaches((0.77, 0.00), (0.77, 0.01), (0.77, 0.01), (0.77, 0.01),
                                  (0.71, 0.01), (0.78, 0.00), (0.78, 0.00)),
        "f2_micro": _approaches((0.75, 0.00), (0.75, 0.00), (0.75, 0.01), (0.75, 0.00),
                                (0.69, 0.01), (0.76, 0.00), (0.76, 0.00)),
        "f2_macro": _approaches((0.70, 0.01), (0.69, 0.01), (0.70, 0.01), (0.69, 0.00),
                                (0.61, 0.01), (0.72, 0.00), (0.71, 0.01)),
        "f2_samples": _approaches((0.77, 0.00), (0.76, 0.00), (0.77, 0.01), (0.77, 0.00),
                                  (0.71, 0.01), (0.78, 0.00), (0.77, 0.00)),
        "avg_entropy": _approaches((0.30, 0.03), (0.29, 0.04), (0.31, 0.02), (0.29, 0.04),
                                   (0.36, 0.03), (0.31, 0.02), (0.34, 0.02)),
        "ece": _approaches((0.02, 0.01), (0.03, 0.02), (0.02, 0.01), (0.03, 0.02),
                           (0.03, 0.02), (0.02, 0.01), (0.02, 0.00)),
    },
    "cloudy": {
        "f1_micro": _approaches((0.72, 0.01), (0.71, 0.01), (0.71, 0.01), (0.71, 0.00),
                                (0.73, 0.01), (0.75, 0.01), (0.76, 0.01)),
        "f1_macro": _approaches((0.61, 0.02), (0.60, 0.02), (0.59, 0.02), (0.58, 0.02),
                                (0.61, 0.01), (0.65, 0.02), (0.64, 0.02)),
        "f1_samples": _approaches((0.72, 0.01), (0.71, 0.01), (0.70, 0.01), (0.70, 0.00),
                                  (0.74, 0.01), (0.75, 0.01), (0.76, 0.01)),
        "f2_micro": _approaches((0.71, 0.01), (0.69, 0.01), (0.69, 0.01), (0.69, 0.01),
                                (0.72, 0.01), (0.73, 0.01), (0.74, 0.01)),
        "f2_macro": _approaches((0.59, 0.02), (0.58, 0.02), (0.56, 0.01), (0.55, 0.03),
                                (0.59, 0.02), (0.63, 0.02), (0.61, 0.01)),
        "f2_samples": _approaches((0.72, 0.01), (0.71, 0.01), (0.70, 0.01), (0.70, 0.01),
                                  (0.74, 0.01), (0.75, 0.01), (0.76, 0.01)),
        "avg_entropy": _approaches((0.31, 0.04), (0.30, 0.05), (0.32, 0.03), (0.29, 0.05),
                                   (0.30, 0.03), (0.30, 0.02), (0.34, 0.02)),
        "ece": _approaches((0.04, 0.01), (0.04, 0.02), (0.03, 0.01), (0.04, 0.02),
                           (0.03, 0.01), (0.02, 0.01), (0.02, 0.00)),
    },
    "very_cloudy": {
        "f1_micro": _approaches((0.46, 0.04), (0.45, 0.04), (0.45, 0.05), (0.43, 0.02),
                                (0.73, 0.01), (0.55, 0.05), (0.67, 0.03)),
        "f1_macro": _approaches((0.26, 0.03), (0.26, 0.02), (0.26, 0.03), (0.24, 0.01),
                                (0.47, 0.01), (0.33, 0.04), (0.41, 0.01)),
        "f1_samples": _approaches((0.43, 0.05), (0.41, 0.04), (0.40, 0.04), (0.39, 0.02),
                                  (0.73, 0.01), (0.53, 0.05), (0.67, 0.03)),
        "f2_micro": _approaches((0.41, 0.05), (0.40, 0.04), (0.39, 0.05), (0.38, 0.03),
                                (0.72, 0.01), (0.51, 0.05), (0.65, 0.03)),
        "f2_macro": _approaches((0.25, 0.03), (0.25, 0.02), (0.23, 0.03), (0.22, 0.01),
                                (0.47, 0.01), (0.32, 0.04), (0.40, 0.02)),
        "f2_samples": _approaches((0.42, 0.05), (0.40, 0.04), (0.39, 0.05), (0.37, 0.03),
                                  (0.74, 0.01), (0.52, 0.06), (0.67, 0.03)),
        "avg_entropy": _approaches((0.32, 0.05), (0.33, 0.06), (0.32, 0.04), (0.30, 0.04),
                                   (0.30, 0.03), (0.31, 0.02), (0.38, 0.02)),
        "ece": _approaches((0.12, 0.02), (0.12, 0.02), (0.11, 0.02), (0.12, 0.02),
                           (0.03, 0.01), (0.08, 0.01), (0.03, 0.00)),
    },
    "snow": {
        "f1_micro": _approaches((0.75, 0.01), (0.76, 0.00), (0.76, 0.01), (0.76, 0.01),
                                (0.71, 0.01), (0.78, 0.01), (0.78, 0.01)),
        "f1_macro": _approaches((0.49, 0.03), (0.50, 0.02), (0.51, 0.02), (0.49, 0.02),
                                (0.48, 0.01), (0.55, 0.02), (0.53, 0.01)),
        "f1_samples": _approaches((0.74, 0.01), (0.76, 0.01), (0.76, 0.01), (0.75, 0.01),
                                  (0.70, 0.01), (0.78, 0.01), (0.78, 0.02)),
        "f2_micro": _approaches((0.74, 0.03), (0.76, 0.01), (0.75, 0.02), (0.74, 0.02),
                                (0.69, 0.01), (0.79, 0.01), (0.79, 0.01)),
        "f2_macro": _approaches((0.46, 0.03), (0.49, 0.03), (0.48, 0.03), (0.46, 0.02),
                                (0.46, 0.01), (0.53, 0.01), (0.51, 0.01)),
        "f2_samples": _approaches((0.74, 0.02), (0.77, 0.01), (0.76, 0.02), (0.75, 0.02),
                                  (0.70, 0.01), (0.80, 0.01), (0.79, 0.01)),
        "avg_entropy": _approaches((0.29, 0.03), (0.28, 0.02), (0.29, 0.03), (0.27, 0.02),
                                   (0.32, 0.03), (0.30, 0.02), (0.31, 0.02)),
        "ece": _approaches((0.03, 0.02), (0.03, 0.01), (0.03, 0.01), (0.03, 0.01),
                           (0.04, 0.01), (0.02, 0.01), (0.02, 0.00)),
    },
    "ood_classes": {
        "avg_entropy": _approaches((0.31, 0.03), (0.30, 0.01), (0.29, 0.03), (0.31, 0.02),
                                   (0.25, 0.03), (0.36, 0.03), (0.80, 0.04)),
    },
    "missing_sar": {
        "f1_micro": _approaches((0.52, 0.03), (0.75, 0.00), (0.76, 0.00), (0.76, 0.01),
                                None, (0.76, 0.00), (0.76, 0.00)),
        "f1_macro": _approaches((0.42, 0.04), (0.70, 0.01), (0.71, 0.01), (0.71, 0.00),
                                None, (0.72, 0.00), (0.72, 0.00)),
        "f1_samples": _approaches((0.52, 0.03), (0.76, 0.00), (0.77, 0.00), (0.77, 0.01),
                                  None, (0.77, 0.00), (0.77, 0.00)),
        "f2_micro": _approaches((0.46, 0.04), (0.74, 0.01), (0.76, 0.00), (0.75, 0.00),
                                None, (0.75, 0.01), (0.75, 0.01)),
        "f2_macro": _approaches((0.39, 0.04), (0.69, 0.02), (0.72, 0.01), (0.69, 0.00),
                                None, (0.69, 0.00), (0.69, 0.00)),
        "f2_samples": _approaches((0.49, 0.03), (0.76, 0.01), (0.77, 0.00), (0.77, 0.00),
                                  None, (0.78, 0.00), (0.78, 0.00)),
        "avg_entropy": _approaches((0.33, 0.04), (0.33, 0.04), (0.20, 0.01), (0.29, 0.04),
                                   None, (0.33, 0.02), (0.31, 0.02)),
        "ece": _approaches((0.10, 0.01), (0.02, 0.01), (0.06, 0.01), (0.03, 0.02),
                           None, (0.01, 0.00), (0.01, 0.00)),
    },
    "missing_optical": {
        "f1_micro": _approaches((0.22, 0.01), (0.48, 0.02), (0.52, 0.02), None,
                                (0.71, 0.01), (0.68, 0.01), (0.68, 0.01)),
        "f1_macro": _approaches((0.07, 0.01), (0.40, 0.02), (0.44, 0.01), None,
                                (0.63, 0.01), (0.60, 0.01), (0.60, 0.01)),
        "f1_samples": _approaches((0.23, 0.01), (0.47, 0.02), (0.51, 0.01), None,
                                  (0.71, 0.01), (0.69, 0.01), (0.69, 0.01)),
        "f2_micro": _approaches((0.19, 0.01), (0.49, 0.03), (0.54, 0.01), None,
                                (0.69, 0.01), (0.66, 0.01), (0.66, 0.01)),
        "f2_macro": _approaches((0.09, 0.00), (0.41, 0.03), (0.46, 0.01), None,
                                (0.61, 0.01), (0.57, 0.01), (0.57, 0.01)),
        "f2_samples": _approaches((0.21, 0.01), (0.48, 0.02), (0.53, 0.01), None,
                                  (0.71, 0.01), (0.68, 0.01), (0.68, 0.01)),
        "avg_entropy": _approaches((0.13, 0.02), (0.74, 0.08), (0.59, 0.05), None,
                                   (0.36, 0.03), (0.41, 0.01), (0.41, 0.01)),
        "ece": _approaches((0.27, 0.01), (0.11, 0.01), (0.08, 0.02), None,
                           (0.03, 0.02), (0.02, 0.00), (0.02, 0.00)),
    },
    "corrupted_optical": {
        "f1_micro": _approaches((0.33, 0.02), (0.36, 0.04), (0.38, 0.02), (0.25, 0.06),
                                (0.71, 0.01), (0.41, 0.03), (0.61, 0.07)),
        "f1_macro": _approaches((0.18, 0.03), (0.18, 0.02), (0.19, 0.02), (0.12, 0.02),
                                (0.63, 0.01), (0.27, 0.06), (0.52, 0.08)),
        "f1_samples": _approaches((0.32, 0.02), (0.34, 0.04), (0.36, 0.02), (0.23, 0.06),
                                  (0.71, 0.01), (0.40, 0.02), (0.61, 0.07)),
        "f2_micro": _approaches((0.31, 0.03), (0.34, 0.06), (0.36, 0.04), (0.23, 0.07),
                                (0.69, 0.01), (0.38, 0.03), (0.58, 0.07)),
        "f2_macro": _approaches((0.19, 0.03), (0.21, 0.04), (0.22, 0.03), (0.14, 0.03),
                                (0.61, 0.01), (0.27, 0.04), (0.49, 0.08)),
        "f2_samples": _approaches((0.31, 0.03), (0.33, 0.05), (0.36, 0.03), (0.22, 0.07),
                                  (0.71, 0.01), (0.38, 0.02), (0.60, 0.08)),
        "avg_entropy": _approaches((0.50, 0.04), (0.37, 0.06), (0.39, 0.10), (0.45, 0.10),
                                   (0.36, 0.03), (0.44, 0.10), (0.53, 0.05)),
        "ece": _approaches((0.14, 0.02), (0.19, 0.05), (0.18, 0.04), (0.18, 0.04),
                           (0.03, 0.02), (0.12, 0.06), (0.04, 0.02)),
    },
    "corrupted_sar": {
        "f1_micro": _approaches((0.64, 0.02), (0.55, 0.07), (0.48, 0.05), (0.76, 0.01),
                                (0.23, 0.05), (0.37, 0.06), (0.49, 0.14)),
        "f1_macro": _approaches((0.56, 0.02), (0.45, 0.08), (0.37, 0.03), (0.71, 0.00),
                                (0.09, 0.04), (0.25, 0.03), (0.36, 0.16)),
        "f1_samples": _approaches((0.63, 0.02), (0.54, 0.08), (0.46, 0.05), (0.77, 0.01),
                                  (0.23, 0.04), (0.35, 0.06), (0.47, 0.15)),
        "f2_micro": _approaches((0.60, 0.02), (0.52, 0.06), (0.46, 0.04), (0.75, 0.00),
                                (0.23, 0.08), (0.35, 0.05), (0.45, 0.14)),
        "f2_macro": _approaches((0.54, 0.03), (0.44, 0.07), (0.37, 0.04), (0.69, 0.00),
                                (0.12, 0.05), (0.27, 0.04), (0.37, 0.15)),
        "f2_samples": _approaches((0.61, 0.02), (0.53, 0.07), (0.46, 0.03), (0.77, 0.00),
                                  (0.22, 0.07), (0.34, 0.06), (0.45, 0.15)),
        "avg_entropy": _approaches((0.39, 0.03), (0.27, 0.05), (0.26, 0.03), (0.29, 0.04),
                                   (0.31, 0.17), (0.36, 0.05), (0.39, 0.05)),
        "ece": _approaches((0.04, 0.01), (0.13, 0.04), (0.16, 0.03), (0.18, 0.04),
                           (0.03, 0.02), (0.26, 0.11), (0.10, 0.04)),
    },
}

# Supplement Table 3: separation of each shifted set (positive) from the clear test set by the
# average confidence / average entropy of the predictions, (mean, std) over five runs.
EXTENSION_TABLE3 = {
    "cloudy": {
        "auroc_confidence": _approaches((0.72, 0.03), (0.73, 0.04), (0.70, 0.03), (0.73, 0.02),
                                        (0.62, 0.04), (0.67, 0.03), (0.72, 0.03)),
        "auroc_entropy": _approaches((0.71, 0.03), (0.73, 0.04), (0.69, 0.03), (0.73, 0.01),
                                     (0.59, 0.03), (0.65, 0.03), (0.71, 0.04)),
        "aupr_confidence": _approaches((0.62, 0.01), (0.63, 0.02), (0.62, 0.01), (0.63, 0.01),
                                       (0.59, 0.01), (0.60, 0.01), (0.63, 0.01)),
        "aupr_entropy": _approaches((0.70, 0.03), (0.73, 0.05), (0.68, 0.04), (0.72, 0.02),
                                    (0.56, 0.03), (0.65, 0.03), (0.72, 0.03)),
    },
    "very_cloudy": {
        "auroc_confidence": _approaches((0.72, 0.08), (0.78, 0.06), (0.69, 0.07), (0.74, 0.06),
                                        (0.63, 0.05), (0.68, 0.05), (0.77, 0.05)),
        "auroc_entropy": _approaches((0.72, 0.08), (0.78, 0.07), (0.68, 0.07), (0.75, 0.04),
                                     (0.59, 0.05), (0.68, 0.06), (0.77, 0.07)),
        "aupr_confidence": _approaches((0.61, 0.04), (0.65, 0.02), (0.60, 0.04), (0.62, 0.03),
                                       (0.57, 0.02), (0.58, 0.03), (0.64, 0.02)),
        "aupr_entropy": _approaches((0.69, 0.08), (0.76, 0.08), (0.66, 0.07), (0.73, 0.05),
                                    (0.58, 0.05), (0.68, 0.05), (0.77, 0.07)),
    },
    "snow": {
        "auroc_confidence": _approaches((0.62, 0.08), (0.63, 0.05), (0.60, 0.05), (0.63, 0.06),
                                        (0.58, 0.02), (0.62, 0.03), (0.62, 0.03)),
        "auroc_entropy": _approaches((0.60, 0.09), (0.62, 0.06), (0.58, 0.06), (0.61, 0.08),
                                     (0.55, 0.02), (0.61, 0.05), (0.60, 0.04)),
        "aupr_confidence": _approaches((0.59, 0.04), (0.60, 0.02), (0.59, 0.02), (0.60, 0.02),
                                       (0.58, 0.01), (0.60, 0.01), (0.60, 0.01)),
        "aupr_entropy": _approaches((0.55, 0.07), (0.56, 0.05), (0.52, 0.04), (0.56, 0.06),
                                    (0.54, 0.02), (0.55, 0.04), (0.56, 0.03)),
    },
    "ood_classes": {
        "auroc_confidence": _approaches((0.68, 0.05), (0.69, 0.07), (0.64, 0.07), (0.72, 0.10),
                                        (0.41, 0.12), (0.73, 0.08), (0.86, 0.05)),
        "auroc_entropy": _approaches((0.67, 0.04), (0.69, 0.08), (0.61, 0.05), (0.71, 0.08),
                                     (0.42, 0.11), (0.74, 0.05), (0.91, 0.04)),
        "aupr_confidence": _approaches((0.62, 0.02), (0.62, 0.02), (0.61, 0.03), (0.63, 0.03),
                                       (0.42, 0.12), (0.63, 0.02), (0.66, 0.02)),
        "aupr_entropy": _approaches((0.54, 0.03), (0.56, 0.06), (0.51, 0.03), (0.58, 0.06),
                                    (0.43, 0.05), (0.62, 0.05), (0.94, 0.02)),
    },
    "missing_sar": {
        "auroc_confidence": _approaches((0.54, 0.03), (0.58, 0.01), (0.31, 0.01), None,
                                        None, (0.54, 0.01), (0.48, 0.01)),
        "auroc_entropy": _approaches((0.57, 0.03), (0.59, 0.01), (0.28, 0.01), None,
                                     None, (0.54, 0.01), (0.48, 0.01)),
        "aupr_confidence": _approaches((0.52, 0.02), (0.55, 0.01), (0.31, 0.01), None,
                                       None, (0.52, 0.01), (0.48, 0.00)),
        "aupr_entropy": _approaches((0.57, 0.04), (0.60, 0.01), (0.37, 0.00), None,
                                    None, (0.54, 0.01), (0.47, 0.01)),
    },
    "missing_optical": {
        "auroc_confidence": _approaches((0.13, 0.05), (0.99, 0.01), (0.90, 0.03), None,
                                        None, (0.66, 0.03), (0.64, 0.03)),
        "auroc_entropy": _approaches((0.13, 0.06), (0.99, 0.01), (0.92, 0.02), None,
                                     None, (0.68, 0.03), (0.65, 0.03)),
        "aupr_confidence": _approaches((0.18, 0.05), (0.69, 0.00), (0.68, 0.00), None,
                                       None, (0.60, 0.01), (0.59, 0.02)),
        "aupr_entropy": _approaches((0.33, 0.01), (0.99, 0.01), (0.93, 0.02), None,
                                    None, (0.69, 0.03), (0.60, 0.02)),
    },
    "corrupted_optical": {
        "auroc_confidence": _approaches((0.86, 0.03), (0.66, 0.06), (0.66, 0.17), (0.81, 0.12),
                                        None, (0.72, 0.14), (0.76, 0.05)),
        "auroc_entropy": _approaches((0.88, 0.02), (0.70, 0.08), (0.67, 0.18), (0.82, 0.13),
                                     None, (0.76, 0.15), (0.79, 0.05)),
        "aupr_confidence": _approaches((0.67, 0.01), (0.61, 0.02), (0.60, 0.08), (0.65, 0.03),
                                       None, (0.63, 0.05), (0.64, 0.02)),
        "aupr_entropy": _approaches((0.84, 0.03), (0.60, 0.08), (0.60, 0.16), (0.74, 0.17),
                                    None, (0.69, 0.15), (0.74, 0.03)),
    },
    "corrupted_sar": {
        "auroc_confidence": _approaches((0.65, 0.02), (0.45, 0.06), (0.39, 0.04), None,
                                        (0.44, 0.32), (0.58, 0.08), (0.59, 0.09)),
        "auroc_entropy": _approaches((0.68, 0.02), (0.45, 0.07), (0.39, 0.04), None,
                                     (0.46, 0.32), (0.61, 0.08), (0.62, 0.09)),
        "aupr_confidence": _approaches((0.59, 0.01), (0.49, 0.04), (0.46, 0.03), None,
                                       (0.42, 0.25), (0.57, 0.04), (0.58, 0.04)),
        "aupr_entropy": _approaches((0.68, 0.02), (0.45, 0.06), (0.41, 0.02), None,
                                    (0.48, 0.14), (0.55, 0.07), (0.56, 0.08)),
    },
}


def extension_figure(scenario: str, metric: str, method: str):
    """``(mean, std)`` of the extension (supplement Table 2, else Table 3; for ``method``
    ``stage_k``, Table 1) or ``None``."""
    for table in (EXTENSION_TABLE2, EXTENSION_TABLE3, EXTENSION_TABLE1_STAGES):
        cell = table.get(scenario, {}).get(metric, {}).get(method)
        if cell is not None:
            return cell
    return None


def paper_figure(scenario: str, metric: str, method: str):
    """The paper's Table 1 value (a fraction) or ``None``; ``metric`` is ``f1``, ``f2``,
    ``avg_entropy`` or ``avg_confidence``."""
    return PAPER_TABLE1.get(scenario, {}).get(metric, {}).get(method)
