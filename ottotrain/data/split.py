"""Which rows train and which validate: the holdout split and the cv folds."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold

from ottotrain.errors import DataError


def train_val_split(y, fraction, seed, stratify=True):
    """Indices of a (stratified) train/validation split, deterministic for a seed.

    Unstratified, this is exactly scikit-learn's ``train_test_split(test_size=n,
    random_state=seed)`` (the tutorial's split); stratified, each class gives its
    share of validation rows (largest remainders). Plain numpy: importing
    scikit-learn's model_selection costs more than half a second per run.
    """
    n = len(y)
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise DataError(
            f"data.validation_split={fraction} leaves {n_val} validation rows out of "
            f"{n}; use more rows or another split"
        )
    rng = np.random.RandomState(seed)
    counts = np.bincount(y)
    present = counts[counts > 0]
    if not stratify or present.min() < 2 or n_val < len(present):
        # A class with one row, or fewer validation rows than classes: no stratification.
        perm = rng.permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    quota = counts * n_val / n
    take = np.floor(quota).astype(int)
    extra = n_val - take.sum()
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:extra]] += 1
    take = np.minimum(take, np.maximum(counts - 1, 0))  # keep every class in training
    val = [rng.permutation(np.flatnonzero(y == k))[: take[k]] for k in range(len(counts))]
    va = np.sort(np.concatenate(val))
    mask = np.ones(n, dtype=bool)
    mask[va] = False
    return np.flatnonzero(mask), va


def fold_assignment(y, k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) of every row: stratified by class, deterministic for ``seed``."""
    y = np.asarray(y)
    if k < 2:
        raise DataError(f"--folds {k}: cross-validation needs at least 2 folds")
    if k > len(y):
        raise DataError(f"--folds {k}: more folds than training rows ({len(y)})")
    counts = np.bincount(y)
    if counts[counts > 0].min() < k:
        raise DataError(
            f"--folds {k}: the smallest class has only {counts[counts > 0].min()} rows; "
            f"stratified {k}-fold cross-validation needs at least {k} rows per class "
            "(use fewer folds)"
        )
    folds = np.empty(len(y), dtype=np.int64)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, va) in enumerate(skf.split(np.zeros(len(y)), y)):
        folds[va] = i
    return folds


def inner_split(rows: np.ndarray, y, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` (a member's training rows) split into (fit, stop): ``fraction`` of them,
    stratified by class, held out for early stopping, deterministic for ``seed``.

    The stop rows come from the member's own training rows, so nothing chosen by early
    stopping has seen the fold that scores the member.
    """
    rows = np.asarray(rows)
    fit, stop = train_val_split(np.asarray(y)[rows], fraction, seed)
    return rows[fit], rows[stop]
