"""Nearest-neighbour features: how far a row is from each class's nearest training rows.

For every class c and every k in ``data.knn.k`` a row gets log(mean distance to its k
nearest training rows of class c), the distance being Euclidean between signed-log1p
rows. A KNN classifier built on these alone scores about 0.54 on Otto; appended to the
counts they let a small net see neighbourhoods it cannot learn from 49,500 rows (one
fold: 0.4455 against 0.4754 for the same 3 x 512 ReLU net without them).

The training rows are the reference, kept beside the preprocessing JSON as an ``.npz``
(no pickle). A training row's own features leave the row itself out, so it sees what a
new row sees: its neighbours among the *other* training rows. Computing them is a brute
force matrix product against every reference row (over the features some query row uses),
chunk by chunk, in two threads, then an exact search of each class's nearest rows that
reads the product once (``nearest``); the results are memoised (up to 512 MB), because
every member of a cv fold asks for the same ones. bench/knn_features.py times it against
scikit-learn's ``NearestNeighbors`` and the bare matrix product.
"""

from __future__ import annotations

import functools
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ottotrain.features.transforms import signed_log1p

EPS = 1e-3  # log(distance + EPS): exact duplicates (distance 0) stay finite
CHUNK = 512  # query rows per matrix product: 512 x 50k float32 is 100 MB per thread
GROUP = 16  # reference columns per group in the nearest-row search (``nearest``)
_MEMO: dict = {}  # (reference digest, query digest, k, leave-one-out) -> features
# A cv run asks for every fold's features once per member, folds interleaved: keep them all
# (Otto, 5 folds: training, held-out and test rows' features are about 190 MB).
_MEMO_BYTES = 512 << 20


def space(x) -> np.ndarray:
    """The rows as the distances see them: signed log1p, float32."""
    return signed_log1p(np.asarray(x, dtype=np.float32))


def _digest(*arrays) -> str:
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        h.update(np.ascontiguousarray(a).view(np.uint8))
    return h.hexdigest()


class Reference:
    """Training rows in distance space, sorted by class, and where each class starts."""

    def __init__(self, rows, counts):
        self.rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.digest = _digest(self.rows, self.counts)

    @functools.cached_property
    def layout(self) -> "Layout":
        return Layout(self)

    @classmethod
    def fit(cls, x, y, n_classes):
        """Sort the rows ``x`` by their labels ``y``; return it and the sorting order."""
        order = np.argsort(y, kind="stable")
        return cls(space(x)[order], np.bincount(y, minlength=n_classes)), order

    def save(self, path):
        np.savez_compressed(path, rows=self.rows, counts=self.counts)

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as f:
            return cls(f["rows"], f["counts"])


