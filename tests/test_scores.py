"""Offline metrics (tf_fusion.scores) against independent numpy computations and hand values."""
from __future__ import annotations

import numpy as np
import pytest

from tf_fusion import scores


def _auroc(neg, pos):
    """P(a positive scores above a negative), ties counting half (Mann–Whitney), written out."""
    neg, pos = np.asarray(neg, float)[:, None], np.asarray(pos, float)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def _average_precision(neg, pos):
    """Σ over positives, by decreasing score, of precision at that positive's rank / #positives
    (scores assumed distinct), written out."""
    values = np.r_[neg, pos]
    labels = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    order = np.argsort(-values, kind="stable")
    hits = np.cumsum(labels[order])
    precision = hits / np.arange(1, len(values) + 1)
    return float((precision * labels[order]).sum() / len(pos))


# ------------------------------------------------------------------ independent F-beta reference

def _fbeta_ref(y, pred, beta):
    """Samples / micro / macro F-beta written out, zero_division = 0."""
    y = y.astype(float)
    pred = pred.astype(float)
    b2 = beta * beta

    def f(tp, fp, fn):
        den = (1 + b2) * tp + b2 * fn + fp
        return np.where(den > 0, (1 + b2) * tp / np.where(den > 0, den, 1.0), 0.0)

    tp_s, fp_s, fn_s = (pred * y).sum(1), (pred * (1 - y)).sum(1), ((1 - pred) * y).sum(1)
    tp_c, fp_c, fn_c = (pred * y).sum(0), (pred * (1 - y)).sum(0), ((1 - pred) * y).sum(0)
    return {
        "samples": float(f(tp_s, fp_s, fn_s).mean()),
        "micro": float(f(tp_c.sum(), fp_c.sum(), fn_c.sum())),
        "macro": float(f(tp_c, fp_c, fn_c).mean()),
    }


def _check_f(y, p, threshold=0.5):
    got = scores.f_scores(y, p, threshold)
    pred = (p > threshold).astype(int)
    for beta in (1, 2):
        ref = _fbeta_ref(y, pred, beta)
        for avg, v in ref.items():
            assert got[f"f{beta}_{avg}"] == pytest.approx(v, abs=1e-6), (beta, avg)
    assert set(got) == set(scores.F_METRICS)
    assert scores.f1_samples(y, p, threshold) == pytest.approx(_fbeta_ref(y, pred, 1)["samples"], abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f_scores_random(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((200, 12)) < 0.3).astype(int)
    p = np.clip(0.6 * y + 0.5 * rng.random((200, 12)) - 0.1, 0, 1)
    _check_f(y, p)
    _check_f(y, p, threshold=0.3)


def test_f_scores_edge_rows():
    rng = np.random.default_rng(5)
    y = (rng.random((40, 6)) < 0.4).astype(int)
    p = rng.random((40, 6))
    y[:, 5] = 0              # a class with no positives at all
    y[0] = 0                 # no true label, some predictions
    y[1] = 0; p[1] = 0.1     # nothing true, nothing predicted (zero_division → 0)
    p[2] = 0.0               # nothing predicted
    y[3] = 1; p[3] = 0.9     # all true, all predicted → 1
    y[4] = 1; p[4] = 0.2     # all true, nothing predicted
    _check_f(y, p)
    got = scores.f_scores(y[3:4], p[3:4])
    assert got["f1_samples"] == 1.0 and got["f2_micro"] == 1.0
    assert scores.f_scores(y[1:2], p[1:2])["f1_samples"] == 0.0


def test_f_scores_all_zero():
    y = np.zeros((5, 4), int)
    p = np.zeros((5, 4))
    assert all(v == 0.0 for v in scores.f_scores(y, p).values())
    _check_f(np.ones((5, 4), int), np.ones((5, 4)))


def test_threshold_is_strict():
    y = np.array([[1, 0]])
    assert scores.f_scores(y, np.array([[0.5, 0.0]]))["f1_samples"] == 0.0
    assert scores.f_scores(y, np.array([[0.51, 0.0]]))["f1_samples"] == 1.0


# --------------------------------------------------------------------- entropy and confidence

def test_entropy_and_confidence_hand_values():
    p = np.array([[0.5], [0.0], [1.0], [0.1], [0.9]])
    np.testing.assert_allclose(scores.entropy_bits(p), [1.0, 0.0, 0.0, 0.468996, 0.468996],
                               atol=1e-6)
    np.testing.assert_allclose(scores.confidence(p), [0.5, 1.0, 1.0, 0.9, 0.9], atol=1e-12)
    assert np.all(np.isfinite(scores.entropy_bits(p)))


def test_entropy_and_confidence_average_over_classes():
    p = np.array([[0.5, 0.0, 0.1, 1.0], [0.5, 0.5, 0.5, 0.5]])
    np.testing.assert_allclose(scores.entropy_bits(p),
                               [(1.0 + 0.0 + 0.468996 + 0.0) / 4, 1.0], atol=1e-6)
    np.testing.assert_allclose(scores.confidence(p), [(0.5 + 1 + 0.9 + 1) / 4, 0.5])
    assert scores.entropy_bits(p).shape == (2,)


# ------------------------------------------------------------------------------- calibration

def test_ece_hand_computed():
    # 2 bins: [0, .5) and [.5, 1]; 4 cells in all.
    y = np.array([[0, 1], [1, 1]])
    p = np.array([[0.2, 0.4], [0.8, 1.0]])
    # bin 0: p = 0.2, 0.4 (mean 0.3), y = 0, 1 (mean 0.5) → |0.3 − 0.5| = 0.2, weight 2/4
    # bin 1: p = 0.8, 1.0 (mean 0.9), y = 1, 1 (mean 1.0) → 0.1, weight 2/4
    assert scores.expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.15)
    centers, mean_p, freq, counts = scores.reliability_curve(y, p, n_bins=2)
    np.testing.assert_allclose(centers, [0.25, 0.75])
    np.testing.assert_allclose(mean_p, [0.3, 0.9])
    np.testing.assert_allclose(freq, [0.5, 1.0])
    np.testing.assert_array_equal(counts, [2, 2])


