"""Nearest-neighbour features: how far a row is from each class's nearest training rows.

For every class c and every k in ``data.knn.k`` a row gets log(mean distance to its k
nearest training rows of class c), the distance being Euclidean in ``data.knn.space``:
``log1p`` (the default: signed-log1p rows, whatever ``data.transform`` is), ``raw`` (the
counts themselves) or ``tfidf`` (TF-IDF rows scaled to length 1, the inverse document
frequencies learned from the training rows: a cosine distance). A KNN classifier built on
the log1p features alone scores about 0.54 on Otto; appended to the counts they let a
small net see neighbourhoods it cannot learn from 49,500 rows (one fold: 0.4455 against
0.4754 for the same 3 x 512 ReLU net without them).

The training rows are the reference, kept beside the preprocessing JSON as an ``.npz``
(no pickle). A training row's own features leave the row itself out, so it sees what a
new row sees: its neighbours among the *other* training rows. Computing them is a brute
force search, ``CHUNK`` query rows at a time on every core (each with a one-thread BLAS):
per class, one matrix product gives |r|^2 - 2 q.r for the class's reference rows (the norms
ride in the product as an extra feature, so the block is written once, and it stays in the
cache while ``nearest`` reads it once), then the chosen rows' distances are computed again
exactly. The results are memoised (up to 512 MB), because every member of a cv fold asks
for the same ones. bench/knn_features.py times it against the bare float32 distance
products of the same shapes and against scikit-learn's ``NearestNeighbors``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from ottotrain.config.data_section import KNN_SPACES as SPACES
from ottotrain.features.transforms import signed_log1p

EPS = 1e-3  # log(distance + EPS): exact duplicates (distance 0) stay finite
# Query rows per search step: a class's block of 256 x (its reference rows) float32 stays in
# the cache between the product that writes it and the search that reads it.
CHUNK = 256
GROUP = 16  # reference columns per group in the nearest-row search (``nearest``)
_MEMO: dict = {}  # (reference digest, query digest, k, leave-one-out) -> features
# A cv run asks for every fold's features once per member, folds interleaved: keep them all
# (Otto, 5 folds: training, held-out and test rows' features are about 190 MB).
_MEMO_BYTES = 512 << 20
# One pooled search at a time: the BLAS thread limit is process-wide, and two searches that
# set and restored it in turn could leave it at one thread.
_POOL = threading.Lock()


@dataclass
class Stats:
    """How many searches ran (memoised answers not counted): what tests and benchmarks read."""

    searches: int = 0
    rows: int = 0


STATS = Stats()


def space(x, name: str = "log1p", idf=None) -> np.ndarray:
    """The rows as the distances see them (float32): ``name`` is one of ``SPACES``; ``idf``
    (per feature) is needed for tfidf."""
    x = np.asarray(x, dtype=np.float32)
    if name == "log1p":
        return signed_log1p(x)
    if name == "raw":
        return np.array(x, dtype=np.float32)  # a copy: the caller's rows are never aliased
    if name == "tfidf":
        w = np.maximum(x, 0) * np.asarray(idf, dtype=np.float32)
        norm = np.sqrt(np.einsum("ij,ij->i", w, w))
        return w / np.maximum(norm, np.float32(1e-12))[:, None]  # an all-zero row stays zero
    raise ValueError(_unknown(name))


def _unknown(name) -> str:
    return f"unknown nearest-neighbour space {name!r}; use one of {', '.join(SPACES)}"


def inverse_document_frequency(x) -> np.ndarray:
    """log((1 + rows) / (1 + rows where the feature is positive)) + 1 per feature (float64):
    data.tfidf's, and the tfidf space's weights."""
    df_count = (np.asarray(x) > 0).sum(axis=0)
    return np.log((1 + len(x)) / (1 + df_count)) + 1


def _digest(*arrays) -> str:
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        h.update(np.ascontiguousarray(a).view(np.uint8))
    return h.hexdigest()


class Reference:
    """Training rows in distance space, sorted by class, and where each class starts."""

    def __init__(self, rows, counts, space_name: str = "log1p", idf=None):
        if space_name not in SPACES:
            raise ValueError(_unknown(space_name))
        self.rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.space = space_name
        self.idf = None if idf is None else np.asarray(idf, dtype=np.float32)
        # log1p references hash as before this option existed: their sidecar names stay valid
        extra = () if space_name == "log1p" else (np.frombuffer(space_name.encode(), np.uint8), self.idf)
        self.digest = _digest(self.rows, self.counts, *(a for a in extra if a is not None))

    @functools.cached_property
    def layout(self) -> "Layout":
        return Layout(self)

    def queries(self, x) -> np.ndarray:
        """Raw rows ``x`` in this reference's distance space."""
        return space(x, self.space, self.idf)

    @classmethod
    def fit(cls, x, y, n_classes, space_name: str = "log1p"):
        """Sort the rows ``x`` by their labels ``y``; return it and the sorting order."""
        order = np.argsort(y, kind="stable")
        idf = inverse_document_frequency(x) if space_name == "tfidf" else None
        rows = space(x, space_name, idf)[order]
        return cls(rows, np.bincount(y, minlength=n_classes), space_name, idf), order

    def save(self, path):
        more = {} if self.space == "log1p" else {"space": np.array(self.space)}
        if self.idf is not None:
            more["idf"] = self.idf
        np.savez_compressed(path, rows=self.rows, counts=self.counts, **more)

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as f:
            name = str(f["space"]) if "space" in f.files else "log1p"
            return cls(f["rows"], f["counts"], name, f["idf"] if "idf" in f.files else None)