class Layout:
    """The reference as the search reads it: columns (features x rows, a matrix product's
    right side), each class's block padded with rows at infinite distance to a multiple of
    ``GROUP``, so that a block reshapes into ``GROUP`` slices without a copy."""

    def __init__(self, ref: Reference):
        counts = ref.counts
        padded = -(-counts // GROUP) * GROUP
        self.starts = np.concatenate([[0], np.cumsum(padded)])
        first = np.concatenate([[0], np.cumsum(counts)])
        total, d = int(self.starts[-1]), ref.rows.shape[1]
        self.columns = np.zeros((d, total), np.float32)
        self.norms = np.full(total, np.inf, np.float32)  # |r|^2; a padding row is never near
        self.index = np.zeros(total, np.int64)  # position -> reference row
        self.position = np.empty(len(ref.rows), np.int64)  # reference row -> position
        for s, o, m in zip(self.starts[:-1], first[:-1], counts):
            rows = ref.rows[o : o + m]
            self.columns[:, s : s + m] = rows.T
            self.norms[s : s + m] = (rows * rows).sum(axis=1)
            self.index[s : s + m] = np.arange(o, o + m)
            self.position[o : o + m] = np.arange(s, s + m)


def ranking(layout: Layout, q: np.ndarray) -> np.ndarray:
    """|r|^2 - 2 q.r for every query and reference row (|q - r|^2 less the query's constant):
    one matrix product over the features that are non-zero in some query row (one Otto row
    has about 15 of 93: a single row reads a sixth of the reference)."""
    used = np.flatnonzero((q != 0).any(axis=0))
    g = q[:, used] @ layout.columns[used] if len(used) < q.shape[1] else q @ layout.columns
    g *= -2
    g += layout.norms
    return g


def nearest(block: np.ndarray, kk: int) -> np.ndarray:
    """Column indices of the ``kk`` smallest values of each row of ``block`` (unordered).

    The block is read as ``GROUP`` slices side by side; the minimum over the slices (an
    elementwise minimum, at memory speed) gives each group of columns its smallest value,
    and the ``kk`` smallest values of a row lie in its ``kk`` groups of smallest minimum
    (any other group's minimum is beaten by ``kk`` values of other groups). Partitioning
    those ``kk * GROUP`` candidates is exact, and much cheaper than partitioning the block.
    """
    n, m = block.shape
    w = m // GROUP
    if w <= kk:
        return np.argpartition(block, kk - 1, axis=1)[:, :kk]
    groups = np.argpartition(block.reshape(n, GROUP, w).min(axis=1), kk - 1, axis=1)[:, :kk]
    cols = (groups[:, :, None] + w * np.arange(GROUP)).reshape(n, -1)
    pick = np.argpartition(np.take_along_axis(block, cols, axis=1), kk - 1, axis=1)[:, :kk]
    return np.take_along_axis(cols, pick, axis=1)


def features(ref: Reference, x, ks, self_rows=None, on_rows=None) -> np.ndarray:
    """log(mean distance + EPS) to the k nearest reference rows of each class, per k.

    Args:
        ref: the training rows.
        x: raw feature rows (n, d).
        ks: increasing neighbour counts; a class with fewer rows uses all it has.
        self_rows: for the training rows themselves, the reference row each one is
            (leave-one-out); None for new rows.
        on_rows: called (in this thread) with the number of rows each finished chunk had.

    Returns:
        float32 (n, n_classes * len(ks)), class-major.
    """
    q = space(x)
    key = (ref.digest, _digest(q), tuple(ks), self_rows is not None)
    if key in _MEMO:
        if on_rows is not None:
            on_rows(len(q))
        return _MEMO[key]
    kmax, n_cls = max(ks), len(ref.counts)
    lay = ref.layout
    out = np.empty((len(q), n_cls, len(ks)), dtype=np.float32)
    kidx = np.asarray(ks) - 1

    def chunk(s):
        qc = q[s : s + CHUNK]
        g = ranking(lay, qc)
        if self_rows is not None:
            g[np.arange(len(qc)), lay.position[self_rows[s : s + CHUNK]]] = np.inf
        for c in range(n_cls):
            block = g[:, lay.starts[c] : lay.starts[c + 1]]
            kk = min(kmax, int(ref.counts[c]))
            idx = nearest(block, kk)
            # The chosen neighbours' distances again, directly: the expansion above loses
            # digits to cancellation, which matters most for (near-)duplicate rows.
            diff = ref.rows[lay.index[lay.starts[c] + idx]] - qc[:, None, :]
            d = np.sqrt(np.einsum("mkd,mkd->mk", diff, diff))
            d[~np.isfinite(np.take_along_axis(block, idx, axis=1))] = np.inf  # the row itself
            d.sort(axis=1)
            finite = np.isfinite(d)
            mean = np.cumsum(np.where(finite, d, 0), axis=1) / np.arange(1, kk + 1)
            # a class with fewer than k usable rows: the mean over all it has
            have = finite.sum(axis=1, keepdims=True)
            idx = np.minimum(kidx[None, :], have - 1)
            out[s : s + CHUNK, c] = np.log(np.take_along_axis(mean, idx, axis=1) + EPS)
        return len(qc)

    def report(finished):
        for rows in finished:
            if on_rows is not None:
                on_rows(rows)

    # numpy's matrix product, sort and partition release the GIL: two chunks at a time.
    starts = range(0, max(len(q), 1), CHUNK)
    if len(starts) == 1:  # one chunk (a served request): no threads to start
        report(map(chunk, starts))
    else:
        with ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
            report(pool.map(chunk, starts))
    res = out.reshape(len(q), -1)
    while _MEMO and sum(v.nbytes for v in _MEMO.values()) + res.nbytes > _MEMO_BYTES:
        _MEMO.pop(next(iter(_MEMO)))  # the oldest first
    _MEMO[key] = res
    return res
