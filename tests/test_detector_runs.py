"""A run's OOD detectors (`tf_fusion.detector_runs`, `evaluate --detectors`, `detector_report`):
the config keys, Eq. 3 with a post-hoc detector in the graph against NumPy, the SavedModel's p
on the real example pairs against the offline detector, the files of `--detectors all` against
scikit-learn, one branch evaluation per batch, the never-fitted error, refitting only what a
changed setting touches, and temperature scaling. The session's smoke run is copied before
anything is fitted into it."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402
from scipy.special import expit  # noqa: E402
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score  # noqa: E402

from conftest import count_branch_calls  # noqa: E402
from tf_fusion import atomic, detector_runs, detectors, evaluate, export, scores, serving  # noqa: E402
from tf_fusion import config as cfg  # noqa: E402
from tf_fusion.adaptive import build_adaptive_model  # noqa: E402
from tf_fusion.model import FusionModel, gate_inputs  # noqa: E402
from tf_fusion.ood import build_ood_head, ood_settings  # noqa: E402
from tf_fusion.passes import PASSES  # noqa: E402
from tf_fusion.protocol import MODALITIES, scenarios  # noqa: E402
from tf_fusion.runs import Run, RunError  # noqa: E402

SIZE, CLASSES, B = 32, 5, 6
FLAGS = np.array([[1, 1], [1, 1], [1, 1], [0, 1], [1, 0], [0, 0]], np.float32)  # as tests/test_export.py


def _copy(run, tmp_path, name="run", **ood):
    """A private copy of a run folder, its `ood` settings changed as given."""
    out = tmp_path / name
    shutil.copytree(run, out)
    if ood:
        _set(out, **ood)
    return out


def _set(run, section="ood", **values):
    config = cfg.load_experiment(str(run / "config.yaml"))
    config[section].update(values)
    atomic.write_yaml(str(run / "config.yaml"), config)


# ------------------------------------------------------------------------------------ config
def test_config_names_are_the_detector_librarys_and_are_checked():
    assert cfg.RULES["ood.calibration"] == detectors.CALIBRATIONS
    config = cfg.load_experiment("smoke")
    assert cfg.DEFAULTS["evaluation"]["temperature_scaling"] is False
    assert detector_runs.settings(config) == {"calibration": "logistic", "calibrate_on": "ood_val+corruptions",
                                              "knn_k": 10, "knn_reference": 2000, "seed": 0}
    for name in detectors.DETECTORS:  # every registered name is a gate
        assert cfg.load_experiment("smoke", [f"ood.detector={name}"])["ood"]["detector"] == name
    for override, message in (("ood.detector=energy", "ood.detector must name detectors among binary_head, .* got 'energy'"),
                              ("ood.detector=[knn, energy]", r"ood.detector must name detectors .* got \['knn', 'energy'\]"),
                              ("ood.detector={optical: knn}", r"ood.detector per modality must have exactly the keys"),
                              ("ood.calibrate_on=test", "ood.calibrate_on must be 'ood_val' or 'corruptions' or "),
                              ("ood.calibration=platt", "ood.calibration must be 'logistic' or 'isotonic', got 'platt'"),
                              ("ood.knn_k=0", r"ood.knn_k must be an integer >= 1, got 0"),
                              ("ood.knn_reference=5", r"ood.knn_reference must be >= ood.knn_k \(10\), got 5")):
        with pytest.raises(cfg.ConfigError, match=message):
            cfg.load_experiment("smoke", [override])
    # choosing a detector is not a setting of the binary heads: they are not retrained for it
    other = cfg.load_experiment("smoke", ["ood.detector=knn", "ood.knn_k=3", "ood.calibration=isotonic"])
    assert ood_settings(other) == ood_settings(config) and "detector" not in ood_settings(config)
    assert detector_runs.requested("all") == ["binary_head", *detectors.POST_HOC]
    assert detector_runs.requested("knn, confidence,knn") == ["knn", "confidence"]
    assert detector_runs.requested("all,binary_head+knn") == ["binary_head", *detectors.POST_HOC, "binary_head+knn"]
    assert detector_runs.members(["binary_head+knn", "knn", "vim"]) == ["binary_head", "knn", "vim"]
    with pytest.raises(cfg.ConfigError, match=r"--detectors 'knn,energy'.*unknown \['energy'\]"):
        detector_runs.requested("knn,energy")


# ------------------------------------------------------------------------------------ the graph
def _fitted(name, d, rng, method="logistic", classifier=None):
    """A detector fitted on random embeddings of width d around one direction and calibrated
    against embeddings around another (and logits of a larger spread against a smaller one);
    with ``classifier`` (kernel [F, C], bias [C]) also non-negative features of width F, likewise."""
    center = np.zeros(d)
    center[: d // 2] = 1.0
    x = rng.normal(size=(300, d)) + 2 * center
    features = {}
    if classifier is not None:
        width = classifier[0].shape[0]
        axis = np.zeros(width)
        axis[: width // 2] = 1.0
        features = {"in": np.abs(rng.normal(size=(300, width))) + 2 * axis,
                    "out": np.abs(rng.normal(size=(300, width))) + 2 * axis[::-1], "classifier": classifier}
    stats = detectors.fit(name, x, rng.random((300, CLASSES)) < 0.4, {"knn_k": 3, "knn_reference": 100},
                          features=features.get("in"), classifier=classifier)
    logits = rng.normal(0, 3, (300, CLASSES))
    s_in = detectors.raw_score(name, x, logits, stats, features.get("in"))
    s_out = detectors.raw_score(name, rng.normal(size=(300, d)) + 2 * center[::-1], rng.normal(0, 0.5, (300, CLASSES)),
                                stats, features.get("out"))
    calibrator = detectors.fit_calibrator(s_in, s_out, method)
    assert calibrator.coef > 0  # it separates: p is not the constant 0.5
    return stats, calibrator


def test_a_combined_gate_is_the_smallest_of_its_members_p(monkeypatch):
    """A gate of several detectors (`ood.detector: [binary_head, mahalanobis_class]` for optical,
    knn alone for SAR): p_optical is the minimum of the members' p, each member's p computed here
    by its own layer on the branch output; each member's p is an output with_features; one
    branch evaluation per call."""
    keras.utils.set_random_seed(0)
    fusion = FusionModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE, fusion_stage=5)
    rng = np.random.default_rng(11)
    x = {"s2": rng.normal(size=(B, SIZE, SIZE, 12)).astype("float32"),
         "s1": rng.normal(size=(B, SIZE, SIZE, 2)).astype("float32")}
    z = {"optical": fusion.encoder_opt(x["s2"], training=False), "sar": fusion.encoder_sar(x["s1"], training=False)}
    ones = np.ones((B, 1), "float32")
    one, zero = tf.constant(ones), tf.zeros((B, 1))
    logits = {m: fusion.fusion_head([z["optical"], z["sar"], *g], training=False)
              for m, g in (("optical", (one, zero)), ("sar", (zero, one)))}
    maha = detectors.DetectorProbability.from_fitted("mahalanobis_class", *_fitted("mahalanobis_class", 64, rng),
                                                     name="p_optical_maha")
    knn = detectors.DetectorProbability.from_fitted("knn", *_fitted("knn", 64, rng), name="p_sar_knn")
    # a binary head (any layer on the branch output) whose p straddles mahalanobis_class's
    head = keras.Sequential([keras.Input((64,)), keras.layers.Dense(1, activation="sigmoid")], name="ood_opt")
    p_ref = np.asarray(maha([z["optical"], logits["optical"]]))
    w = rng.normal(0, 30, (64, 1))
    bias = np.log(p_ref / (1 - p_ref)).mean() - np.median(np.asarray(z["optical"]) @ w)
    head.layers[0].set_weights([w, np.array([bias])])
    adaptive = build_adaptive_model(fusion, (head, maha), (knn,), with_availability=True, with_features=True)
    calls = count_branch_calls(monkeypatch, fusion)
    out = {k: np.asarray(v) for k, v in adaptive({**x, "optical_available": ones, "sar_available": ones}).items()}
    assert calls == {"opt": 1, "sar": 1, "head": len(PASSES)}
    p_head = np.asarray(head(z["optical"]))[:, 0]
    p_maha = np.asarray(maha([z["optical"], logits["optical"]]))[:, 0]
    assert (p_head < p_maha).any() and (p_maha < p_head).any()  # the minimum takes from both
    np.testing.assert_allclose(out["p_optical"][:, 0], np.minimum(p_head, p_maha), atol=1e-6)
    np.testing.assert_allclose(out["p_sar"][:, 0], np.asarray(knn([z["sar"], logits["sar"]]))[:, 0], atol=1e-6)
    np.testing.assert_allclose(out["p_optical_binary_head"][:, 0], p_head, atol=1e-6)
    np.testing.assert_allclose(out["p_optical_mahalanobis_class"][:, 0], p_maha, atol=1e-6)


@pytest.mark.parametrize("name, stage", [(n, k) for n in ("mahalanobis_class", "knn", "joint_energy") for k in (3, 5)]
                         + [("vim", 3), ("scale", 5)])
def test_adaptive_graph_takes_p_from_a_post_hoc_detector(name, stage, monkeypatch):
    """p in the graph = the calibrated NumPy score of the branch output (averaged over H, W below
    stage 5), of the single-modality pass's logits and of the classifier's input in that pass
    (vim, scale); Eq. 3 with it; a missing modality — even a NaN one — has p exactly 0; each
    branch runs once per call, the head once per pass."""
    keras.utils.set_random_seed(0)
    fusion = FusionModel(backbone="tiny", num_classes=CLASSES, image_size=SIZE, fusion_stage=stage)
    rng = np.random.default_rng(stage)
    x = {"s2": rng.normal(size=(B, SIZE, SIZE, 12)).astype("float32"),
         "s1": rng.normal(size=(B, SIZE, SIZE, 2)).astype("float32")}
    z = {"optical": np.asarray(fusion.encoder_opt(x["s2"], training=False)),
         "sar": np.asarray(fusion.encoder_sar(x["s1"], training=False))}
    embedding = {m: v.mean(axis=(1, 2)) if v.ndim == 4 else v for m, v in z.items()}
    assert (z["optical"].ndim == 4) == (stage < 5)
    fused = {gates: np.asarray(fusion(gate_inputs(x, *gates), training=False)["probabilities"])
             for gates in ((1, 1), (1, 0), (0, 1))}
    ones, zeros = np.ones((B, 1), "float32"), np.zeros((B, 1), "float32")
    gates = {"optical": (ones, zeros), "sar": (zeros, ones)}
    logits = {m: np.asarray(fusion.fusion_head([z["optical"], z["sar"], *gates[m]], training=False)) for m in MODALITIES}
    dense = fusion.fusion_head.get_layer("logits")  # the classifier, and what it reads
    reads = keras.Model(fusion.fusion_head.inputs, dense.input)
    features = {m: np.asarray(reads([z["optical"], z["sar"], *gates[m]], training=False)) for m in MODALITIES}
    kernel, bias = np.asarray(dense.kernel), np.asarray(dense.bias)
    for m in MODALITIES:
        np.testing.assert_allclose(features[m] @ kernel + bias, logits[m], atol=1e-4)
    classifier = (kernel, bias) if "classifier" in detectors.DETECTORS[name].reads else None
    fitted = {m: _fitted(name, embedding[m].shape[1], rng, classifier=classifier) for m in MODALITIES}
    layers = [detectors.DetectorProbability.from_fitted(name, *fitted[m], name=f"p_{m}") for m in MODALITIES]
    head = build_ood_head(z["optical"].shape[1:], (8,), 0.0, name="ood_opt")
    head_sar = build_ood_head(z["sar"].shape[1:], (8,), 0.0, name="ood_sar")
    adaptive = build_adaptive_model(fusion, *layers, with_availability=True, with_features=True,
                                    binary_heads=(head, head_sar))

    calls = count_branch_calls(monkeypatch, fusion)
    out = {k: np.asarray(v) for k, v in adaptive({**x, "optical_available": ones, "sar_available": ones}).items()}
    assert calls == {"opt": 1, "sar": 1, "head": len(PASSES)}  # the detectors ran nothing again

    p = {m: fitted[m][1](detectors.raw_score(name, embedding[m], logits[m], fitted[m][0], features[m]))
         for m in MODALITIES}
    np.testing.assert_allclose(out["p_optical"][:, 0], p["optical"], atol=1e-5)
    np.testing.assert_allclose(out["p_sar"][:, 0], p["sar"], atol=1e-5)
    np.testing.assert_allclose(out[f"p_optical_{name}"][:, 0], p["optical"], atol=1e-5)
    np.testing.assert_allclose(out["embedding_optical"], embedding["optical"], atol=1e-5)
    np.testing.assert_allclose(out["features_sar"], features["sar"], atol=1e-5)
    po, ps = p["optical"][:, None], p["sar"][:, None]
    eq3 = po * ps * fused[(1, 1)] + po * (1 - ps) * fused[(1, 0)] + (1 - po) * ps * fused[(0, 1)] + (1 - po) * (1 - ps) * 0.5
    np.testing.assert_allclose(out["probabilities"], eq3, atol=2e-5)
    assert out["p_optical_binary_head"].shape == (B, 1)
    if classifier is not None:  # the served graph (no with_features) reads the classifier's input too
        served = build_adaptive_model(fusion, *layers)
        calls.update(opt=0, sar=0, head=0)
        got = served(x)
        assert calls == {"opt": 1, "sar": 1, "head": len(PASSES)}
        np.testing.assert_allclose(np.asarray(got["p_sar"])[:, 0], p["sar"], atol=1e-5)
        np.testing.assert_allclose(np.asarray(got["probabilities_non_adaptive"]), fused[(1, 1)], atol=1e-6)

    nan = {**x, "s2": np.full_like(x["s2"], np.nan), "optical_available": zeros, "sar_available": ones}
    missing = {k: np.asarray(v) for k, v in adaptive(nan).items()}
    np.testing.assert_array_equal(missing["p_optical"], np.zeros((B, 1), np.float32))
    np.testing.assert_allclose(missing["probabilities"], ps * fused[(0, 1)] + (1 - ps) * 0.5, atol=2e-5)


# ------------------------------------------------------------------------------------ the SavedModel
@pytest.fixture(scope="module")
def fitted_copy(smoke_run, smoke_report, tmp_path_factory):
    """A copy of the smoke run with every post-hoc detector fitted (logistic calibration; the
    smoke evaluation fitted them) and the fitted statistics, loaded."""
    run = _copy(smoke_run, tmp_path_factory.mktemp("fitted"))
    lines = []
    fitted = detector_runs.fit_run(Run(run), detectors.POST_HOC, log=lines.append)
    assert "already fitted" in "\n".join(lines)
    return run, fitted


def _real_inputs(real_examples, run):
    """The 6 real pairs as raw request inputs, and the same preprocessed by the training pipeline."""
    from tf_fusion import data
    from tfrecords_builder import records

    s2_root, s1_root, names, partner = real_examples
    raw = serving.stack_samples([serving.read_pair(os.path.join(s2_root, n), os.path.join(s1_root, partner[n]))
                                 for n in names])
    raw["optical_available"], raw["sar_available"] = FLAGS[:, 0], FLAGS[:, 1]
    r = Run(run)
    serialized = [records.encode(f"p{i}", f"q{i}", "test", [], {b: raw[b][i] for b in serving.S2_BANDS + serving.S1_BANDS})
                  for i in range(len(FLAGS))]
    parse = data.make_parse_fn(r.manifest(), image_size=r.config["data"]["image_size"],
                               resize_method=r.config["data"]["resize_method"])
    x, _ = parse(tf.constant(serialized))
    return raw, {k: np.asarray(v) for k, v in x.items()}


SAVED = ("knn", "mahalanobis_normalized", "vim", "scale")  # exported and reloaded; the others' serving function
# runs in memory


def test_saved_model_computes_p_in_its_graph_as_the_offline_detector(fitted_copy, real_examples, tmp_path):
    """For every post-hoc detector: serving_default's p on the real example pairs (from the
    SavedModel for ``SAVED``, the serving function export writes otherwise) equals the NumPy
    detector (float64 `raw_score`, calibrator) on the branch outputs of the same preprocessed
    inputs, to 1e-5; a missing or non-finite optical input has p exactly 0."""
    run, fitted = _copy(fitted_copy[0], tmp_path), fitted_copy[1]
    raw, x = _real_inputs(real_examples, run)
    fusion = Run(run).load_model()
    z = {"optical": np.asarray(fusion.encoder_opt(x["s2"], training=False)),
         "sar": np.asarray(fusion.encoder_sar(x["s1"], training=False))}
    embedding = {m: v.mean(axis=(1, 2)) if v.ndim == 4 else v for m, v in z.items()}
    ones, zeros = np.ones((len(FLAGS), 1), "float32"), np.zeros((len(FLAGS), 1), "float32")
    logits = {m: np.asarray(fusion.fusion_head([z["optical"], z["sar"], *gates], training=False))
              for m, gates in (("optical", (ones, zeros)), ("sar", (zeros, ones)))}
    reads = keras.Model(fusion.fusion_head.inputs, fusion.fusion_head.get_layer("logits").input)  # the classifier's input
    features = {m: np.asarray(reads([z["optical"], z["sar"], *gates], training=False))
                for m, gates in (("optical", (ones, zeros)), ("sar", (zeros, ones)))}
    bad = {k: v.astype(np.float32) if k in serving.S2_BANDS else v for k, v in raw.items()}
    bad["B02"] = bad["B02"].copy()
    bad["B02"][1, 3, 3] = np.nan
    r = Run(run)
    for name in detectors.POST_HOC:
        if name in SAVED:  # the SavedModel round trip
            _set(run, detector=name)
            model_dir = export.export_run(str(run), str(tmp_path / name / "1"), log=lambda *_: None)
            signature = tf.saved_model.load(model_dir).signatures["serving_default"]
        else:  # the same serving function over the in-memory graph export writes
            adaptive = build_adaptive_model(fusion, *detector_runs.layers(r, name), with_availability=True)
            function = export.serving_functions(adaptive, r.manifest()["band_stats"],
                                                image_size=r.config["data"]["image_size"],
                                                resize_method=r.config["data"]["resize_method"],
                                                threshold=0.5)[serving.SIGNATURE_RAW]
            signature = lambda _f=function, **x: _f(x)  # noqa: E731  (keywords, as a signature takes them)
        out = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in serving.check_inputs(raw).items()}
                                                   ).items()}
        for m, key, flag in (("optical", "p_optical_in_distribution", FLAGS[:, 0]),
                             ("sar", "p_sar_in_distribution", FLAGS[:, 1])):
            stats, calibrator = fitted[name][m]
            want = calibrator(detectors.raw_score(name, embedding[m], logits[m], stats, features[m]))
            np.testing.assert_allclose(out[key][flag == 1], want[flag == 1], rtol=0, atol=1e-5, err_msg=f"{name} {m}")
            assert (out[key][flag == 0] == 0).all(), (name, m)
        if name == "knn":
            nonfinite = signature(**{k: tf.constant(v) for k, v in bad.items()})["p_optical_in_distribution"].numpy()
            assert nonfinite[1] == 0 and np.isfinite(nonfinite).all()
        if name in SAVED:
            with open(os.path.join(model_dir, "assets", "serving.json")) as f:
                assert json.load(f)["ood_detector"] == name
    # the default gate, a combination, in the SavedModel: p = the smaller of the paper's heads' p
    # (the run's heads on the branch output) and mahalanobis_class's calibrated NumPy score
    default = cfg.DEFAULTS["ood"]["detector"]
    _set(run, detector=default)
    model_dir = export.export_run(str(run), str(tmp_path / "default" / "1"), log=lambda *_: None)
    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    out = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in serving.check_inputs(raw).items()}
                                               ).items()}
    heads = Run(run).ood_heads()
    for m, key, flag in (("optical", "p_optical_in_distribution", FLAGS[:, 0]),
                         ("sar", "p_sar_in_distribution", FLAGS[:, 1])):
        head_p = np.asarray(heads[m][0](z[m], training=False), np.float64).reshape(-1)
        stats, calibrator = fitted["mahalanobis_class"][m]
        maha = calibrator(detectors.raw_score("mahalanobis_class", embedding[m], logits[m], stats, features[m]))
        np.testing.assert_allclose(out[key][flag == 1], np.minimum(head_p, maha)[flag == 1], rtol=0, atol=1e-5,
                                   err_msg=f"default gate {m}")
        assert (out[key][flag == 0] == 0).all()
    with open(os.path.join(model_dir, "assets", "serving.json")) as f:
        assert json.load(f)["ood_detector"] == default


# ------------------------------------------------------------------------------------ evaluate --detectors
def _fpr95(clear, shifted):
    """FPR at 95 % TPR by brute force: the highest threshold flagging ≥ 95 % of the shifted
    values (score ≥ t flags), and the share of clear values it flags."""
    t = max(v for v in np.unique(shifted) if np.mean(shifted >= v) >= 0.95)
    return float(np.mean(clear >= t))


def test_detectors_all_writes_the_documented_files_with_sklearns_figures(smoke_run, smoke_report, smoke_data):
    """The smoke evaluation ran with `--detectors all,binary_head+knn` (tests/smoke.py): the
    combination's p is the smaller of its members' p, patch by patch."""
    report = smoke_report
    names = ["binary_head", *detectors.POST_HOC, "binary_head+knn"]
    ran = [s for s in scenarios(Run(smoke_run).config) if smoke_data.subset_size(s.subset)]
    comparison = json.loads((report / "detectors.json").read_text())
    labelled = [s.name for s in ran if s.has_labels]
    assert set(comparison) == {s.name for s in ran if s.name != "clear"} | {"adaptive", "non_adaptive"}
    with np.load(report / "detector_scores.npz") as f:
        npz = {k: f[k] for k in f.files}
    assert set(npz) == {f"{prefix}{s.name}/{n}/{m}" for prefix in ("", "raw/") for s in ran for n in names
                        for m in MODALITIES}
    for s in ran:
        n_samples = smoke_data.subset_size(s.subset)
        for n in names:
            for m in MODALITIES:
                p, raw = npz[f"{s.name}/{n}/{m}"], npz[f"raw/{s.name}/{n}/{m}"]
                assert p.shape == raw.shape == (n_samples,) and ((p >= 0) & (p <= 1)).all()
                if "+" in n:
                    np.testing.assert_array_equal(p, np.minimum(*(npz[f"{s.name}/{k}/{m}"] for k in n.split("+"))))
                order = np.argsort(raw, kind="stable")
                assert (np.diff(p[order]) >= -1e-12).all(), (s.name, n, m)  # calibrated p is monotone in the score
                if s.name == "clear":
                    continue
                clear = npz[f"clear/{n}/{m}"]
                got = comparison[s.name][n][m]
                assert set(got) == {"auroc", "aupr", "fpr95"}
                labels = np.r_[np.zeros(len(clear)), np.ones(len(p))]  # shifted positive, a lower p = shifted
                assert got["auroc"] == pytest.approx(roc_auc_score(labels, -np.r_[clear, p]), abs=1e-12)
                assert got["aupr"] == pytest.approx(average_precision_score(labels, -np.r_[clear, p]), abs=1e-12)
                assert got["fpr95"] == pytest.approx(_fpr95(-clear, -p), abs=1e-12)
    assert set(comparison["adaptive"]) == set(labelled) == set(comparison["non_adaptive"])
    results = json.loads((report / "results.json").read_text())
    with np.load(report / "predictions.npz") as f:
        y = f["clear/labels"]
    for s in labelled:
        assert set(comparison["adaptive"][s]) == set(names)
        for n in names:
            assert set(comparison["adaptive"][s][n]) == {"f1_samples", "map_macro"}
        # the graph's adaptive column (the chosen detector: binary heads) = Eq. 3 offline with its p
        assert comparison["adaptive"][s]["binary_head"]["f1_samples"] == pytest.approx(
            results["methods"]["adaptive"][s]["f1_samples"], abs=1e-9)
        assert comparison["non_adaptive"][s]["f1_samples"] == results["methods"]["non_adaptive"][s]["f1_samples"]
    # Eq. 3 with a post-hoc detector, recomputed from the npz p and the non-adaptive/single passes
    with np.load(report / "predictions.npz") as f:
        passes = [f[f"clear/{m}"] for m in ("non_adaptive", "optical_only", "sar_only")]
    po, ps = npz["clear/knn/optical"][:, None], npz["clear/knn/sar"][:, None]
    eq3 = po * ps * passes[0] + po * (1 - ps) * passes[1] + (1 - po) * ps * passes[2] + (1 - po) * (1 - ps) * 0.5
    assert comparison["adaptive"]["clear"]["knn"]["f1_samples"] == pytest.approx(
        f1_score(y, eq3 > 0.5, average="samples", zero_division=0), abs=2 / len(y))
    text = (report / "detectors.md").read_text()
    assert "## AUROC (optical / SAR), against clear" in text and "| Clear |" in text
    for s in ran:
        assert s.name == "clear" or (report / f"detector_roc_{s.name}.png").stat().st_size > 1000


def test_temperature_scaling_adds_scaled_ece(smoke_run, smoke_report):
    """T is the minimum of the val BCE; ece_scaled of the non-adaptive pass on clear, recomputed
    from predictions.npz with an independent binning."""
    assert Run(smoke_run).config["evaluation"]["temperature_scaling"]  # smoke.yaml turns it on
    report = smoke_report
    results = json.loads((report / "results.json").read_text())
    t = results["temperature"]
    assert 0.05 <= t <= 20
    with np.load(report / "predictions.npz") as f:
        y, p = f["clear/labels"].ravel(), f["clear/non_adaptive"].astype(np.float64).ravel()
    q = expit(np.log(p / (1 - p)) / t)
    edges = np.minimum((q * 15).astype(int), 14)
    ece = sum(abs(q[edges == b].mean() - y[edges == b].mean()) * np.mean(edges == b) for b in range(15) if (edges == b).any())
    got = results["methods"]["non_adaptive"]["clear"]
    assert got["ece_scaled"] == pytest.approx(ece, abs=1e-4)
    assert "ece_scaled" in results["methods"]["adaptive"]["cloudy"] and "ece_scaled" not in results["methods"]["adaptive"].get(
        "ood_classes", {})


def _logits(run, subset, gates, corrupt=False):
    """(logits [N, C] of the fusion head at ``gates``, labels) of a subset, straight from the
    run's best.keras: the branches and the head called here, not through the detector code;
    ``corrupt``: each batch first corrupted as calibration corrupts `val` (`shifts.corrupt`,
    batch by batch in the evaluation's batch size, seeded by ood.seed)."""
    from tf_fusion import data as tfdata
    from tf_fusion.shifts import corrupt as corrupted

    fusion, d = run.load_model(), run.config["data"]
    out, labels = [], []
    for i, (x, y) in enumerate(tfdata.make_dataset(run.manifest(), subset, deterministic=True,
                                                   batch_size=run.config["evaluation"]["batch_size"],
                                                   image_size=d["image_size"], resize_method=d["resize_method"])):
        x = corrupted(x, i, run.config["ood"]["seed"]) if corrupt else x
        n = len(y)
        z = [fusion.encoder_opt(x["s2"], training=False), fusion.encoder_sar(x["s1"], training=False)]
        lam = [tf.fill((n, 1), np.float32(g)) for g in gates]
        out.append(np.asarray(fusion.fusion_head([*z, *lam], training=False), np.float64))
        labels.append(y.numpy())
    return np.concatenate(out), np.concatenate(labels)


def _grid_temperature(z, y):
    """argmin over T of the mean BCE of sigmoid(z / T): a log grid over [0.05, 20], then a fine
    linear grid around its best point (plain NumPy)."""
    def bce(t):
        return np.mean(np.logaddexp(0.0, z / t) - y * z / t)

    coarse = np.exp(np.linspace(np.log(0.05), np.log(20.0), 801))
    i = int(np.argmin([bce(t) for t in coarse]))
    fine = np.linspace(coarse[max(i - 1, 0)], coarse[min(i + 1, len(coarse) - 1)], 801)
    return float(fine[int(np.argmin([bce(t) for t in fine]))])


def test_the_temperature_is_fitted_on_val(smoke_run, smoke_report, smoke_data):
    """results.json's T is the BCE minimum over the fused pass's logits on `val` (recomputed here
    from the saved model with a NumPy grid), not on `test`; the smoke build's val and test
    differ (in size too), so a T fitted on the wrong subset shows."""
    assert smoke_data.subset_size("val") != smoke_data.subset_size("test")
    run = Run(smoke_run)
    t = json.loads((smoke_report / "results.json").read_text())["temperature"]
    expected = _grid_temperature(*_logits(run, "val", (1.0, 1.0)))
    on_test = _grid_temperature(*_logits(run, "test", (1.0, 1.0)))
    assert abs(expected - on_test) > 5e-3  # the fixture tells the subsets apart
    assert t == pytest.approx(expected, abs=1e-3)


def test_the_calibrators_are_fitted_on_val_against_ood_val_and_corruptions(smoke_run, smoke_report):
    """max_logit has nothing to fit before calibration: its raw score (the largest logit of the
    modality's single-modality pass) on `val`, on `ood_val` and on `val`'s generic corruptions
    (the default `ood.calibrate_on`), computed here from the saved model, fitted with
    scikit-learn's logistic regression (val: weight 1 each; ood_val and the corruptions: half of
    val's weight each) on the score standardised by val's, gives the saved calibrator's p (and one
    fitted on `test` instead of `val` would not)."""
    from sklearn.linear_model import LogisticRegression

    run = Run(smoke_run)
    assert run.config["ood"]["calibrate_on"] == "ood_val+corruptions"
    leak = {}
    for modality, gates in (("optical", (1.0, 0.0)), ("sar", (0.0, 1.0))):
        raw = {s: _logits(run, s, gates)[0].max(axis=1) for s in ("val", "ood_val", "test")}
        raw["corrupted"] = _logits(run, "val", gates, corrupt=True)[0].max(axis=1)
        assert np.abs(raw["corrupted"] - raw["val"]).min() > 0  # every val patch was corrupted

        def sklearn_p(inside, grid):
            s = np.concatenate([raw[inside], raw["ood_val"], raw["corrupted"]])
            y = np.r_[np.ones(len(raw[inside])), np.zeros(len(raw["ood_val"]) + len(raw["corrupted"]))]
            n = len(raw[inside])
            w = np.r_[np.ones(n), np.full(len(raw["ood_val"]), n / 2 / len(raw["ood_val"])),
                      np.full(len(raw["corrupted"]), n / 2 / len(raw["corrupted"]))]
            mean, std = raw[inside].mean(), raw[inside].std()
            lr = LogisticRegression().fit(((s - mean) / std)[:, None], y, sample_weight=w)
            if lr.coef_[0, 0] < 0:  # ranks OOD above in-distribution: the documented constant 0.5
                return np.full(len(grid), 0.5)
            return lr.predict_proba(((grid - mean) / std)[:, None])[:, 1]

        _, calibrator = detectors.load(run.path, "max_logit", modality, detector_runs.settings(run.config))
        grid = np.concatenate([raw["val"], raw["ood_val"], raw["test"]])
        expected = sklearn_p("val", grid)
        leak[modality] = np.abs(sklearn_p("test", grid) - expected).max()
        np.testing.assert_allclose(calibrator(grid), expected, atol=1e-4, err_msg=modality)
    assert max(leak.values()) > 0.01, leak  # a calibrator fitted on test would show (where p is not constant)


def test_fit_temperature_is_the_minimum_of_the_bce():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, (40000, 3))
    y = rng.random(z.shape) < expit(z / 2.5)  # the labels of logits 2.5 times too confident
    t = scores.fit_temperature(z, y)
    assert t == pytest.approx(2.5, rel=0.03)

    def argmin_bce(grid):
        return grid[int(np.argmin([np.mean(np.logaddexp(0, z / g) - y * z / g) for g in grid]))]

    coarse = argmin_bce(np.linspace(0.5, 6, 111))  # steps of 0.05, then 0.0005 around the best
    assert t == pytest.approx(argmin_bce(np.linspace(coarse - 0.05, coarse + 0.05, 201)), abs=1e-3)
    with pytest.raises(ValueError, match=r"finite logits .* got \(2,\) and \(3,\)"):
        scores.fit_temperature(np.zeros(2), np.zeros(3))


