"""Post-hoc OOD detectors: a score per modality that needs no OOD training data, calibrated into
p = P(in-distribution) so Eq. 3 (`tf_fusion.adaptive`) can gate a modality with it.

The detectors themselves — their names, what each reads, fits and scores, in NumPy and in the
graph — are classes of the registry ``tf_fusion.detector_registry`` (free of TensorFlow, so
config can read the names). This module holds what they share: the functions by name that
the rest of the project calls (``raw_score``, ``fit``), the calibrators, the run-folder files
and the one Keras layer, ``DetectorProbability``, that computes any registered detector's p in
the graph. Every raw score is oriented so that HIGHER = MORE in-distribution:

======================  ==========  =========================================================
name                    reads       raw score
======================  ==========  =========================================================
confidence              logits      mean_c max(p_c, 1 − p_c), p = sigmoid(logit): MSP for sigmoids
max_logit               logits      max_c logit_c
joint_energy            logits      Σ_c log(1 + e^{logit_c}) (multi-label energy, Wang et al. 2021)
mahalanobis             embedding   −(z − μ)ᵀ P (z − μ): one Gaussian of the training embeddings
mahalanobis_class       embedding   −min_c (z − μ_c)ᵀ P (z − μ_c): per-class means, shared covariance
knn                     embedding   −‖ẑ − r̂_(k)‖: distance to the k-th nearest L2-normalised
                                    embedding of a seeded training sample (the reference)
mahalanobis_normalized  embedding   mahalanobis_class on L2-normalised embeddings (Mahalanobis++)
vim                     features,   Σ_c softplus(logit_c) − α‖(x − o)(I − PPᵀ)‖ (ViM, sigmoid
                        logits, W   energy; o = −pinv(Wᵀ)b, P the principal subspace of train)
scale                   features,   Σ_c softplus(e^r (logit_c − b_c) + b_c), r = Σa / Σ top 15 % a
                        logits, b   (SCALE, sigmoid energy)
binary_head             embedding   the paper's trained heads (``tf_fusion.ood``); listed, not here
======================  ==========  =========================================================

Fitting (``fit``). Covariances are scikit-learn's ``LedoitWolf`` (shrinkage towards a scaled
identity, so the precision P exists even when D ≥ N); ``mahalanobis`` fits it to the training
embeddings, ``mahalanobis_class`` to the class-centred ones (a patch carrying several classes
gives one centred row per class, ``assume_centered=True``), with one mean per class that has
training patches. ``knn`` draws ``min(N, knn_reference)`` embeddings without replacement with
``numpy.random.default_rng(seed)``. ViM fits its origin, subspace and α on the training
features and the classifier; SCALE keeps the classifier's bias. The Gaussian fits work in
float64: memory ≈ 2 · 8 · N · D bytes (subsample before calling ``fit`` when that is too much).
The logit scores fit nothing.

Calibration (``fit_calibrator``): ``val`` scores (label 1) against ``ood_val`` (label 0), both
classes weighted equally (as the binary heads' ``ood.balance``), so p does not depend on the
arbitrary size ratio of the two subsets. ``logistic`` (default): the score standardised
(``StandardScaler``), then ``LogisticRegression(class_weight="balanced")`` with scikit-learn's
defaults; a detector that ranks OOD above in-distribution on ``val`` (negative slope) gets the
constant p = 0.5 (no evidence), which keeps p monotone. ``isotonic``:
``IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0, y_max=1)`` with balanced
sample weights; its prediction is the piecewise-linear interpolation of its thresholds, clipped
outside the fitted range. Either way p is non-decreasing in the score and lies in [0, 1].

Cost in the graph, per sample (``DetectorProbability``; D = embedding width, F the classifier's
input width, C classes, R the kNN reference size, M ≤ C class means, K ViM's dimension): logit
scores O(C); ``mahalanobis`` D² multiply-adds and a D × D float32 weight (16 MiB at D = 2048);
``mahalanobis_class`` and ``mahalanobis_normalized`` D² + M·D and D² + M·D weights; ``knn`` R·D
multiply-adds plus a top-k over R, and the R × D reference as a float32 constant of the graph
(R = 2000, D = 2048: 8.2 M multiply-adds per sample, 16 MiB); ``vim`` 2·F·K (F = 4096, K = 1000:
8.2 M, a 16 MiB basis); ``scale`` a top-k over F. The binary head (2048→512→64→1) is ≈ 1.1 M
multiply-adds per sample. The graph computes in float32 (the kNN distance as sqrt(2 − 2·cos),
the class distances expanded around the mean of the class means); the NumPy reference
``raw_score`` in float64. With the logistic calibrator the two agree to well under 1e-5 in p;
the isotonic one is piecewise linear with steep segments between adjacent thresholds of
different level, where p moves by (slope × the float32 rounding of the score), occasionally
above 1e-5 (up to ~1e-4 seen on synthetic data).

API::

    DETECTORS       {name: detector class} (tf_fusion.detector_registry), binary_head included
    POST_HOC        the post-hoc names;  CALIBRATIONS ("logistic", "isotonic")
    FIT_COMMAND     the command the errors name: python -m tf_fusion.evaluate --run RUN --detectors all
    DEFAULT_SETTINGS {"calibration": "logistic", "knn_k": 10, "knn_reference": 2000, "seed": 0}
    resolve_settings(settings) -> settings             defaults filled in, values checked
    fitted_settings(name, settings) -> dict            what one detector's fit depends on
    raw_score(name, embedding=None, logits=None, stats=None, features=None) -> [N] float64
    fit(name, train_embeddings, train_labels, settings, features=None, logits=None, classifier=None)
        -> stats (dict of arrays; {} for the logit scores)
    reference_indices(n, size, seed) -> the kNN reference rows (bounded, seeded)
    classifier_weights(fusion) -> (kernel [F, C], bias [C]) of the fusion head's final Dense
    fit_calibrator(scores_in, scores_out, method="logistic") -> LogisticCalibrator | IsotonicCalibrator
        calibrator(scores) -> [N] p in [0, 1]
    save(run_dir, name, modality, stats, calibrator, settings) -> path(run_dir, name, modality)
        = RUN/detectors/NAME_MODALITY.npz (MODALITY "optical" | "sar"), written atomically
    load(run_dir, name, modality, settings) -> (stats, calibrator)  RunError if unfitted/stale
    is_fitted(run_dir, name, modality, settings) -> bool
    DetectorProbability.from_fitted(detector, stats, calibrator, name=None) -> a Keras layer,
        [embedding [B, D], logits [B, C](, features [B, F])] -> p float32 [B, 1];
        .score(e, l, f=None) -> [B], .calibrate(s) -> [B]

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
from . import detector_registry as registry
from .adaptive import _Float32Layer
from .detector_registry import (BINARY_HEAD, CLASSIFIER, DEFAULT_SETTINGS, DETECTORS, EMBEDDING,  # noqa: F401
                                FEATURES, GRAPH_INPUTS, LOGITS, POST_HOC, fitted_settings, reference_indices,
                                resolve_settings)
from .protocol import MODALITIES
from .runs import DETECTORS as FOLDER  # RUN/detectors (`tf_fusion.runs`: the run folder's layout)
from .runs import RunError

FIT_COMMAND = "python -m tf_fusion.evaluate --run {run} --detectors all"
_FORMAT = 1


# ------------------------------------------------------------------------------------ by name
def raw_score(name: str, embedding=None, logits=None, stats=None, features=None) -> np.ndarray:
    """The raw score of detector ``name`` per sample, float64 [N], higher = more in-distribution.

    embedding: [N, D], logits: [N, C] of the modality's single-modality pass, features: [N, F]
    the classifier's input in that pass (what the detector reads), stats: ``fit``'s output."""
    cls = registry.post_hoc(name)
    inputs = {EMBEDDING: embedding, LOGITS: logits, FEATURES: features}
    return np.asarray(cls.score(inputs, cls.check_stats(stats) if cls.stats_keys else stats), np.float64)


def fit(name: str, train_embeddings, train_labels, settings: dict | None, *, features=None, logits=None,
        classifier=None) -> dict:
    """Fitted statistics of detector ``name`` (a dict of NumPy arrays; ``{}`` for the logit scores).

    train_embeddings: [N, D] in-distribution training embeddings of one modality; train_labels:
    [N, C] multi-hot (``mahalanobis_class``); features / logits: [N, F] / [N, C] of the same rows'
    single-modality pass; classifier: (kernel [F, C], bias [C]); settings: see ``resolve_settings``."""
    cls = registry.post_hoc(name)
    inputs = {EMBEDDING: train_embeddings, LOGITS: logits, FEATURES: features, CLASSIFIER: classifier}
    return cls.fit(inputs, train_labels, resolve_settings(settings))


def classifier_weights(fusion) -> tuple[np.ndarray, np.ndarray]:
    """(kernel [F, C], bias [C]) float64 of the fusion head's final Dense (the ``classifier``
    the detectors read)."""
    from .model import CLASSIFIER as LAYER

    dense = fusion.fusion_head.get_layer(LAYER)
    return tuple(np.asarray(keras.ops.convert_to_numpy(w), np.float64) for w in (dense.kernel, dense.bias))


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


def fit_calibrator(scores_in, scores_out, method: str = "logistic", out_groups=None):
    """A calibrator mapping a raw score to p = P(in-distribution), fitted on held-out scores:
    ``scores_in`` of in-distribution samples (``val``, label 1), ``scores_out`` of OOD samples
    (``ood_val``, label 0), both classes weighted equally. See the module docstring.

    ``out_groups``: one label per OOD score (e.g. ``ood_val`` and the generic corruptions); the
    OOD side's weight (that of the in-distribution side) is then split equally among the groups,
    whatever their sizes, and the logistic calibrator standardises the score by the
    in-distribution scores alone (far-out corruptions would otherwise set the scale and flatten
    the slope between ``val`` and ``ood_val``)."""
    if method not in CALIBRATORS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {method!r}")
    s, y = _calibration_data(scores_in, scores_out)
    if out_groups is None:
        from sklearn.utils.class_weight import compute_sample_weight

        weight, loc_scale = compute_sample_weight("balanced", y), s
    else:
        groups = np.asarray(out_groups).reshape(-1)
        if len(groups) != int((y == 0).sum()):
            raise ValueError(f"out_groups needs one label per OOD score; got {len(groups)} for {int((y == 0).sum())}")
        names, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
        n_in = int(y.sum())  # each in-distribution score weighs 1, each group n_in in all: no group's size matters
        weight = np.concatenate([np.ones(n_in), n_in / (len(names) * counts[index])])
        loc_scale = s[y == 1]
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(s, y, sample_weight=weight)
        return IsotonicCalibrator(np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64))
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(loc_scale[:, None])
    lr = LogisticRegression().fit(scaler.transform(s[:, None]), y, sample_weight=weight)
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
    return os.path.join(os.fspath(run_dir), FOLDER, f"{registry.post_hoc(name).name}_{modality}.npz")


def save(run_dir, name: str, modality: str, stats: dict, calibrator, settings: dict | None) -> str:
    """Write the fitted detector of one modality into the run; returns its path."""
    target = path(run_dir, name, modality)
    registry.post_hoc(name).check_stats(stats)
    _check_calibrator(calibrator)
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
def _check_calibrator(calibrator):
    if type(calibrator) not in CALIBRATORS.values():
        raise ValueError(f"calibrator must be one of {[c.__name__ for c in CALIBRATORS.values()]}, "
                         f"got {type(calibrator).__name__}")


@keras.saving.register_keras_serializable(package="tf_fusion")
class DetectorProbability(_Float32Layer):
    """``[embedding [B, D], logits [B, C]]`` (plus ``features [B, F]`` for a detector that reads
    them) → p = P(in-distribution), float32 [B, 1], for one fitted post-hoc detector of the
    registry and its calibrator; the twin of ``calibrator(raw_score(...))``.

    The detector's graph constants (``graph_constants``) and the calibrator's parameters are
    non-trainable weights, so they travel inside ``.keras`` files and SavedModels; the config
    holds only their shapes. Build it with ``from_fitted``. An input a detector does not read may
    be any tensor (it is ignored).

    Args:
        detector: a post-hoc name of ``tf_fusion.detector_registry.DETECTORS``.
        calibration: ``"logistic"`` or ``"isotonic"``.
        constants: {name: shape} of the detector's graph constants (``from_fitted`` fills it).
        static: the detector's Python ints (``graph_static``, kNN's k).
        num_thresholds: T ≥ 2, the isotonic calibrator's thresholds.
    """

    def __init__(self, detector, calibration="logistic", constants=None, static=None, num_thresholds=None, **kwargs):
        super().__init__(**kwargs)
        self.kind = registry.post_hoc(detector)
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
        constants = {k: [int(n) for n in shape] for k, shape in (constants or {}).items()}
        bad = {k: s for k, s in constants.items() if any(n < 1 for n in s)}
        if bad or (calibration == "isotonic" and not (isinstance(num_thresholds, (int, np.integer))
                                                      and num_thresholds >= 2)):
            raise ValueError(f"DetectorProbability({detector!r}, {calibration!r}) needs positive constant shapes "
                             f"(num_thresholds ≥ 2 when isotonic); got constants={constants}, "
                             f"num_thresholds={num_thresholds!r}")
        self.detector, self.calibration = detector, calibration
        self.constant_shapes, self.static = constants, dict(static or {})
        self.num_thresholds = num_thresholds
        self.reads = self.kind.reads

        def weight(name, shape):
            return self.add_weight(shape=tuple(shape), initializer="zeros", trainable=False, name=name)

        self.constants = {k: weight(k, s) for k, s in constants.items()}
        if calibration == "logistic":
            self.params = weight("logistic", (4,))
        else:
            self.thresholds_x = weight("thresholds_x", (num_thresholds,))
            self.thresholds_y = weight("thresholds_y", (num_thresholds,))

    @classmethod
    def from_fitted(cls, detector: str, stats: dict, calibrator, **kwargs) -> "DetectorProbability":
        """The layer of ``fit``'s stats and ``fit_calibrator``'s calibrator (or ``load``'s pair);
        ``kwargs`` go to the layer (``name``)."""
        kind = registry.post_hoc(detector)
        kind.check_stats(stats)
        _check_calibrator(calibrator)
        constants = {k: np.asarray(v, np.float64) for k, v in kind.graph_constants(stats).items()}
        extra = {}
        if calibrator.method == "logistic":
            calibration = {"params": calibrator.to_arrays()["params"]}
        else:
            x, y = np.asarray(calibrator.x, np.float64), np.asarray(calibrator.y, np.float64)
            if len(x) == 1:  # one threshold: a constant (two equal points interpolate to it)
                x, y = np.repeat(x, 2), np.repeat(y, 2)
            extra["num_thresholds"] = int(len(x))
            calibration = {"thresholds_x": x, "thresholds_y": y}
        layer = cls(detector, calibrator.method, constants={k: list(v.shape) for k, v in constants.items()},
                    static=kind.graph_static(stats), **extra, **kwargs)
        for key, value in constants.items():
            layer.constants[key].assign(np.asarray(value, np.float32))
        for key, value in calibration.items():
            getattr(layer, key).assign(np.asarray(value, np.float32))
        return layer

    def build(self, input_shape):
        """The weights exist since ``__init__``; this only checks the input widths."""
        for what, shape in zip(GRAPH_INPUTS, input_shape):
            self._check_width(what, shape)
        self.built = True

    def _check_width(self, what, shape):
        width = self.kind.widths(self.constant_shapes).get(what)
        if width is not None and shape[-1] is not None and shape[-1] != width:
            raise ValueError(f"{self.name}: {self.detector} was fitted on the {what} of width {width}, "
                             f"got shape {tuple(shape)}")

    # --- the raw score, [B] ------------------------------------------------------------------
    def score(self, embedding, logits, features=None):
        """The raw score (``raw_score``'s float32 twin), [B]."""
        inputs = {}
        for what, x in zip(GRAPH_INPUTS, (embedding, logits, features)):
            if what in self.reads:
                if x is None:
                    raise ValueError(f"{self.name}: {self.detector} reads the {what}; got none "
                                     f"(inputs [embedding, logits, features])")
                x = ops.cast(x, "float32")
                self._check_width(what, x.shape)
                inputs[what] = x
        return self.kind.graph_score(inputs, self.constants, self.static)

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
        return ops.expand_dims(self.calibrate(self.score(*inputs)), -1)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], 1)

    def get_config(self):
        config = super().get_config()
        config.update(detector=self.detector, calibration=self.calibration, constants=self.constant_shapes,
                      static=self.static, num_thresholds=self.num_thresholds)
        return config
