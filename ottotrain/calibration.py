"""Calibration of predicted probabilities: reliability bins and expected calibration error (ECE).

A model is calibrated when, of the rows it gives probability p, a share p is right. The
reliability curve compares the two bin by bin; ECE sums their gaps, each bin weighted by its
share of the rows: ``sum_b n_b / N * |frequency_b - confidence_b|``.

- top-label ECE: the confidence is each row's largest probability, the outcome whether that
  class is the true one (Guo et al., 2017);
- classwise ECE: each class one-vs-rest (the class's probability; is the row of that class),
  averaged over the classes (Kull et al., 2019), so that the small classes count as much.

Bins are equal-width on [0, 1], as ``sklearn.calibration.calibration_curve`` makes them
(``strategy="uniform"``; a probability on an edge goes to the bin below): the edges are the
same for every class and every run, so two diagrams or two ECE figures compare bin by bin, and
the ECE is the one published figures quote (15 bins). Equal-mass bins would put the same
number of rows in each bin, but their edges move with the model, and one-vs-rest probabilities
(mostly near 0) would leave almost all of them in [0, 0.05]. Sparse bins weigh little in the
ECE; the diagrams show each bin's count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ottotrain.errors import ConfigError, fmt

BINNING = "equal-width"
DEFAULT_BINS = 15
MAX_BINS = 1000


@dataclass(frozen=True)
class Reliability:
    """One reliability curve: per bin, its rows, mean probability and observed frequency."""

    count: list[int]
    confidence: list[float | None]  # mean predicted probability of the bin's rows; None: empty
    frequency: list[float | None]  # share of the bin's rows whose outcome is true; None: empty
    ece: float

    @property
    def bins(self) -> int:
        return len(self.count)


@dataclass(frozen=True)
class Calibration:
    """Top-label and classwise calibration of a table of predicted probabilities."""

    bins: int
    binning: str
    ece: float  # top-label
    classwise_ece: float  # the classes' one-vs-rest ECE, averaged
    top_label: Reliability
    classes: list[Reliability]  # one-vs-rest, in the run's class order


def check_bins(bins) -> int:
    """``bins`` as an int, or ConfigError when it is not an integer in [1, MAX_BINS]."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 1 <= bins <= MAX_BINS:
        raise ConfigError(
            f"--bins: must be an integer from 1 to {MAX_BINS}, got {fmt(bins)}; "
            f"{DEFAULT_BINS} is the usual choice"
        )
    return int(bins)


def bin_ids(prob, bins: int) -> np.ndarray:
    """Each probability's equal-width bin (0 to bins - 1), as ``calibration_curve`` assigns it."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.searchsorted(edges[1:-1], np.clip(prob, 0.0, 1.0))


def reliability(prob, outcome, bins: int = DEFAULT_BINS) -> Reliability:
    """The reliability curve and ECE of probabilities ``prob`` of binary outcomes ``outcome``."""
    bins = check_bins(bins)
    prob = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    outcome = np.asarray(outcome, dtype=np.float64)
    ids = bin_ids(prob, bins)
    count = np.bincount(ids, minlength=bins)
    prob_sum = np.bincount(ids, weights=prob, minlength=bins)
    true_sum = np.bincount(ids, weights=outcome, minlength=bins)
    # sum_b n_b/N |true_b/n_b - prob_b/n_b| = sum_b |true_b - prob_b| / N
    ece = float(np.abs(true_sum - prob_sum).sum() / max(len(prob), 1))

    def per_bin(sums):
        return [round(float(s / n), 6) if n else None for s, n in zip(sums, count)]

    return Reliability(
        count=[int(n) for n in count],
        confidence=per_bin(prob_sum),
        frequency=per_bin(true_sum),
        ece=round(ece, 6),
    )


def calibration(y, proba, bins: int = DEFAULT_BINS) -> Calibration:
    """Top-label and classwise (one-vs-rest) reliability and ECE of ``proba`` for labels ``y``."""
    bins = check_bins(bins)
    y = np.asarray(y)
    proba = np.asarray(proba, dtype=np.float64)
    top = reliability(proba.max(axis=1), proba.argmax(axis=1) == y, bins)
    classes = [reliability(proba[:, k], y == k, bins) for k in range(proba.shape[1])]
    return Calibration(
        bins=bins,
        binning=BINNING,
        ece=top.ece,
        classwise_ece=round(float(np.mean([c.ece for c in classes])), 6),
        top_label=top,
        classes=classes,
    )
