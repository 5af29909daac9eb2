"""Client side of the exported model (`tf_fusion.export`): request tensors from GeoTIFF pairs,
TF Serving REST and gRPC requests, and their responses.

Why a module of its own: a client machine needs only NumPy and rasterio for REST — nothing here
imports TensorFlow at module level, and nothing here needs a model. The gRPC helpers need the
`serving` extra (`tensorflow-serving-api`, which requires full `tensorflow`).

    sample = read_pair("S2_PATCH_DIR", "S1_PATCH_DIR")          # or one of them (other flag 0)
    inputs = stack_samples([sample, ...])                       # batch-first arrays by input name
    payload = rest_payload(inputs, "instances")                 # or "inputs" (columnar)
    outputs = rest_predict("http://localhost:8501", "fusion", inputs)   # POST, parsed

Inputs of the `serving_default` signature (batch first): the 12 S2 bands at native resolution
(B02 B03 B04 B08 120×120, B05 B06 B07 B8A B11 B12 60×60, B01 B09 20×20; uint16 values, sent as
float32), VV and VH (float32 dB, 120×120), and per-sample `optical_available` / `sar_available`
(1 present, 0 missing). `raw_uint16` is the same with the S2 bands as uint16; `preprocessed`
takes normalised `s2` [B, S, S, 12] and `s1` [B, S, S, 2] tensors.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np

from tfrecords_builder import BAND_DTYPE, BAND_SIZE, S1_BANDS, S2_BANDS, read_patch

SIGNATURE_RAW = "serving_default"
SIGNATURE_RAW_UINT16 = "raw_uint16"
SIGNATURE_PREPROCESSED = "preprocessed"
SIGNATURES = (SIGNATURE_RAW, SIGNATURE_RAW_UINT16, SIGNATURE_PREPROCESSED)
FLAGS = ("optical_available", "sar_available")
OUTPUTS = {"probabilities": "float32", "labels": "int32", "p_optical_in_distribution": "float32",
           "p_sar_in_distribution": "float32", "entropy": "float32", "confidence": "float32",
           "probabilities_non_adaptive": "float32"}
MODALITY_BANDS = {"optical": S2_BANDS, "sar": S1_BANDS}
GRPC_EXTRA = ("gRPC needs the optional `serving` extra: pip install -e '.[serving]' (tensorflow-serving-api, "
              "which requires full tensorflow)")


class ServingError(RuntimeError):
    """The model server answered with an error, or with something that is not a prediction."""


# ------------------------------------------------------------------------------ reading
def _absent(modality: str) -> dict[str, np.ndarray]:
    return {b: np.zeros((BAND_SIZE[b], BAND_SIZE[b]), BAND_DTYPE[b]) for b in MODALITY_BANDS[modality]}


def read_pair(s2_dir=None, s1_dir=None) -> dict[str, np.ndarray]:
    """One request sample (no batch axis) from an S2 and/or an S1 patch folder: the 14 bands at
    native shape and dtype plus the two availability flags; a modality not given is zeros with
    flag 0, so the model relies on the other one (Eq. 3 with p = 0 for it). A missing or bad file
    raises `tfrecords_builder.BadPair` naming it."""
    if s2_dir is None and s1_dir is None:
        raise ValueError("read_pair needs an S2 or an S1 patch folder (or both); got neither")
    sample = {}
    for modality, folder, flag in (("optical", s2_dir, "optical_available"), ("sar", s1_dir, "sar_available")):
        sample.update(read_patch(folder, modality) if folder is not None else _absent(modality))
        sample[flag] = np.float32(folder is not None)
    return sample


def stack_samples(samples) -> dict[str, np.ndarray]:
    """A list of `read_pair` samples → batch-first arrays by input name."""
    samples = list(samples)
    if not samples:
        raise ValueError("no samples to stack (got an empty list)")
    return {key: np.stack([np.asarray(s[key]) for s in samples]) for key in samples[0]}


# ------------------------------------------------------------------------------ validation
def input_spec(signature: str = SIGNATURE_RAW, image_size: int = 120) -> dict[str, tuple[tuple, tuple]]:
    """name → (shape without the batch axis, accepted dtypes) of a signature's inputs."""
    if signature == SIGNATURE_PREPROCESSED:
        s = int(image_size)
        spec = {"s2": ((s, s, len(S2_BANDS)), ("float32",)), "s1": ((s, s, len(S1_BANDS)), ("float32",))}
    elif signature in (SIGNATURE_RAW, SIGNATURE_RAW_UINT16):
        s2_dtypes = ("uint16",) if signature == SIGNATURE_RAW_UINT16 else ("float32", "uint16")
        spec = {b: ((BAND_SIZE[b], BAND_SIZE[b]), s2_dtypes if b in S2_BANDS else ("float32",))
                for b in S2_BANDS + S1_BANDS}
    else:
        raise ValueError(f"unknown signature {signature!r}; the exported model has {', '.join(SIGNATURES)}")
    spec.update({f: ((), ("float32", "float64", "int32", "int64", "bool")) for f in FLAGS})
    return spec


