"""`python -m tf_fusion.evaluate` on a smoke run: every method, scenario and metric, table and plots."""
import json
import subprocess
import sys

import pytest

from conftest import REPO

SCENARIOS = ("clear", "ood_classes", "cloudy", "very_cloudy", "snow", "missing_sar", "missing_optical",
             "corrupted_optical", "corrupted_sar")
F_SCORES = ("f1_samples", "f1_micro", "f1_macro", "f2_samples", "f2_micro", "f2_macro")


def _run(*args):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluate")
    cache = f"data.cache_dir={base / 'cache'}"
    _run("tf_fusion.train", "--experiment", "smoke", "--run-dir", base / "run", "--set", cache)
    _run("tf_fusion.train", "--experiment", "smoke", "--run-dir", base / "baseline", "--set", cache,
         "--set", "training.pass_weights={fuse: 1.0, opt: 0.0, sar: 0.0}", "--set", "training.epochs=3")
    _run("tf_fusion.evaluate", "--run", base / "run", "--baseline-run", base / "baseline")
    return base


def test_results_cover_every_method_scenario_and_metric(report):
    results = json.loads((report / "run" / "report" / "results.json").read_text())
    methods = results["methods"]
    assert set(methods) == {"baseline", "non_adaptive", "adaptive", "optical_only", "sar_only"}
    for method, scenarios in methods.items():
        assert set(scenarios) == set(SCENARIOS), method
        for scenario, metrics in scenarios.items():
            has_f = scenario != "ood_classes"  # no in-distribution labels there
            assert all((k in metrics) == has_f for k in F_SCORES), (method, scenario)
            assert 0 <= metrics["avg_entropy"] <= 1 and 0.5 <= metrics["avg_confidence"] <= 1
            if scenario != "clear":
                assert all(0 <= metrics[k] <= 1 for k in ("auroc_confidence", "auroc_entropy", "aupr_confidence", "aupr_entropy"))
    assert all("ood_auroc_optical" in methods["adaptive"][s] and "ood_auroc_sar" in methods["adaptive"][s]
               for s in SCENARIOS if s != "clear")
    # the SAR-only prediction does not see the optical input: identical on clear and missing/corrupted optical
    for scenario in ("missing_optical", "corrupted_optical"):
        assert methods["sar_only"][scenario]["f1_samples"] == methods["sar_only"]["clear"]["f1_samples"]
    assert methods["optical_only"]["missing_sar"]["f1_samples"] == methods["optical_only"]["clear"]["f1_samples"]


def test_table_and_plots_are_written(report):
    out = report / "run" / "report"
    table = (out / "table.md").read_text()
    for column in ("Baseline", "Non-Adaptive", "Adaptive", "Optical Only", "SAR Only"):
        assert column in table
    assert "(0.779)" in table  # the paper's clear-test F1 of the baseline beside ours
    for name in ("entropy_histograms.png", "reliability.png", "ood_roc.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_is_deterministic(report):
    first = (report / "run" / "report" / "results.json").read_text()
    _run("tf_fusion.evaluate", "--run", report / "run", "--baseline-run", report / "baseline")
    assert (report / "run" / "report" / "results.json").read_text() == first
