"""SavedModel export (tf_fusion.export), the serving client (tf_fusion.serving) and prediction on
GeoTIFF pairs (tf_fusion.predict), on the session's smoke run with OOD heads and the 6 real
example pairs of ../shared/bigearthnet. The model server itself cannot run here: REST payloads are decoded
the way TF Serving decodes them and fed to the loaded signature."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from conftest import REPO  # noqa: E402
from tf_fusion import export, predict, serving  # noqa: E402
from tf_fusion.runs import Run  # noqa: E402

# per real pair: (optical_available, sar_available) — both, both, both, no optical, no SAR, neither
FLAGS = np.array([[1, 1], [1, 1], [1, 1], [0, 1], [1, 0], [0, 0]], np.float32)
# a fresh process given the folder alone: serving_default on the inputs, then `saved_model_cli
# show --all` (the console script's own entry point: one TensorFlow start for both)
FRESH = """
import contextlib, sys, numpy as np, tensorflow as tf
model_dir, inputs, outputs, cli_text = sys.argv[1:]
model = tf.saved_model.load(model_dir)
x = {k: tf.constant(v.astype(np.float32)) for k, v in np.load(inputs).items()}
out = model.signatures["serving_default"](**x)
np.savez(outputs, **{k: v.numpy() for k, v in out.items()})
from tensorflow.python.tools.saved_model_cli import main
sys.argv = ["saved_model_cli", "show", "--dir", model_dir, "--all"]
with open(cli_text, "w") as f, contextlib.redirect_stdout(f):
    try:
        main()
    except SystemExit as e:
        assert not e.code, e.code
