"""Offline evaluation metrics over numpy arrays (no TensorFlow).

Conventions shared by every function here:

* ``y_true``: int/bool array ``[N, C]``, multi-hot ground truth.
* ``p``: float array ``[N, C]``, per-class probabilities of the positive label; the classes are
  independent Bernoulli variables (multi-label, one sigmoid per class).
* A class is predicted positive when ``p > threshold`` (strictly greater, the same convention as
  :class:`tf_fusion.metrics.FScores` and ``keras.metrics.FBetaScore``).
* Entropies are in bits: a single Bernoulli prediction has entropy in ``[0, 1]``.

Exact offline F-scores and ranking scores are computed with scikit-learn itself (the project's
rule for offline metrics); only entropy, confidence and calibration are written out here.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, fbeta_score, roc_auc_score, roc_curve

F_METRICS = ("f1_samples", "f1_micro", "f1_macro", "f2_samples", "f2_micro", "f2_macro")


def _as_arrays(y_true, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    q = np.asarray(p, dtype=np.float64)
    if y.ndim == 1:
        y = y[None, :]
    if q.ndim == 1:
        q = q[None, :]
    if y.shape != q.shape:
        raise ValueError(f"y_true {y.shape} and p {q.shape} must have the same shape [N, C]")
    return (y > 0).astype(np.int64), q


def binarize(p, threshold: float = 0.5) -> np.ndarray:
    """Hard multi-label predictions: ``1`` where ``p > threshold``."""
    return (np.asarray(p, dtype=np.float64) > threshold).astype(np.int64)


def f_scores(y_true, p, threshold: float = 0.5) -> dict[str, float]:
    """F1 and F2 with samples, micro and macro averaging (sklearn ``fbeta_score``, zero_division=0).

    Keys: ``f1_samples, f1_micro, f1_macro, f2_samples, f2_micro, f2_macro``.
    Samples averaging is scikit-learn's: the F-beta of every row, averaged over rows; a row with
    neither a true nor a predicted label scores 0 (``zero_division=0``). Macro averaging is the
    unweighted mean over all ``C`` columns, a class with no true and no predicted label scoring 0.
    """
    y, q = _as_arrays(y_true, p)
    pred = binarize(q, threshold)
    out = {}
    for beta in (1, 2):
        for avg in ("samples", "micro", "macro"):
            out[f"f{beta}_{avg}"] = float(fbeta_score(y, pred, beta=beta, average=avg,
                                                      zero_division=0))
    return out


def f1_samples(y_true, p, threshold: float = 0.5) -> float:
    """`f_scores`' ``f1_samples`` alone (one scikit-learn call instead of six)."""
    y, q = _as_arrays(y_true, p)
    return float(fbeta_score(y, binarize(q, threshold), beta=1, average="samples", zero_division=0))


def mean_average_precision(y_true, p) -> dict:
    """Mean average precision of the class rankings, the reBEN / BigEarthNet v2 convention:
    ``map_macro`` (the mean of the per-class APs) and ``map_micro`` (one AP over all (sample,
    class) cells), scikit-learn's ``average_precision_score``.

    A class with no positive among the samples has no defined AP (recall is undefined): it is
    left out of the macro mean and reported as None per class (scikit-learn would warn and count
    it as 0). ``map_macro`` is None when no class has a positive.
    """
    y, q = _as_arrays(y_true, p)
    has = y.sum(axis=0) > 0
    # one scikit-learn call over the classes with a positive (it loops over the columns itself)
    ap = iter(np.atleast_1d(average_precision_score(y[:, has], q[:, has], average=None)) if has.any() else ())
    per_class = [float(next(ap)) if has[c] else None for c in range(y.shape[1])]
    present = [v for v in per_class if v is not None]
    return {"map_macro": float(np.mean(present)) if present else None,
            "map_micro": float(average_precision_score(y.ravel(), q.ravel())) if y.any() else None,
            "ap_per_class": per_class}


def f1_per_class(y_true, p, threshold: float = 0.5) -> list[float]:
    """F1 of each class at the threshold (scikit-learn, zero_division=0)."""
    y, q = _as_arrays(y_true, p)
    return [float(v) for v in f1_score(y, binarize(q, threshold), average=None, zero_division=0)]