class Layout:
    """The reference as the search reads it: ``augmented`` holds the reference rows as
    columns (features x rows, a matrix product's right side) with |r|^2 as one more feature,
    so that [-2q, 1] @ augmented is |r|^2 - 2 q.r in one product. Each class's columns are
    padded with rows at infinite distance to a multiple of ``GROUP``, so that a block
    reshapes into ``GROUP`` slices without a copy. ``columns`` and ``norms`` are its two
    parts (views), as the exported graph reads them."""

    def __init__(self, ref: Reference):
        counts = ref.counts
        padded = -(-counts // GROUP) * GROUP
        self.starts = np.concatenate([[0], np.cumsum(padded)])
        first = np.concatenate([[0], np.cumsum(counts)])
        total, d = int(self.starts[-1]), ref.rows.shape[1]
        self.augmented = np.zeros((d + 1, total), np.float32)
        self.columns, self.norms = self.augmented[:d], self.augmented[d]
        self.norms[:] = np.inf  # a padding row is never near
        self.index = np.zeros(total, np.int64)  # position -> reference row
        self.position = np.empty(len(ref.rows), np.int64)  # reference row -> position
        for s, o, m in zip(self.starts[:-1], first[:-1], counts):
            rows = ref.rows[o : o + m]
            self.columns[:, s : s + m] = rows.T
            self.norms[s : s + m] = (rows * rows).sum(axis=1)
            self.index[s : s + m] = np.arange(o, o + m)
            self.position[o : o + m] = np.arange(s, s + m)


def operands(layout: Layout, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) with left @ right[:, class columns] = |r|^2 - 2 q.r (|q - r|^2 less the
    query's constant), over the features that are non-zero in some query row (one Otto row
    has about 15 of 93: a single row reads a sixth of the reference)."""
    d = q.shape[1]
    used = np.flatnonzero((q != 0).any(axis=0))
    left = np.empty((len(q), len(used) + 1), np.float32)
    np.multiply(q[:, used], np.float32(-2), out=left[:, :-1])
    left[:, -1] = 1
    if len(used) == d:
        return left, layout.augmented
    return left, layout.augmented[np.append(used, d)]


def nearest(block: np.ndarray, kk: int) -> np.ndarray:
    """Column indices of the ``kk`` smallest values of each row of ``block`` (C-contiguous;
    unordered).

    The block is read as ``GROUP`` slices side by side; the minimum over the slices (an
    elementwise minimum, at memory speed) gives each group of columns its smallest value,
    and the ``kk`` smallest values of a row lie in its ``kk`` groups of smallest minimum
    (any other group's minimum is beaten by ``kk`` values of other groups). Searching
    those ``kk * GROUP`` candidates is exact, and much cheaper than searching the block.
    """
    n, m = block.shape
    w = m // GROUP
    if w <= kk:
        return np.argpartition(block, kk - 1, axis=1)[:, :kk]
    groups = np.argpartition(block.reshape(n, GROUP, w).min(axis=1), kk - 1, axis=1)[:, :kk]
    cols = (groups[:, :, None] + w * np.arange(GROUP)).reshape(n, -1)
    candidates = block.ravel()[cols + (np.arange(n) * m)[:, None]]
    pick = np.argpartition(candidates, kk - 1, axis=1)[:, :kk]
    return np.take_along_axis(cols, pick, axis=1)


def _log_means(ref, lay, c, qc, block, ks) -> np.ndarray:
    """log(mean distance + EPS) to the k nearest rows of class ``c`` for each k: (rows, len(ks))."""
    kk = min(max(ks), int(ref.counts[c]))
    idx = nearest(block, kk)
    # The chosen neighbours' distances again, directly: the expansion above loses digits to
    # cancellation, which matters most for (near-)duplicate rows.
    diff = ref.rows[lay.index[lay.starts[c] + idx]] - qc[:, None, :]
    d = np.sqrt(np.einsum("mkd,mkd->mk", diff, diff))
    d[~np.isfinite(np.take_along_axis(block, idx, axis=1))] = np.inf  # the row itself, padding
    d.sort(axis=1)
    finite = np.isfinite(d)
    mean = np.cumsum(np.where(finite, d, 0), axis=1) / np.arange(1, kk + 1)
    # a class with fewer than k usable rows: the mean over all it has
    have = finite.sum(axis=1, keepdims=True)
    at = np.minimum(np.asarray(ks)[None, :] - 1, have - 1)
    return np.log(np.take_along_axis(mean, at, axis=1) + EPS)


def _search(ref: Reference, q, ks, self_rows, s, out) -> int:
    """The features of query rows s..s+CHUNK into ``out``; returns how many rows that was."""
    lay, qc = ref.layout, q[s : s + CHUNK]
    left, right = operands(lay, qc)
    mine = None if self_rows is None else lay.position[self_rows[s : s + CHUNK]]
    for c in range(len(ref.counts)):
        lo, hi = lay.starts[c], lay.starts[c + 1]
        block = left @ right[:, lo:hi]
        if mine is not None:
            at = np.flatnonzero((mine >= lo) & (mine < hi))
            block[at, mine[at] - lo] = np.inf
        out[s : s + CHUNK, c] = _log_means(ref, lay, c, qc, block, ks)
    return len(qc)


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController().select(user_api="blas")


def _cores() -> int:
    """The threads numpy's BLAS would use (OMP_NUM_THREADS and the like are respected)."""
    threads = [i.get("num_threads", 1) for i in _blas().info()]
    return max(1, min(max(threads, default=1), os.cpu_count() or 1))


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
    q = ref.queries(x)
    key = (ref.digest, _digest(q), tuple(ks), self_rows is not None)
    if key in _MEMO:
        if on_rows is not None:
            on_rows(len(q))
        return _MEMO[key]
    STATS.searches += 1
    STATS.rows += len(q)
    out = np.empty((len(q), len(ref.counts), len(ks)), dtype=np.float32)
    chunk = functools.partial(_search, ref, q, ks, self_rows, out=out)
    starts = range(0, max(len(q), 1), CHUNK)
    workers = min(_cores(), len(starts))
    report = on_rows or (lambda rows: None)
    if workers == 1:  # one chunk (a served request) or one core: no threads to start
        for rows in map(chunk, starts):
            report(rows)
    else:
        # A chunk per core, each with a one-thread BLAS: the search between the products runs
        # in parallel too (numpy's product, sort and partition release the GIL).
        with _POOL, _blas().limit(limits=1), ThreadPoolExecutor(workers) as pool:
            for rows in pool.map(chunk, starts):
                report(rows)
    res = out.reshape(len(q), -1)
    while _MEMO and sum(v.nbytes for v in _MEMO.values()) + res.nbytes > _MEMO_BYTES:
        _MEMO.pop(next(iter(_MEMO)))  # the oldest first
    _MEMO[key] = res
    return res