"""


@pytest.fixture(scope="module")
def exported(smoke_run, smoke_export):
    return smoke_run, smoke_export


@pytest.fixture(scope="module")
def real(real_examples):
    """(pair folders, raw inputs of the 6 real pairs with FLAGS)."""
    s2_root, s1_root, names, partner = real_examples
    folders = [(os.path.join(s2_root, n), os.path.join(s1_root, partner[n])) for n in names]
    inputs = serving.stack_samples([serving.read_pair(s2, s1) for s2, s1 in folders])
    inputs["optical_available"], inputs["sar_available"] = FLAGS[:, 0], FLAGS[:, 1]
    return folders, inputs


@pytest.fixture(scope="module")
def fresh_process(exported, real, tmp_path_factory):
    """(serving_default's outputs on the real pairs, `saved_model_cli show --all`'s text), from
    a fresh process given the folder alone."""
    _, model_dir = exported
    work = tmp_path_factory.mktemp("fresh")
    np.savez(work / "in.npz", **real[1])
    proc = subprocess.run([sys.executable, "-c", FRESH, str(model_dir), str(work / "in.npz"), str(work / "out.npz"),
                           str(work / "cli.txt")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(work / "out.npz")), (work / "cli.txt").read_text()


@pytest.fixture(scope="module")
def fresh(fresh_process):
    return fresh_process[0]


@pytest.fixture(scope="module")
def loaded(exported):
    """The exported SavedModel loaded once here, for the tests that only call its signatures."""
    return tf.saved_model.load(str(exported[1]))


@pytest.fixture(scope="module")
def reference(exported, real):
    """The in-memory adaptive model on the same pairs, preprocessed by the training pipeline
    (records encoded as the builder writes them, parsed by `make_parse_fn`)."""
    from tf_fusion import data
    from tf_fusion.adaptive import build_adaptive_model
    from tf_fusion.runs import Run
    from tfrecords_builder import records

    run = Run(exported[0])
    config, summary, fusion, heads = run.config, run.summary, run.load_model(), run.ood_heads()
    adaptive = build_adaptive_model(fusion, heads["optical"][0], heads["sar"][0], with_availability=True)
    manifest = run.manifest()
    raw = real[1]
    serialized = [records.encode(f"p{i}", f"q{i}", "test", [], {b: raw[b][i] for b in serving.S2_BANDS + serving.S1_BANDS})
                  for i in range(len(FLAGS))]
    parse = data.make_parse_fn(manifest, image_size=fusion.image_size, resize_method=config["data"]["resize_method"])
    x, _ = parse(tf.constant(serialized))
    opt, sar = tf.constant(FLAGS[:, :1]), tf.constant(FLAGS[:, 1:])
    x = {"s2": x["s2"] * opt[:, :, None, None], "s1": x["s1"] * sar[:, :, None, None],  # missing: zeros (exact)
         "optical_available": opt, "sar_available": sar}
    out = {k: np.asarray(v) for k, v in adaptive(x, training=False).items()}
    return out, x, summary, manifest


# ------------------------------------------------------------------------------ the SavedModel
def test_layout_assets_and_saved_model_cli(exported, reference, fresh_process):
    run, model_dir = exported
    _, _, summary, manifest = reference
    for name in ("saved_model.pb", "variables", "assets/class_names.txt", "assets/serving.json"):
        assert (model_dir / name).exists(), name
    assert not [d for d in os.listdir(model_dir.parent) if d != "1"]  # no temporary folder left behind
    assert (model_dir / "assets" / "class_names.txt").read_text().splitlines() == summary["classes"]
    config = json.loads((model_dir / "assets" / "serving.json").read_text())
    assert config["threshold"] == 0.5 and config["image_size"] == Run(run).config["data"]["image_size"]
    assert config["class_names"] == summary["classes"]
    assert config["bands"]["B8A"] == {"shape": [60, 60], "dtype": "uint16", **manifest["band_stats"]["B8A"]}

    text = fresh_process[1]
    for name in serving.SIGNATURES:
        assert f"signature_def['{name}']" in text
    for name in serving.SIGNATURES:
        for key in serving.input_spec(name):
            assert f"inputs['{key}']" in text, key
    for name in serving.OUTPUTS:
        assert f"outputs['{name}']" in text, name
    assert "DT_UINT16" in text and "DT_INT32" in text

    # a second export to the same version is refused; no version folder, no export
    assert export.main(["--run", str(run), "--out", str(model_dir)]) == 2
    assert export.main(["--run", str(run), "--out", str(model_dir.parent)]) == 2


def test_fresh_process_equals_in_memory_model_on_real_pairs(fresh, reference):
    ref = reference[0]
    for key, ref_key in (("probabilities", "probabilities"), ("probabilities_non_adaptive", "probabilities_non_adaptive"),
                         ("p_optical_in_distribution", "p_optical"), ("p_sar_in_distribution", "p_sar"),
                         ("entropy", "entropy"), ("confidence", "confidence")):
        np.testing.assert_allclose(fresh[key], ref[ref_key].reshape(fresh[key].shape), rtol=0, atol=1e-5, err_msg=key)
    assert fresh["labels"].dtype == np.int32
    np.testing.assert_array_equal(fresh["labels"], (fresh["probabilities"] > 0.5).astype(np.int32))
    clear = np.abs(ref["probabilities"] - 0.5) > 1e-5
    np.testing.assert_array_equal(fresh["labels"][clear], (ref["probabilities"] > 0.5)[clear])


def test_missing_modality_has_p_exactly_zero(fresh):
    p_o, p_s = fresh["p_optical_in_distribution"], fresh["p_sar_in_distribution"]
    assert (p_o[FLAGS[:, 0] == 0] == 0).all() and (p_s[FLAGS[:, 1] == 0] == 0).all()
    assert (p_o[FLAGS[:, 0] == 1] > 0).all() and (p_s[FLAGS[:, 1] == 1] > 0).all()
    np.testing.assert_array_equal(fresh["probabilities"][5], np.full(fresh["probabilities"].shape[1], 0.5, np.float32))


def test_other_signatures_agree(loaded, real, fresh, reference):
    raw = real[1]
    u16 = loaded.signatures[serving.SIGNATURE_RAW_UINT16](**{k: tf.constant(v) for k, v in raw.items()})
    np.testing.assert_allclose(u16["probabilities"].numpy(), fresh["probabilities"], atol=1e-6)
    x = reference[1]
    pre = loaded.signatures[serving.SIGNATURE_PREPROCESSED](
        s2=x["s2"], s1=x["s1"], optical_available=FLAGS[:, 0], sar_available=FLAGS[:, 1])
    np.testing.assert_allclose(pre["probabilities"].numpy(), fresh["probabilities"], atol=1e-5)


# ------------------------------------------------------------------------------ REST and gRPC
def _decode_like_tf_serving(text: str, signature):
    """TF Serving's JSON decoding: row format stacks the per-instance objects along a new batch
    axis, columnar format takes each input's nested list as is; numbers become the input's dtype."""
    body = json.loads(text)
    specs = signature.structured_input_signature[1]
    if "instances" in body:
        rows = body["instances"]
        return {k: np.array([row[k] for row in rows], specs[k].dtype.as_numpy_dtype) for k in specs}
    return {k: np.array(body["inputs"][k], specs[k].dtype.as_numpy_dtype) for k in specs}


@pytest.mark.parametrize("fmt", ["instances", "inputs"])
def test_rest_payloads_run_through_the_signature(loaded, real, fresh, fmt):
    payload = serving.rest_payload(real[1], fmt)
    assert payload["signature_name"] == "serving_default"
    text = json.dumps(payload)
    signature = loaded.signatures[payload["signature_name"]]
    decoded = _decode_like_tf_serving(text, signature)
    for key, value in serving.check_inputs(real[1]).items():  # the server sees exactly the bands read
        np.testing.assert_array_equal(decoded[key], value, err_msg=key)
    out = {k: v.numpy() for k, v in signature(**decoded).items()}
    for key in serving.OUTPUTS:
        np.testing.assert_allclose(out[key], fresh[key], atol=1e-6, err_msg=key)

    # the server's two answer formats parse back to the same arrays
    n = len(FLAGS)
    rows = json.dumps({"predictions": [{k: v[i].tolist() for k, v in out.items()} for i in range(n)]})
    columns = json.dumps({"outputs": {k: v.tolist() for k, v in out.items()}})
    for body in (rows, columns):
        parsed = serving.parse_rest_response(body)
        assert parsed["labels"].dtype == np.int32
        for key in serving.OUTPUTS:
            np.testing.assert_array_equal(parsed[key], out[key])
    with pytest.raises(serving.ServingError, match="input B05"):
        serving.parse_rest_response('{"error": "input B05: expected shape [batch, 60, 60]"}')
    assert serving.rest_url("localhost:8501", "fusion", 2) == "http://localhost:8501/v1/models/fusion/versions/2:predict"


def test_grpc_request_and_warmup_file(exported, loaded, real):
    pytest.importorskip("tensorflow_serving.apis", reason="tensorflow-serving-api (the `serving` extra) not installed")
    _, model_dir = exported
    request = serving.grpc_request(real[1], "fusion", version=1)
    assert request.model_spec.signature_name == "serving_default" and request.model_spec.version.value == 1
    assert set(request.inputs) == set(serving.input_spec(serving.SIGNATURE_RAW))
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["B01"]), real[1]["B01"].astype(np.float32))
    from tensorflow_serving.apis import prediction_log_pb2

    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(model_dir / export.WARMUP_FILE))]
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == list(serving.SIGNATURES)
    for log in logs:
        request = log.predict_log.request
        out = loaded.signatures[request.model_spec.signature_name](
            **{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
        assert np.isfinite(out["probabilities"].numpy()).all()


# ------------------------------------------------------------------------------ bad input
def test_wrong_shapes_and_dtypes_are_clear_errors(loaded, real):
    raw = real[1]
    cases = [({**raw, "B05": np.zeros((6, 120, 120), np.uint16)},
              r"input B05: shape \(6, 120, 120\), expected \[batch, 60, 60\]"),
             ({**raw, "VV": raw["VV"].astype(np.float64)}, "input VV: dtype float64, expected float32"),
             ({k: v for k, v in raw.items() if k != "VH"}, r"missing \['VH'\]"),
             ({**raw, "optical_available": np.full(6, 2.0)}, "input optical_available: values must be 0"),
             ({**raw, "B01": raw["B01"][:3]}, "input B02: batch size 6, but B01 has 3"),
             ({**raw, "s2": np.zeros(3)}, r"unknown \['s2'\]")]
    for inputs, message in cases:
        with pytest.raises(ValueError, match=message):
            serving.rest_payload(inputs)
    with pytest.raises(ValueError, match="uint16"):
        serving.check_inputs({**raw, "B02": raw["B02"].astype(np.float32)}, serving.SIGNATURE_RAW_UINT16)

    # the graph itself names the input, for requests that reach a server unchecked
    signature = loaded.signatures["serving_default"]
    x = {k: tf.constant(v.astype(np.float32)) for k, v in raw.items()}
    for bad, message in (({"B05": tf.zeros([6, 120, 120])}, r"input B05: expected shape \[batch, 60, 60\]"),
                         ({"VV": tf.zeros([5, 120, 120])}, "input VV: batch size differs"),
                         ({"sar_available": tf.fill([6], 3.0)}, r"input sar_available: expected 0 \(missing\) or 1"),
                         ({"optical_available": tf.fill([6], 0.5)}, r"input optical_available: expected 0 \(missing\) or 1")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            signature(**{**x, **bad})
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match="double|float64"):
        signature(**{**x, "VV": tf.constant(raw["VV"].astype(np.float64))})


# ------------------------------------------------------------------------------ predict
def test_predict_pairs_csv_reports_bad_patches_and_goes_on(exported, real, fresh, tmp_path, capsys):
    _, model_dir = exported
    folders = real[0]
    broken = tmp_path / "broken" / os.path.basename(folders[2][0])
    shutil.copytree(folders[2][0], broken)
    band = broken / f"{broken.name}_B05.tif"
    band.write_bytes(band.read_bytes()[:300])  # truncated GeoTIFF
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([("s2", "s1"), folders[0], (folders[1][0], ""), (str(tmp_path / "nope" / "S2X"), folders[3][1]),
                     (broken, folders[2][1]), ("", folders[4][1])])
    rc = predict.main(["--model", str(model_dir.parent), "--pairs", str(tmp_path / "pairs.csv"),
                       "--out", str(tmp_path / "out.json"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "error: S2X / " in err and "no patch folder" in err
    assert f"error: {broken.name} / " in err and "truncated or corrupt GeoTIFF" in err and "_B05.tif" in err
    assert "2 of 5 patches failed" in err
    result = json.loads((tmp_path / "out.json").read_text())
    assert len(result["results"]) == 3 and len(result["errors"]) == 2
    both, s2_only, s1_only = result["results"]
    assert both["p_o"] == pytest.approx(float(fresh["p_optical_in_distribution"][0]), abs=1e-6)
    assert list(both["probabilities"].values()) == pytest.approx(fresh["probabilities"][0].tolist(), abs=1e-6)
    assert s2_only["p_s"] == 0.0 and "SAR missing" in s2_only["note"] and s2_only["s1_patch"] == ""
    assert s1_only["p_o"] == 0.0 and "optical missing" in s1_only["note"]


def test_predict_root_writes_csv_of_all_pairs(exported, real_examples, fresh, tmp_path, capsys):
    _, model_dir = exported
    root = os.path.dirname(real_examples[0])
    assert predict.main(["--model", str(model_dir), "--root", root, "--out", str(tmp_path / "r.csv"), "--quiet"]) == 0
    with open(tmp_path / "r.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and [r["s2_patch"] for r in rows] == real_examples[2]
    assert all(r["s1_patch"] == real_examples[3][r["s2_patch"]] for r in rows)
    classes = (model_dir / "assets" / "class_names.txt").read_text().splitlines()
    assert set(classes) <= set(rows[0])
    assert float(rows[0]["p_o"]) == pytest.approx(float(fresh["p_optical_in_distribution"][0]), abs=1e-6)
    assert predict.main(["--model", str(tmp_path), "--root", root]) == 2
    assert "no saved_model.pb" in capsys.readouterr().err


def test_non_finite_optical_input_counts_as_missing(exported, loaded, real):
    """NaN or ±inf in the optical bands: never a NaN answer; exactly the answer with the optical
    flag at 0 (p_o = 0, Eq. 3 from SAR), on the raw and on the preprocessed signature."""
    raw = {k: v.astype(np.float32) if k in serving.S2_BANDS else v for k, v in real[1].items()}
    raw["optical_available"], raw["sar_available"] = np.ones(6, np.float32), np.ones(6, np.float32)
    bad = {k: v.copy() for k, v in raw.items()}
    bad["B02"][0, 5, 5] = np.nan
    bad["B05"][1] = np.inf
    bad["B01"][2, 0, 0] = -np.inf
    signature = loaded.signatures[serving.SIGNATURE_RAW]
    got = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in bad.items()}).items()}
    flagged = {**raw, "optical_available": np.array([0, 0, 0, 1, 1, 1], np.float32)}
    want = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in flagged.items()}).items()}
    for key in serving.OUTPUTS:
        assert np.isfinite(got[key]).all(), key
        np.testing.assert_allclose(got[key], want[key], atol=1e-6, err_msg=key)
    assert (got["p_optical_in_distribution"][:3] == 0).all() and (got["entropy"][:3] > 0).all()
    rows = serving.describe(got, [f"c{i}" for i in range(got["probabilities"].shape[1])], bad)
    assert all("non-finite" in r["note"] for r in rows[:3]) and not any("non-finite" in r["note"] for r in rows[3:])

    pre = loaded.signatures[serving.SIGNATURE_PREPROCESSED]
    image = Run(exported[0]).config["data"]["image_size"]
    s2 = np.zeros((2, image, image, 12), np.float32)
    s2[0, 0, 0, 0] = np.nan
    out = pre(s2=s2, s1=np.zeros((2, image, image, 2), np.float32), optical_available=np.ones(2, np.float32),
              sar_available=np.ones(2, np.float32))
    assert np.isfinite(out["probabilities"].numpy()).all() and out["p_optical_in_distribution"].numpy()[0] == 0


def test_overwrite_swaps_whole_versions_and_clears_leftovers(exported, tmp_path, capsys):
    """A version folder is replaced whole (the old one is renamed aside first, never deleted in
    place), and the hidden staging folder a killed export left behind is removed by the next one."""
    run, model_dir = exported
    base = tmp_path / "models"
    shutil.copytree(model_dir, base / "1")
    leftover = base / ".1.k1ll3d.tmp"  # what a kill -9 during an export leaves
    (leftover / "variables").mkdir(parents=True)
    renames = []
    original = os.replace

    def recorded(src, dst):
        renames.append((os.path.basename(src), os.path.basename(dst)))
        return original(src, dst)

    os.replace = recorded
    try:
        assert export.main(["--run", str(run), "--out", str(base / "1"), "--overwrite"]) == 0
    finally:
        os.replace = original
    assert sorted(os.listdir(base)) == ["1"] and f"removed {leftover}" in capsys.readouterr().out
    folder_moves = [(a, b) for a, b in renames if a == "1" or b == "1"]
    assert folder_moves[0][0] == "1" and folder_moves[0][1].startswith(".1.")  # old version aside first
    assert folder_moves[1][1] == "1" and folder_moves[1][0].startswith(".1.")  # then the new one in
    assert tf.saved_model.load(str(base / "1")).signatures["serving_default"] is not None
