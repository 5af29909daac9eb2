"""`python -m tf_fusion.evaluate` on the session's smoke run: results.json recomputed from what it
wrote in predictions.npz, the scenarios' input changes, the detectors' direction, table and plots."""
import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, fbeta_score, roc_auc_score

tf = pytest.importorskip("tensorflow")
from tf_fusion import evaluate  # noqa: E402
from tf_fusion.passes import PASSES  # noqa: E402
from tf_fusion.protocol import SCENARIO_BY_NAME, SCENARIOS  # noqa: E402

F_SCORES = ("f1_samples", "f1_micro", "f1_macro", "f2_samples", "f2_micro", "f2_macro")
METHODS = {"baseline", "adaptive", *(p.method for p in PASSES)}


@pytest.fixture(scope="module")
def results(smoke_report):
    return json.loads((smoke_report / "results.json").read_text())


@pytest.fixture(scope="module")
def predictions(smoke_report):
    with np.load(smoke_report / "predictions.npz") as f:
        return {k: f[k] for k in f.files}


def test_results_cover_every_method_scenario_and_metric(results):
    methods = results["methods"]
    assert set(methods) == METHODS
    for method, scenarios in methods.items():
        assert set(scenarios) == {s.name for s in SCENARIOS}, method
        for scenario, metrics in scenarios.items():
            has_f = SCENARIO_BY_NAME[scenario].has_labels  # no in-distribution labels on OOD classes
            assert all((k in metrics) == has_f for k in F_SCORES), (method, scenario)
            assert 0 <= metrics["avg_entropy"] <= 1 and 0.5 <= metrics["avg_confidence"] <= 1
            if scenario != "clear":
                assert all(0 <= metrics[k] <= 1 for k in ("auroc_confidence", "auroc_entropy", "aupr_confidence", "aupr_entropy"))
    assert all("ood_auroc_optical" in methods["adaptive"][s.name] for s in SCENARIOS if s.name != "clear")


def test_predictions_file_is_what_was_scored(results, predictions, smoke_data):
    """Several results.json entries recomputed from predictions.npz with scikit-learn / NumPy."""
    for s in SCENARIOS:
        n = smoke_data.subset_size(s.subset)
        assert predictions[f"{s.name}/labels"].shape == (n, 12)
        assert predictions[f"{s.name}/p_o"].shape == predictions[f"{s.name}/p_s"].shape == (n,)
        for m in METHODS:
            assert predictions[f"{s.name}/{m}"].shape == (n, 12)
    for scenario, method in (("clear", "adaptive"), ("cloudy", "non_adaptive"), ("missing_sar", "optical_only"),
                             ("corrupted_sar", "sar_only")):
        y, p = predictions[f"{scenario}/labels"], predictions[f"{scenario}/{method}"]
        got = results["methods"][method][scenario]
        assert got["f1_samples"] == pytest.approx(f1_score(y, p > 0.5, average="samples", zero_division=0))
        assert got["f2_macro"] == pytest.approx(fbeta_score(y, p > 0.5, beta=2, average="macro", zero_division=0))
        entropy = -(p * np.log2(np.clip(p, 1e-300, 1)) + (1 - p) * np.log2(np.clip(1 - p, 1e-300, 1)))
        assert got["avg_entropy"] == pytest.approx(entropy.mean(), abs=1e-6)
        assert got["avg_confidence"] == pytest.approx(np.maximum(p, 1 - p).mean(), abs=1e-6)
    # the baseline column is the run itself at λ = (1, 1) here: it must equal non-adaptive
    for s in SCENARIOS:
        np.testing.assert_allclose(predictions[f"{s.name}/baseline"], predictions[f"{s.name}/non_adaptive"], atol=1e-6)


def test_detector_auroc_has_the_right_direction(results, predictions):
    """`ood_auroc_*`: the shifted set is the positive class, a LOWER in-distribution probability
    means shifted; recomputed from the raw p with scikit-learn."""
    for scenario in ("ood_classes", "very_cloudy", "corrupted_optical"):
        for key, metric in (("p_o", "ood_auroc_optical"), ("p_s", "ood_auroc_sar")):
            clear, shifted = predictions[f"clear/{key}"], predictions[f"{scenario}/{key}"]
            labels = np.r_[np.zeros(len(clear)), np.ones(len(shifted))]
            want = roc_auc_score(labels, -np.r_[clear, shifted])
            assert results["methods"]["adaptive"][scenario][metric] == pytest.approx(want)


def test_modalities_a_method_does_not_see_leave_it_unchanged(predictions):
    """SAR-only ignores the optical input, optical-only the SAR input: identical predictions on
    clear and on the scenarios that change only the other modality."""
    for scenario in ("missing_optical", "corrupted_optical"):
        np.testing.assert_array_equal(predictions[f"{scenario}/sar_only"], predictions["clear/sar_only"])
        assert not np.array_equal(predictions[f"{scenario}/optical_only"], predictions["clear/optical_only"])
    for scenario in ("missing_sar", "corrupted_sar"):
        np.testing.assert_array_equal(predictions[f"{scenario}/optical_only"], predictions["clear/optical_only"])


def test_scenarios_change_the_inputs_as_documented():
    """missing: zeros in place of that modality's normalised input; corrupted: seeded Gaussian
    noise of std `evaluation.corruption_std` added to it; the other modality untouched."""
    rng = np.random.default_rng(0)
    x = {"s2": tf.constant(rng.normal(size=(64, 8, 8, 12)), tf.float32),
         "s1": tf.constant(rng.normal(size=(64, 8, 8, 2)), tf.float32)}
    for s in SCENARIOS:
        out = evaluate.apply_scenario(x, s, std=2.0, seed=(3, 4))
        if s.change is None:
            assert out is x
            continue
        key, other = ("s2", "s1") if s.modality == "optical" else ("s1", "s2")
        np.testing.assert_array_equal(out[other].numpy(), x[other].numpy())
        delta = out[key].numpy() - x[key].numpy()
        if s.change == "missing":
            np.testing.assert_array_equal(out[key].numpy(), 0.0)
        else:
            assert abs(delta.mean()) < 0.05 and delta.std() == pytest.approx(2.0, rel=0.03)
            again = evaluate.apply_scenario(x, s, std=2.0, seed=(3, 4))[key].numpy()
            np.testing.assert_array_equal(again, out[key].numpy())  # seeded: the same on every run


def test_table_and_plots_are_written(smoke_report):
    table = (smoke_report / "table.md").read_text()
    for column in ("Baseline", "Non-Adaptive", "Adaptive", "Optical Only", "SAR Only"):
        assert column in table
    assert "(0.779)" in table  # the paper's clear-test F1 of the baseline beside ours
    for name in ("entropy_histograms.png", "reliability.png", "ood_roc.png"):
        assert (smoke_report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_evaluation_is_deterministic(smoke_report, smoke_run):
    first = (smoke_report / "results.json").read_text()
    assert evaluate.main(["--run", str(smoke_run), "--baseline-run", str(smoke_run)]) == 0
    assert (smoke_report / "results.json").read_text() == first
