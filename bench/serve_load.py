"""`ottotrain serve` over loopback HTTP against a bare Starlette app, measured interleaved in one run.

Servers (each a child process on a free loopback port, started with default options):
a bare Starlette/uvicorn app that echoes the request body (the framework's own cost), and
``ottotrain serve`` for each run given: ``--plain`` (the tutorial MLP), ``--nonknn``
(configs/otto.yaml without data.knn) and ``--knn`` (configs/otto.yaml). Each run is exported
first and its export served (``--serve run`` serves the run directory).

Measured, the servers taking turns round by round (so that a load change on the machine
hits every server alike), over kept-alive connections of a minimal HTTP/1.1 client:

- 1-row requests, one client: p50 and p99 against the bare app's (targets: p50 within 2x,
  p99 within 5x);
- 100-row requests, one client: the KNN run against the non-KNN run (within 3x), and its
  1-row p50 against the non-KNN run's (within 2 ms);
- 16 clients sending 1-row requests: requests/s against the bare app's (at least half), p99;
- each server's memory (RSS) after start-up and after the load (within 50 MB).

Every answer's status is checked (a non-200 fails the run). Prints a table to stderr and one
JSON line to stdout; exits 1 if a target is missed (``--smoke`` only reports).

``--profile`` (and ``--smoke``) adds where the time goes, in this process (no HTTP), rounds
interleaved, median microseconds per 1-row and 100-row request of each run: reading the JSON,
checking it into a matrix, the model (TensorFlow Lite and the SavedModel), the answer, the
whole app (Starlette, metrics, access log) with each runtime, and a bare Starlette app; and
the KNN search alone on the same rows: ottotrain's numpy (``predict``'s), scikit-learn's
fitted ``NearestNeighbors`` per class, and a plain BLAS product with precomputed norms and
``argpartition``.

    python bench/serve_load.py --plain RUN --nonknn RUN --knn RUN --test TEST_CSV [--rounds 20] [--profile]
    python bench/serve_load.py --smoke   # tiny runs it trains itself; seconds
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

import common
import numpy as np

BARE = r"""
import socket, sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def echo(request):
    return Response(await request.body(), media_type="application/json")

