"""Post-hoc OOD detectors: a score per modality that needs no OOD training data, calibrated into
p = P(in-distribution) so Eq. 3 (`tf_fusion.adaptive`) can gate a modality with it.

Each detector reads one modality: either its branch embedding at the fusion point (``[N, D]``;
feature maps are global-average-pooled by the caller) or the logits of that modality's
single-modality pass (``[N, C]``; the rows ``opt`` / ``sar`` of ``tf_fusion.passes.PASSES``).
Every raw score is oriented so that HIGHER = MORE in-distribution:

==================  =========  =================================================================
name                reads      raw score
==================  =========  =================================================================
confidence          logits     mean_c max(p_c, 1 − p_c), p = sigmoid(logit): MSP for sigmoids
max_logit           logits     max_c logit_c
joint_energy        logits     Σ_c log(1 + e^{logit_c}) (multi-label energy, Wang et al. 2021)
mahalanobis         embedding  −(z − μ)ᵀ P (z − μ): one Gaussian of the training embeddings
mahalanobis_class   embedding  −min_c (z − μ_c)ᵀ P (z − μ_c): per-class means, shared covariance
knn                 embedding  −‖ẑ − r̂_(k)‖: distance to the k-th nearest L2-normalised
                               embedding of a seeded training sample (the reference)
binary_head         embedding  the paper's trained heads (``tf_fusion.ood``); listed, not here
==================  =========  =================================================================

Fitting (``fit``). Covariances are scikit-learn's ``LedoitWolf`` (shrinkage towards a scaled
identity, so the precision P exists even when D ≥ N); ``mahalanobis`` fits it to the training
embeddings, ``mahalanobis_class`` to the class-centred ones (a patch carrying several classes
gives one centred row per class, ``assume_centered=True``), with one mean per class that has
training patches. ``knn`` draws ``min(N, knn_reference)`` embeddings without replacement with
``numpy.random.default_rng(seed)``. The Gaussian fits work in float64: memory ≈ 2 · 8 · N · D
bytes (subsample before calling ``fit`` when that is too much). The logit scores fit nothing.

Calibration (``fit_calibrator``): ``val`` scores (label 1) against ``ood_val`` (label 0), both
classes weighted equally (as the binary heads' ``ood.balance``), so p does not depend on the
arbitrary size ratio of the two subsets. ``logistic`` (default): the score standardised
(``StandardScaler``), then ``LogisticRegression(class_weight="balanced")`` with scikit-learn's
defaults; a detector that ranks OOD above in-distribution on ``val`` (negative slope) gets the
constant p = 0.5 (no evidence), which keeps p monotone. ``isotonic``:
``IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0, y_max=1)`` with balanced
sample weights; its prediction is the piecewise-linear interpolation of its thresholds, clipped
outside the fitted range. Either way p is non-decreasing in the score and lies in [0, 1].

Cost in the graph, per sample (``DetectorProbability``; D = embedding width, C classes, R the kNN
reference size, M ≤ C class means): logit scores O(C); ``mahalanobis`` D² multiply-adds and a
D × D float32 weight (16 MiB at D = 2048); ``mahalanobis_class`` D² + M·D and D² + M·D weights;
``knn`` R·D multiply-adds plus a top-k over R, and the R × D reference as a float32 constant of
the graph (R = 2000, D = 2048: 8.2 M multiply-adds per sample, 16 MiB). The binary head
(2048→512→64→1) is ≈ 1.1 M multiply-adds per sample. The graph computes in float32 (the kNN
distance as sqrt(2 − 2·cos), the class distances expanded around the mean of the class means);
the NumPy reference ``raw_score`` in float64. With the logistic calibrator the two agree to well
under 1e-5 in p; the isotonic one is piecewise linear with steep segments between adjacent
thresholds of different level, where p moves by (slope × the float32 rounding of the score),
occasionally above 1e-5 (up to ~1e-4 seen on synthetic data).

API::

    DETECTORS       {name: "embedding" | "logits"}, binary_head included
    POST_HOC        the six post-hoc names;  CALIBRATIONS ("logistic", "isotonic")
    FIT_COMMAND     the command the errors name: python -m tf_fusion.evaluate --run RUN --detectors all
    DEFAULT_SETTINGS {"calibration": "logistic", "knn_k": 10, "knn_reference": 2000, "seed": 0}
    resolve_settings(settings) -> settings             defaults filled in, values checked
    fitted_settings(name, settings) -> dict            what one detector's fit depends on
    raw_score(name, embedding=None, logits=None, stats=None) -> [N] float64
    fit(name, train_embeddings, train_labels, settings) -> stats (dict of arrays; {} for logits)
    reference_indices(n, size, seed) -> the kNN reference rows (bounded, seeded)
    fit_calibrator(scores_in, scores_out, method="logistic") -> LogisticCalibrator | IsotonicCalibrator
        calibrator(scores) -> [N] p in [0, 1]
    save(run_dir, name, modality, stats, calibrator, settings) -> path(run_dir, name, modality)
        = RUN/detectors/NAME_MODALITY.npz (MODALITY "optical" | "sar"), written atomically
    load(run_dir, name, modality, settings) -> (stats, calibrator)  RunError if unfitted/stale
    is_fitted(run_dir, name, modality, settings) -> bool
    DetectorProbability.from_fitted(detector, stats, calibrator, name=None) -> a Keras layer,
        [embedding [B, D], logits [B, C]] -> p float32 [B, 1]; .score(e, l) -> [B], .calibrate(s) -> [B]

The seed of the kNN reference is a setting (``seed``), so a changed seed refits like any other
changed setting.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import ClassVar

import keras
import numpy as np
from keras import ops
from scipy.special import expit

from . import atomic
from .adaptive import _Float32Layer
from .protocol import MODALITIES
from .runs import DETECTORS as FOLDER  # RUN/detectors (`tf_fusion.runs`: the run folder's layout)
from .runs import RunError

EMBEDDING, LOGITS = "embedding", "logits"
BINARY_HEAD = "binary_head"
DETECTORS = {
    "confidence": LOGITS,
    "max_logit": LOGITS,
    "joint_energy": LOGITS,
    "mahalanobis": EMBEDDING,
    "mahalanobis_class": EMBEDDING,
    "knn": EMBEDDING,
    BINARY_HEAD: EMBEDDING,
}
POST_HOC = tuple(name for name in DETECTORS if name != BINARY_HEAD)
DEFAULT_SETTINGS = {"calibration": "logistic", "knn_k": 10, "knn_reference": 2000, "seed": 0}
STATS_KEYS = {"mahalanobis": ("mean", "precision"),
              "mahalanobis_class": ("classes", "means", "precision"),
              "knn": ("k", "reference")}
FIT_COMMAND = "python -m tf_fusion.evaluate --run {run} --detectors all"
_FORMAT = 1
_NORM_EPS = 1e-12  # an all-zero embedding stays zero when L2-normalised (scikit-learn's normalize)


# ------------------------------------------------------------------------------------ settings
def _check_name(name: str, allowed=POST_HOC) -> str:
    if name not in allowed:
        if name == BINARY_HEAD:
            raise ValueError(f"{BINARY_HEAD} is the paper's trained head (python -m tf_fusion.ood), "
                             f"not a post-hoc score; post-hoc detectors: {', '.join(POST_HOC)}")
        raise ValueError(f"unknown detector {name!r}; expected one of {', '.join(allowed)}")
    return name


def resolve_settings(settings: dict | None) -> dict:
    """The detector settings with defaults filled in; a ValueError names an unknown key or a bad
    value (``knn_k`` ≥ 1, ``knn_reference`` ≥ ``knn_k``, ``seed`` ≥ 0)."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(f"unknown detector settings {unknown}; expected keys {sorted(DEFAULT_SETTINGS)}")
    out = {**DEFAULT_SETTINGS, **settings}
    if out["calibration"] not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {out['calibration']!r}")
    for key, low in (("knn_k", 1), ("knn_reference", out["knn_k"]), ("seed", 0)):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{key} must be an integer ≥ {low}, got {value!r}")
        out[key] = int(value)
    return out