def binary_entropy_bits(p) -> np.ndarray:
    """Element-wise ``H(p) = −p·log2 p − (1−p)·log2(1−p)`` in bits, with ``0·log 0 = 0``."""
    q = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(q > 0, -q * np.log2(np.where(q > 0, q, 1.0)), 0.0)
        r = 1.0 - q
        b = np.where(r > 0, -r * np.log2(np.where(r > 0, r, 1.0)), 0.0)
    return a + b


def entropy_bits(p) -> np.ndarray:
    """Per-sample average over classes of the binary entropy in bits: ``[N, C] → [N]``."""
    q = np.asarray(p, dtype=np.float64)
    if q.ndim == 1:
        q = q[None, :]
    return binary_entropy_bits(q).mean(axis=-1)


def confidence(p) -> np.ndarray:
    """Per-sample average over classes of ``max(p, 1 − p)``: ``[N, C] → [N]``, in ``[0.5, 1]``."""
    q = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    if q.ndim == 1:
        q = q[None, :]
    return np.maximum(q, 1.0 - q).mean(axis=-1)


def _bin_index(q: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1]; bin ``b`` is ``[b/n, (b+1)/n)``, the last one includes 1.0."""
    q = np.clip(q, 0.0, 1.0)
    return np.minimum((q * n_bins).astype(np.int64), n_bins - 1)


def reliability_curve(y_true, p, n_bins: int = 15):
    """Reliability diagram data of the per-class probabilities.

    Every (sample, class) cell is one binary prediction with probability ``p`` of the positive
    label. Returns ``(centers, mean_p, frequency, counts)``, each of length ``n_bins``: bin
    centres, the mean predicted probability in each bin, the observed frequency of the positive
    label in each bin, and the number of cells per bin. Empty bins have ``nan`` mean/frequency.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    y, q = _as_arrays(y_true, p)
    q, y = q.ravel(), y.ravel().astype(np.float64)
    idx = _bin_index(q, n_bins)
    counts = np.bincount(idx, minlength=n_bins).astype(np.int64)
    sum_p = np.bincount(idx, weights=q, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_p = np.where(counts > 0, sum_p / np.maximum(counts, 1), np.nan)
        freq = np.where(counts > 0, sum_y / np.maximum(counts, 1), np.nan)
    centers = (np.arange(n_bins) + 0.5) / n_bins
    return centers, mean_p, freq, counts


def expected_calibration_error(y_true, p, n_bins: int = 15) -> float:
    """ECE of the per-class probabilities over all (sample, class) cells.

    ``ECE = Σ_b (n_b / N_total) · |mean(p in b) − mean(y in b)|`` with ``n_bins`` equal-width
    bins over ``[0, 1]`` (the last bin includes 1.0).
    """
    _, mean_p, freq, counts = reliability_curve(y_true, p, n_bins)
    total = counts.sum()
    if total == 0:
        return float("nan")
    nz = counts > 0
    return float(np.sum(counts[nz] / total * np.abs(mean_p[nz] - freq[nz])))


TEMPERATURE_BOUNDS = (0.05, 20.0)


def fit_temperature(logits, y_true, bounds=TEMPERATURE_BOUNDS) -> float:
    """Temperature scaling (Guo et al. 2017) for sigmoid outputs: the T in ``bounds`` minimising
    the mean binary cross-entropy of ``sigmoid(logit / T)`` over all (sample, class) cells of
    held-out data, by scipy's bounded scalar search over log T (the loss is smooth in it)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64).ravel()
    y = (np.asarray(y_true) > 0).astype(np.float64).ravel()
    if z.size == 0 or z.size != y.size or not np.isfinite(z).all():
        raise ValueError(f"fit_temperature needs finite logits and labels of one shape; got {np.shape(logits)} "
                         f"and {np.shape(y_true)}")

    def bce(log_t):
        s = z / math.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))  # −[y log σ(s) + (1 − y) log(1 − σ(s))]

    lo, hi = (math.log(b) for b in bounds)
    return float(math.exp(minimize_scalar(bce, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7}).x))


def scaled_probabilities(logits, temperature: float) -> np.ndarray:
    """``sigmoid(logit / T)`` in float64."""
    from scipy.special import expit

    return expit(np.asarray(logits, dtype=np.float64) / float(temperature))


def separation(clear_values, shifted_values) -> dict[str, float]:
    """How well a per-sample score separates a shifted set from the clear set.

    The shifted set is the positive class and a higher value means "more likely shifted".
    Returns ``{"auroc": roc_auc_score, "aupr": average_precision_score}`` (scikit-learn) and
    ``"fpr95"``: the share of clear samples flagged at the most demanding threshold that still
    flags 95 % of the shifted ones (FPR at 95 % TPR; lower is better).
    """
    a = np.asarray(clear_values, dtype=np.float64).ravel()
    b = np.asarray(shifted_values, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("separation needs at least one clear and one shifted value")
    labels = np.concatenate([np.zeros(a.size, np.int64), np.ones(b.size, np.int64)])
    values = np.concatenate([a, b])
    # every threshold: the default drop_intermediate removes collinear points, and with them the
    # point where the TPR first reaches 0.95 on a straight stretch of the curve
    fpr, tpr, _ = roc_curve(labels, values, drop_intermediate=False)
    return {"auroc": float(roc_auc_score(labels, values)),
            "aupr": float(average_precision_score(labels, values)),
            "fpr95": float(fpr[np.searchsorted(tpr, 0.95, side="left")])}


def separation_scores(p_clear, p_shifted) -> dict[str, float]:
    """Separation of a shifted set from the clear set by the predictions' uncertainty.

    ``*_confidence``: scored by ``−confidence`` (lower average confidence = shifted);
    ``*_entropy``: scored by the average entropy (higher = shifted).
    """
    conf = separation(-confidence(p_clear), -confidence(p_shifted))
    ent = separation(entropy_bits(p_clear), entropy_bits(p_shifted))
    return {f"{k}_{name}": v for name, d in (("confidence", conf), ("entropy", ent)) for k, v in d.items()}


def summarize(y_true, p, threshold: float = 0.5, with_f: bool = True,
              n_bins: int = 15) -> dict[str, float]:
    """All per-scenario metrics of one method.

    With ``with_f`` (the default): the six F-scores, mAP (``map_macro``, ``map_micro``),
    ``avg_entropy``, ``avg_confidence``, ``ece``, and per class ``ap_per_class`` and
    ``f1_per_class`` (lists in label order). Without (e.g. OOD-class sets that have no
    in-distribution labels; ``y_true`` may then be ``None``): only ``avg_entropy`` and
    ``avg_confidence``.
    """
    q = np.asarray(p, dtype=np.float64)
    out: dict = {}
    if with_f:
        out.update(f_scores(y_true, q, threshold))
        out.update(mean_average_precision(y_true, q))
        out["f1_per_class"] = f1_per_class(y_true, q, threshold)
    out["avg_entropy"] = float(np.mean(entropy_bits(q)))
    out["avg_confidence"] = float(np.mean(confidence(q)))
    if with_f:
        out["ece"] = expected_calibration_error(y_true, q, n_bins)
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def aggregate_seeds(results: Iterable[Mapping]) -> dict:
    """Mean ± std over runs (seeds) of ``{"methods": {METHOD: {SCENARIO: {METRIC: float}}}}``.

    Returns ``{"methods": {METHOD: {SCENARIO: {METRIC: {"mean": m, "std": s}}}}, "n_seeds": n}``.
    ``std`` is the sample standard deviation (``ddof=1``) when a metric has more than one value,
    as in the authors' "mean and standard deviation over five runs"; with a single value it is 0.
    A metric missing (or ``None``/NaN) in some runs is aggregated over the runs that have it;
    non-numeric leaves are ignored.
    """
    results = list(results)
    if not results:
        raise ValueError("aggregate_seeds needs at least one result")
    collected: dict = {}
    for res in results:
        for method, scenarios in res.get("methods", {}).items():
            for scenario, metrics in scenarios.items():
                for metric, value in metrics.items():
                    if isinstance(value, Mapping) and "mean" in value:
                        value = value["mean"]
                    if not _is_number(value) or math.isnan(float(value)):
                        continue
                    (collected.setdefault(method, {}).setdefault(scenario, {})
                     .setdefault(metric, []).append(float(value)))
    out: dict = {}
    for method, scenarios in collected.items():
        for scenario, metrics in scenarios.items():
            for metric, values in metrics.items():
                arr = np.asarray(values, dtype=np.float64)
                std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
                (out.setdefault(method, {}).setdefault(scenario, {}))[metric] = {
                    "mean": float(arr.mean()), "std": std}
    return {"methods": out, "n_seeds": len(results)}