app = Starlette(routes=[Route("/v1/models/{model}", echo, methods=["POST"])])
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
print(f"Serving bare on http://127.0.0.1:{sock.getsockname()[1]}/v1/models/bare", file=sys.stderr, flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning", http="h11")).run(sockets=[sock])
"""


class Client:
    """A kept-alive HTTP/1.1 connection posting bodies: the least client-side cost."""

    def __init__(self, url):
        rest = url.removeprefix("http://")
        hostport, path = rest.split("/", 1)
        host, port = hostport.split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = f"POST /{path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
        self.buf = b""

    def post(self, body: bytes) -> tuple[int, bytes]:
        self.sock.sendall(f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(self.buf) < length:
            self.buf += self._recv()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def _recv(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self):
        self.sock.close()


class Server:
    def __init__(self, label, cmd):
        self.label = label
        self.proc = subprocess.Popen(
            cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=dict(os.environ)
        )
        self.url = None

    def ready(self):
        """Wait for its 'listening on' line (the servers start side by side, then each is waited for)."""
        line = self.proc.stderr.readline()
        label = self.label
        if " on http://" not in line:
            raise SystemExit(f"{label}: the server did not start: {line}{self.proc.stderr.read()[-2000:]}")
        self.url = line.split(" on ")[1].split()[0] + (":predict" if label != "bare" else "")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # drain its log

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def one_client(server, bodies, n, lat):
    c = Client(server.url)
    try:
        for i in range(n):
            t = time.perf_counter()
            status, body = c.post(bodies[i % len(bodies)])
            lat.append(time.perf_counter() - t)
            if status != 200:
                raise SystemExit(f"{server.label}: {status} {body[:300]!r}")
    finally:
        c.close()


def many_clients(server, bodies, clients, seconds, lat) -> int:
    """Requests answered by ``clients`` threads in ``seconds``."""
    done, stop = [0] * clients, time.perf_counter() + seconds

    def run(i):
        c = Client(server.url)
        try:
            k = i
            while time.perf_counter() < stop:
                t = time.perf_counter()
                status, body = c.post(bodies[k % len(bodies)])
                lat.append(time.perf_counter() - t)
                if status != 200:
                    raise SystemExit(f"{server.label}: {status} {body[:300]!r}")
                done[i] += 1
                k += clients
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def ms(xs, q):
    return round(float(np.percentile(np.asarray(xs) * 1000, q)), 3)


def bodies_of(x, names, rows, n=32, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        idx = rng.choice(len(x), rows, replace=len(x) < rows)
        out.append(json.dumps({"instances": [dict(zip(names, map(float, x[i]))) for i in idx]}).encode())
    return out


def test_rows(test_csv, run_dir):
    """The test file's feature rows as ``predict`` reads them, and the column names."""
    from ottotrain.data import load_test, missing_allowed
    from ottotrain.workflows.predictor import open_run

    s = open_run(run_dir).state
    if s.categorical:
        raise SystemExit(f"{run_dir}: this bench sends numeric columns only")
    _, x = load_test(test_csv, s.id_column, s.target_column, s.features, allow_missing=missing_allowed(s))
    return np.nan_to_num(x), list(s.features)


def smoke_runs(tmp: Path) -> dict:
    """Two tiny runs trained here on generated data (a plain MLP and one with KNN features)."""
    import yaml

    from ottotrain.data.synth import make_data

    make_data(tmp / "data", rows=400, seed=3, test_rows=60, n_classes=3, n_features=8)
    layers = [{"Dense": {"units": 16, "activation": "relu"}}, {"Dense": {"units": "n_classes"}}]
    runs = {}
    for label, data in (("plain", {}), ("knn", {"knn": {"k": [1, 4]}})):
        cfg = {
            "name": label,
            "seed": 1,
            "data": {"train": str(tmp / "data" / "train.csv"), **data},
            "model": {"layers": [*layers, {"Activation": "softmax"}]},
            "train": {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 1, "batch_size": 64},
        }
        (tmp / f"{label}.yaml").write_text(yaml.safe_dump(cfg))
        # In this process (common.SMOKE_IN_PROCESS): the servers import TensorFlow, the fits need not again.
        common.timed(common.ottotrain("fit", tmp / f"{label}.yaml", "--run-dir", tmp / label, "-q"))
        runs[label] = tmp / label
    return {
        "plain": runs["plain"],
        "nonknn": runs["plain"],
        "knn": runs["knn"],
        "test": tmp / "data" / "test.csv",
    }


def start_servers(runs: dict, tmp: Path, serve_run: bool) -> dict:
    """The bare app and one ``ottotrain serve`` per distinct run (--smoke: nonknn is plain)."""
    from ottotrain.workflows.export import export

    servers, by_run = {"bare": Server("bare", [sys.executable, "-c", BARE])}, {}
    for label in ("plain", "nonknn", "knn"):
        if runs[label] in by_run:
            servers[label] = by_run[runs[label]]
            continue
        target = runs[label]
        if not serve_run:
            target = tmp / f"export-{label}"
            export(runs[label], target)
        cmd = [sys.executable, "-m", "ottotrain", "serve", str(target), "--port", "0"]
        servers[label] = by_run[runs[label]] = Server(label, cmd)
        servers[label].target = target
    for server in (servers["bare"], *by_run.values()):
        server.ready()
    return servers


def measure(servers, one, hundred, args) -> dict:
    """Round by round, every server in turn: the latencies and counts of each load."""
    lat1 = {k: [] for k in servers}
    lat100 = {k: [] for k in ("nonknn", "knn")}
    lat16, count16 = {k: [] for k in servers}, {k: 0 for k in servers}
    for s in servers.values():  # warm-up
        one_client(s, one, 20, [])
    rss0 = {k: s.rss_mb() for k, s in servers.items()}
    for r in range(args.rounds):
        order = list(servers) if r % 2 == 0 else list(reversed(servers))
        for k in order:
            one_client(servers[k], one, args.requests, lat1[k])
        for k in ("nonknn", "knn") if r % 2 == 0 else ("knn", "nonknn"):
            one_client(servers[k], hundred, max(2, args.requests // 10), lat100[k])
        for k in order:
            count16[k] += many_clients(servers[k], one, 16, args.seconds, lat16[k])
    rss1 = {k: s.rss_mb() for k, s in servers.items()}
    seconds16 = args.rounds * args.seconds
    return {
        "one_row": {k: {"p50_ms": ms(v, 50), "p99_ms": ms(v, 99), "n": len(v)} for k, v in lat1.items()},
        "hundred_rows": {
            k: {"p50_ms": ms(v, 50), "p99_ms": ms(v, 99), "n": len(v)} for k, v in lat100.items()
        },
        "clients_16": {
            k: {"req_per_s": round(count16[k] / seconds16, 1), "p99_ms": ms(lat16[k], 99)} for k in servers
        },
        "rss_mb": {k: {"start": round(rss0[k], 1), "after": round(rss1[k], 1)} for k in servers},
    }


def _median_us(fn, args, reps) -> float:
    times = []
    for i in range(reps):
        t = time.perf_counter_ns()
        fn(args[i % len(args)])
        times.append(time.perf_counter_ns() - t)
    return round(float(np.median(times)) / 1000, 1)


async def _asgi(app, path, body):
    """One request through an ASGI app, in process; its status."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {},
    }  # fmt: skip
    sent, status = [], []

    async def receive():
        sent.append(1)
        return {"type": "http.request", "body": body if len(sent) == 1 else b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


async def _asgi_median(app, path, bodies, reps) -> float:
    """Median microseconds of a request through ``app`` in this event loop."""
    times = []
    for i in range(reps):
        t = time.perf_counter_ns()
        status = await _asgi(app, path, bodies[i % len(bodies)])
        times.append(time.perf_counter_ns() - t)
        if status != 200:
            raise SystemExit(f"{path}: {status}")
    return round(float(np.median(times)) / 1000, 1)


class Stages:
    """One run's model loaded both ways, and its apps, for ``measure``."""

    def __init__(self, target):
        import logging

        from ottotrain.serving import app as served
        from ottotrain.serving.requests import RequestReader
        from ottotrain.workflows.serve import load

        handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 (as serve's, to nowhere)
        served.ACCESS.handlers[:] = [handler]
        served.ACCESS.setLevel(logging.INFO)
        served.ACCESS.propagate = False
        self.lite, self.schema = load(target)
        self.saved, _ = load(target, lite=False)
        self.apps = {k: served.make_app("m", self.schema, f, access_log=True) for k, f in self.models()}
        # The same TensorFlow Lite model on one interpreter: what splitting a call's rows over
        # the cores gains (model_lite against model_lite_one_interpreter)
        self.lite_one = None
        if self.lite.runtime.startswith("TensorFlow Lite"):
            from ottotrain import engine

            knn_rows = engine.export.KNN_CHUNK if any(m.knn for m in self.schema.members) else None
            self.lite_one = engine.lite.lite_function(self.saved.module, threads=1, max_rows=knn_rows)
        self.reader = RequestReader(self.schema, 10**6)

    def models(self):
        return (("lite", self.lite), ("savedmodel", self.saved))

    def measure(self, bodies: dict, reps: int) -> dict:
        """Median microseconds of each stage of a request, per body size."""
        import asyncio

        from ottotrain.serving.app import json_response
        from ottotrain.serving.requests import decode, predictions

        out = {}
        for size, group in bodies.items():
            docs = [decode(b) for b in group]
            batches = [self.reader.tf_serving(d)[0] for d in docs]
            proba = [self.saved(b.numbers, b.strings) for b in batches]
            n = reps if size == 1 else max(5, reps // 10)

            def answer(p):
                return json_response({"predictions": predictions(p, self.schema.classes)})

            row = {"decode": _median_us(decode, group, n)}
            row["read"] = _median_us(self.reader.tf_serving, docs, n)
            extra = (("lite_one_interpreter", self.lite_one),) if self.lite_one is not None else ()
            for k, f in self.models() + extra:
                row[f"model_{k}"] = _median_us(lambda batch, f=f: f(batch.numbers, batch.strings), batches, n)
            row["answer"] = _median_us(answer, proba, n)
            for k, app in self.apps.items():
                row[f"app_{k}"] = asyncio.run(_asgi_median(app, "/v1/models/m:predict", group, n))
            row["app_bare"] = asyncio.run(_asgi_median(_bare_app(), "/v1/models/m", group, n))
            out[f"{size}_row_us"] = row
        return out


def _bare_app():
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def echo(request):
        return Response(await request.body(), media_type="application/json")

    return Starlette(routes=[Route("/v1/models/{model}", echo, methods=["POST"])])


def _knn_search(run_dir, x, reps) -> dict:
    """Median microseconds of the KNN search alone for 1 and 100 rows, three ways."""
    from sklearn.neighbors import NearestNeighbors

    from ottotrain.features import knn
    from ottotrain.workflows.predictor import open_run

    member = next(m for m in open_run(run_dir).members if m.pre.state.knn is not None)
    ref, ks = member.pre.knn_reference(), member.pre.state.knn.k
    starts = np.concatenate([[0], np.cumsum(ref.counts)])
    blocks = [ref.rows[a:b] for a, b in zip(starts[:-1], starts[1:])]
    fitted = [NearestNeighbors(n_neighbors=min(max(ks), len(b)), algorithm="brute").fit(b) for b in blocks]
    right, norms = np.ascontiguousarray(ref.rows.T), np.einsum("ij,ij->i", ref.rows, ref.rows)

    def ottotrain_numpy(q):
        knn._MEMO.clear()  # a new request: never the memo's answer
        knn.features(ref, q, ks)

    def blas(q):
        g = ref.queries(q) @ right * np.float32(-2) + norms
        for a, b in zip(starts[:-1], starts[1:]):
            np.argpartition(g[:, a:b], min(max(ks), b - a) - 1, axis=1)

    def sklearn(q):
        qs = ref.queries(q)
        for nn in fitted:
            nn.kneighbors(qs)

    out = {}
    for size in (1, 100):
        qs = [x[i * size % len(x) :][:size] for i in range(8)]
        n = reps // 4 if size == 1 else max(3, reps // 40)
        out[f"{size}_row_us"] = {
            name: _median_us(fn, qs, n)
            for name, fn in (("ottotrain_numpy", ottotrain_numpy), ("blas", blas), ("sklearn", sklearn))
        }
    return out


def profile(targets: dict, knn_run, x, names, rounds: int, reps: int) -> dict:
    """``--profile``: the stages of each target's requests and the KNN search, rounds
    interleaved (each a median; the round medians' median reported)."""
    bodies = {1: bodies_of(x, names, 1), 100: bodies_of(x, names, 100, n=8)}
    loaded = {k: Stages(t) for k, t in targets.items()}
    per_round = []
    for _ in range(rounds):
        r = {k: st.measure(bodies, reps) for k, st in loaded.items()}
        r["knn_search"] = _knn_search(knn_run, x, reps)
        per_round.append(r)
    out = _median_of(per_round)
    for k, st in loaded.items():
        out[k]["runtime"] = st.lite.runtime
    return out


def _median_of(items):
    if isinstance(items[0], dict):
        return {k: _median_of([i[k] for i in items]) for k in items[0]}
    if isinstance(items[0], str):
        return items[0]
    return round(float(np.median(items)), 1)


def verdicts(m: dict) -> dict:
    one, hundred, c16, rss = m["one_row"], m["hundred_rows"], m["clients_16"], m["rss_mb"]
    bare = one["bare"]
    out = {}
    for k in ("plain", "nonknn"):
        out[f"{k}: 1-row p50 within 2x bare"] = one[k]["p50_ms"] <= 2 * bare["p50_ms"]
        out[f"{k}: 1-row p99 within 5x bare"] = one[k]["p99_ms"] <= 5 * bare["p99_ms"]
        out[f"{k}: 16 clients at least half bare's req/s"] = (
            c16[k]["req_per_s"] >= 0.5 * c16["bare"]["req_per_s"]
        )
    out["knn: 100-row p50 within 3x nonknn's"] = hundred["knn"]["p50_ms"] <= 3 * hundred["nonknn"]["p50_ms"]
    out["knn: 1-row p50 within 2 ms of nonknn's"] = one["knn"]["p50_ms"] <= one["nonknn"]["p50_ms"] + 2
    for k in ("plain", "nonknn", "knn"):
        out[f"{k}: memory within 50 MB of start"] = rss[k]["after"] - rss[k]["start"] <= 50
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plain", help="run directory: the tutorial MLP")
    ap.add_argument("--nonknn", help="run directory: configs/otto.yaml without data.knn")
    ap.add_argument("--knn", help="run directory: configs/otto.yaml")
    ap.add_argument("--test", help="the test CSV whose rows are sent")
    ap.add_argument(
        "--serve", choices=["export", "run"], default="export", help="what ottotrain serve is given"
    )
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--requests", type=int, default=100, help="1-row requests per server per round")
    ap.add_argument("--seconds", type=float, default=2.0, help="16-client load per server per round")
    ap.add_argument("--smoke", action="store_true", help="tiny runs trained here; a few seconds of load")
    ap.add_argument("--profile", action="store_true", help="also where the time goes, in this process")
    args = ap.parse_args()
    if args.smoke:
        common.SMOKE_IN_PROCESS = True
        args.rounds, args.requests, args.seconds, args.profile = 2, 20, 0.3, True
    elif not all((args.plain, args.nonknn, args.knn, args.test)):
        ap.error("give --plain, --nonknn, --knn and --test (or --smoke)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = (
            smoke_runs(tmp)
            if args.smoke
            else {k: Path(getattr(args, k)) for k in ("plain", "nonknn", "knn", "test")}
        )
        x, names = test_rows(runs["test"], runs["plain"])
        one, hundred = bodies_of(x, names, 1), bodies_of(x, names, 100, n=8)
        servers = start_servers(runs, tmp, args.serve == "run")
        try:
            m = measure(servers, one, hundred, args)
        finally:
            for s in {id(s): s for s in servers.values()}.values():
                s.stop()
        if args.profile:  # what each server served (an export, or the run)
            served = {k: servers[k].target for k in ("plain", "nonknn", "knn") if servers[k].label == k}
            rounds, reps = (2, 40) if args.smoke else (5, 300)
            m["profile"] = profile(served, runs["knn"], x, names, rounds, reps)
    m["targets"] = verdicts(m)
    m["settings"] = {k: getattr(args, k) for k in ("serve", "rounds", "requests", "seconds", "smoke")}
    for section in ("one_row", "hundred_rows", "clients_16", "rss_mb"):
        for k, v in m[section].items():
            print(f"{section:13} {k:7} {v}", file=sys.stderr)
    for k, v in m.get("profile", {}).items():
        for size, row in v.items():
            print(f"profile {k:10} {size:11} {row}", file=sys.stderr)
    for name, ok in m["targets"].items():
        print(f"{'met   ' if ok else 'MISSED'} {name}", file=sys.stderr)
    print(json.dumps(m))
    if not args.smoke and not all(m["targets"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
