"""Quantile bin edges for the piecewise-linear encoding of numeric features.

Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep Learning":
each numeric feature is cut into bins at its quantiles, fitted on the training rows only.
Numpy only: the preprocessing, which never imports TensorFlow, fits the edges; the layer
(``engine.numeric_embeddings.PiecewiseLinearEmbedding``) receives them as plain lists.
"""

from __future__ import annotations

import numpy as np


def quantile_edges(x: np.ndarray, bins: int) -> list[list[float]]:
    """The edges of ``bins`` quantile bins of each column of ``x`` (rows, n), fitted on those rows.

    Each column's edges are its quantiles at ``linspace(0, 1, bins + 1)``, made strictly
    increasing: repeated quantiles (a column with few distinct values) merge, so that
    column gets fewer bins; a constant column gets ``[v, v + 1]``, one bin. The edges are
    rounded to float32 before the merge, because the layer computes in float32: two edges
    distinct in float64 but equal in float32 would make a bin of width 0 there.
    Returns plain Python floats (JSON-serializable), one list per column.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"quantile_edges needs bins >= 1 (an integer), got {bins!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"quantile_edges needs a 2-D array (rows >= 1, columns >= 1), got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=0)
    if bad.any():
        raise ValueError(
            "quantile_edges needs finite values, "
            f"got NaN or infinity in column(s) {np.flatnonzero(bad).tolist()}"
        )
    quantiles = np.quantile(x, np.linspace(0.0, 1.0, int(bins) + 1), axis=0)  # (bins + 1, n)
    edges = []
    for column in quantiles.T.astype(np.float32):
        e = np.unique(column)
        if len(e) < 2:
            # v + 1 in float32: for a huge v, v + 1 == v in float32, so step to the next float instead.
            e = np.array([e[0], max(e[0] + np.float32(1), np.nextafter(e[0], np.float32(np.inf)))])
        edges.append([float(v) for v in e])
    return edges


def pad_edges(edges: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Pack ragged per-feature edges into ``(n, T + 1)`` edges and an ``(n, T)`` mask, T = most bins.

    A feature with fewer than T bins is padded with bins of width 1 after its last edge
    (so no division by 0 in the encoding) and a mask of 0 there: its encoding must be 0
    in those components whatever the input. The mask is 1 in each feature's real bins.
    """
    arrays = check_edges(edges)
    t = max(len(e) - 1 for e in arrays)
    packed = np.zeros((len(arrays), t + 1), dtype=np.float32)
    mask = np.zeros((len(arrays), t), dtype=np.float32)
    for j, e in enumerate(arrays):
        k = len(e) - 1
        packed[j, : k + 1] = e
        packed[j, k + 1 :] = e[-1] + np.arange(1, t - k + 1, dtype=np.float32)
        mask[j, :k] = 1.0
    return packed, mask


def check_edges(edges) -> list[np.ndarray]:
    """Each feature's edges as a float32 array, after checking: >= 2 finite, strictly increasing values."""
    if isinstance(edges, np.ndarray):
        edges = edges.tolist()
    if not isinstance(edges, (list, tuple)) or not edges:
        raise ValueError(f"bin edges must be a non-empty list of per-feature lists, got {edges!r}")
    arrays = []
    for j, e in enumerate(edges):
        try:
            a = np.asarray(e, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"bin edges of feature {j} must be a list of numbers, got {e!r}") from None
        if a.ndim != 1 or len(a) < 2:
            raise ValueError(f"bin edges of feature {j} need at least 2 values, got {e!r}")
        if not np.isfinite(a).all() or not (np.diff(a) > 0).all():
            raise ValueError(
                f"bin edges of feature {j} must be finite and strictly increasing (in float32), got {e!r}"
            )
        arrays.append(a)
    return arrays
