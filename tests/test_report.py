"""Published figures (tf_fusion.paper_figures) against the seed texts; table and plot rendering."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from tf_fusion import paper_figures as pf
from tf_fusion import plots, report
from tf_fusion.protocol import SCENARIOS

SEED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir,
                    "shared", "seed")
PAPER = os.path.join(SEED, "paper.txt")
SUPPLEMENT = os.path.join(SEED, "extension-supplement-tables.txt")


def _lines(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} not present")
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")


# ------------------------------------------------------------------------- paper, Table 1

PAPER_ROWS = [  # (line prefix in paper.txt, scenario, metric): in the order they appear
    ("Clear\tF1 Score", "clear", "f1"), ("\tF2 Score", "clear", "f2"),
    ("\tAvg. Entropy", "clear", "avg_entropy"), ("\tAvg. Confidence", "clear", "avg_confidence"),
    ("OOD Classes Avg. Entropy", "ood_classes", "avg_entropy"),
    ("(clear)\tAvg. Confidence", "ood_classes", "avg_confidence"),
    ("Clouds and Shadows\tF1 Score", "cloudy", "f1"), ("\tF2 Score", "cloudy", "f2"),
    ("\tAvg. Entropy", "cloudy", "avg_entropy"),
    ("\tAvg. Confidence", "cloudy", "avg_confidence"),
    ("Cloudy Handpicked\tF1 Score", "very_cloudy", "f1"), ("\tF2 Score", "very_cloudy", "f2"),
    ("\tAvg. Entropy", "very_cloudy", "avg_entropy"),
    ("\tAvg. Confidence", "very_cloudy", "avg_confidence"),
    ("Snow and Ice\tF1 Score", "snow", "f1"), ("\tF2 Score", "snow", "f2"),
    ("\tAvg. Entropy", "snow", "avg_entropy"), ("\tAvg. Confidence", "snow", "avg_confidence"),
]


def test_paper_table1_matches_text():
    lines = _lines(PAPER)
    start = next(i for i, l in enumerate(lines) if l.startswith("Testing\t\tBaseline"))
    i = start
    for prefix, scenario, metric in PAPER_ROWS:
        i = next(k for k in range(i + 1, start + 40) if lines[k].startswith(prefix))
        values = [float(v) for v in re.findall(r"\d+\.\d+", lines[i])]
        assert len(values) == 5, lines[i]
        if metric in ("f1", "f2"):
            values = [v / 100 for v in values]
        got = [pf.PAPER_TABLE1[scenario][metric][m] for m in pf.PAPER_METHODS]
        assert got == pytest.approx(values, abs=1e-9), (scenario, metric)
    assert {s: set(d) for s, d in pf.PAPER_TABLE1.items()} == {
        s: {m for _, s2, m in PAPER_ROWS if s2 == s} for s in {s for _, s, _ in PAPER_ROWS}}


# ----------------------------------------------------------------- extension, Tables 1–3

CELL = re.compile(r"(\d\.\d\d)±(\d\.\d\d)|(?<!\S)-(?!\S)")


def _supplement_row(lines, table_marker, heading, metric_prefix):
    """The cells of the first ``metric_prefix`` line after the heading lines that follow
    ``table_marker``: [(mean, std) or None, ...]."""
    start = next(i for i, l in enumerate(lines) if l.startswith(table_marker))
    heading = heading.split("|")
    i = next(k for k in range(start, len(lines))
             if lines[k:k + len(heading)] == heading)
    k = next(k for k in range(i + len(heading), len(lines)) if lines[k].startswith(metric_prefix))
    return [None if m.group(0) == "-" else (float(m.group(1)), float(m.group(2)))
            for m in CELL.finditer(lines[k])]


SUPPLEMENT_SPOTS = [  # table marker, heading lines ("|"-joined), row prefix, scenario, metric
    ("Table 2", "Testing", "F1 Score (micro)", "clear", "f1_micro"),
    ("Table 2", "Testing", "Calibration Error", "clear", "ece"),
    ("Table 2", "Cloudy", "F2 Score (macro)", "cloudy", "f2_macro"),
    ("Table 2", "Very|Cloudy", "F1 Score (sample)", "very_cloudy", "f1_samples"),
    ("Table 2", "Snow|and Ice", "Avg. Entropy", "snow", "avg_entropy"),
    ("Table 2", "Unknown|Classes", "Avg. Entropy", "ood_classes", "avg_entropy"),
    ("Table 2", "Missing|SAR", "F2 Score (sample)", "missing_sar", "f2_samples"),
    ("Table 2", "Missing|Optical", "Calibration Error", "missing_optical", "ece"),
    ("Table 2", "Optical|Corrupted", "F1 Score (macro)", "corrupted_optical", "f1_macro"),
    ("Table 2", "SAR|Corrupted", "Avg. Entropy", "corrupted_sar", "avg_entropy"),
    ("Table 3", "Cloudy|Handpicked", "AUPR (avg. entropy)", "very_cloudy", "aupr_entropy"),
    ("Table 3", "Unknown|Classes", "AUROC (avg. conf)", "ood_classes", "auroc_confidence"),
    ("Table 3", "Missing|Optical", "AUROC (avg. entropy)", "missing_optical", "auroc_entropy"),
    ("Table 3", "SAR|Corrupted", "AUPR (avg. conf)", "corrupted_sar", "aupr_confidence"),
]


@pytest.mark.parametrize("marker,heading,prefix,scenario,metric", SUPPLEMENT_SPOTS)
def test_supplement_spot_checks(marker, heading, prefix, scenario, metric):
    cells = _supplement_row(_lines(SUPPLEMENT), marker, heading, prefix)
    assert len(cells) == len(pf.EXTENSION_METHODS)
    table = pf.EXTENSION_TABLE2 if marker == "Table 2" else pf.EXTENSION_TABLE3
    row = table[scenario][metric]
    for method, cell in zip(pf.EXTENSION_METHODS, cells):
        assert row.get(method) == cell, (scenario, metric, method)


@pytest.mark.parametrize("heading,prefix,scenario,metric", [
    ("Testing", "F1 (sample)", "clear", "f1_samples"),
    ("Optical|Only", "F2 (macro)", "missing_sar", "f2_macro"),
    ("SAR|Corrupted", "F1 (micro)", "corrupted_sar", "f1_micro"),
])
def test_supplement_stages_spot_checks(heading, prefix, scenario, metric):
    cells = _supplement_row(_lines(SUPPLEMENT), "Table 1", heading, prefix)
    assert [pf.EXTENSION_TABLE1_STAGES[scenario][metric][s] for s in pf.EXTENSION_STAGES] == cells


def test_supplement_shapes():
    for scenario, rows in pf.EXTENSION_TABLE2.items():
        expected = {"avg_entropy"} if scenario == "ood_classes" else {
            "f1_micro", "f1_macro", "f1_samples", "f2_micro", "f2_macro", "f2_samples",
            "avg_entropy", "ece"}
        assert set(rows) == expected, scenario
    assert set(pf.EXTENSION_TABLE2) == {s.name for s in SCENARIOS if not s.name.startswith('region')}
    assert set(pf.EXTENSION_TABLE3) == {s.name for s in SCENARIOS if not s.name.startswith("region")} - {"clear"}
    assert "sar_only" not in pf.EXTENSION_TABLE2["missing_sar"]["f1_micro"]
    assert "optical_only" not in pf.EXTENSION_TABLE2["missing_optical"]["ece"]


# ------------------------------------------------------------------------------ the table

def _fake_results():
    return {"methods": {
        "late_fusion": {"clear": {"f1_samples": 0.781, "f1_micro": 0.77, "avg_entropy": 0.31,
                                  "avg_confidence": 0.9, "ece": 0.021},
                        "ood_classes": {"avg_entropy": 0.3, "avg_confidence": 0.9}},
        "adaptive": {"clear": {"f1_samples": 0.775},
                     "ood_classes": {"avg_entropy": 0.9, "auroc_entropy": 0.93,
                                     "ood_auroc_optical": 0.88, "ood_auroc_sar": 0.7},
                     "missing_optical": {"f1_micro": 0.66}},
    }}


def _cell(table, scenario_label, metric_label, column):
    """The cell of one column (by its header label) in one metric row under one scenario."""
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    start = next(i for i, l in enumerate(lines) if f"**{scenario_label}**" in l)
    for l in lines[start:]:
        cells = [c.strip() for c in l.strip().strip("|").split("|")]
        if cells[1] == metric_label:
            return cells[header.index(column)]
    raise AssertionError(f"no row {metric_label} under {scenario_label}")


def test_render_table_single_run():
    table = report.render_table(_fake_results())
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    # the paper's five methods always, in the extension's column order
    assert header[2:] == ["Late Fusion", "Optical Only", "SAR Only", "Non-Adaptive Fusion", "Adaptive Fusion"]
    assert _cell(table, "Clear", "F1 (samples)¹", "Late Fusion") == "0.781 (0.779) [0.77±0.01]"  # paper 77.90 %
    assert _cell(table, "Clear", "F1 (samples)¹", "Non-Adaptive Fusion") == "– (0.7686) [0.78±0.00]"  # ours missing
    assert _cell(table, "Clear", "F1 (samples)¹", "Adaptive Fusion").startswith("0.775 (0.7652)")
    assert _cell(table, "Clear", "F1 (micro)", "Late Fusion") == "0.770 [0.76±0.01]"
    assert _cell(table, "Clear", "ECE", "Late Fusion") == "0.021 [0.03±0.02]"
    assert _cell(table, "Clear", "Avg. confidence", "Late Fusion") == "0.900 (0.903)"
    assert _cell(table, "OOD classes (clear)", "Avg. entropy [bit]", "Adaptive Fusion") == "0.900 (0.932) [0.80±0.04]"
    assert _cell(table, "OOD classes (clear)", "AUROC vs clear (entropy)", "Adaptive Fusion") == "0.930 [0.91±0.04]"
    assert _cell(table, "OOD classes (clear)", "OOD detector AUROC (optical)", "Adaptive Fusion") == "0.880"
    # no F-scores on OOD classes; the extension's extra scenario appears with its own figures
    ood_block = table.split("**OOD classes (clear)**")[1].split("**Missing optical**")[0]
    assert "F1" not in ood_block
    assert _cell(table, "Missing optical", "F1 (micro)", "Adaptive Fusion") == "0.660 [0.68±0.01]"
    assert _cell(table, "Missing optical", "F1 (micro)", "Optical Only") == "–"
    assert _cell(table, "Missing optical", "F1 (micro)", "Late Fusion") == "– [0.48±0.02]"
    assert _cell(table, "Missing optical", "F1 (micro)", "SAR Only") == "– [0.71±0.01]"
    # scenarios without results are left out, in the fixed order otherwise
    assert "Snow and ice" not in table
    assert table.index("**Clear**") < table.index("**OOD classes") < table.index("**Missing opt")


def test_render_table_aggregated_and_extra_methods():
    from tf_fusion.scores import aggregate_seeds

    runs = []
    for v in (0.77, 0.78, 0.79):
        r = _fake_results()
        r["methods"]["late_fusion"]["clear"]["f1_samples"] = v
        r["methods"]["embracenet"] = {"clear": {"f1_micro": v}}
        runs.append(r)
    agg = aggregate_seeds(runs)
    table = report.render_table(agg)
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header[2:4] == ["Late Fusion", "EmbraceNet"]  # the extension's order
    assert _cell(table, "Clear", "F1 (samples)¹", "Late Fusion") == "0.780±0.010 (0.779) [0.77±0.01]"
    assert _cell(table, "Clear", "F1 (samples)¹", "EmbraceNet") == "– [0.77±0.01]"  # the extension's figure
    md = report.render_markdown(agg)
    assert "over 3 runs" in md and "bits" in md and "averaged" in md


def _findings_results(very_cloudy=(0.64, 0.37, 0.22), ood_entropy=0.83, clear=(0.919, 0.919)):
    f1 = dict(zip(("adaptive", "non_adaptive", "optical_only"), very_cloudy))
    entropy = {"late_fusion": (0.21, 0.32), "non_adaptive": (0.16, 0.26), "adaptive": (0.16, ood_entropy),
               "optical_only": (0.39, 0.53), "sar_only": (0.53, 0.53)}
    methods = {k: {"clear": {"avg_entropy": c}, "ood_classes": {"avg_entropy": o}} for k, (c, o) in entropy.items()}
    for k, v in f1.items():
        methods[k]["very_cloudy"] = {"f1_samples": v}
    methods["adaptive"]["clear"]["f1_samples"], methods["non_adaptive"]["clear"]["f1_samples"] = clear
    return {"methods": methods}


def test_paper_findings_are_checked():
    assert [ok for _, ok in report.paper_findings(_findings_results())][:3] == [True, True, True]
    # adaptive only 0.04 above non-adaptive on very cloudy; its entropy rise 0.14 = optical-only's
    # 0.14 is not more; 0.035 apart on clear
    bad = _findings_results(very_cloudy=(0.41, 0.37, 0.22), ood_entropy=0.30, clear=(0.884, 0.919))
    claims = report.paper_findings(bad)
    assert [ok for _, ok in claims][:3] == [False, False, False]
    assert "0.410" in claims[0][0] and "optical_only 0.140" in claims[1][0]
    assert [ok for _, ok in report.paper_findings({"methods": {}})] == [None] * 6
    md = report.render_markdown(_findings_results())
    assert md.count("- [yes]") == 4  # the paper's three, and the extension's very-cloudy one


def test_extension_findings_are_checked():
    good = _findings_results()
    m = good["methods"]
    m["early_fusion"] = {"very_cloudy": {"f1_samples": 0.40}, "missing_optical": {"f1_samples": 0.30}}
    m["sar_only"]["missing_optical"] = {"f1_samples": 0.60}
    m["non_adaptive"]["missing_optical"] = {"f1_samples": 0.60}
    m["adaptive"]["missing_optical"] = {"f1_samples": 0.61}
    m["adaptive"]["corrupted_optical"], m["non_adaptive"]["corrupted_optical"] = {"f1_samples": 0.5}, {"f1_samples": 0.3}
    assert [ok for _, ok in report.paper_findings(good)][3:] == [True, True, True]
    m["early_fusion"]["very_cloudy"]["f1_samples"] = 0.70  # a baseline above adaptive
    m["adaptive"]["missing_optical"]["f1_samples"] = 0.50  # far from SAR-only
    m["adaptive"]["corrupted_optical"]["f1_samples"] = 0.2
    claims = report.paper_findings(good)
    assert [ok for _, ok in claims][3:] == [False, False, False] and "early_fusion 0.700" in claims[3][0]


def test_render_table_empty_and_all_scenarios():
    assert len(report.render_table({"methods": {}}).splitlines()) == 2
    full = report.render_table({"methods": {}}, all_scenarios=True)
    for scenario in SCENARIOS:  # every scenario the publications have figures for
        assert (f"**{scenario.label}**" in full) == (scenario.name in pf.EXTENSION_TABLE2), scenario
    assert _cell(full, "Cloudy, hand-picked", "F1 (samples)¹", "Late Fusion") == "– (0.3892) [0.41±0.04]"


# ------------------------------------------------------------------------------ the plots

def _fake_arrays(rng):
    entropy = {m: {s: rng.beta(2, 5, size=80) for s in ("clear", "ood_classes", "cloudy")}
               for m in ("late_fusion", "adaptive", "sar_only")}
    entropy["adaptive"]["ood_classes"] = rng.beta(8, 2, size=80)
    y = (rng.random((300, 12)) < 0.3).astype(int)
    p_good = np.clip(0.8 * y + 0.1 + 0.1 * rng.standard_normal(y.shape), 0, 1)
    p_bad = np.clip(0.5 * y + 0.3 * rng.random(y.shape), 0, 1)
    lab = np.r_[np.ones(200), np.zeros(150)]
    return {
        "entropy": entropy,
        "reliability": {"late_fusion": (y, p_good), "adaptive": (y, p_bad)},
        "ood_roc": {"optical": (lab, np.r_[rng.beta(5, 2, 200), rng.beta(2, 5, 150)]),
                    "sar": (lab, np.r_[rng.beta(3, 2, 200), rng.beta(2, 3, 150)])},
    }


@pytest.mark.slow
def test_write_plots_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    written = plots.write_plots(_fake_arrays(rng), str(tmp_path))
    assert set(written) == {"entropy_histograms.png", "reliability.png", "ood_roc.png"}
    for name in written:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) > 10_000, (name, len(data))
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_write_table(tmp_path):
    path = report.write_table(_fake_results(), str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out")) == ["table.md"]
    md = open(path, encoding="utf-8").read()
    assert md.startswith("# Results") and "0.781 (0.779)" in md
    assert plots.write_plots({}, str(tmp_path / "out")) == {}