def check_inputs(inputs, signature: str = SIGNATURE_RAW, image_size: int = 120) -> dict[str, np.ndarray]:
    """Validated batch-first arrays in the dtypes the signature takes (S2 uint16 → float32 for
    `serving_default`, flags → float32), or a ValueError naming the input and what was received.
    The exported graph checks the same again, so a server rejects what this would."""
    if not hasattr(inputs, "keys"):
        raise ValueError(f"inputs must be a mapping of input name → array; got {type(inputs).__name__}")
    spec = input_spec(signature, image_size)
    missing, unknown = [k for k in spec if k not in inputs], sorted(k for k in inputs if k not in spec)
    if missing or unknown:
        raise ValueError(f"signature {signature!r} takes inputs {', '.join(spec)}; "
                         + "; ".join(p for p in (f"missing {missing}" if missing else "",
                                                  f"unknown {unknown}" if unknown else "") if p))
    out, batch = {}, None
    for key, (shape, dtypes) in spec.items():
        x = np.asarray(inputs[key])
        if x.dtype.name not in dtypes:
            raise ValueError(f"input {key}: dtype {x.dtype.name}, expected {' or '.join(dtypes)}")
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            want = ", ".join(["batch", *map(str, shape)])
            raise ValueError(f"input {key}: shape {tuple(x.shape)}, expected [{want}]"
                             + (" (the band at native resolution)" if key in BAND_SIZE else ""))
        if batch is None:
            batch = x.shape[0]
        elif x.shape[0] != batch:
            raise ValueError(f"input {key}: batch size {x.shape[0]}, but {next(iter(spec))} has {batch}")
        if key in FLAGS:
            x = x.astype("float32")
            if not np.isin(x, (0.0, 1.0)).all():
                raise ValueError(f"input {key}: values must be 0 (missing) or 1 (present); got {np.unique(x).tolist()}")
        elif signature == SIGNATURE_RAW:
            x = x.astype("float32")  # exact for uint16
        out[key] = x
    if batch == 0:
        raise ValueError("inputs hold 0 samples (batch size 0)")
    return out


# ------------------------------------------------------------------------------ REST
def rest_payload(inputs, format: str = "instances", signature: str = SIGNATURE_RAW, image_size: int = 120) -> dict:
    """The JSON body of a TF Serving REST `:predict` request.

    format "instances" (row format): a list with one {input: value} object per sample;
    format "inputs" (columnar): {input: batch-first nested list}. Both name the signature.
    """
    if format not in ("instances", "inputs"):
        raise ValueError(f"format must be 'instances' or 'inputs'; got {format!r}")
    x = {k: _json_ready(v) for k, v in check_inputs(inputs, signature, image_size).items()}
    if format == "instances":
        n = len(next(iter(x.values())))
        return {"signature_name": signature, "instances": [{k: v[i].tolist() for k, v in x.items()} for i in range(n)]}
    return {"signature_name": signature, "inputs": {k: v.tolist() for k, v in x.items()}}


def _json_ready(x: np.ndarray) -> np.ndarray:
    """An array whose `tolist()` writes short JSON that reads back as the same float32 values:
    integral values (the S2 bands, the flags) as integers, others as float64 holding float32's
    shortest decimal (`-12.3456`, not `-12.345600128173828`): a third fewer bytes than a plain dump."""
    if x.dtype.kind in "biu":
        return x
    if np.isfinite(x).all() and (x == np.round(x)).all() and (np.abs(x) < 2 ** 24).all():
        return x.astype(np.int64)
    return x.astype(str).astype(np.float64)


def rest_url(server: str, model_name: str, version=None) -> str:
    """`http://HOST:8501/v1/models/NAME[/versions/N]:predict` (server: `http://HOST:PORT`)."""
    base = server.rstrip("/")
    if "://" not in base:
        base = "http://" + base
    return f"{base}/v1/models/{model_name}" + (f"/versions/{int(version)}" if version is not None else "") + ":predict"


def parse_rest_response(body) -> dict[str, np.ndarray]:
    """A `:predict` response (dict or JSON text) → output name → batch-first array.

    Row requests are answered as {"predictions": [{output: value}, ...]}, columnar ones as
    {"outputs": {output: list}}; {"error": ...} raises ServingError with the server's message.
    """
    if isinstance(body, (str, bytes)):
        body = json.loads(body)
    if not isinstance(body, dict):
        raise ServingError(f"expected a JSON object from the server; got {type(body).__name__}")
    if "error" in body:
        raise ServingError(f"model server error: {body['error']}")
    if "predictions" in body:
        rows = body["predictions"]
        if not rows or not isinstance(rows[0], dict):
            raise ServingError(f"expected one object of named outputs per sample; got {str(rows)[:200]}")
        columns = {k: [row[k] for row in rows] for k in rows[0]}
    elif "outputs" in body:
        columns = body["outputs"]
        if not isinstance(columns, dict):
            raise ServingError(f"expected named outputs; got {str(columns)[:200]}")
    else:
        raise ServingError(f"not a predict response: keys {sorted(body)}")
    return {k: np.asarray(v, OUTPUTS.get(k)) for k, v in columns.items()}


