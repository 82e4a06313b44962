"""Time ottotrain's nearest-neighbour features against scikit-learn computing the same.

On fold 1 of the 5 stratified folds that ``ottotrain cv`` uses (seed 42), both compute
for the training rows (each leaving itself out), the held-out fold and the test rows the
distances to the 1..16 nearest training rows of every class, and turn them into the same
features. scikit-learn's side: one ``NearestNeighbors(algorithm="brute", n_jobs=-1)`` per
class, the same signed-log1p rows, 17 neighbours asked for the training rows so that the
row itself can be dropped. Both sides run in this process, one after the other, with all
cores; prints one JSON line (seconds per side, their ratio, the largest difference). The
same rows' bare float32 distance products (``q @ reference.T``, what issue 29 compares the
features' cost with) are timed too, and a serving request's sizes (1 and 100 new rows
against the reference: ottotrain, scikit-learn's fitted per-class ``NearestNeighbors``,
the bare product; median milliseconds).

    python bench/knn_features.py TRAIN_CSV [TEST_CSV] [--rows N]
    python bench/knn_features.py --smoke
"""

import argparse
import json
import time

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


def blas_seconds(ref, queries) -> float:
    """The raw float32 distance products alone (every query row against every reference row)."""
    t0 = time.perf_counter()
    for q in queries.values():
        for s in range(0, len(q), 512):
            q[s : s + 512] @ ref.rows.T
    return time.perf_counter() - t0


def serving_sizes(ref, train_x, train_y, x, ks, n_classes, rows=(1, 100), reps=20) -> dict:
    """Median milliseconds for one request's rows: ottotrain, scikit-learn, the bare product."""
    from sklearn.neighbors import NearestNeighbors

    from ottotrain.features import knn

    fitted = [
        NearestNeighbors(n_neighbors=min(max(ks), int((train_y == c).sum())), algorithm="brute").fit(
            knn.space(train_x[train_y == c])
        )
        for c in range(n_classes)
    ]
    out = {}
    for n in rows:
        q, times = x[:n], {"ottotrain": [], "sklearn": [], "blas": []}
        for r in range(reps):
            qr = q + np.float32(r)  # new rows each time: no memoised answer
            t0 = time.perf_counter()
            knn.features(ref, qr, ks)
            t1 = time.perf_counter()
            for nn in fitted:
                nn.kneighbors(knn.space(qr))
            t2 = time.perf_counter()
            knn.space(qr) @ ref.rows.T
            t3 = time.perf_counter()
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
                times[k].append(v * 1000)
        out[f"{n}_rows_ms"] = {k: round(float(np.median(v)), 3) for k, v in times.items()}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", nargs="?")
    ap.add_argument("test", nargs="?")
    ap.add_argument("--rows", type=int, default=None, help="use the first N training rows")
    ap.add_argument("--smoke", action="store_true", help="generated data (3,000 rows): seconds")
    a = ap.parse_args()
    if a.smoke:
        import tempfile

        from ottotrain.data.synth import make_data

        tmp = tempfile.mkdtemp()
        make_data(tmp, rows=3000, seed=1, test_rows=500, n_classes=4, n_features=20)
        a.train, a.test = f"{tmp}/train.csv", f"{tmp}/test.csv"

    from ottotrain.config import DataConfig
    from ottotrain.data import fold_assignment, load_test, load_train
    from ottotrain.features import knn

    dc = DataConfig(train=a.train, test=a.test)
    data = load_train(dc, nrows=a.rows)
    x_test = load_test(a.test, dc.id_column, dc.target_column, data.features)[1] if a.test else None
    folds = fold_assignment(data.y, 5, 42)
    tr, va = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
    ks, n_cls = [1, 2, 4, 8, 16], len(data.classes)
    queries = {"train": data.x[tr], "val": data.x[va], **({"test": x_test} if a.test else {})}
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
    res["blas_seconds"] = blas_seconds(ref, {k: knn.space(v) for k, v in queries.items()})
    res["ottotrain_over_blas"] = res["ottotrain_seconds"] / res["blas_seconds"]
    res["serving"] = serving_sizes(ref, data.x[tr], data.y[tr], queries["val"], ks, n_cls)
    res["max_abs_diff"] = {k: float(np.abs(ours[k] - theirs[k]).max()) for k in queries}
    # features of rows whose distance is not ~0 (duplicates amplify rounding in the log)
    far = {k: np.exp(theirs[k]) > 0.01 for k in queries}
    res["max_abs_diff_not_duplicates"] = {
        k: float(np.abs(ours[k] - theirs[k])[far[k]].max()) for k in queries
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
