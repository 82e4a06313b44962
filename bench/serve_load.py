"""Load on `ottotrain serve` over loopback, and the exported SavedModel against `ottotrain predict`.

For one finished run (an all-numeric table such as Otto's):

1. ``ottotrain export`` it to a temporary folder: its size and the seconds it took;
2. in this process, on the same test rows: ``ottotrain predict``'s computation
   (``Predictor.predict_proba`` on the rows already read) and the whole ``predict`` call
   (reading the file and writing the submission too), against the SavedModel loaded with
   ``tf.saved_model.load`` and called once on all rows; the largest difference between them;
   the SavedModel's median time for one row (50 calls);
3. ``ottotrain serve EXPORT --port 0`` in a child process, then for 1-row and 256-row requests
   with 1 and 16 concurrent clients (threads of this process, one httpx connection each, TCP_NODELAY):
   requests and rows per second, p50 and p99 latency. Each of the four loads runs for at most
   ``--seconds`` seconds and ``--max-requests`` requests, after 3 warm-up requests per client.

Client and server share the machine's cores. Prints one JSON line.

    python bench/serve_load.py RUN_DIR TEST_CSV [--seconds 10] [--max-requests 3000] [--http-only]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _pct(xs, q):
    return round(float(np.percentile(np.asarray(xs) * 1000, q)), 2)


def test_rows(run_dir, test, export_dir):
    """(the test file's feature rows as predict reads them, the export's column names)."""
    from ottotrain.data import load_test, missing_allowed
    from ottotrain.serving.schema import ModelSchema
    from ottotrain.workflows.predictor import open_run

    s = open_run(run_dir).state
    _, x = load_test(test, s.id_column, s.target_column, s.features, allow_missing=missing_allowed(s))
    schema = ModelSchema.read(export_dir)
    assert all(c.kind == "numeric" for c in schema.columns), "this bench feeds numeric columns only"
    return x, [c.name for c in schema.columns]


def in_process(run_dir, test, export_dir):
    from ottotrain import engine
    from ottotrain.features import knn
    from ottotrain.serving.schema import ModelSchema
    from ottotrain.workflows.predict import predict
    from ottotrain.workflows.predictor import open_run

    predictor = open_run(run_dir)
    x, names = test_rows(run_dir, test, export_dir)
    schema = ModelSchema.read(export_dir)
    cols = {c.key: x[:, j] for j, c in enumerate(schema.columns)}
    knn._MEMO.clear()  # KNN features are memoised per process: each timing computes its own
    t = time.perf_counter()
    want = predictor.predict_proba(x)
    t_proba = time.perf_counter() - t
    knn._MEMO.clear()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        predict(run_dir, test, Path(tmp) / "sub.csv")
        t_predict = time.perf_counter() - t
    t = time.perf_counter()
    fn = engine.export.predict_function(export_dir)
    t_load = time.perf_counter() - t
    fn({k: v[:1] for k, v in cols.items()})  # the first call traces nothing (a SavedModel), but warms up
    t = time.perf_counter()
    got = fn(cols)
    t_saved = time.perf_counter() - t
    one = []
    for i in range(50):
        t = time.perf_counter()
        fn({k: v[i : i + 1] for k, v in cols.items()})
        one.append(time.perf_counter() - t)
    return (
        {
            "rows": len(x),
            "predict_proba_s": round(t_proba, 3),
            "predict_command_s": round(t_predict, 3),
            "savedmodel_load_s": round(t_load, 3),
            "savedmodel_call_s": round(t_saved, 3),
            "savedmodel_over_predict_proba": round(t_saved / t_proba, 2),
            "max_abs_diff": float(np.abs(got - want).max()),
            "savedmodel_1_row_p50_ms": _pct(one, 50),
        },
        x,
        names,
    )


def load(url, bodies, clients, seconds, max_requests):
    """``clients`` threads posting ``bodies`` in turn until ``seconds`` or ``max_requests`` are spent."""
    import httpx

    lat, lock, count = [], threading.Lock(), [0]
    start = threading.Barrier(clients + 1)  # every client warmed up: the clock starts
    clock = {}

    # httpx writes a request's headers and body separately: with Nagle's algorithm on, the body
    # could wait for the server's delayed ACK (curl sets TCP_NODELAY too).
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

    def client(i):
        with httpx.Client(timeout=120, transport=httpx.HTTPTransport(socket_options=nodelay)) as c:
            for j in range(3):
                assert c.post(url, content=bodies[(i + j) % len(bodies)]).status_code == 200
            start.wait()
            k = i
            while time.perf_counter() < clock["stop"]:
                with lock:
                    if count[0] >= max_requests:
                        return
                    count[0] += 1
                t = time.perf_counter()
                r = c.post(url, content=bodies[k % len(bodies)], headers={"content-type": "application/json"})
                dt = time.perf_counter() - t
                assert r.status_code == 200, r.text
                with lock:
                    lat.append(dt)
                k += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    clock["stop"] = float("inf")
    start.wait()
    t0 = time.perf_counter()
    clock["stop"] = t0 + seconds
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "requests": len(lat),
        "seconds": round(wall, 2),
        "req_per_s": round(len(lat) / wall, 1),
        "p50_ms": _pct(lat, 50),
        "p99_ms": _pct(lat, 99),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("test")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=3000)
    ap.add_argument("--http-only", action="store_true", help="Skip step 2 (minutes for a KNN run).")
    args = ap.parse_args()

    from ottotrain.workflows.export import export

    out = {"run": args.run_dir}
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = Path(tmp) / Path(args.run_dir).name
        res = export(args.run_dir, export_dir)
        out["export"] = {
            "megabytes": round(res["bytes"] / 1e6, 2),
            "seconds": res["seconds"],
            "knn_members": res["knn_members"],
        }
        if args.http_only:
            x, names = test_rows(args.run_dir, args.test, export_dir)
        else:
            out["in_process"], x, names = in_process(args.run_dir, args.test, export_dir)

        proc = subprocess.Popen(
            [sys.executable, "-m", "ottotrain", "serve", str(export_dir), "--port", "0", "--name", "m"],
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        try:
            line = proc.stderr.readline()
            url = line.split(" on ")[1].split()[0] + ":predict"
            rng = np.random.default_rng(0)
            out["http"] = {}
            for rows in (1, 256):
                bodies = []
                for _ in range(64):
                    idx = rng.choice(len(x), rows, replace=False)
                    inst = [dict(zip(names, map(float, x[i]))) for i in idx]
                    bodies.append(json.dumps({"instances": inst}).encode())
                for clients in (1, 16):
                    r = load(url, bodies, clients, args.seconds, args.max_requests)
                    r["rows_per_s"] = round(r["req_per_s"] * rows, 1)
                    out["http"][f"{rows} row(s), {clients} client(s)"] = r
                    print(f"{rows} row(s), {clients} client(s): {r}", file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            out["server_exit"] = proc.wait(timeout=60)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