def fitted_settings(name: str, settings: dict | None) -> dict:
    """The settings one detector's fitted state depends on (saved with it; any change refits):
    the calibration for all, plus k, the reference size and the seed for ``knn``."""
    s = resolve_settings(settings)
    keys = ("calibration", "knn_k", "knn_reference", "seed") if _check_name(name) == "knn" else ("calibration",)
    return {k: s[k] for k in keys}


# ------------------------------------------------------------------------------------ scores
def _matrix(x, what: str, name: str, width: int | None = None) -> np.ndarray:
    if x is None:
        raise ValueError(f"{name} reads the {what} [N, {'D' if what == EMBEDDING else 'C'}]; got none")
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or (width is not None and a.shape[1] != width):
        want = f"[N, {width}]" if width is not None else "[N, K]"
        raise ValueError(f"{name}: {what} must be {want}, got shape {a.shape}")
    return a


def _check_stats(name: str, stats) -> dict:
    missing = [k for k in STATS_KEYS.get(name, ()) if stats is None or k not in stats]
    if missing:
        raise ValueError(f"{name} needs fitted stats with keys {list(STATS_KEYS[name])}; "
                         f"got {sorted(stats) if stats is not None else None}")
    return stats


def _normalize(x: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import normalize

    return normalize(x, norm="l2")


def _whitening(precision) -> np.ndarray:
    """L with P = L Lᵀ, so (z − μ)ᵀ P (z − μ) = ‖(z − μ) L‖² (never negative)."""
    return np.linalg.cholesky(np.asarray(precision, np.float64))


def raw_score(name: str, embedding=None, logits=None, stats=None) -> np.ndarray:
    """The raw score of detector ``name`` per sample, float64 [N], higher = more in-distribution.

    embedding: [N, D] (the embedding detectors), logits: [N, C] of the modality's single-modality
    pass (the logit detectors), stats: ``fit``'s output (the embedding detectors)."""
    _check_name(name)
    if DETECTORS[name] == LOGITS:
        z = _matrix(logits, LOGITS, name)
        if name == "confidence":
            return expit(np.abs(z)).mean(axis=1)  # max(p, 1 − p) = sigmoid(|logit|)
        if name == "max_logit":
            return z.max(axis=1)
        return np.logaddexp(0.0, z).sum(axis=1)  # joint_energy
    stats = _check_stats(name, stats)
    if name == "knn":
        from sklearn.neighbors import NearestNeighbors

        reference = np.asarray(stats["reference"], np.float64)
        x = _matrix(embedding, EMBEDDING, name, reference.shape[1])
        k = int(stats["k"])
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(reference)
        return -nn.kneighbors(_normalize(x), return_distance=True)[0][:, k - 1]
    whitening = _whitening(stats["precision"])
    if name == "mahalanobis":
        x = _matrix(embedding, EMBEDDING, name, whitening.shape[0])
        return -np.sum(((x - np.asarray(stats["mean"], np.float64)) @ whitening) ** 2, axis=1)
    from scipy.spatial.distance import cdist

    x = _matrix(embedding, EMBEDDING, name, whitening.shape[0])
    means = np.asarray(stats["means"], np.float64)
    return -cdist(x @ whitening, means @ whitening, "sqeuclidean").min(axis=1)  # mahalanobis_class


# ------------------------------------------------------------------------------------ fitting
def reference_indices(n: int, size: int, seed: int) -> np.ndarray:
    """The kNN reference sample: ``min(n, size)`` distinct indices of ``range(n)``, sorted, drawn
    with ``numpy.random.default_rng(seed)`` (same seed, same sample)."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(int(n), int(size)), replace=False))


def fit(name: str, train_embeddings, train_labels, settings: dict | None) -> dict:
    """Fitted statistics of detector ``name`` (a dict of NumPy arrays; ``{}`` for the logit scores).

    train_embeddings: [N, D] in-distribution training embeddings of one modality; train_labels:
    [N, C] multi-hot (``mahalanobis_class`` only); settings: see ``resolve_settings``."""
    _check_name(name)
    settings = resolve_settings(settings)
    if DETECTORS[name] == LOGITS:
        return {}
    from sklearn.covariance import LedoitWolf

    x = _matrix(train_embeddings, EMBEDDING, name)
    if len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"{name}: the training embeddings must be non-empty and finite, got shape {x.shape}"
                         f" with {int((~np.isfinite(x)).sum())} non-finite values")
    if name == "knn":
        k = settings["knn_k"]
        if len(x) < k:
            raise ValueError(f"knn: knn_k={k} needs at least {k} training embeddings, got {len(x)}")
        reference = _normalize(x[reference_indices(len(x), settings["knn_reference"], settings["seed"])])
        return {"k": np.asarray(k, np.int64), "reference": reference.astype(np.float32)}
    if name == "mahalanobis":
        lw = LedoitWolf().fit(x)
        return {"mean": lw.location_.astype(np.float32), "precision": lw.precision_.astype(np.float32)}
    y = np.asarray(train_labels) if train_labels is not None else None
    if y is None or y.ndim != 2 or len(y) != len(x):
        raise ValueError(f"mahalanobis_class needs multi-hot labels [{len(x)}, C]; got "
                         f"{None if y is None else y.shape}")
    y = y > 0
    classes = np.flatnonzero(y.any(axis=0))
    if classes.size == 0:
        raise ValueError("mahalanobis_class: no training patch carries any class")
    means = np.stack([x[y[:, c]].mean(axis=0) for c in classes])
    centred = np.concatenate([x[y[:, c]] - means[i] for i, c in enumerate(classes)])
    lw = LedoitWolf(assume_centered=True).fit(centred)
    return {"classes": classes.astype(np.int64), "means": means.astype(np.float32),
            "precision": lw.precision_.astype(np.float32)}


# ------------------------------------------------------------------------------------ calibration
@dataclasses.dataclass(frozen=True)
class LogisticCalibrator:
    """p = sigmoid(coef · (score − loc) / scale + intercept), coef ≥ 0."""

    loc: float
    scale: float
    coef: float
    intercept: float
    method: ClassVar[str] = "logistic"

    def __call__(self, scores) -> np.ndarray:
        s = np.asarray(scores, np.float64)
        return expit(self.coef * (s - self.loc) / self.scale + self.intercept)

    def to_arrays(self) -> dict:
        return {"params": np.array([self.loc, self.scale, self.coef, self.intercept], np.float64)}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "LogisticCalibrator":
        return cls(*(float(v) for v in np.asarray(arrays["params"], np.float64)))


@dataclasses.dataclass(frozen=True, eq=False)
class IsotonicCalibrator:
    """p = the linear interpolation of (x, y) (scikit-learn's ``IsotonicRegression.predict``),
    clipped to y[0] / y[-1] outside [x[0], x[-1]]."""

    x: np.ndarray
    y: np.ndarray
    method: ClassVar[str] = "isotonic"

    def __call__(self, scores) -> np.ndarray:
        return np.interp(np.asarray(scores, np.float64), self.x, self.y)

    def to_arrays(self) -> dict:
        return {"x": np.asarray(self.x, np.float64), "y": np.asarray(self.y, np.float64)}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "IsotonicCalibrator":
        return cls(np.asarray(arrays["x"], np.float64), np.asarray(arrays["y"], np.float64))


CALIBRATORS = {c.method: c for c in (LogisticCalibrator, IsotonicCalibrator)}
CALIBRATIONS = tuple(CALIBRATORS)  # ("logistic", "isotonic")


def _calibration_data(scores_in, scores_out):
    s_in, s_out = (np.asarray(s, np.float64).reshape(-1) for s in (scores_in, scores_out))
    if not len(s_in) or not len(s_out):
        raise ValueError(f"a calibrator needs in-distribution and OOD scores; got {len(s_in)} and {len(s_out)}")
    s = np.concatenate([s_in, s_out])
    if not np.isfinite(s).all():
        raise ValueError(f"calibration scores must be finite; got {int((~np.isfinite(s)).sum())} non-finite "
                         f"of {len(s)}")
    return s, np.concatenate([np.ones(len(s_in)), np.zeros(len(s_out))])


def fit_calibrator(scores_in, scores_out, method: str = "logistic"):
    """A calibrator mapping a raw score to p = P(in-distribution), fitted on held-out scores:
    ``scores_in`` of in-distribution samples (``val``, label 1), ``scores_out`` of OOD samples
    (``ood_val``, label 0), both classes weighted equally. See the module docstring."""
    if method not in CALIBRATORS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {method!r}")
    s, y = _calibration_data(scores_in, scores_out)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression
        from sklearn.utils.class_weight import compute_sample_weight

        iso = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(s, y, sample_weight=compute_sample_weight("balanced", y))
        return IsotonicCalibrator(np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64))
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(s[:, None])
    lr = LogisticRegression(class_weight="balanced").fit(scaler.transform(s[:, None]), y)
    coef, intercept = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if coef < 0:
        warnings.warn(f"calibration: the score ranks OOD above in-distribution (slope {coef:.3g}); "
                      f"p is the constant 0.5", stacklevel=2)
        coef, intercept = 0.0, 0.0
    return LogisticCalibrator(float(scaler.mean_[0]), float(scaler.scale_[0]), coef, intercept)


# ------------------------------------------------------------------------------------ persistence
def path(run_dir, name: str, modality: str) -> str:
    """RUN/detectors/NAME_MODALITY.npz: one file per detector and modality (stats, calibrator and
    the settings it was fitted with), written atomically."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return os.path.join(os.fspath(run_dir), FOLDER, f"{_check_name(name)}_{modality}.npz")


def save(run_dir, name: str, modality: str, stats: dict, calibrator, settings: dict | None) -> str:
    """Write the fitted detector of one modality into the run; returns its path."""
    target = path(run_dir, name, modality)
    if DETECTORS[name] == EMBEDDING:
        _check_stats(name, stats)
    if type(calibrator) not in CALIBRATORS.values():
        raise ValueError(f"calibrator must be one of {[c.__name__ for c in CALIBRATORS.values()]}, "
                         f"got {type(calibrator).__name__}")
    meta = {"format": _FORMAT, "detector": name, "modality": modality, "calibration": calibrator.method,
            "settings": fitted_settings(name, settings)}
    arrays = {"meta": np.array(json.dumps(meta, sort_keys=True)),
              **{f"stats/{k}": np.asarray(v) for k, v in (stats or {}).items()},
              **{f"calibrator/{k}": v for k, v in calibrator.to_arrays().items()}}

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic.write_with(target, write, suffix=".npz")
    return target


def _refit(run_dir) -> str:
    return FIT_COMMAND.format(run=os.fspath(run_dir))


def _read(run_dir, name: str, modality: str):
    file = path(run_dir, name, modality)
    if not os.path.exists(file):
        return None, None
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return json.loads(str(arrays.pop("meta"))), arrays
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"{run_dir}: {file} is unreadable ({type(e).__name__}: {e}); "
                       f"refit it with {_refit(run_dir)}") from e


def is_fitted(run_dir, name: str, modality: str, settings: dict | None) -> bool:
    """True when the run holds this detector fitted with these settings (``load`` would succeed)."""
    meta, _ = _read(run_dir, name, modality)
    return meta is not None and meta.get("settings") == fitted_settings(name, settings)


def load(run_dir, name: str, modality: str, settings: dict | None):
    """(stats, calibrator) of a detector saved in the run with these settings; a one-line
    ``RunError`` naming the run and the command that fits it when it was never fitted or was
    fitted with other settings."""
    wanted = fitted_settings(name, settings)
    meta, arrays = _read(run_dir, name, modality)
    if meta is None:
        raise RunError(f"{run_dir}: detector {name} ({modality}) was never fitted; "
                       f"fit it with {_refit(run_dir)}")
    if (meta.get("settings") != wanted or meta.get("detector") != name or meta.get("modality") != modality
            or meta.get("format") != _FORMAT):
        raise RunError(f"{run_dir}: detector {name} ({modality}) was fitted with {meta.get('settings')}, "
                       f"not {wanted}; refit it with {_refit(run_dir)}")
    stats = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("stats/")}
    calibrator = CALIBRATORS[meta["calibration"]].from_arrays(
        {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("calibrator/")})
    return stats, calibrator