def rest_predict(server: str, model_name: str, inputs, format: str = "inputs", version=None,
                 signature: str = SIGNATURE_RAW, timeout: float = 60.0, image_size: int = 120) -> dict[str, np.ndarray]:
    """POST a REST `:predict` request and parse the answer (ServingError on HTTP or server errors);
    `image_size`: the S of a model exported at another size (the `preprocessed` signature)."""
    url = rest_url(server, model_name, version)
    data = json.dumps(rest_payload(inputs, format, signature, image_size=image_size)).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return parse_rest_response(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except (json.JSONDecodeError, AttributeError):
            pass
        raise ServingError(f"{url}: HTTP {e.code}: {detail}") from None
    except urllib.error.URLError as e:
        raise ServingError(f"{url}: cannot reach the model server ({e.reason})") from None


# ------------------------------------------------------------------------------ gRPC
def _apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as e:
        raise ImportError(f"{GRPC_EXTRA} ({e})") from None
    return predict_pb2, prediction_service_pb2_grpc


def grpc_request(inputs, model_name: str, signature: str = SIGNATURE_RAW, version=None, image_size: int = 120):
    """A `tensorflow.serving.PredictRequest` for the signature (needs the `serving` extra)."""
    predict_pb2, _ = _apis()
    import tensorflow as tf

    x = check_inputs(inputs, signature, image_size)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    for key, value in x.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def parse_grpc_response(response) -> dict[str, np.ndarray]:
    """A `PredictResponse` → output name → array."""
    import tensorflow as tf

    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def grpc_predict(target: str, request, timeout: float = 60.0) -> dict[str, np.ndarray]:
    """Send a `grpc_request` to `HOST:8500` and parse the answer (ServingError on RPC errors)."""
    import grpc

    _, service = _apis()
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 512 << 20),
                                                ("grpc.max_receive_message_length", 512 << 20)]) as channel:
        try:
            response = service.PredictionServiceStub(channel).Predict(request, timeout=timeout)
        except grpc.RpcError as e:
            raise ServingError(f"{target}: {e.code().name}: {e.details()}") from None
    return parse_grpc_response(response)


# ------------------------------------------------------------------------------ reading outputs
def ood_note(p_o: float, p_s: float, optical_available=1.0, sar_available=1.0, threshold: float = 0.5,
             optical_finite: bool = True) -> str:
    """A plain-words warning about the inputs of one sample, or "" when both look in-distribution.
    ``optical_finite``: False when the optical bands held NaN or ±inf (the model treats them as missing)."""
    problems = {}
    for name, key, p, present in (("optical", "p_o", p_o, optical_available), ("SAR", "p_s", p_s, sar_available)):
        if name == "optical" and present and not optical_finite:
            problems[name] = "optical has non-finite values (treated as missing)"
        elif not present:
            problems[name] = f"{name} missing"
        elif p < threshold:
            problems[name] = f"{name} looks out of distribution ({key} = {p:.2f})"
    if len(problems) == 2:
        return "; ".join(problems.values()) + ": no trustworthy input, probabilities pulled towards 0.5"
    for name, other in (("optical", "SAR"), ("SAR", "optical")):
        if name in problems:
            return f"{problems[name]}: the prediction rests on {other}"
    return ""


def describe(outputs: dict, class_names, inputs=None, threshold: float = 0.5) -> list[dict]:
    """Per sample: predicted class names, {class: probability}, p_o, p_s, entropy, confidence and
    the `ood_note` (flags taken from `inputs` when given)."""
    n = len(outputs["probabilities"])
    flags = {f: (np.asarray(inputs[f]).reshape(-1) if inputs is not None else np.ones(n)) for f in FLAGS}
    finite = (np.all([np.isfinite(np.asarray(inputs[b], np.float64)).reshape(n, -1).all(1) for b in S2_BANDS], axis=0)
              if inputs is not None and all(b in inputs for b in S2_BANDS) else np.ones(n, bool))
    rows = []
    for i in range(n):
        p_o, p_s = float(outputs["p_optical_in_distribution"][i]), float(outputs["p_sar_in_distribution"][i])
        rows.append({
            "labels": [c for c, on in zip(class_names, outputs["labels"][i]) if on],
            "probabilities": {c: float(p) for c, p in zip(class_names, outputs["probabilities"][i])},
            "p_o": p_o, "p_s": p_s,
            "entropy": float(outputs["entropy"][i]), "confidence": float(outputs["confidence"][i]),
            "note": ood_note(p_o, p_s, flags["optical_available"][i], flags["sar_available"][i], threshold,
                             optical_finite=bool(finite[i])),
        })
    return rows
