"""The OOD detectors as a registry: one class per detector, the one home of their names.

A detector class says what it reads, what it fits, its NumPy score, its in-graph score and the
constants it carries into a SavedModel; everything else derives from ``DETECTORS`` (config
ranges, ``evaluate --detectors all``, fitting a run, export, the bench, the reports). This module
imports neither TensorFlow nor Keras (``tf_fusion.config`` reads the names from it); the graph
scores import ``keras.ops`` when called.

What a detector reads (``reads``, a subset of ``READS``), per modality:

- ``embedding``: the branch output at the fusion point, [N, D] (feature maps average-pooled
  below stage 5, ``adaptive.BranchEmbedding``);
- ``logits``: the logits of the modality's single-modality pass, [N, C];
- ``features``: the input of that pass's classifier (the fusion head's final Dense, ``logits``),
  [N, F]: at stage 5 the concatenated squashed gated embeddings, below it the trunk's pooled
  output — post-ReLU or tanh of post-ReLU, so never negative;
- ``classifier``: that Dense's (kernel [F, C], bias [C]), taken from the trained model at fit
  time and kept in the fitted stats (the SavedModel carries them as constants).

Every raw score is oriented so that HIGHER = MORE in-distribution.

Adding a detector: one class here with ``@register`` (name, reads, the settings it depends on,
its stats keys, ``fit``, ``score``, ``graph_constants`` and ``graph_score``) and its tests.

API::

    READS, DETECTORS {name: class}, POST_HOC (the post-hoc names), BINARY_HEAD
    get(name) -> class (ValueError naming the known ones); post_hoc(name) -> class (not binary_head)
    register(cls) -> cls (a class decorator)
    DEFAULT_SETTINGS, resolve_settings(settings), fitted_settings(name, settings)
    reference_indices(n, size, seed), TRAIN_SAMPLE
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

EMBEDDING, LOGITS, FEATURES, CLASSIFIER = READS = ("embedding", "logits", "features", "classifier")
GRAPH_INPUTS = (EMBEDDING, LOGITS, FEATURES)  # the layer's inputs, in this order (the classifier is a constant)
BINARY_HEAD = "binary_head"
# calibrate_on: what the OOD side of every post-hoc calibrator is made of — `ood_val` (the
# OOD-training classes), `corruptions` (generic corruptions of `val`, `tf_fusion.shifts`), or both
DEFAULT_SETTINGS = {"calibration": "logistic", "calibrate_on": "ood_val+corruptions", "knn_k": 10,
                    "knn_reference": 2000, "seed": 0}
CALIBRATE_ON = ("ood_val", "corruptions", "ood_val+corruptions")
CALIBRATION_NAMES = ("logistic", "isotonic")  # tf_fusion.detectors.CALIBRATORS' keys (tested)
TRAIN_SAMPLE = 10_000  # training patches a detector is fitted on by default (float64: ~2·8·N·D bytes)
NORM_EPS = 1e-12  # an all-zero row stays zero when L2-normalised (scikit-learn's normalize)

DETECTORS: dict[str, type["Detector"]] = {}


# ------------------------------------------------------------------------------------ the base
class Detector:
    """One OOD score. Class attributes: ``name``; ``reads`` (among ``READS``); ``settings``, the
    keys of ``DEFAULT_SETTINGS`` its fitted state depends on besides the calibration's two; ``stats_keys``,
    what ``fit`` returns; ``train_pass``, whether ``fit`` needs training samples (else it needs
    at most the classifier); ``post_hoc``, False for the trained binary heads.

    ``fit(inputs, labels, settings)`` → stats (NumPy arrays); ``score(inputs, stats)`` → float64
    [N]; ``graph_constants(stats)`` → {name: array}, the layer's non-trainable weights (their
    shapes come from the stats, in this order); ``graph_static(stats)`` → {name: int}, Python
    ints the graph needs (kNN's k); ``graph_score(inputs, constants, static)`` → float32 [B],
    ``score``'s twin with ``keras.ops``; ``widths(shapes)`` → {input: width} the layer checks.
    ``inputs`` maps the names in ``reads`` to arrays (tensors in the graph)."""

    name: ClassVar[str] = ""
    reads: ClassVar[tuple] = ()
    settings: ClassVar[tuple] = ()
    stats_keys: ClassVar[tuple] = ()
    train_pass: ClassVar[bool] = False
    post_hoc: ClassVar[bool] = True

    @classmethod
    def train_rows(cls, n: int, settings: dict) -> np.ndarray:
        """The training rows ``fit`` reads: a fixed subsample of at most ``TRAIN_SAMPLE`` (seed 0:
        the data alone decides it)."""
        return reference_indices(n, TRAIN_SAMPLE, 0)

    @classmethod
    def fit(cls, inputs: dict, labels, settings: dict) -> dict:
        return {}

    @classmethod
    def score(cls, inputs: dict, stats: dict) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def graph_constants(cls, stats: dict) -> dict:
        return {}

    @classmethod
    def graph_static(cls, stats: dict) -> dict:
        return {}

    @classmethod
    def graph_score(cls, inputs: dict, constants: dict, static: dict):
        raise NotImplementedError

    @classmethod
    def widths(cls, shapes: dict) -> dict:
        return {}

    # --- checks shared by the detectors -------------------------------------------------------
    @classmethod
    def matrix(cls, inputs: dict, what: str, width: int | None = None) -> np.ndarray:
        """``inputs[what]`` as float64 [N, K] (K = ``width`` when given); a ValueError otherwise."""
        x = (inputs or {}).get(what)
        if x is None:
            raise ValueError(f"{cls.name} reads the {what} [N, {_AXIS[what]}]; got none")
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 2 or (width is not None and a.shape[1] != width):
            want = f"[N, {width}]" if width is not None else "[N, K]"
            raise ValueError(f"{cls.name}: {what} must be {want}, got shape {a.shape}")
        return a

    @classmethod
    def training(cls, inputs: dict, what: str) -> np.ndarray:
        """Non-empty, finite training rows of ``what``."""
        x = cls.matrix(inputs, what)
        if len(x) == 0 or not np.isfinite(x).all():
            raise ValueError(f"{cls.name}: the training {what}s must be non-empty and finite, got shape {x.shape}"
                             f" with {int((~np.isfinite(x)).sum())} non-finite values")
        return x

    @classmethod
    def check_stats(cls, stats) -> dict:
        missing = [k for k in cls.stats_keys if stats is None or k not in stats]
        if missing:
            raise ValueError(f"{cls.name} needs fitted stats with keys {list(cls.stats_keys)}; "
                             f"got {sorted(stats) if stats is not None else None}")
        return stats

    @classmethod
    def classifier(cls, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
        """The classifier's (kernel [F, C], bias [C]) as float64."""
        pair = (inputs or {}).get(CLASSIFIER)
        if pair is None or len(pair) != 2:
            raise ValueError(f"{cls.name} reads the classifier's (kernel [F, C], bias [C]); got "
                             f"{None if pair is None else type(pair).__name__}")
        kernel, bias = (np.asarray(a, np.float64) for a in pair)
        if kernel.ndim != 2 or bias.shape != (kernel.shape[1],):
            raise ValueError(f"{cls.name}: the classifier must be (kernel [F, C], bias [C]), got shapes "
                             f"{kernel.shape} and {bias.shape}")
        return kernel, bias


_AXIS = {EMBEDDING: "D", LOGITS: "C", FEATURES: "F"}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: adds ``cls`` to ``DETECTORS`` under ``cls.name`` (unique, reads ⊆ READS,
    settings ⊆ DEFAULT_SETTINGS)."""
    if not cls.name or cls.name in DETECTORS:
        raise ValueError(f"a detector needs a new name; got {cls.name!r} (registered: {', '.join(DETECTORS)})")
    if not cls.reads or not set(cls.reads) <= set(READS):
        raise ValueError(f"{cls.name}: reads must be among {READS}, got {cls.reads!r}")
    if not set(cls.settings) <= set(DEFAULT_SETTINGS) - {"calibration", "calibrate_on"}:
        raise ValueError(f"{cls.name}: settings must be among {sorted(DEFAULT_SETTINGS)}, got {cls.settings!r}")
    DETECTORS[cls.name] = cls
    return cls


def get(name: str) -> type[Detector]:
    """The class of detector ``name``; a ValueError naming the known ones."""
    try:
        return DETECTORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown detector {name!r}; expected one of {', '.join(DETECTORS)}") from None


def post_hoc(name: str) -> type[Detector]:
    """The class of post-hoc detector ``name`` (not the trained binary heads)."""
    cls = get(name)
    if not cls.post_hoc:
        names = ", ".join(n for n, c in DETECTORS.items() if c.post_hoc)
        raise ValueError(f"{name} is the paper's trained head (python -m tf_fusion.ood), not a post-hoc score; "
                         f"post-hoc detectors: {names}")
    return cls


# ------------------------------------------------------------------------------------ settings
def resolve_settings(settings: dict | None) -> dict:
    """The detector settings with defaults filled in; a ValueError names an unknown key or a bad
    value (``knn_k`` ≥ 1, ``knn_reference`` ≥ ``knn_k``, ``seed`` ≥ 0)."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(f"unknown detector settings {unknown}; expected keys {sorted(DEFAULT_SETTINGS)}")
    out = {**DEFAULT_SETTINGS, **settings}
    if out["calibration"] not in CALIBRATION_NAMES:
        raise ValueError(f"calibration must be one of {CALIBRATION_NAMES}, got {out['calibration']!r}")
    if out["calibrate_on"] not in CALIBRATE_ON:
        raise ValueError(f"calibrate_on must be one of {CALIBRATE_ON}, got {out['calibrate_on']!r}")
    for key, low in (("knn_k", 1), ("knn_reference", out["knn_k"]), ("seed", 0)):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{key} must be an integer ≥ {low}, got {value!r}")
        out[key] = int(value)
    return out


def fitted_settings(name: str, settings: dict | None) -> dict:
    """The settings one detector's fitted state depends on (saved with it; any change refits):
    the calibration and what it is fitted on, plus the detector's own ``settings``."""
    cls = post_hoc(name)
    s = resolve_settings(settings)
    return {k: s[k] for k in ("calibration", "calibrate_on", *cls.settings)}


def reference_indices(n: int, size: int, seed: int) -> np.ndarray:
    """``min(n, size)`` distinct indices of ``range(n)``, sorted, drawn with
    ``numpy.random.default_rng(seed)`` (same seed, same sample)."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(int(n), int(size)), replace=False))


# ------------------------------------------------------------------------------------ helpers
def l2_normalize(x: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import normalize

    return normalize(x, norm="l2")


def _graph_l2_normalize(x):
    from keras import ops

    norm = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
    return x / ops.maximum(norm, NORM_EPS)


def _whitening(precision) -> np.ndarray:
    """L with P = L Lᵀ, so (z − μ)ᵀ P (z − μ) = ‖(z − μ) L‖² (never negative)."""
    return np.linalg.cholesky(np.asarray(precision, np.float64))


def _joint_energy(logits: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, logits).sum(axis=1)


def _graph_joint_energy(logits):
    from keras import ops

    return ops.sum(ops.softplus(logits), axis=-1)


# ------------------------------------------------------------------------------------ the heads
@register
class BinaryHead(Detector):
    """The paper's trained heads (``tf_fusion.ood``) on the branch output; listed here so the
    names derive from one place, trained there, not post hoc."""

    name, reads, post_hoc = BINARY_HEAD, (EMBEDDING,), False


# ------------------------------------------------------------------------------------ logit scores
class _LogitScore(Detector):
    reads = (LOGITS,)

    @classmethod
    def score(cls, inputs, stats):
        return cls._numpy(cls.matrix(inputs, LOGITS))

    @classmethod
    def graph_score(cls, inputs, constants, static):
        return cls._graph(inputs[LOGITS])


@register
class Confidence(_LogitScore):
    """mean_c max(p_c, 1 − p_c), p = sigmoid(logit): the maximum softmax probability for sigmoids."""

    name = "confidence"

    @staticmethod
    def _numpy(z):
        from scipy.special import expit

        return expit(np.abs(z)).mean(axis=1)  # max(p, 1 − p) = sigmoid(|logit|)

    @staticmethod
    def _graph(z):
        from keras import ops

        return ops.mean(ops.sigmoid(ops.abs(z)), axis=-1)


@register
class MaxLogit(_LogitScore):
    """max_c logit_c."""

    name = "max_logit"

    @staticmethod
    def _numpy(z):
        return z.max(axis=1)

    @staticmethod
    def _graph(z):
        from keras import ops

        return ops.max(z, axis=-1)


@register
class JointEnergy(_LogitScore):
    """Σ_c log(1 + e^{logit_c}): the multi-label energy (Wang et al., NeurIPS 2021)."""

    name = "joint_energy"
    _numpy = staticmethod(_joint_energy)
    _graph = staticmethod(_graph_joint_energy)


# ------------------------------------------------------------------------------------ embedding scores
@register
class Mahalanobis(Detector):
    """−(z − μ)ᵀ P (z − μ): one Gaussian of the training embeddings (Ledoit–Wolf covariance, so
    the precision P exists even when D ≥ N)."""

    name, reads, stats_keys, train_pass = "mahalanobis", (EMBEDDING,), ("mean", "precision"), True

    @classmethod
    def fit(cls, inputs, labels, settings):
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf().fit(cls.training(inputs, EMBEDDING))
        return {"mean": lw.location_.astype(np.float32), "precision": lw.precision_.astype(np.float32)}

    @classmethod
    def score(cls, inputs, stats):
        whitening = _whitening(cls.check_stats(stats)["precision"])
        x = cls.matrix(inputs, EMBEDDING, whitening.shape[0])
        return -np.sum(((x - np.asarray(stats["mean"], np.float64)) @ whitening) ** 2, axis=1)

    @classmethod
    def graph_constants(cls, stats):
        cls.check_stats(stats)
        return {"mean": np.asarray(stats["mean"], np.float64), "whitening": _whitening(stats["precision"])}

    @classmethod
    def graph_score(cls, inputs, constants, static):
        from keras import ops

        u = ops.matmul(inputs[EMBEDDING] - constants["mean"], constants["whitening"])
        return -ops.sum(ops.square(u), axis=-1)

    @classmethod
    def widths(cls, shapes):
        return {EMBEDDING: shapes["whitening"][0]}


@register
class MahalanobisClass(Detector):
    """−min_c (z − μ_c)ᵀ P (z − μ_c): one mean per class that has training patches, one shared
    Ledoit–Wolf covariance of the class-centred embeddings (a patch carrying several classes
    gives one centred row per class, ``assume_centered=True``)."""

    name, reads, stats_keys, train_pass = "mahalanobis_class", (EMBEDDING,), ("classes", "means", "precision"), True

    @staticmethod
    def transform(x: np.ndarray) -> np.ndarray:
        """What the Gaussians see of an embedding (here: itself)."""
        return x

    @staticmethod
    def graph_transform(x):
        return x

    @classmethod
    def fit(cls, inputs, labels, settings):
        from sklearn.covariance import LedoitWolf

        x = cls.transform(cls.training(inputs, EMBEDDING))
        y = np.asarray(labels) if labels is not None else None
        if y is None or y.ndim != 2 or len(y) != len(x):
            raise ValueError(f"{cls.name} needs multi-hot labels [{len(x)}, C]; got {None if y is None else y.shape}")
        y = y > 0
        classes = np.flatnonzero(y.any(axis=0))
        if classes.size == 0:
            raise ValueError(f"{cls.name}: no training patch carries any class")
        means = np.stack([x[y[:, c]].mean(axis=0) for c in classes])
        centred = np.concatenate([x[y[:, c]] - means[i] for i, c in enumerate(classes)])
        lw = LedoitWolf(assume_centered=True).fit(centred)
        return {"classes": classes.astype(np.int64), "means": means.astype(np.float32),
                "precision": lw.precision_.astype(np.float32)}

    @classmethod
    def score(cls, inputs, stats):
        from scipy.spatial.distance import cdist

        whitening = _whitening(cls.check_stats(stats)["precision"])
        x = cls.transform(cls.matrix(inputs, EMBEDDING, whitening.shape[0]))
        means = np.asarray(stats["means"], np.float64)
        return -cdist(x @ whitening, means @ whitening, "sqeuclidean").min(axis=1)

    @classmethod
    def graph_constants(cls, stats):
        whitening = _whitening(cls.check_stats(stats)["precision"])
        means = np.asarray(stats["means"], np.float64)
        center = means.mean(axis=0)  # expand the distances around it: smaller terms in float32
        white = (means - center) @ whitening
        return {"center": center, "whitening": whitening, "white_means": white, "white_sq": np.sum(white ** 2, axis=1)}

    @classmethod
    def graph_score(cls, inputs, constants, static):
        from keras import ops

        u = ops.matmul(cls.graph_transform(inputs[EMBEDDING]) - constants["center"], constants["whitening"])
        d = (ops.sum(ops.square(u), axis=-1, keepdims=True)
             - 2.0 * ops.matmul(u, ops.transpose(constants["white_means"])) + constants["white_sq"])
        return -ops.maximum(ops.min(d, axis=-1), 0.0)

    @classmethod
    def widths(cls, shapes):
        return {EMBEDDING: shapes["whitening"][0]}


@register
class KNN(Detector):
    """−‖ẑ − r̂_(k)‖: the distance of the L2-normalised embedding to its k-th nearest neighbour
    in a reference of ``min(N, knn_reference)`` normalised training embeddings drawn with
    ``numpy.random.default_rng(seed)`` (Sun et al., ICML 2022)."""

    name, reads, stats_keys, train_pass = "knn", (EMBEDDING,), ("k", "reference"), True
    settings = ("knn_k", "knn_reference", "seed")

    @classmethod
    def train_rows(cls, n, settings):
        return reference_indices(n, settings["knn_reference"], settings["seed"])

    @classmethod
    def fit(cls, inputs, labels, settings):
        x = cls.training(inputs, EMBEDDING)
        k = settings["knn_k"]
        if len(x) < k:
            raise ValueError(f"knn: knn_k={k} needs at least {k} training embeddings, got {len(x)}")
        reference = l2_normalize(x[reference_indices(len(x), settings["knn_reference"], settings["seed"])])
        return {"k": np.asarray(k, np.int64), "reference": reference.astype(np.float32)}

    @classmethod
    def score(cls, inputs, stats):
        from sklearn.neighbors import NearestNeighbors

        reference = np.asarray(cls.check_stats(stats)["reference"], np.float64)
        x = cls.matrix(inputs, EMBEDDING, reference.shape[1])
        k = int(stats["k"])
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(reference)
        return -nn.kneighbors(l2_normalize(x), return_distance=True)[0][:, k - 1]

    @classmethod
    def graph_constants(cls, stats):
        return {"reference": np.asarray(cls.check_stats(stats)["reference"], np.float64)}

    @classmethod
    def graph_static(cls, stats):
        return {"k": int(stats["k"])}

    @classmethod
    def graph_score(cls, inputs, constants, static):
        from keras import ops

        k = static["k"]
        x = _graph_l2_normalize(inputs[EMBEDDING])
        cos_k = ops.top_k(ops.matmul(x, ops.transpose(constants["reference"])), k, sorted=True)[0][:, k - 1]
        return -ops.sqrt(ops.maximum(2.0 - 2.0 * cos_k, 0.0))  # ‖a − b‖ of unit vectors

    @classmethod
    def widths(cls, shapes):
        return {EMBEDDING: shapes["reference"][1]}


@register
class MahalanobisNormalized(MahalanobisClass):
    """Mahalanobis++ (Mueller & Hein, ICML 2025): ``mahalanobis_class`` on L2-normalised
    embeddings, in fitting and in scoring: −min_c (ẑ − μ_c)ᵀ P (ẑ − μ_c), ẑ = z / ‖z‖. The
    normalisation removes the feature norm, whose spread violates the shared-covariance
    Gaussian the score assumes."""

    name = "mahalanobis_normalized"
    transform = staticmethod(l2_normalize)
    graph_transform = staticmethod(_graph_l2_normalize)


# ------------------------------------------------------------------------------------ classifier scores
@register
class ViM(Detector):
    """Virtual-logit Matching (Wang et al., CVPR 2022) on the classifier's input x and its
    (W, b): origin o = −pinv(Wᵀ) b (the point whose logits are all 0; W the [F, C] kernel),
    P the top ``dim(F)`` principal directions of the training (x − o) (eigenvectors of
    their uncentred covariance), residual r(x) = ‖(x − o)(I − PPᵀ)‖, α = |mean max logit| /
    mean r over the training rows. The paper's score is logsumexp(logits) − α·r (softmax); our
    classifier is multi-label sigmoid, so its energy is the joint energy Σ_c softplus(logit_c)
    (``joint_energy``): score = Σ_c softplus(logit_c) − α·r(x). (|·| keeps the residual a
    penalty should a sigmoid classifier's mean max logit be negative.)"""

    name, reads, stats_keys, train_pass = "vim", (FEATURES, LOGITS, CLASSIFIER), ("origin", "basis", "alpha"), True

    @staticmethod
    def dim(width: int) -> int:
        """The principal dimension for features of ``width`` F: the paper's rule (1000 if
        F ≥ 2048, 512 if F ≥ 768, else F // 2)."""
        return 1000 if width >= 2048 else 512 if width >= 768 else max(1, width // 2)

    @classmethod
    def fit(cls, inputs, labels, settings):
        x = cls.training(inputs, FEATURES)
        kernel, bias = cls.classifier(inputs)
        if kernel.shape[0] != x.shape[1]:
            raise ValueError(f"vim: the classifier's kernel is {kernel.shape}, the features [N, {x.shape[1]}]")
        origin = -np.linalg.pinv(kernel.T) @ bias
        u = x - origin
        values, vectors = np.linalg.eigh(u.T @ u / len(u))
        basis = vectors[:, np.argsort(values)[::-1][:cls.dim(x.shape[1])]]
        residual = cls._residual(u, basis)
        alpha = abs(float((x @ kernel + bias).max(axis=1).mean())) / max(float(residual.mean()), NORM_EPS)
        return {"origin": origin.astype(np.float32), "basis": basis.astype(np.float32),
                "alpha": np.asarray(alpha, np.float64)}

    @staticmethod
    def _residual(u, basis):
        return np.linalg.norm(u - (u @ basis) @ basis.T, axis=1)

    @classmethod
    def score(cls, inputs, stats):
        origin = np.asarray(cls.check_stats(stats)["origin"], np.float64)
        x = cls.matrix(inputs, FEATURES, origin.shape[0])
        z = cls.matrix(inputs, LOGITS)
        r = cls._residual(x - origin, np.asarray(stats["basis"], np.float64))
        return _joint_energy(z) - float(stats["alpha"]) * r

    @classmethod
    def graph_constants(cls, stats):
        cls.check_stats(stats)
        return {"origin": np.asarray(stats["origin"], np.float64), "basis": np.asarray(stats["basis"], np.float64),
                "alpha": np.reshape(np.asarray(stats["alpha"], np.float64), (1,))}

    @classmethod
    def graph_score(cls, inputs, constants, static):
        from keras import ops

        u = inputs[FEATURES] - constants["origin"]
        basis = constants["basis"]
        res = u - ops.matmul(ops.matmul(u, basis), ops.transpose(basis))
        r = ops.sqrt(ops.sum(ops.square(res), axis=-1))
        return _graph_joint_energy(inputs[LOGITS]) - constants["alpha"][0] * r

    @classmethod
    def widths(cls, shapes):
        return {FEATURES: shapes["origin"][0]}


@register
class Scale(Detector):
    """SCALE (Xu et al., ICLR 2024) on the classifier's input a ≥ 0 and its bias b: per sample
    r = Σ a / (sum of the top ``top(F)`` activations, those above the p = 0.85
    percentile), a scaled by exp(r), so logits' = exp(r)·(W a) + b = exp(r)·(logits − b) + b,
    score = the joint energy Σ_c softplus(logit'_c) (the sigmoid twin of the paper's
    logsumexp). Nothing is fitted but the bias, taken from the classifier. Our features are
    never negative (post-ReLU pooled, or tanh of it at stage 5); should some be, r reads
    max(a, 0) and a row with no positive activation gets r = 1."""

    name, reads, stats_keys = "scale", (FEATURES, LOGITS, CLASSIFIER), ("bias",)
    percentile = 0.85  # p, the paper's ImageNet setting

    @classmethod
    def top(cls, width: int) -> int:
        """How many activations count as above the p-th percentile: F − round(p·F), at least 1
        (the authors' code: the top-k of the flattened activations)."""
        return max(1, width - int(round(width * cls.percentile)))

    @classmethod
    def fit(cls, inputs, labels, settings):
        return {"bias": cls.classifier(inputs)[1].astype(np.float32)}

    @classmethod
    def score(cls, inputs, stats):
        bias = np.asarray(cls.check_stats(stats)["bias"], np.float64)
        z = cls.matrix(inputs, LOGITS, bias.shape[0])
        a = np.maximum(cls.matrix(inputs, FEATURES), 0.0)
        top = -np.sort(-a, axis=1)[:, :cls.top(a.shape[1])].sum(axis=1)
        r = np.where(top > 0, a.sum(axis=1) / np.where(top > 0, top, 1.0), 1.0)
        return _joint_energy(np.exp(r)[:, None] * (z - bias) + bias)

    @classmethod
    def graph_constants(cls, stats):
        return {"bias": np.asarray(cls.check_stats(stats)["bias"], np.float64)}

    @classmethod
    def graph_score(cls, inputs, constants, static):
        from keras import ops

        a = ops.maximum(inputs[FEATURES], 0.0)
        width = a.shape[-1]
        if width is None:
            raise ValueError(f"scale needs the features' width in the graph; got shape {tuple(a.shape)}")
        top = ops.sum(ops.top_k(a, cls.top(int(width)), sorted=False)[0], axis=-1)
        positive = top > 0
        r = ops.where(positive, ops.sum(a, axis=-1) / ops.where(positive, top, 1.0), 1.0)
        bias = constants["bias"]
        return _graph_joint_energy(ops.expand_dims(ops.exp(r), -1) * (inputs[LOGITS] - bias) + bias)

    @classmethod
    def widths(cls, shapes):
        return {LOGITS: shapes["bias"][0]}


POST_HOC = tuple(name for name, cls in DETECTORS.items() if cls.post_hoc)  # the built-in post-hoc detectors
