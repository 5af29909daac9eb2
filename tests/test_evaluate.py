"""`python -m tf_fusion.evaluate` on the session's smoke run: results.json recomputed from what it
wrote in predictions.npz, the scenarios' input changes, the detectors' direction, table and plots."""
import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, fbeta_score, roc_auc_score

tf = pytest.importorskip("tensorflow")
from tf_fusion import evaluate, shifts  # noqa: E402
from tf_fusion.passes import PASSES  # noqa: E402
from tf_fusion.protocol import reported, scenario_by_name, scenarios  # noqa: E402
from tf_fusion.runs import Run  # noqa: E402

F_SCORES = ("f1_samples", "f1_micro", "f1_macro", "f2_samples", "f2_micro", "f2_macro", "map_macro", "map_micro")
METHODS = {"late_fusion", "adaptive", *(p.method for p in PASSES)}


def _evaluated(smoke_run, smoke_data):
    """The scenarios the smoke evaluation ran: the protocol's, where the build has data."""
    return [s for s in scenarios(Run(smoke_run).config) if smoke_data.subset_size(s.subset)]


@pytest.fixture(scope="module")
def results(smoke_report):
    return json.loads((smoke_report / "results.json").read_text())


@pytest.fixture(scope="module")
def predictions(smoke_report):
    with np.load(smoke_report / "predictions.npz") as f:
        return {k: f[k] for k in f.files}


def test_results_cover_every_method_scenario_and_metric(results, smoke_run, smoke_data):
    methods = results["methods"]
    assert set(methods) == METHODS
    evaluated = _evaluated(smoke_run, smoke_data)
    assert {"clear", "missing_optical", "corrupted_sar", "optical_noise_1"} <= {s.name for s in evaluated}
    for method, per_scenario in methods.items():
        # single-modality methods only where their modality is there ("–" in the table)
        assert set(per_scenario) == {s.name for s in evaluated if reported(method, s)}, method
        for scenario, metrics in per_scenario.items():
            has_f = scenario_by_name(scenario).has_labels  # no in-distribution labels on OOD classes
            assert all((k in metrics) == has_f for k in F_SCORES), (method, scenario)
            assert 0 <= metrics["avg_entropy"] <= 1 and 0.5 <= metrics["avg_confidence"] <= 1
            if scenario != "clear":
                assert all(0 <= metrics[k] <= 1 for k in ("auroc_confidence", "aupr_entropy", "fpr95_confidence"))
    assert "optical_only" not in methods or "missing_optical" not in methods["optical_only"]
    assert all("ood_auroc_optical" in methods["adaptive"][s.name] for s in evaluated if s.name != "clear")
    assert set(methods["adaptive"]["clear"]["ap_per_class"]) == set(Run(smoke_run).summary["classes"])


def test_predictions_file_is_what_was_scored(results, predictions, smoke_run, smoke_data):
    """Several results.json entries recomputed from predictions.npz with scikit-learn / NumPy."""
    from sklearn.metrics import average_precision_score

    for s in _evaluated(smoke_run, smoke_data):
        n = smoke_data.subset_size(s.subset)
        assert predictions[f"{s.name}/labels"].shape == (n, 12)
        assert predictions[f"{s.name}/p_o"].shape == predictions[f"{s.name}/p_s"].shape == (n,)
        for m in METHODS:
            if reported(m, s):
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
        assert got["map_micro"] == pytest.approx(average_precision_score(y.ravel(), p.ravel()))
        present = y.sum(0) > 0
        assert got["map_macro"] == pytest.approx(average_precision_score(y[:, present], p[:, present], average="macro"))