# ------------------------------------------------------------------------------------ one pass
def test_the_detector_passes_run_each_branch_once_per_batch(fitted_copy, smoke_data, monkeypatch, tmp_path):
    """Counted eagerly, batch by batch: fitting (train, val, ood_val) and evaluation's pass over
    every scenario with every detector call each branch once per batch."""
    run = Run(_copy(fitted_copy[0], tmp_path))
    fusion = run.load_model()
    calls = {"opt": 0, "sar": 0}
    for key, layer in (("opt", fusion.encoder_opt), ("sar", fusion.encoder_sar)):
        original = layer.call

        def counting(*args, _key=key, _call=original, **kwargs):
            calls[_key] += 1
            return _call(*args, **kwargs)

        monkeypatch.setattr(layer, "call", counting)
    monkeypatch.setattr(Run, "load_model", lambda self, *a, **k: fusion)
    bs = run.config["evaluation"]["batch_size"]
    batches = lambda subsets: sum(-(-smoke_data.subset_size(s) // bs) for s in subsets)  # noqa: E731
    tf.config.run_functions_eagerly(True)
    try:
        for name in ("knn_optical", "knn_sar", "max_logit_optical"):
            os.remove(os.path.join(run.path, "detectors", f"{name}.npz"))  # refit: a train pass and calibration
        detector_runs.fit_run(run, ["knn", "max_logit", "mahalanobis"], log=lambda *_: None)
        # calibration: val, ood_val and val's corruptions (the default ood.calibrate_on)
        assert calls == dict.fromkeys(calls, batches(["train", "val", "ood_val", "val"]))
        calls.update(opt=0, sar=0)
        evaluate.predict_scenarios(run, log=lambda *_: None, detectors=["binary_head", *detectors.POST_HOC])
    finally:
        tf.config.run_functions_eagerly(False)
    ran = [s.subset for s in scenarios(run.config) if smoke_data.subset_size(s.subset)]
    if run.config["evaluation"]["temperature_scaling"]:
        ran.append("val")  # the temperature is fitted on val's logits, in the same pass
    ran += ["val", "ood_val", "val"]  # the gate's check: val, ood_val, val with both inputs replaced
    assert calls == dict.fromkeys(calls, batches(ran))


# ------------------------------------------------------------------------------------ run folder
def test_a_never_fitted_detector_is_one_line_naming_the_run_and_the_command(smoke_run, tmp_path, capsys):
    run = _copy(smoke_run, tmp_path, detector="knn")
    shutil.rmtree(run / "detectors", ignore_errors=True)
    assert export.main(["--run", str(run), "--out", str(tmp_path / "models" / "1")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {run}: detector knn (optical) was never fitted; fit it with "
                   f"python -m tf_fusion.evaluate --run {run} --detectors all\n")
    assert evaluate.main(["--run", str(run), "--detectors", "knn,energy"]) == 2
    assert capsys.readouterr().err.startswith("error: --detectors 'knn,energy': expected 'all' or a comma list")


def test_changed_settings_refit_only_the_detectors_that_depend_on_them(fitted_copy, tmp_path):
    run = _copy(fitted_copy[0], tmp_path)
    folder = run / "detectors"

    def stamps():
        return {f: (folder / f).stat().st_mtime_ns for f in sorted(os.listdir(folder))}

    def fit(names):
        lines = []
        fitted = detector_runs.fit_run(Run(run), names, log=lines.append)
        return fitted, "\n".join(lines)

    names = ["knn", "mahalanobis", "max_logit"]
    before = stamps()
    _, log = fit(names)
    assert stamps() == before and "already fitted" in log  # unchanged settings: loaded
    _set(run, knn_k=4)
    fitted, _ = fit(names)
    after = stamps()
    assert {f for f in after if after[f] != before[f]} == {"knn_optical.npz", "knn_sar.npz"}
    assert int(fitted["knn"]["optical"][0]["k"]) == 4
    old_reference = fitted["knn"]["sar"][0]["reference"]
    _set(run, seed=5, knn_reference=50)
    fitted, _ = fit(names)
    # the reference: the normalised SAR embeddings of the train rows the seeded bound picks
    from tf_fusion.data import make_dataset

    r = Run(run)
    fusion, manifest = r.load_model(), r.manifest()
    train = np.concatenate([np.asarray(fusion.encoder_sar(x["s1"], training=False))
                            for x, _ in make_dataset(manifest, "train", batch_size=64, deterministic=True,
                                                     image_size=r.config["data"]["image_size"])])
    rows = train[detectors.reference_indices(len(train), 50, 5)]
    np.testing.assert_allclose(fitted["knn"]["sar"][0]["reference"], rows / np.linalg.norm(rows, axis=1, keepdims=True),
                               atol=1e-5)
    assert old_reference.shape[0] == min(len(train), 2000)
    _set(run, calibration="isotonic")
    fitted, _ = fit(names)
    changed = {f for f, v in stamps().items() if v != after[f]}
    assert changed == {f"{n}_{m}.npz" for n in names for m in MODALITIES}  # mahalanobis_class was not asked for
    assert fitted["mahalanobis"]["optical"][1].method == "isotonic"
    with pytest.raises(RunError, match="was fitted with"):  # what is saved is what the settings say
        detectors.load(run, "confidence", "optical", detector_runs.settings(Run(run).config))


def test_the_default_gate_and_the_papers_heads_beside_it(smoke_run, smoke_report, tmp_path):
    """The default gate (`binary_head+mahalanobis_class`) on a copy of the smoke run: evaluation's
    p is, patch by patch, the smaller of the heads' and the Mahalanobis distance's p (both from
    the smoke comparison's detector_scores.npz, same fits); beside it Eq. 3 with the heads alone
    (recomputed in NumPy from the passes), and the findings checked for both, the default first."""
    default = cfg.DEFAULTS["ood"]["detector"]
    assert default == "binary_head+mahalanobis_class"
    run = _copy(smoke_run, tmp_path, detector=default)
    shutil.rmtree(run / "report")
    assert evaluate.main(["--run", str(run)]) == 0
    results = json.loads((run / "report" / "results.json").read_text())
    assert results["detector"] == default and "adaptive_paper_heads" in results["methods"]
    with np.load(smoke_report / "detector_scores.npz") as f:
        scores = {k: f[k] for k in f.files}
    with np.load(run / "report" / "predictions.npz") as f:
        pred = {k: f[k] for k in f.files}
    for s in ("clear", "very_cloudy", "corrupted_optical", "ood_classes"):
        p = {m: np.minimum(scores[f"{s}/binary_head/{m}"], scores[f"{s}/mahalanobis_class/{m}"]) for m in MODALITIES}
        np.testing.assert_allclose(pred[f"{s}/p_o"], p["optical"], atol=1e-5)
        np.testing.assert_allclose(pred[f"{s}/p_s"], p["sar"], atol=1e-5)
        po, ps = (scores[f"{s}/binary_head/{m}"][:, None] for m in MODALITIES)
        f, o, r = (pred[f"{s}/{k}"] for k in ("non_adaptive", "optical_only", "sar_only"))
        eq3 = po * ps * f + po * (1 - ps) * o + (1 - po) * ps * r + (1 - po) * (1 - ps) * 0.5
        np.testing.assert_allclose(pred[f"{s}/adaptive_paper_heads"], eq3, atol=1e-5)
    table = (run / "report" / "table.md").read_text()
    first, second = (table.index(t) for t in (f"adaptive with the gate {default}:", "adaptive with the paper's heads alone:"))
    assert first < second and "Adaptive (paper's heads)" in table
