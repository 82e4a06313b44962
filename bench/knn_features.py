"""Time ottotrain's nearest-neighbour features side by side with the float32 distance products
they need (issue 29: at most 2x), and with scikit-learn computing the same.

On fold 1 of the 5 stratified folds that ``ottotrain cv`` uses (seed 42), ottotrain computes
for the training rows (each leaving itself out), the held-out fold and the test rows the
distances to the 1..16 nearest training rows of every class, in ``--space`` (default log1p),
and turns them into features (a fresh memo for each). Beside each, in the same process and
on all cores, the bare product those rows need: a plain numpy sgemm of the same shapes,
(query rows x features) @ (features x training rows), in chunks of 512 and of 4,096 rows,
the faster chunking counted. ``ratio`` is features seconds / sgemm seconds, per part and for
train (training rows against each other) and test (held-out and test rows against the
training rows). A second call with the same rows is timed too (the memo every member of a
fold shares). scikit-learn's side (left out with ``--no-sklearn``): one ``NearestNeighbors(algorithm="brute",
n_jobs=-1)`` per class on the same rows, 17 neighbours asked for the training rows so that the
row itself can be dropped; and a serving request's sizes (1 and 100 new rows: ottotrain,
scikit-learn's fitted per-class ``NearestNeighbors``, the bare product; median milliseconds).
Prints one JSON line.

    python bench/knn_features.py TRAIN_CSV [TEST_CSV] [--rows N] [--space S] [--no-sklearn]
    python bench/knn_features.py --smoke
"""

import argparse
import json
import os
import time

import numpy as np

SGEMM_CHUNKS = (512, 4096)  # query rows per plain product; the faster one is the baseline


def sklearn_features(ref_x, ref_y, q, ks, n_classes, leave_out=None, space="log1p"):
    from sklearn.neighbors import NearestNeighbors

    from ottotrain.features import knn

    idf = knn.inverse_document_frequency(ref_x)
    rs, qs = knn.space(ref_x, space, idf), knn.space(q, space, idf)
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


def sgemm_seconds(q: np.ndarray, ref_rows: np.ndarray) -> dict:
    """The plain float32 products q @ ref_rows.T (every query row against every reference row),
    in chunks of each of ``SGEMM_CHUNKS`` rows: {chunk rows: seconds}."""
    right = np.ascontiguousarray(ref_rows.T)
    out = {}
    for rows in SGEMM_CHUNKS:
        t0 = time.perf_counter()
        for s in range(0, len(q), rows):
            q[s : s + rows] @ right
        out[rows] = time.perf_counter() - t0
    return out


def side_by_side(ref, queries: dict, ks, self_rows) -> dict:
    """Per part: ottotrain's seconds (fresh memo, then the memo's answer), the sgemm's, their ratio."""
    from ottotrain.features import knn

    parts = {}
    for name, x in queries.items():
        knn._MEMO.clear()
        loo = self_rows if name == "train" else None
        t0 = time.perf_counter()
        feats = knn.features(ref, x, ks, loo)
        t1 = time.perf_counter()
        knn.features(ref, x, ks, loo)
        t2 = time.perf_counter()
        sg = sgemm_seconds(ref.queries(x), ref.rows)
        best = min(sg.values())
        flops = 2.0 * len(x) * ref.rows.shape[0] * ref.rows.shape[1]
        parts[name] = {
            "rows": len(x),
            "features_seconds": round(t1 - t0, 3),
            "memo_seconds": round(t2 - t1, 4),
            "sgemm_seconds": round(best, 6),  # a smoke's products take microseconds
            "sgemm_seconds_by_chunk": {str(k): round(v, 3) for k, v in sg.items()},
            "sgemm_gflops": round(flops / best / 1e9, 1),
            "ratio": round((t1 - t0) / best, 3),
            "_features": feats,
        }
    return parts


def totals(parts: dict) -> dict:
    """The issue's two sums: train (training rows against each other) and test (new rows)."""
    groups = {"train": ["train"], "test": [k for k in parts if k != "train"]}
    out = {}
    for name, keys in groups.items():
        f = sum(parts[k]["features_seconds"] for k in keys)
        s = sum(parts[k]["sgemm_seconds"] for k in keys)
        out[name] = _sums(f, s)
    f, s = (sum(v[k] for v in out.values()) for k in ("features_seconds", "sgemm_seconds"))
    out["all"] = _sums(f, s)
    return out


def _sums(f: float, s: float) -> dict:
    # A smoke's products can take less than the clock's resolution: no ratio then.
    ratio = round(f / s, 3) if s > 0 else None
    return {"features_seconds": round(f, 3), "sgemm_seconds": round(s, 6), "ratio": ratio}


def serving_sizes(ref, train_x, train_y, x, ks, n_classes, rows=(1, 100), reps=20) -> dict:
    """Median milliseconds for one request's rows: ottotrain, scikit-learn, the bare product."""
    from sklearn.neighbors import NearestNeighbors

    from ottotrain.features import knn

    fitted = [
        NearestNeighbors(n_neighbors=min(max(ks), int((train_y == c).sum())), algorithm="brute").fit(
            ref.queries(train_x[train_y == c])
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
                nn.kneighbors(ref.queries(qr))
            t2 = time.perf_counter()
            ref.queries(qr) @ ref.rows.T
            t3 = time.perf_counter()
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
                times[k].append(v * 1000)
        out[f"{n}_rows_ms"] = {k: round(float(np.median(v)), 3) for k, v in times.items()}
    return out


def compare_sklearn(data, tr, queries, ours, ks, n_cls, space) -> dict:
    t0 = time.perf_counter()
    theirs = {
        k: sklearn_features(
            data.x[tr], data.y[tr], v, ks, n_cls, np.arange(len(tr)) if k == "train" else None, space
        )
        for k, v in queries.items()
    }
    res = {"sklearn_seconds": round(time.perf_counter() - t0, 3)}
    res["max_abs_diff"] = {k: float(np.abs(ours[k] - theirs[k]).max()) for k in queries}
    # features of rows whose distance is not ~0 (duplicates amplify rounding in the log)
    far = {k: np.exp(theirs[k]) > 0.01 for k in queries}
    res["max_abs_diff_not_duplicates"] = {
        k: float(np.abs(ours[k] - theirs[k])[far[k]].max(initial=0)) for k in queries
    }
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", nargs="?")
    ap.add_argument("test", nargs="?")
    ap.add_argument("--rows", type=int, default=None, help="use the first N training rows")
    ap.add_argument("--space", default="log1p", help="data.knn.space: raw, log1p or tfidf")
    ap.add_argument("--no-sklearn", action="store_true", help="leave scikit-learn's side out")
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
    ref, order = knn.Reference.fit(data.x[tr], data.y[tr], n_cls, a.space)
    self_rows = np.empty_like(order)
    self_rows[order] = np.arange(len(order))
    parts = side_by_side(ref, queries, ks, self_rows)
    ours = {k: v.pop("_features") for k, v in parts.items()}
    res = {
        "space": a.space,
        "reference_rows": len(tr),
        "features": ref.rows.shape[1],
        "threads": knn._cores(),
        "cpus": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "totals": totals(parts),
        "parts": parts,
    }
    if not a.no_sklearn:
        res.update(compare_sklearn(data, tr, queries, ours, ks, n_cls, a.space))
        res["ottotrain_over_sklearn"] = round(
            res["totals"]["all"]["features_seconds"] / res["sklearn_seconds"], 3
        )
        res["serving"] = serving_sizes(ref, data.x[tr], data.y[tr], queries["val"], ks, n_cls)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