def test_the_missing_modality_protocol(predictions, smoke_run, smoke_data):
    """The late-fusion column is the run itself at λ = (1, 1) here. Where both modalities are
    there it equals non-adaptive; with one missing, the gated non-adaptive closes its gate (=
    the other modality's single pass, bitwise) while late fusion sees zeros in its place."""
    for s in _evaluated(smoke_run, smoke_data):
        late, non_adaptive = predictions[f"{s.name}/late_fusion"], predictions[f"{s.name}/non_adaptive"]
        if s.change == "missing":
            other = "sar_only" if s.modality == "optical" else "optical_only"
            np.testing.assert_array_equal(non_adaptive, predictions[f"{s.name}/{other}"])
            assert not np.allclose(late, non_adaptive, atol=1e-4)
            assert (predictions[f"{s.name}/{'p_o' if s.modality == 'optical' else 'p_s'}"] == 0).all()
        else:
            np.testing.assert_allclose(late, non_adaptive, atol=1e-6, err_msg=s.name)


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
    for scenario in ("missing_optical", "corrupted_optical", "optical_noise_1"):
        np.testing.assert_array_equal(predictions[f"{scenario}/sar_only"], predictions["clear/sar_only"])
    assert not np.array_equal(predictions["corrupted_optical/optical_only"], predictions["clear/optical_only"])
    for scenario in ("missing_sar", "corrupted_sar", "sar_noise_1"):
        np.testing.assert_array_equal(predictions[f"{scenario}/optical_only"], predictions["clear/optical_only"])


def test_scenarios_change_the_inputs_as_documented():
    """missing: zeros in place of that modality's normalised input; corrupted: the input replaced
    by N(0, 1) noise (the authors' protocol); noise: Gaussian noise of the scenario's std added;
    seeded; the other modality untouched."""
    from tf_fusion import config as cfg

    rng = np.random.default_rng(0)
    x = {"s2": tf.constant(rng.normal(3.0, 0.1, size=(64, 8, 8, 12)), tf.float32),
         "s1": tf.constant(rng.normal(3.0, 0.1, size=(64, 8, 8, 2)), tf.float32)}
    changes = set()
    for s in scenarios(cfg.load_experiment("smoke", ["evaluation.additive_noise=[2.0]"])):
        out = shifts.apply_scenario(x, s, seed=(3, 4))
        if s.change is None:
            assert out is x
            continue
        changes.add(s.change)
        key, other = ("s2", "s1") if s.modality == "optical" else ("s1", "s2")
        np.testing.assert_array_equal(out[other].numpy(), x[other].numpy())
        got = out[key].numpy()
        if s.change == "missing":
            np.testing.assert_array_equal(got, 0.0)
            continue
        if s.change == "replaced":  # nothing of the image is left: mean 0, std 1
            assert abs(got.mean()) < 0.05 and got.std() == pytest.approx(1.0, rel=0.03)
        else:
            delta = got - x[key].numpy()
            assert abs(delta.mean()) < 0.05 and delta.std() == pytest.approx(2.0, rel=0.03)
        np.testing.assert_array_equal(shifts.apply_scenario(x, s, seed=(3, 4))[key].numpy(), got)
    assert changes == {"missing", "replaced", "noise"}


def test_table_and_plots_are_written(smoke_report):
    table = (smoke_report / "table.md").read_text()
    for column in ("Late Fusion", "Non-Adaptive", "Adaptive", "Optical Only", "SAR Only"):
        assert column in table
    assert "(0.779)" in table  # the paper's clear-test F1 of its baseline (late fusion) beside ours
    for name in ("entropy_histograms.png", "reliability.png", "ood_roc.png"):
        assert (smoke_report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_evaluation_is_deterministic(results, smoke_run):
    """A second pass over every scenario (its noise, its batches) scores exactly what
    results.json holds: the same numbers to the last digit."""
    run = Run.finished_run(str(smoke_run))
    pred, side = evaluate.predict_scenarios(run, evaluate.baselines_of([f"late_fusion={smoke_run}"]), log=lambda *_: None)
    again = evaluate.compute_results(pred, run.config, run.summary["classes"])
    evaluate.temperature_results(again, pred, side, run.config)
    assert json.dumps(again["methods"], sort_keys=True) == json.dumps(results["methods"], sort_keys=True)
    assert again["temperature"] == results["temperature"]
