"""Nearest-neighbour vote classifiers: class probabilities from the labels of the k nearest rows.

A row's probabilities are ``(votes + A * prior) / (k + A)``: its k nearest reference rows vote
(one vote each, or with ``weights: distance`` votes in proportion to 1/distance, scaled to sum
to k), and one pseudo-vote (``A = 1``) is shared by the classes in proportion to ``prior``, the
reference rows' class shares with one extra row per class (Laplace), so no probability is 0.

The search is exact: a float32 matrix product against every reference row, a block of query
rows at a time (so 144,368 x 50,000 distances never exist at once), then an exact selection
of the nearest ``max(ks)`` rows (``ottotrain.features.knn``'s ``operands`` and ``nearest``,
which the nearest-neighbour features use too), whose distances are computed again in float64
and sorted, ties broken by the reference row's number: one search serves every k, and a row's
neighbours are the same whatever the other k, the other rows searched with it, or the threads.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ottotrain.config.stack_section import KnnMember
from ottotrain.features import knn
from ottotrain.learners.base import FitInfo, Learner, check_rows, check_xy, load_npz, reading, save_npz

SPACES = ("raw", "log1p", "tfidf")
WEIGHTS = ("uniform", "distance")
PSEUDO_VOTES = 1.0  # A above
EPS = 1e-6  # 1 / (distance + EPS): an exact duplicate gets a large, finite weight
BLOCK = 512  # query rows per matrix product: 512 x 50k float32 is 100 MB per thread
PAIRS = 1 << 15  # (query, candidate) pairs per exact-distance pass: 24 MB of float64 rows
# Bound on the float32 ranking's error relative to |r|^2 + 2|q||r| (the features, 93, times
# float32's 2^-24 is 5.5e-6; twice that is needed: two rows' errors meet at the edge).
SLACK = 2e-5
REFERENCE = "reference.npz"


class Space:
    """Where distances are measured (``features.knn.space``); TF-IDF's idf is fitted on the
    reference rows."""

    def __init__(self, name: str, x_ref):
        if name not in SPACES:
            raise ValueError(f"knn: space must be one of {', '.join(SPACES)}, got {name!r}")
        self.name = name
        self.idf = knn.inverse_document_frequency(x_ref).astype(np.float32) if name == "tfidf" else None

    def __call__(self, x) -> np.ndarray:
        return np.ascontiguousarray(knn.space(x, self.name, self.idf))


class Index:
    """Reference rows ready to be searched: in their space, sorted by class."""

    def __init__(self, x_ref, y_ref, space: str, n_classes: int):
        x_ref, y_ref = check_xy(x_ref, y_ref, n_classes, "knn reference")
        self.space = Space(space, x_ref)
        order = np.argsort(y_ref, kind="stable")
        self.counts = np.bincount(y_ref, minlength=n_classes)
        self.ref = knn.Reference(self.space(x_ref)[order], self.counts)
        self.layout = self.ref.layout
        labels = np.repeat(np.arange(n_classes), self.counts)
        self.label_at = labels[self.layout.index]  # label of each searched position
        self.sorted_at = np.empty(len(order), np.int64)  # input row -> sorted reference row
        self.sorted_at[order] = np.arange(len(order))
        self.input_at = order[self.layout.index]  # searched position -> input row (tie-break)
        self.prior = (self.counts + 1) / (len(y_ref) + n_classes)

    def votes(self, x_query, ks, weights: str, exclude_self=False, threads=None) -> dict[int, np.ndarray]:
        """{k: probabilities (rows, n_classes) float64} for every k, from one search."""
        if weights not in WEIGHTS:
            raise ValueError(f"knn: weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
        ks = sorted({int(k) for k in ks})
        if not ks or ks[0] < 1:
            raise ValueError(f"knn: every k must be a positive integer, got {ks}")
        q = self.space(check_rows(x_query, self.ref.rows.shape[1], "knn queries"))
        n_ref = len(self.ref.rows)
        if exclude_self and len(q) != n_ref:
            raise ValueError(
                f"knn: exclude_self needs the reference rows as queries; got {len(q)} of {n_ref}"
            )
        have = n_ref - int(exclude_self)
        if have < 1:
            raise ValueError("knn: no reference row left to vote")
        kk = min(ks[-1], have)
        used = [min(k, have) for k in ks]
        out = {k: np.empty((len(q), len(self.counts))) for k in ks}
        step = BLOCK

        def block(s):
            nb = self._nearest(
                q[s : s + step], kk, np.arange(s, min(s + step, len(q))) if exclude_self else None
            )
            for k, ku in zip(ks, used):
                out[k][s : s + step] = self._probabilities(*nb, ku, weights)

        starts = range(0, len(q), step)
        workers = max(1, min(threads or min(2, os.cpu_count() or 1), len(starts)))
        if workers == 1:
            for s in starts:
                block(s)
        else:  # the matrix product, partition and sort release the GIL
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(block, starts))
        return out

    def _nearest(self, qb: np.ndarray, kk: int, self_rows) -> tuple[np.ndarray, np.ndarray]:
        """The labels and distances of each query row's ``kk`` nearest rows, nearest first.

        Nearest means: by distance (float64, from the rows in their space), then by the
        reference row's number; so the answer does not depend on ``kk``, on the other rows
        of the block, or on how the float32 ranking rounded. The ranking picks a few more
        than ``kk`` candidates (``knn.nearest``); where they hold every row whose ranking is
        within its rounding error of the kk-th, their exact distances decide. The rows
        where they do not (many rows tied at the edge) take all the rows within it.
        """
        lay = self.layout
        left, right = knn.operands(lay, qb)
        g = left @ right  # |r|^2 - 2 q.r
        if self_rows is not None:
            g[np.arange(len(qb)), lay.position[self.sorted_at[self_rows]]] = np.inf
        width = min(kk + kk // 8 + 8, g.shape[1])
        pos = knn.nearest(g, width)
        near = np.take_along_axis(g, pos, axis=1)
        edge = np.partition(near, kk - 1, axis=1)[:, kk - 1].astype(np.float64)
        edge += _slack(qb, edge)
        closed = (near > edge[:, None]).any(axis=1) | (width == g.shape[1])
        labels = np.empty((len(qb), kk), np.int64)
        dist = np.empty((len(qb), kk))
        rows = np.flatnonzero(closed)
        labels[rows], dist[rows] = self._order(qb[rows], pos[rows], near[rows], kk)
        rows = np.flatnonzero(~closed)
        if len(rows):
            gr = g[rows]
            wide = int((gr <= edge[rows, None]).sum(axis=1).max())
            pos = knn.nearest(gr, wide)
            near = np.take_along_axis(gr, pos, axis=1)
            labels[rows], dist[rows] = self._order(qb[rows], pos, near, kk)
        return labels, dist

    def _order(self, qb, pos, near, kk: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``kk`` of the candidates ``pos`` (ranking ``near``; infinite: not a row)
        by exact distance, then reference row number: their labels and distances."""
        d2 = np.empty(pos.shape)
        step = max(1, PAIRS // max(1, pos.shape[1]))
        for s in range(0, len(qb), step):
            diff = self.ref.rows[self.layout.index[pos[s : s + step]]].astype(np.float64)
            diff -= qb[s : s + step, None, :]
            d2[s : s + step] = (diff * diff).sum(axis=2)
        d2[~np.isfinite(near)] = np.inf  # a padding position, or the query row itself
        first = np.lexsort((self.input_at[pos], d2), axis=1)[:, :kk]  # by distance, then row
        pos, d2 = np.take_along_axis(pos, first, axis=1), np.take_along_axis(d2, first, axis=1)
        return self.label_at[pos], np.sqrt(d2)

    def _probabilities(self, labels, dist, k: int, weights: str) -> np.ndarray:
        n_cls = len(self.counts)
        w = np.ones_like(dist[:, :k]) if weights == "uniform" else 1.0 / (dist[:, :k] + EPS)
        cell = np.arange(len(labels))[:, None] * n_cls + labels[:, :k]
        votes = np.bincount(cell.ravel(), w.ravel(), minlength=len(labels) * n_cls).reshape(-1, n_cls)
        votes *= k / votes.sum(axis=1, keepdims=True)
        return (votes + PSEUDO_VOTES * self.prior) / (k + PSEUDO_VOTES)


def _slack(qb: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """How far the float32 ranking (|r|^2 - 2 q.r) of a row that may be among a query's
    nearest can be from its exact value: ``SLACK`` times |r|^2 + 2|q||r|, where |r| is at
    most |q| plus the distance of the kk-th nearest row (``edge`` is its ranking: its
    squared distance less |q|^2), with 1 % to spare for that row's own rounding."""
    q2 = (qb.astype(np.float64) ** 2).sum(axis=1)
    qn = np.sqrt(q2)
    r = 1.01 * (qn + np.sqrt(np.maximum(edge + q2, 0))) + 1e-6
    return SLACK * (r * r + 2 * qn * r)


def knn_votes(
    x_ref, y_ref, x_query, ks, space: str, weights: str, n_classes: int, exclude_self=False, threads=None
) -> dict[int, np.ndarray]:
    """Class probabilities of ``x_query`` from its nearest ``x_ref`` rows, for every k in ``ks``.

    One search for the largest k serves them all. ``exclude_self``: the queries are the
    reference rows themselves (same order), and no row votes for itself. A k larger than
    the reference rows there are uses them all. ``threads``: blocks searched at once
    (default: up to 2).
    """
    return Index(x_ref, y_ref, space, n_classes).votes(x_query, ks, weights, exclude_self, threads)


def _compact(x: np.ndarray) -> np.ndarray:
    """The smallest dtype that holds the rows exactly (counts: uint8 or uint16), else float32."""
    x32 = np.asarray(x, np.float32)
    if x32.size and x32.min() >= 0 and np.array_equal(x32, np.floor(x32)):
        for t in (np.uint8, np.uint16):
            if x32.max() <= np.iinfo(t).max:
                return x32.astype(t)
    return x32


class KnnLearner(Learner):
    kind = "knn"
    params_model = KnnMember

    def __init__(self, params: KnnMember, **kw):
        super().__init__(params, **kw)
        ks = params.k if isinstance(params.k, list) else [params.k]
        if len(ks) != 1:
            raise ValueError(
                f"knn learner: takes one k, got {ks}; knn_votes serves several k from one search"
            )
        self.k = ks[0]
        self.x_ref: np.ndarray | None = None
        self.y_ref: np.ndarray | None = None
        self.index: Index | None = None

    def fit(self, x, y, x_stop=None, y_stop=None) -> FitInfo:
        """Keep the rows (the early-stopping rows are not used: nothing is chosen)."""
        t0 = time.perf_counter()
        x, y = check_xy(x, y, self.n_classes, "knn fit")
        self.x_ref, self.y_ref = _compact(x), y
        self.index = Index(self.x_ref, y, self.params.space, self.n_classes)
        return FitInfo(rounds=None, stop_log_loss=None, seconds=time.perf_counter() - t0)

    def predict_proba(self, x) -> np.ndarray:
        if self.index is None:
            raise ValueError("knn: predict_proba before fit")
        return self.index.votes(x, [self.k], self.params.weights, threads=self.threads)[self.k]

    def _save_files(self, folder: Path) -> dict[str, Any]:
        if self.index is None:
            raise ValueError("knn: save before fit")
        save_npz(folder / REFERENCE, rows=self.x_ref, labels=self.y_ref.astype(np.int32))
        return {"reference": REFERENCE, "rows": len(self.y_ref)}

    def _restore(self, folder: Path, state: dict[str, Any]) -> None:
        path = folder / state.get("reference", REFERENCE)
        with reading(path):
            arrays = load_npz(path)
            self.x_ref, self.y_ref = arrays["rows"], arrays["labels"].astype(np.int64)
            self.index = Index(self.x_ref, self.y_ref, self.params.space, self.n_classes)
