"""`python -m tf_fusion.gate_study`: its verdicts from the runs' own report files, written here in
evaluate's documented shapes (results.json, detectors.json) for two worlds and two seeds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tf_fusion import gate_study

SCEN = ("very_cloudy", "corrupted_optical", "clear", "ood_classes")


def _write(run, f1: dict, entropy: dict, gate: str, detectors: dict):
    """f1 / entropy: {method: {scenario: value}}; detectors: {name: {scenario: (F1, optical AUROC)}}."""
    methods = {m: {s: {"f1_samples": v, "avg_entropy": entropy.get(m, {}).get(s, 0.0)} for s, v in per.items()}
               for m, per in f1.items()}
    for m, per in entropy.items():
        for s, v in per.items():
            methods.setdefault(m, {}).setdefault(s, {})["avg_entropy"] = v
    comparison = {"adaptive": {s: {n: {"f1_samples": per[s][0], "map_macro": 0.5} for n, per in detectors.items() if s in per}
                               for s in ("very_cloudy", "corrupted_optical", "clear")}}
    for s in ("very_cloudy", "corrupted_optical", "ood_classes"):
        comparison[s] = {n: {m: {"auroc": per.get(s, (0, 0.9))[1], "aupr": 0.5, "fpr95": 0.1} for m in ("optical", "sar")}
                         for n, per in detectors.items()}
    (run / "report").mkdir(parents=True)
    (run / "report" / "results.json").write_text(json.dumps({"methods": methods, "detector": gate}))
    (run / "report" / "detectors.json").write_text(json.dumps(comparison))


def test_the_verdicts_hold_only_when_they_hold_in_every_seed(tmp_path, capsys):
    base = {"non_adaptive": {"very_cloudy": 0.50, "corrupted_optical": 0.40, "clear": 0.90},
            "optical_only": {"very_cloudy": 0.20, "corrupted_optical": 0.10, "clear": 0.85}}
    entropy = {"non_adaptive": {"clear": 0.1, "ood_classes": 0.3}, "optical_only": {"clear": 0.1, "ood_classes": 0.2},
               "sar_only": {"clear": 0.2, "ood_classes": 0.2}, "adaptive": {"clear": 0.1, "ood_classes": 0.7}}
    good = {"very_cloudy": (0.60, 1.0), "corrupted_optical": (0.46, 1.0), "clear": (0.88, None)}
    # world 2: in seed 0 corrupted optical gains 0.04 only (< 0.05), in seed 1 clear loses 0.031 (> 0.03)
    weak = {0: {**good, "corrupted_optical": (0.44, 0.6)}, 1: {**good, "clear": (0.849, None)}}
    for world in (1, 2):
        for seed in (0, 1):
            d = {"good": good, "weak": weak[seed] if world == 2 else good}
            f1 = {**base, "adaptive": {s: good[s][0] for s in ("very_cloudy", "corrupted_optical", "clear")}}
            _write(tmp_path / "runs" / gate_study.run_name(world, seed), f1, entropy, "good", d)
    assert gate_study.main(["--experiment", "demo", "--worlds", "1,2", "--seeds", "2", "--dir", str(tmp_path),
                            "--collect"]) == 0
    report = json.loads((tmp_path / "report" / "worlds.json").read_text())
    assert report["1"]["holds"]["weak"] == {"very_cloudy": True, "corrupted_optical": True, "clear": True}
    assert report["2"]["holds"]["weak"] == {"very_cloudy": True, "corrupted_optical": False, "clear": False}
    assert report["2"]["holds"]["good"] == {"very_cloudy": True, "corrupted_optical": True, "clear": True}
    assert report["2"]["holds"]["gate: good"] == {"very_cloudy": True, "corrupted_optical": True, "clear": True,
                                                 "unknown_classes": True}
    # the table's means are the seeds' means
    assert report["2"]["rows"]["weak"]["f1_corrupted_optical"] == pytest.approx(np.mean([0.44, 0.46]))
    assert report["2"]["rows"]["weak"]["f1_clear"] == pytest.approx(np.mean([0.88, 0.849]))
    assert report["2"]["rows"]["weak"]["auroc_corrupted_optical"] == pytest.approx(np.mean([1.0, 0.6]))
    assert report["2"]["rows"]["gate: good"]["entropy_rise"] == pytest.approx(0.6)
    text = (tmp_path / "report" / "worlds.md").read_text()
    assert "## World 2 (2 seeds)" in text and "| weak | 0.600 | 0.450 | 0.865 |" in text
    assert "yes / NO / NO" in text


def test_very_cloudy_needs_both_margins():
    ref = {"non_adaptive": {"f1_very_cloudy": 0.5, "f1_corrupted_optical": 0.4, "f1_clear": 0.9},
           "optical_only": {"f1_very_cloudy": 0.45}}
    row = {"f1_very_cloudy": 0.56, "f1_corrupted_optical": 0.45, "f1_clear": 0.9}
    assert gate_study.holds(row, ref)["very_cloudy"] is True
    ref["optical_only"]["f1_very_cloudy"] = 0.47  # 0.56 < 0.47 + 0.10
    assert gate_study.holds(row, ref)["very_cloudy"] is False


def test_a_study_without_the_synthetic_archive_is_refused_in_one_line(capsys):
    assert gate_study.main(["--experiment", "paper", "--collect"]) == 2
    assert capsys.readouterr().err.startswith("error: paper: a gate study needs the synthetic archive")