# ------------------------------------------------------------------------------------ the layer
@keras.saving.register_keras_serializable(package="tf_fusion")
class DetectorProbability(_Float32Layer):
    """``[embedding [B, D], logits [B, C]]`` → p = P(in-distribution), float32 [B, 1], for one
    fitted post-hoc detector and its calibrator; the twin of ``calibrator(raw_score(...))``.

    The fitted arrays are non-trainable weights, so they travel inside ``.keras`` files and
    SavedModels; the config holds only their shapes. Build it with ``from_fitted``. The input a
    detector does not read may be any tensor (it is ignored).

    Args:
        detector: one of ``POST_HOC``.
        calibration: ``"logistic"`` or ``"isotonic"``.
        embedding_dim: D (the embedding detectors).
        num_means: M, the number of class means (``mahalanobis_class``).
        reference_size: R (``knn``). k: the neighbour whose distance is the score (``knn``).
        num_thresholds: T ≥ 2, the isotonic calibrator's thresholds.
    """

    def __init__(self, detector, calibration="logistic", embedding_dim=None, num_means=None, reference_size=None,
                 k=None, num_thresholds=None, **kwargs):
        super().__init__(**kwargs)
        _check_name(detector)
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
        needs = {"mahalanobis": ("embedding_dim",), "mahalanobis_class": ("embedding_dim", "num_means"),
                 "knn": ("embedding_dim", "reference_size", "k")}.get(detector, ())
        needs += ("num_thresholds",) if calibration == "isotonic" else ()
        given = dict(embedding_dim=embedding_dim, num_means=num_means, reference_size=reference_size, k=k,
                     num_thresholds=num_thresholds)
        bad = {key: given[key] for key in needs if not isinstance(given[key], (int, np.integer)) or given[key] < 1}
        if bad or (k is not None and reference_size is not None and k > reference_size) or \
                (calibration == "isotonic" and num_thresholds < 2):
            raise ValueError(f"DetectorProbability({detector!r}, {calibration!r}) needs positive integers "
                             f"{list(needs)} (k ≤ reference_size, num_thresholds ≥ 2); got {given}")
        self.detector, self.calibration = detector, calibration
        self.embedding_dim, self.num_means, self.reference_size = embedding_dim, num_means, reference_size
        self.k, self.num_thresholds = k, num_thresholds

        def weight(name, shape):
            return self.add_weight(shape=shape, initializer="zeros", trainable=False, name=name)

        d = embedding_dim
        if detector == "mahalanobis":
            self.mean, self.whitening = weight("mean", (d,)), weight("whitening", (d, d))
        elif detector == "mahalanobis_class":
            self.center, self.whitening = weight("center", (d,)), weight("whitening", (d, d))
            self.white_means, self.white_sq = weight("white_means", (num_means, d)), weight("white_sq", (num_means,))
        elif detector == "knn":
            self.reference = weight("reference", (reference_size, d))
        if calibration == "logistic":
            self.params = weight("logistic", (4,))
        else:
            self.thresholds_x = weight("thresholds_x", (num_thresholds,))
            self.thresholds_y = weight("thresholds_y", (num_thresholds,))

    @classmethod
    def from_fitted(cls, detector: str, stats: dict, calibrator, **kwargs) -> "DetectorProbability":
        """The layer of ``fit``'s stats and ``fit_calibrator``'s calibrator (or ``load``'s pair);
        ``kwargs`` go to the layer (``name``)."""
        _check_name(detector)
        if DETECTORS[detector] == EMBEDDING:
            _check_stats(detector, stats)
        if type(calibrator) not in CALIBRATORS.values():
            raise ValueError(f"calibrator must be one of {[c.__name__ for c in CALIBRATORS.values()]}, "
                             f"got {type(calibrator).__name__}")
        values = {}
        shapes = {}
        if detector in ("mahalanobis", "mahalanobis_class"):
            whitening = _whitening(stats["precision"])
            shapes["embedding_dim"] = int(whitening.shape[0])
            values["whitening"] = whitening
            if detector == "mahalanobis":
                values["mean"] = np.asarray(stats["mean"], np.float64)
            else:
                means = np.asarray(stats["means"], np.float64)
                center = means.mean(axis=0)  # expand the distances around it: smaller terms in float32
                white = (means - center) @ whitening
                shapes["num_means"] = int(len(means))
                values.update(center=center, white_means=white, white_sq=np.sum(white ** 2, axis=1))
        elif detector == "knn":
            reference = np.asarray(stats["reference"], np.float64)
            shapes.update(embedding_dim=int(reference.shape[1]), reference_size=int(reference.shape[0]),
                          k=int(stats["k"]))
            values["reference"] = reference
        if calibrator.method == "logistic":
            values["params"] = calibrator.to_arrays()["params"]
        else:
            x, y = np.asarray(calibrator.x, np.float64), np.asarray(calibrator.y, np.float64)
            if len(x) == 1:  # one threshold: a constant (two equal points interpolate to it)
                x, y = np.repeat(x, 2), np.repeat(y, 2)
            shapes["num_thresholds"] = int(len(x))
            values.update(thresholds_x=x, thresholds_y=y)
        layer = cls(detector, calibrator.method, **shapes, **kwargs)
        for attr, value in values.items():
            getattr(layer, attr).assign(np.asarray(value, np.float32))
        return layer

    def build(self, input_shape):
        """The weights exist since ``__init__``; this only checks the embedding width."""
        self._check_width(input_shape[0])
        self.built = True

    def _check_width(self, shape):
        if DETECTORS[self.detector] == EMBEDDING and shape[-1] is not None and shape[-1] != self.embedding_dim:
            raise ValueError(f"{self.name}: {self.detector} was fitted on embeddings of width "
                             f"{self.embedding_dim}, got shape {tuple(shape)}")

    # --- the raw score, [B] ------------------------------------------------------------------
    def score(self, embedding, logits):
        """The raw score (``raw_score``'s float32 twin), [B]."""
        if DETECTORS[self.detector] == LOGITS:
            z = ops.cast(logits, "float32")
            if self.detector == "confidence":
                return ops.mean(ops.sigmoid(ops.abs(z)), axis=-1)
            if self.detector == "max_logit":
                return ops.max(z, axis=-1)
            return ops.sum(ops.softplus(z), axis=-1)
        x = ops.cast(embedding, "float32")
        self._check_width(x.shape)
        if self.detector == "mahalanobis":
            u = ops.matmul(x - self.mean, self.whitening)
            return -ops.sum(ops.square(u), axis=-1)
        if self.detector == "mahalanobis_class":
            u = ops.matmul(x - self.center, self.whitening)
            d = (ops.sum(ops.square(u), axis=-1, keepdims=True) - 2.0 * ops.matmul(u, ops.transpose(self.white_means))
                 + self.white_sq)
            return -ops.maximum(ops.min(d, axis=-1), 0.0)
        norm = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
        x = x / ops.maximum(norm, _NORM_EPS)
        cos_k = ops.top_k(ops.matmul(x, ops.transpose(self.reference)), self.k, sorted=True)[0][:, self.k - 1]
        return -ops.sqrt(ops.maximum(2.0 - 2.0 * cos_k, 0.0))  # ‖a − b‖ of unit vectors

    # --- the calibrator, [B] → [B] -------------------------------------------------------------
    def calibrate(self, s):
        if self.calibration == "logistic":
            loc, scale, coef, intercept = (self.params[i] for i in range(4))
            return ops.sigmoid(coef * (s - loc) / scale + intercept)
        xs, ys = self.thresholds_x, self.thresholds_y
        s = ops.clip(s, xs[0], xs[-1])
        hi = ops.clip(ops.searchsorted(xs, s, side="right"), 1, self.num_thresholds - 1)
        x0, x1 = ops.take(xs, hi - 1), ops.take(xs, hi)
        y0, y1 = ops.take(ys, hi - 1), ops.take(ys, hi)
        span = x1 - x0
        t = ops.where(span > 0, (s - x0) / ops.where(span > 0, span, 1.0), 0.0)
        return y0 + t * (y1 - y0)

    def call(self, inputs):
        embedding, logits = inputs
        return ops.expand_dims(self.calibrate(self.score(embedding, logits)), -1)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], 1)

    def get_config(self):
        config = super().get_config()
        config.update(detector=self.detector, calibration=self.calibration, embedding_dim=self.embedding_dim,
                      num_means=self.num_means, reference_size=self.reference_size, k=self.k,
                      num_thresholds=self.num_thresholds)
        return config
