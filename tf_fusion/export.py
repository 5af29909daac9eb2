"""`python -m tf_fusion.export --run RUN_DIR --out MODEL_BASE/VERSION`: a SavedModel for TF Serving.

The adaptive model of a run (Eq. 3 over the trained fusion network and its chosen OOD detector,
`ood.detector`: the two binary heads by default, or a fitted post-hoc detector whose statistics,
calibrator and — for kNN — reference embeddings are weights of the graph; from
`build_adaptive_model(..., with_availability=True)`) is written through `keras.export.ExportArchive`
with three named signatures over one graph:

- `serving_default`: the raw bands exactly as read from the GeoTIFFs, batch first (`B01` … `B12`,
  `B8A` at native resolution, float32 holding the uint16 values; `VV`, `VH` float32 dB) plus
  per-sample `optical_available` / `sar_available` (1 or 0). Resampling and normalisation with
  the manifest's statistics run in the graph, through `tf_fusion.data.make_preprocess_fn` — the
  training pipeline's own function. A missing modality (flag 0) has in-distribution probability
  exactly 0 and a closed gate, as in evaluation's missing scenarios, so Eq. 3 and the
  non-adaptive output answer from the other modality whatever the missing input holds. An optical input holding NaN or ±inf counts as missing the
  same way (non-finite SAR pixels are replaced by the band mean, as in training), so the model
  never answers NaN.
- `raw_uint16`: the same with the S2 bands as uint16 (half the bytes over gRPC).
- `preprocessed`: normalised `s2` [B, S, S, 12], `s1` [B, S, S, 2] and the two flags, for users
  with their own pipeline (`assets/serving.json` holds the statistics and S).

Outputs: `probabilities` (Eq. 3), `labels` (int32 multi-hot, p > the run's evaluation.threshold),
`p_optical_in_distribution`, `p_sar_in_distribution`, `entropy` (bits), `confidence`,
`probabilities_non_adaptive` (λ = (1, 1)). Inputs of the wrong shape, a batch size that differs
between inputs, or flags other than 0 and 1 fail with an InvalidArgument error naming the input.
`assets/class_names.txt` lists the classes in output order; with `tensorflow-serving-api`
installed, `assets.extra/tf_serving_warmup_requests` holds one request per signature.
The version folder is written beside its final name and renamed into place, so a server
watching MODEL_BASE never loads half a model.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from . import atomic, cli, serving
from .config import ConfigError
from .passes import FUSED
from .runs import EXPORT, Run, using

CLASS_NAMES_FILE = "class_names.txt"
SERVING_FILE = "serving.json"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


class ExportError(ConfigError):
    """The run cannot be exported or the output folder is not usable; the message says why (a
    ConfigError, so the train CLI reports it as one line too)."""


# ------------------------------------------------------------------------------ the graph
def _signature_specs(image_size: int) -> dict:
    """signature name → {input name: tf.TensorSpec}, from the client's `serving.input_spec` (one
    spec for both sides). Spatial sizes are left open and checked in the graph, so a wrong size
    is a named InvalidArgument error on any server; the dtype is the first one the client accepts."""
    import tensorflow as tf

    def spec(name, shape, dtypes):
        dims = [None] * len(shape) if len(shape) < 3 else [None] * (len(shape) - 1) + [shape[-1]]
        return tf.TensorSpec([None, *dims], dtypes[0], name=name)

    return {signature: {name: spec(name, shape, dtypes)
                        for name, (shape, dtypes) in serving.input_spec(signature, image_size).items()}
            for signature in serving.SIGNATURES}


def _checked(inputs: dict, shapes: dict) -> dict:
    """`inputs` with their non-batch shapes asserted (message naming the input), their batch sizes
    asserted equal, flags asserted 0 or 1; static shapes restored for the model."""
    import tensorflow as tf

    first = next(iter(shapes))
    batch = tf.shape(inputs[first])[0]
    out = {}
    for key, shape in shapes.items():
        x = inputs[key]
        want = ", ".join(["batch", *map(str, shape)])
        checks = [tf.debugging.assert_equal(tf.shape(x)[0], batch,
                                            message=f"input {key}: batch size differs from {first}'s")]
        if shape:
            checks.append(tf.debugging.assert_equal(tf.shape(x)[1:], tf.constant(shape, tf.int32),
                                                    message=f"input {key}: expected shape [{want}]"))
        else:
            checks.append(tf.debugging.assert_equal(tf.logical_or(x == 0, x == 1), True,
                                                    message=f"input {key}: expected 0 (missing) or 1 (present)"))
        with tf.control_dependencies(checks):
            out[key] = tf.ensure_shape(tf.identity(x), [None, *shape])
    return out


def _all_finite(x):
    """float32 [B, 1]: 1 where every value of the sample is finite."""
    import tensorflow as tf

    return tf.cast(tf.reduce_all(tf.math.is_finite(x), axis=[1, 2, 3]), tf.float32)[:, None]


def serving_functions(adaptive, band_stats: dict, *, image_size: int, resize_method: str, threshold: float) -> dict:
    """signature name → tf.function (with its input signature) over the in-memory `adaptive` model."""
    import tensorflow as tf

    from .data import make_preprocess_fn

    preprocess = make_preprocess_fn(band_stats, image_size=image_size, resize_method=resize_method)
    shapes = {name: {k: shape for k, (shape, _) in serving.input_spec(name, image_size).items()}
              for name in serving.SIGNATURES}
    threshold = float(threshold)

    def predict(s2, s1, optical_available, sar_available):
        # a modality whose normalised input holds a non-finite value counts as missing (p = 0),
        # so Eq. 3 answers from the other one (raw SAR is finite here: its bad pixels became the
        # band mean in preprocessing)
        opt = tf.reshape(optical_available, [-1, 1]) * _all_finite(s2)
        sar = tf.reshape(sar_available, [-1, 1]) * _all_finite(s1)
        res = adaptive({"s2": s2, "s1": s1, "optical_available": opt, "sar_available": sar}, training=False)
        probs = res["probabilities"]
        return {"probabilities": probs,
                "labels": tf.cast(probs > threshold, tf.int32),
                "p_optical_in_distribution": tf.reshape(res["p_optical"], [-1]),
                "p_sar_in_distribution": tf.reshape(res["p_sar"], [-1]),
                "entropy": tf.reshape(res["entropy"], [-1]),
                "confidence": tf.reshape(res["confidence"], [-1]),
                "probabilities_non_adaptive": res[FUSED.output]}

    def raw(x):
        x = _checked(x, shapes[serving.SIGNATURE_RAW])
        inputs = preprocess({b: x[b] for b in serving.S2_BANDS + serving.S1_BANDS})
        return predict(inputs["s2"], inputs["s1"], x["optical_available"], x["sar_available"])

    def preprocessed(x):
        x = _checked(x, shapes[serving.SIGNATURE_PREPROCESSED])
        return predict(x["s2"], x["s1"], x["optical_available"], x["sar_available"])

    specs = _signature_specs(image_size)
    bodies = {serving.SIGNATURE_RAW: raw, serving.SIGNATURE_RAW_UINT16: raw,
              serving.SIGNATURE_PREPROCESSED: preprocessed}
    return {name: tf.function(body, input_signature=[specs[name]]) for name, body in bodies.items()}


# ------------------------------------------------------------------------------ writing
def _target(out: str, overwrite: bool) -> str:
    out = os.path.abspath(os.fspath(out))
    version = os.path.basename(out)
    if not version.isdigit():
        raise ExportError(f"--out must end in an integer version folder (TF Serving loads MODEL_BASE/<version>/); "
                          f"got {out}")
    if os.path.exists(out) and os.listdir(out):
        if not overwrite:
            raise ExportError(f"{out} exists and is not empty; export a new version or pass --overwrite")
    return out


def _warmup_inputs(band_stats: dict, n: int = 1) -> dict:
    """A small, plausible request: every band at its training mean, both modalities present."""
    sample = {b: np.full((serving.BAND_SIZE[b],) * 2, band_stats[b]["mean"], serving.BAND_DTYPE[b])
              for b in serving.S2_BANDS + serving.S1_BANDS}
    sample.update({f: np.float32(1.0) for f in serving.FLAGS})
    return serving.stack_samples([sample] * n)


def write_warmup(model_dir: str, band_stats: dict, image_size: int, log=print) -> bool:
    """assets.extra/tf_serving_warmup_requests (one PredictRequest per signature) if
    tensorflow-serving-api is installed; False (and a log line) when it is not."""
    try:
        from tensorflow_serving.apis import prediction_log_pb2
    except ImportError:
        log(f"note: {WARMUP_FILE} not written: {serving.GRPC_EXTRA}")
        return False
    import tensorflow as tf

    raw = _warmup_inputs(band_stats)
    s = int(image_size)
    batch = len(raw["B02"])
    pre = {"s2": np.zeros((batch, s, s, len(serving.S2_BANDS)), "float32"),
           "s1": np.zeros((batch, s, s, len(serving.S1_BANDS)), "float32"),
           **{f: raw[f] for f in serving.FLAGS}}
    requests = [serving.grpc_request(raw, "model", serving.SIGNATURE_RAW),
                serving.grpc_request(raw, "model", serving.SIGNATURE_RAW_UINT16),
                serving.grpc_request(pre, "model", serving.SIGNATURE_PREPROCESSED, image_size=s)]
    path = os.path.join(model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log_entry = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log_entry.SerializeToString())
    return True


def export_model(adaptive, band_stats: dict, out, *, class_names, image_size: int = 120,
                 resize_method: str = "bilinear", threshold: float = 0.5, info=None, overwrite: bool = False,
                 log=print) -> str:
    """Write `adaptive` (a `build_adaptive_model(..., with_availability=True)` graph) with the
    three signatures, class names and serving.json to `out` (= MODEL_BASE/VERSION); returns it.

    The version is staged in a hidden folder beside it (not a version name: servers skip it) and
    moved into place whole; `--overwrite` renames the old version aside first, so a server never
    sees half a model. Hidden staging folders a killed export left behind are removed."""
    import keras

    out = _target(out, overwrite)
    class_names = [str(c) for c in class_names]
    n_out = adaptive.output["probabilities"].shape[-1]
    if len(class_names) != n_out:
        raise ExportError(f"{len(class_names)} class names for a model with {n_out} outputs")
    functions = serving_functions(adaptive, band_stats, image_size=image_size, resize_method=resize_method,
                                  threshold=threshold)
    base = os.path.dirname(out)
    os.makedirs(base, exist_ok=True)
    for leftover in atomic.remove_leftovers(base):
        log(f"removed {leftover}, left by an interrupted export")
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=base)
    try:
        archive = keras.export.ExportArchive()
        archive.track(adaptive)
        for name, fn in functions.items():
            archive.add_endpoint(name, fn)
        archive.write_out(work, verbose=False)
        # plain files beside the graph's own assets: TF Serving copies the folder whole
        description = {
            "class_names": class_names, "threshold": float(threshold), "image_size": int(image_size),
            "resize_method": resize_method, "signatures": list(serving.SIGNATURES), "outputs": list(serving.OUTPUTS),
            "bands": {b: {"shape": [serving.BAND_SIZE[b]] * 2, "dtype": serving.BAND_DTYPE[b],
                          **{k: float(band_stats[b][k]) for k in ("mean", "std")}}
                      for b in serving.S2_BANDS + serving.S1_BANDS},
            "s2_channels": list(serving.S2_BANDS), "s1_channels": list(serving.S1_BANDS), **(info or {})}
        atomic.write_text(os.path.join(work, "assets", CLASS_NAMES_FILE), "".join(c + "\n" for c in class_names))
        atomic.write_json(os.path.join(work, "assets", SERVING_FILE), description)
        write_warmup(work, band_stats, image_size, log)
        atomic.replace_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"{out}: SavedModel with signatures {', '.join(serving.SIGNATURES)}; {len(class_names)} classes")
    return out


def export_run(run_dir, out=None, *, overwrite: bool = False, log=print) -> str:
    """Export a finished run with its chosen OOD detector (trained heads or a fitted post-hoc
    detector; a one-line error naming the command that makes it otherwise) to `out` (default
    RUN_DIR/export/1)."""
    inside = out is None or os.path.realpath(out).startswith(os.path.realpath(run_dir) + os.sep)
    if not inside:  # it only reads the run (whose files are all written whole), as predict does
        return _export_run(run_dir, out, overwrite, log)
    with using(run_dir, log, create=False):  # it writes RUN/export: not while another command uses the run
        return _export_run(run_dir, out, overwrite, log)


def _export_run(run_dir, out, overwrite: bool, log) -> str:
    from . import gate
    from .adaptive import BINARY_HEAD, build_adaptive_model
    from .detector_runs import gate_layers
    from .protocol import OPTICAL, SAR

    run = Run.finished_run(run_dir)
    out = _target(out or run.file(EXPORT, "1"), overwrite)  # fail before loading anything
    config, summary = run.config, run.summary
    detector = gate.label(config["ood"]["detector"])
    p_layers = gate_layers(run)
    heads = run.ood_heads() if BINARY_HEAD in gate.detectors(config["ood"]["detector"]) else None
    fusion = run.load_model()
    try:
        adaptive = build_adaptive_model(fusion, *p_layers, with_availability=True)
    except TypeError as e:
        raise ExportError(f"{run.path}: {e}") from None
    info = {"run_dir": os.path.abspath(run.path), "experiment": summary["experiment"],
            "backbone": config["model"]["backbone"], "ood_detector": detector,
            "val_auroc_optical": heads[OPTICAL][1] if heads else None,
            "val_auroc_sar": heads[SAR][1] if heads else None}
    info = {k: (None if isinstance(v, float) and v != v else v) for k, v in info.items()}  # NaN → null
    return export_model(adaptive, run.manifest()["band_stats"], out, class_names=summary["classes"],
                        image_size=config["data"]["image_size"], resize_method=config["data"]["resize_method"],
                        threshold=config["evaluation"]["threshold"], info=info, overwrite=overwrite, log=log)


def main(argv=None) -> int:
    p = cli.parser("tf_fusion.export", "Export the adaptive model of a finished run (with its OOD heads) as a "
                   "SavedModel version folder for TF Serving.",
                   "python -m tf_fusion.export --run runs/demo --out models/fusion/1")
    p.add_argument("--run", required=True, help="a finished training run with OOD heads (tf_fusion.train / tf_fusion.ood)")
    p.add_argument("--out", help="MODEL_BASE/VERSION, e.g. models/fusion/1 (default RUN/export/1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version folder")
    args = p.parse_args(argv)
    return cli.run(lambda: export_run(args.run, args.out, overwrite=args.overwrite))


if __name__ == "__main__":
    raise SystemExit(main())
