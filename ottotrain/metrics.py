"""The metric: Kaggle's multi-class log loss, the one figure every score reports."""

from __future__ import annotations

import numpy as np


def log_loss(y, proba, eps=1e-15) -> float:
    """Kaggle's multi-class log loss: clip to [eps, 1-eps], renormalise each row."""
    return float(np.mean(row_log_loss(y, proba, eps)))


def row_log_loss(y, proba, eps=1e-15) -> np.ndarray:
    """Each row's term of ``log_loss``: -log of its true class's clipped, renormalised probability."""
    p = np.clip(np.asarray(proba, dtype=np.float64), eps, 1 - eps)
    p /= p.sum(axis=1, keepdims=True)
    return -np.log(p[np.arange(len(y)), y])