def test_ece_zero_when_calibrated():
    # In every bin the fraction of positives equals the (constant) predicted probability.
    p = np.repeat([0.1, 0.3, 0.5, 0.7, 0.9], 10).reshape(10, 5)
    y = np.zeros_like(p, dtype=int)
    flat_p, flat_y = p.ravel(), y.ravel()
    for v in (0.1, 0.3, 0.5, 0.7, 0.9):
        idx = np.flatnonzero(np.isclose(flat_p, v))
        flat_y[idx[: int(round(v * idx.size))]] = 1
    y = flat_y.reshape(p.shape)
    assert scores.expected_calibration_error(y, p, n_bins=15) == pytest.approx(0.0, abs=1e-12)
    # 1.0 falls in the last bin
    _, _, _, counts = scores.reliability_curve(np.ones((1, 2)), np.array([[1.0, 0.0]]), 15)
    assert counts[-1] == 1 and counts[0] == 1


# -------------------------------------------------------------------------------- separation

def test_separation_against_rank_formulas():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 300), rng.normal(0.7, 1, 200)
    got = scores.separation(a, b)
    assert got["auroc"] == pytest.approx(_auroc(a, b))
    assert got["aupr"] == pytest.approx(_average_precision(a, b))
    # ties count half in the AUROC
    assert scores.separation([0.0, 1.0], [1.0, 2.0])["auroc"] == pytest.approx(0.875)


def test_separation_perfect():
    got = scores.separation([0.1, 0.2, 0.3], [0.5, 0.9])
    assert got == {"auroc": 1.0, "aupr": 1.0, "fpr95": 0.0}


def test_separation_scores_directions():
    rng = np.random.default_rng(4)
    p_clear = np.where(rng.random((50, 6)) < 0.5, 0.02, 0.98)   # confident
    p_shift = 0.5 + 0.1 * (rng.random((30, 6)) - 0.5)            # uncertain
    got = scores.separation_scores(p_clear, p_shift)
    assert got == pytest.approx({"auroc_confidence": 1.0, "aupr_confidence": 1.0, "fpr95_confidence": 0.0,
                                 "auroc_entropy": 1.0, "aupr_entropy": 1.0, "fpr95_entropy": 0.0})
    q_clear, q_shift = rng.random((40, 5)), rng.random((25, 5))
    got = scores.separation_scores(q_clear, q_shift)
    conf = lambda q: -np.maximum(q, 1 - q).mean(1)  # noqa: E731  lower confidence = shifted
    ent = lambda q: (-(q * np.log2(q) + (1 - q) * np.log2(1 - q))).mean(1)  # noqa: E731
    assert got["auroc_confidence"] == pytest.approx(_auroc(conf(q_clear), conf(q_shift)))
    assert got["aupr_confidence"] == pytest.approx(_average_precision(conf(q_clear), conf(q_shift)))
    assert got["auroc_entropy"] == pytest.approx(_auroc(ent(q_clear), ent(q_shift)))
    assert got["aupr_entropy"] == pytest.approx(_average_precision(ent(q_clear), ent(q_shift)))


