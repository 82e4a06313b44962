"""Time ottotrain's nearest-neighbour features against scikit-learn computing the same.

On fold 1 of the 5 stratified folds that ``ottotrain cv`` uses (seed 42), both compute
for the training rows (each leaving itself out), the held-out fold and the test rows the
distances to the 1..16 nearest training rows of every class, and turn them into the same
features. scikit-learn's side: one ``NearestNeighbors(algorithm="brute", n_jobs=-1)`` per
class, the same signed-log1p rows, 17 neighbours asked for the training rows so that the
row itself can be dropped. Both sides run in this process, one after the other, with all
cores; prints one JSON line (seconds per side, their ratio, the largest difference).

    python bench/knn_features.py TRAIN_CSV [TEST_CSV] [--rows N]
    python bench/knn_features.py             # the real Otto files where common.otto_files finds them
    python bench/knn_features.py --quick     # their first 20,000 training and test rows
    python bench/knn_features.py --smoke     # 2,000 generated rows

Writes its block of bench/results/metric.md.
"""

import json
import time

import common
import numpy as np


def sklearn_features(ref_x, ref_y, q, ks, n_classes, leave_out=None):
    from sklearn.neighbors import NearestNeighbors

    from ottotrain.features import knn

    rs, qs = knn.space(ref_x), knn.space(q)
    kmax = max(ks)
    out = np.empty((len(q), n_classes, len(ks)), np.float32)
    for c in range(n_classes):
        rows = np.flatnonzero(ref_y == c)
        extra = 1 if leave_out is not None else 0
        nn = NearestNeighbors(n_neighbors=min(kmax + extra, len(rows)), algorithm="brute", n_jobs=-1).fit(
            rs[rows]
        )
        d, i = nn.kneighbors(qs)
        if leave_out is not None:  # drop the row itself where it was found
            own = rows[i] == leave_out[:, None]
            keep = np.where(own.any(axis=1, keepdims=True), ~own, np.arange(d.shape[1]) < kmax)
            d = d[keep].reshape(len(q), -1)
        d = d[:, :kmax]
        mean = np.cumsum(d, axis=1) / np.arange(1, d.shape[1] + 1)
        idx = np.minimum(np.asarray(ks), d.shape[1]) - 1
        out[:, c] = np.log(mean[:, idx] + knn.EPS)
    return out.reshape(len(q), -1)


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("train", nargs="?")
    ap.add_argument("test", nargs="?")
    ap.add_argument("--rows", type=int, default=None, help="use the first N training (and test) rows")
    a = ap.parse_args(argv)
    r = common.Run.start(__file__, argv, a)
    with common.scratch() as work:
        d = common.Data(a.train, a.test, f"{a.train}, {a.test}", True) if a.train else common.data(r, work)
        res = compare(str(d.train), d.test and str(d.test), a.rows or r.pick(None, 20_000, None))
    print(json.dumps(res))
    diff, far = res["max_abs_diff"], res["max_abs_diff_not_duplicates"]
    rows = [(k, n, f"{diff[k]:.2g}", f"{far[k]:.2g}") for k, n in res["queries"].items()]
    body = (
        f"ottotrain {res['ottotrain_seconds']:.2f} s, scikit-learn {res['sklearn_seconds']:.2f} s: ratio "
        f"**{res['ratio']:.2f}**, {res['train_rows']:,} reference rows.\n\n"
        + common.table(("queries", "rows", "largest difference", "the same, rows not duplicated"), rows)
    )
    r.record("metric", "Nearest-neighbour features: ottotrain against scikit-learn", body, data=d.label)


def compare(train, test, nrows) -> dict:
    from ottotrain.config import DataConfig
    from ottotrain.data import fold_assignment, load_test, load_train
    from ottotrain.features import knn

    dc = DataConfig(train=train, test=test)
    data = load_train(dc, nrows=nrows)
    x_test = load_test(test, dc.id_column, dc.target_column, data.features, nrows=nrows)[1] if test else None
    folds = fold_assignment(data.y, 5, 42)
    tr, va = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
    ks, n_cls = [1, 2, 4, 8, 16], len(data.classes)
    queries = {"train": data.x[tr], "val": data.x[va], **({"test": x_test} if test else {})}
    res = {"train_rows": len(tr), "queries": {k: len(v) for k, v in queries.items()}}

    t0 = time.perf_counter()
    ref, order = knn.Reference.fit(data.x[tr], data.y[tr], n_cls)
    self_rows = np.empty_like(order)
    self_rows[order] = np.arange(len(order))
    ours = {k: knn.features(ref, v, ks, self_rows if k == "train" else None) for k, v in queries.items()}
    res["ottotrain_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    theirs = {
        k: sklearn_features(
            data.x[tr], data.y[tr], v, ks, n_cls, np.arange(len(tr)) if k == "train" else None
        )
        for k, v in queries.items()
    }
    res["sklearn_seconds"] = time.perf_counter() - t0
    res["ratio"] = res["ottotrain_seconds"] / res["sklearn_seconds"]
    res["max_abs_diff"] = {k: float(np.abs(ours[k] - theirs[k]).max()) for k in queries}
    # features of rows whose distance is not ~0 (duplicates amplify rounding in the log)
    far = {k: np.exp(theirs[k]) > 0.01 for k in queries}
    res["max_abs_diff_not_duplicates"] = {
        k: float(np.abs(ours[k] - theirs[k])[far[k]].max()) for k in queries
    }
    return res


if __name__ == "__main__":
    main()
