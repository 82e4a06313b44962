"""The knn member's search (`ottotrain.learners.knn_votes`) against scikit-learn's
`NearestNeighbors(algorithm="brute")` and the bare float32 matrix product it cannot beat.

One Otto fold: fold 1 of 5 (seed 42) queries its nearest rows among the other folds' rows,
log1p space, distance weights, every k of the list from one search. scikit-learn's neighbours
(the largest k) go through the same vote formula, so the two are checked to agree (rows whose
probabilities differ come from neighbours tied at the k-th place, which either may pick).

    python bench/knn_votes.py                  # the real Otto fold, k = 2, 8, 32, 128, 512, 2 threads
    python bench/knn_votes.py --quick          # k = 2, 8, 32
    python bench/knn_votes.py --smoke          # 1,500 generated rows

Writes its block of bench/results/knn.md.
"""

from __future__ import annotations

import time

import common
import numpy as np


def product_seconds(q: np.ndarray, ref: np.ndarray, block: int = 512) -> float:
    """The bare matrix products of every query row with every reference row, in row blocks."""
    t = time.perf_counter()
    for s in range(0, len(q), block):
        q[s : s + block] @ ref.T
    return time.perf_counter() - t


def sklearn_votes(index, q_rows, ks, threads):
    """scikit-learn's exact neighbours, voted as knn_votes votes: (probabilities by k, rows tied
    at the k-th place by k, seconds)."""
    from sklearn.neighbors import NearestNeighbors

    t = time.perf_counter()
    ref_rows = index.ref.rows[index.sorted_at]  # back to the input's order
    nn = NearestNeighbors(n_neighbors=max(ks) + 1, algorithm="brute", n_jobs=threads).fit(ref_rows)
    dist, idx = nn.kneighbors(q_rows)
    labels = np.repeat(np.arange(len(index.counts)), index.counts)[index.sorted_at][idx]
    out = {k: index._probabilities(labels, dist, k, "distance") for k in ks}
    seconds = time.perf_counter() - t
    # a tie at the k-th place: the (k+1)-th neighbour is as near as the k-th
    ties = {k: np.isclose(dist[:, k - 1], dist[:, k], rtol=1e-5) for k in ks}
    return out, ties, seconds


def main(argv=None):
    from ottotrain.config import DataConfig
    from ottotrain.data import fold_assignment, load_train
    from ottotrain.learners import knn_votes, neighbours

    ap = common.parser(__doc__)
    ap.add_argument("--train", help="the training CSV (default: the real Otto file where found)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    r = common.Run.start(__file__, argv, a)
    ks = r.pick([2, 8, 32, 128, 512], [2, 8, 32], [2, 8])
    with common.scratch() as work:
        d = common.Data(a.train, None, a.train, True) if a.train else common.data(r, work)
        tr = load_train(DataConfig(train=str(d.train)))
    folds = fold_assignment(tr.y, 5, 42)
    x, y = np.asarray(tr.x, np.float32), np.asarray(tr.y)
    ref_x, ref_y, q_x = x[folds != 0], y[folds != 0], x[folds == 0]

    t = time.perf_counter()
    ours = knn_votes(ref_x, ref_y, q_x, ks, "log1p", "distance", len(tr.classes), threads=a.threads)
    ours_s = time.perf_counter() - t
    index = neighbours.Index(ref_x, ref_y, "log1p", len(tr.classes))
    q_rows = index.space(q_x)
    theirs, ties, theirs_s = sklearn_votes(index, q_rows, ks, a.threads)
    floor = product_seconds(q_rows, index.ref.rows)
    differ = {k: np.abs(ours[k] - theirs[k]).max(axis=1) > 1e-5 for k in ks}

    rows = [
        ("knn_votes (blocked sgemm, grouped partition)", f"{ours_s:.2f}", f"{ours_s / floor:.1f}"),
        ('scikit-learn NearestNeighbors(algorithm="brute")', f"{theirs_s:.2f}", f"{theirs_s / floor:.1f}"),
        ("the bare float32 products (512-row blocks)", f"{floor:.2f}", "1.0"),
    ]
    body = common.table(("search", "seconds", "x the products"), rows) + (
        f"\n\n{len(q_x):,} query rows against {len(ref_x):,} reference rows, log1p space, distance "
        f"weights, k = {', '.join(map(str, ks))} from one search, {a.threads} thread(s). Rows whose "
        "probabilities differ by more than 1e-5 (of them, rows with no tie at the k-th place, "
        "which would be an error): "
        + ", ".join(f"k={k} {v.sum():,} ({(v & ~ties[k]).sum()})" for k, v in differ.items())
        + "."
    )
    print(body)
    r.record("knn", "Nearest-neighbour votes: knn_votes against scikit-learn", body, data=d.label)


if __name__ == "__main__":
    main()