# ------------------------------------------------------------------------ summary, aggregation

def test_fpr_at_95_tpr_hand_computed():
    """20 shifted scores 1…20, 10 clear scores: flagging 95 % of the shifted (19 of 20) needs the
    threshold at 2, which flags the clear scores 2.5, 3, 7 and 30: FPR 4/10."""
    shifted = np.arange(1, 21, dtype=float)
    clear = np.array([-5, -1, 0, 0.5, 1, 1.5, 2.5, 3, 7, 30], float)
    assert scores.separation(clear, shifted)["fpr95"] == pytest.approx(0.4)
    assert scores.separation([0.0, 0.1], [0.5, 0.9])["fpr95"] == 0.0
    # a straight ROC curve (the same 20 scores on both sides): 19 of 20 flagged flags 19 of 20
    # clear ones too, not all of them
    assert scores.separation(shifted, shifted)["fpr95"] == pytest.approx(0.95)


def test_mean_average_precision_against_scikit_learn_and_by_hand():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(7)
    y = (rng.random((40, 5)) < 0.3).astype(int)
    y[:, 3] = 0  # a class with no positive: no defined AP, left out of the macro mean
    p = rng.random((40, 5))
    got = scores.mean_average_precision(y, p)
    keep = [0, 1, 2, 4]
    assert got["map_macro"] == pytest.approx(average_precision_score(y[:, keep], p[:, keep], average="macro"))
    assert got["map_micro"] == pytest.approx(average_precision_score(y, p, average="micro"))
    assert got["ap_per_class"][3] is None
    # one class by hand: positives ranked 1st and 3rd of 4 → AP = (1/1 + 2/3) / 2
    hand = scores.mean_average_precision(np.array([[1], [0], [1], [0]]), np.array([[0.9], [0.8], [0.7], [0.1]]))
    assert hand["map_macro"] == pytest.approx((1 + 2 / 3) / 2) and hand["ap_per_class"] == [pytest.approx(5 / 6)]


def test_summarize():
    rng = np.random.default_rng(6)
    y = (rng.random((30, 5)) < 0.3).astype(int)
    p = rng.random((30, 5))
    s = scores.summarize(y, p)
    assert set(s) == set(scores.F_METRICS) | {"avg_entropy", "avg_confidence", "ece", "map_macro", "map_micro",
                                              "ap_per_class", "f1_per_class"}
    bits = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    assert s["avg_entropy"] == pytest.approx(bits.mean())
    f1 = [2 * ((p[:, c] > 0.5) & (y[:, c] == 1)).sum() / ((p[:, c] > 0.5).sum() + y[:, c].sum()) for c in range(5)]
    assert s["f1_per_class"] == pytest.approx(f1)
    s = scores.summarize(None, p, with_f=False)
    assert set(s) == {"avg_entropy", "avg_confidence"}


def test_aggregate_seeds():
    runs = [{"methods": {"adaptive": {"clear": {"f1_samples": v, "ece": 0.1}}}}
            for v in (0.7, 0.8, 0.9)]
    runs[2]["methods"]["baseline"] = {"snow": {"f1_micro": 0.5}}
    agg = scores.aggregate_seeds(runs)
    cell = agg["methods"]["adaptive"]["clear"]["f1_samples"]
    assert cell["mean"] == pytest.approx(0.8)
    assert cell["std"] == pytest.approx(np.std([0.7, 0.8, 0.9], ddof=1))
    assert agg["methods"]["adaptive"]["clear"]["ece"] == {"mean": pytest.approx(0.1),
                                                          "std": pytest.approx(0.0)}
    assert agg["methods"]["baseline"]["snow"]["f1_micro"] == {"mean": 0.5, "std": 0.0}
    assert agg["n_seeds"] == 3
