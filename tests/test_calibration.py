"""Reliability bins and expected calibration error (ottotrain.calibration)."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from ottotrain.calibration import calibration, check_bins, reliability
from ottotrain.errors import ConfigError


def calibrated_rows(rows, classes=9, seed=0):
    """Probabilities and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.full(classes, 0.5), size=rows)
    y = (proba.cumsum(axis=1) < rng.random((rows, 1))).sum(axis=1)
    return np.minimum(y, classes - 1), proba


def sharpen(proba, power):
    p = proba**power
    return p / p.sum(axis=1, keepdims=True)


def direct_ece(prob, outcome, bins):
    """ECE straight from its definition: loop over the bins, weight each gap by the bin's share."""
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for b in range(bins):
        lo, hi = edges[b], edges[b + 1]
        inside = (prob > lo) & (prob <= hi) if b else (prob <= hi)
        if inside.any():
            total += inside.mean() * abs(outcome[inside].mean() - prob[inside].mean())
    return total


def test_calibrated_probabilities_have_an_ece_near_zero_and_overconfident_ones_do_not():
    y, proba = calibrated_rows(40_000)
    good = calibration(y, proba, bins=15)
    assert good.ece < 0.01 and good.classwise_ece < 0.005
    over = calibration(y, sharpen(proba, 3.0), bins=15)
    assert over.ece > 0.1 and over.classwise_ece > 0.01
    # Overconfident: in the top bins the model is right less often than it says.
    rel = over.top_label
    assert rel.frequency[-1] < rel.confidence[-1] - 0.05


def test_ece_equals_a_hand_computation():
    prob = np.array([0.1, 0.15, 0.6, 0.95])
    outcome = np.array([0, 1, 1, 1])
    rel = reliability(prob, outcome, bins=2)
    # bin [0, .5]: confidence .125, frequency .5; bin (.5, 1]: .775 and 1; each half the rows.
    assert rel.count == [2, 2]
    assert rel.confidence == [0.125, 0.775] and rel.frequency == [0.5, 1.0]
    assert rel.ece == pytest.approx(0.5 * 0.375 + 0.5 * 0.225)


def test_top_label_ece_of_a_tiny_table_by_hand():
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    y = np.array([0, 1, 1, 0])
    cal = calibration(y, proba, bins=2)
    # Confidences .9 .8 .7 .55 all in (.5, 1], mean .7375; right 2 of 4.
    assert cal.top_label.count == [0, 4] and cal.ece == pytest.approx(abs(0.5 - 0.7375))
    # Class 1 one-vs-rest: .1 .2 in [0, .5] (1 of 2 true), .7 .55 in (.5, 1] (1 of 2 true).
    ece1 = 0.5 * abs(0.5 - 0.15) + 0.5 * abs(0.5 - 0.625)
    assert cal.classes[1].ece == pytest.approx(ece1)
    assert cal.classwise_ece == pytest.approx((cal.classes[0].ece + ece1) / 2, abs=1e-6)


@pytest.mark.parametrize("bins", [1, 2, 7, 15, 40])
def test_reliability_matches_a_direct_loop_and_scikit_learn(bins):
    rng = np.random.default_rng(bins)
    prob = np.concatenate([rng.random(3000), np.linspace(0, 1, bins + 1)])  # edges included
    outcome = (rng.random(len(prob)) < prob**1.5).astype(int)
    rel = reliability(prob, outcome, bins)
    assert rel.ece == pytest.approx(direct_ece(prob, outcome, bins), abs=1e-6)
    true, pred = calibration_curve(outcome, prob, n_bins=bins, strategy="uniform")
    assert [f for f in rel.frequency if f is not None] == pytest.approx(true, abs=1e-6)
    assert [c for c in rel.confidence if c is not None] == pytest.approx(pred, abs=1e-6)
    assert sum(rel.count) == len(prob)


@pytest.mark.parametrize("bad", [0, -3, 1001, 2.5, "15", True, None])
def test_bins_must_be_a_positive_integer(bad):
    with pytest.raises(ConfigError, match=r"^--bins: must be an integer from 1 to 1000, got .*; 15 is"):
        check_bins(bad)
