"""Permutation importance: the increase in log loss when a group's inputs are permuted.

Every (repeat, group) gets its own row permutation (``scorers.permutation``); the increase is
the permuted rows' log loss minus the unpermuted rows' log loss, overall and per class (the
mean of -log p(true class) over the rows of that class). The interval is Student's t over the
repeats: mean +- t(0.975, repeats - 1) * sd / sqrt(repeats), sd with ddof 1 (none for 1 repeat).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ottotrain.log import phase
from ottotrain.metrics import row_log_loss
from ottotrain.workflows.explain.scorers import MAX_ROWS, MatrixScorer, RawScorer, Task, permutation

CONFIDENCE = 0.95


@dataclass
class Losses:
    """Log losses of the rows as they are and of every permutation."""

    base: float
    base_per_class: np.ndarray  # (classes,): NaN for a class with no row
    increase: np.ndarray  # (groups, repeats)
    class_increase: np.ndarray  # (groups, repeats, classes)


def class_means(y: np.ndarray, losses: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean loss over each class's rows (NaN where a class has none)."""
    counts = np.bincount(y, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(y, weights=losses, minlength=n_classes) / counts


def measure(scorer: MatrixScorer | RawScorer, y, n_classes: int, repeats: int, seed: int) -> Losses:
    """Every group's log-loss increase over ``repeats`` permutations, a batch of tasks at a time."""
    n, n_groups = len(y), len(scorer.groups)
    (base_p,) = scorer.proba([(None, None)])
    base_rows = row_log_loss(y, base_p)
    base, base_cls = float(base_rows.mean()), class_means(y, base_rows, n_classes)
    inc = np.empty((n_groups, repeats))
    cls_inc = np.empty((n_groups, repeats, n_classes))
    pairs = [(r, g) for r in range(repeats) for g in range(n_groups)]
    per_call = max(1, MAX_ROWS // n)
    with phase("Permutations", total=len(pairs), unit="permutations") as p:
        for i in range(0, len(pairs), per_call):
            chunk = pairs[i : i + per_call]
            tasks: list[Task] = [(g, permutation(seed, r, g, n)) for r, g in chunk]
            for (r, g), proba in zip(chunk, scorer.proba(tasks)):
                rows = row_log_loss(y, proba)
                inc[g, r] = rows.mean() - base
                cls_inc[g, r] = class_means(y, rows, n_classes) - base_cls
            p.advance(len(chunk))
    return Losses(base, base_cls, inc, cls_inc)


def interval(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high) of one group's increases: Student's t interval over the repeats."""
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, float(mean - half), float(mean + half)
