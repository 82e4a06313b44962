"""ottotrain serve: real servers on free loopback ports, called with a real HTTP client (httpx).

Good requests match ``ottotrain predict``; each bad request gets its 4xx and one message
naming the column, and the next good request still works. The runs are those of
tests/export_runs.py (trained once per session).
"""

import asyncio
import csv
import json
import math
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pandas as pd
import pytest

from tests import export_runs
from tests.conftest import error_line, python_cmd, run_cli, subprocess_env


def _rows(test, schema):
    """The test file's rows as JSON instances: numbers (null where empty) and strings."""
    kinds = {c.name: c.kind for c in schema.columns}
    with open(test, newline="") as f:
        return [
            {
                k: (v if kinds.get(k) != "numeric" else (float(v) if v else None))
                for k, v in row.items()
                if k in kinds or k == "id"
            }
            for row in csv.DictReader(f)
        ]


class Served:
    """A server of ``target`` in a thread of this process, on a free loopback port."""

    def __init__(self, target, name, **app_args):
        from ottotrain.serving.app import make_app
        from ottotrain.workflows import serve

        predict, self.schema = serve.load(target)
        self.app = make_app(name, self.schema, predict, **app_args)
        self.server = serve.server(self.app)
        self.sock = serve.bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def stop(self):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return export_runs.trained(tmp_path_factory)


@pytest.fixture(scope="module")
def typed(runs):
    """The typed-columns + KNN + TabM export, served from its export folder (64 KiB body limit)."""
    run, export, test, sub = runs["typed-knn-tabm"]
    s = Served(export, "typed", max_body=64 << 10)
    s.rows, s.want = _rows(test, s.schema), pd.read_csv(sub)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def v1cv(runs):
    """The 1.0 cv run directory, served directly (no export written); it fills no missing values."""
    run, export, test, sub = runs["1.0-cv"]
    s = Served(run, "v1")
    s.rows, s.want = _rows(test, s.schema), pd.read_csv(sub)
    yield s
    s.stop()


def _check_predictions(body, want):
    preds = body["predictions"]
    classes = list(want.columns[1:])
    assert len(preds) == len(want)
    got = np.array([[p["probabilities"][c] for c in classes] for p in preds])
    np.testing.assert_allclose(got, want.iloc[:, 1:].to_numpy(), atol=1e-5)
    assert [p["class"] for p in preds] == [classes[i] for i in got.argmax(axis=1)]


@pytest.mark.parametrize("served", ["typed", "v1cv"])
def test_good_requests_match_predict(served, request):
    s = request.getfixturevalue(served)
    r = s.client.post(f"/v1/models/{s.app.state.name}:predict", json={"instances": s.rows})
    assert r.status_code == 200, r.text
    _check_predictions(r.json(), s.want)
    one = s.client.post(f"/v1/models/{s.app.state.name}:predict", json={"instances": s.rows[5:6]})
    _check_predictions(one.json(), s.want.iloc[5:6])


def test_status_and_health(typed):
    r = typed.client.get("/v1/models/typed")
    assert r.status_code == 200
    body = r.json()
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    assert body["classes"] == ["Class_1", "Class_2", "Class_3"]
    kinds = {i["name"]: i["type"] for i in body["inputs"]}
    assert kinds["cat_2"] == "categorical" and kinds["feat_1"] == "numeric" and len(kinds) == 8
    assert body["ignored"] == ["id"] and body["members"] == [{"name": "model", "weight": 1.0, "knn": True}]
    assert typed.client.get("/healthz").json() == {"status": "ok"}


def _instance(typed, **change):
    row = dict(typed.rows[0])
    for k, v in change.items():
        if v is ...:
            del row[k]
        else:
            row[k] = v
    return row


BAD = [
    # (what is sent: a body, or instance changes), status, message
    (b"{not json", 400, "request body is not JSON"),
    (b"", 400, "empty request body"),
    (b"[1, 2]", 400, 'must be a JSON object {"instances"'),
    (b'{"instances": []}', 400, "'instances' must be a non-empty list"),
    (b'{"instances": [1]}', 400, "instance 0: expected an object"),
    (b'{"instances": [{}], "signature_name": "x"}', 400, "unknown key 'signature_name'"),
    ({"feat_3": ...}, 400, "instance 0: missing column 'feat_3'"),
    ({"feat_33": 1}, 400, "instance 0: unknown column 'feat_33' (did you mean 'feat_3'?)"),
    ({"feat_1": "abc"}, 400, "column 'feat_1' is numeric: expected a number, got 'abc'"),
    ({"feat_1": True}, 400, "column 'feat_1' is numeric: expected a number, got True"),
    ({"feat_2": [1]}, 400, "column 'feat_2' is numeric"),
    ({"cat_1": 1.5}, 400, "column 'cat_1' is categorical: expected a string, got 1.5"),
    ({"cat_2": {"a": 1}}, 400, "column 'cat_2' is categorical"),
    ({"feat_1": math.inf}, 400, "column 'feat_1': inf is not a finite number"),
    (b'{"instances": [' + b'{"x": 1}, ' * 9000 + b"{}]}", 413, "request body of"),
]


@pytest.mark.parametrize("sent, status, message", BAD)
def test_a_bad_request_gets_a_4xx_and_the_next_good_one_works(typed, sent, status, message):
    url = "/v1/models/typed:predict"
    if not isinstance(sent, bytes):  # a good row, then the changed one (json.dumps writes inf as Infinity)
        sent = json.dumps({"instances": [typed.rows[1], _instance(typed, **sent)]}).encode()
        message = message.replace("instance 0", "instance 1")
    r = typed.client.post(url, content=sent, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    good = typed.client.post(url, json={"instances": typed.rows[:2]})
    assert good.status_code == 200
    _check_predictions(good.json(), typed.want.iloc[:2])


def test_what_counts_as_missing_and_as_text(typed):
    """null, NaN and 'NA' are a missing number; an integer is a category's digits; null, '' missing."""
    url = "/v1/models/typed:predict"
    rows = [_instance(typed, feat_1=None), _instance(typed, feat_1="NA"), _instance(typed, cat_1=None)]
    rows += [_instance(typed, cat_1=""), _instance(typed, feat_1=math.nan)]
    p = [
        typed.client.post(url, content=json.dumps({"instances": [r]})).json()["predictions"][0] for r in rows
    ]
    assert p[0] == p[1] == p[4] and p[2] == p[3]
    assert typed.client.post(url, json={"instances": [_instance(typed, cat_1=7)]}).status_code == 200


def test_a_run_that_fills_no_missing_values_refuses_null(v1cv):
    row = dict(v1cv.rows[0], feat_2=None)
    r = v1cv.client.post("/v1/models/v1:predict", json={"instances": [row]})
    assert r.status_code == 400
    assert "column 'feat_2': missing value; this run does not fill missing values" in r.json()["error"]


@pytest.mark.parametrize(
    "method, path, status, message",
    [
        ("post", "/v1/models/other:predict", 404, "no model 'other' here; this server has 'typed'"),
        ("get", "/v1/models/other", 404, "no model 'other'"),
        ("get", "/v1/models/typed:predict", 404, "no model"),
        ("put", "/healthz", 405, "Method Not Allowed"),
        ("get", "/nothing", 404, "Not Found"),
    ],
)
def test_wrong_routes(typed, method, path, status, message):
    r = typed.client.request(method.upper(), path, json={"instances": typed.rows[:1]})
    assert r.status_code == status and message in r.json()["error"]


def test_concurrent_clients_are_all_answered_right(typed):
    """16 clients at once, each with its own connection: every answer is its own rows' prediction."""
    url = f"{typed.url}/v1/models/typed:predict"

    def client(i):
        with httpx.Client(timeout=60) as c:
            out = []
            for j in range(4):
                k = (i * 4 + j) % len(typed.rows)
                r = c.post(url, json={"instances": typed.rows[k : k + 3]})
                out.append((k, r.status_code, r.json()))
            return out

    with ThreadPoolExecutor(16) as pool:
        results = [x for out in pool.map(client, range(16)) for x in out]
    assert len(results) == 64
    for k, status, body in results:
        assert status == 200
        _check_predictions(body, typed.want.iloc[k : k + 3])


def test_the_batcher_joins_waiting_requests_into_one_call():
    from ottotrain.serving.app import Batcher

    sizes = []

    def predict(cols):
        sizes.append(len(cols["a"]))
        return np.asarray(cols["a"], dtype=np.float32)[:, None] * 2

    async def main():
        b = Batcher(predict, max_rows=5)
        reqs = [b({"a": np.arange(n, dtype=np.float32) + 10 * n}, n) for n in (1, 2, 2, 3)]
        return await asyncio.gather(*reqs)

    out = asyncio.run(main())
    assert sizes == [5, 3]  # the first three fit in 5 rows, the fourth waits for the next call
    for n, p in zip((1, 2, 2, 3), out):
        np.testing.assert_array_equal(p[:, 0], (np.arange(n) + 10 * n) * 2)


def test_columns_from_instances():
    """The pure-Python request checks: arrays per signature key, missing values, text."""
    from ottotrain.serving.requests import RequestError, to_columns
    from ottotrain.serving.schema import Column, ModelSchema

    schema = ModelSchema(
        1,
        "run",
        "fit",
        ["a", "b"],
        [Column("x y", "x_y", "numeric", True, ["NA", "?"]), Column("c", "c", "categorical", True)],
        ["id"],
        [],
        "1.0.0",
    )
    cols = to_columns(
        [{"x y": 1.5, "c": "u", "id": 9}, {"x y": "?", "c": None}, {"x y": None, "c": 12}], schema
    )
    assert cols["x_y"].dtype == np.float32 and cols["x_y"][0] == 1.5 and np.isnan(cols["x_y"][1:]).all()
    assert cols["c"].tolist() == ["u", "", "12"]
    with pytest.raises(RequestError, match="column 'x y' is numeric: expected a number, got 'oops'"):
        to_columns([{"x y": "oops", "c": "u"}], schema)
    with pytest.raises(RequestError, match="not a finite number"):
        to_columns([{"x y": math.inf, "c": "u"}], schema)


def test_serve_cli_stops_cleanly_on_sigterm_and_ctrl_c(runs, tmp_path):
    """Two real `ottotrain serve` processes (default host: loopback): SIGTERM exits 0, SIGINT 130."""
    export = runs["typed-knn-tabm"][1]
    procs = [
        subprocess.Popen(
            [*python_cmd(), "serve", str(export), "--port", "0", "--name", f"m{i}"],
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(tmp_path),
        )
        for i in range(2)
    ]
    try:
        for i, (p, sig) in enumerate(zip(procs, (signal.SIGTERM, signal.SIGINT))):
            line = p.stderr.readline()
            assert line.startswith(f"Serving m{i} on http://127.0.0.1:"), line
            url = line.split(" on ")[1].split()[0]
            assert httpx.get(url, timeout=60).json()["name"] == f"m{i}"
            p.send_signal(sig)
            assert p.wait(timeout=60) == (0 if sig == signal.SIGTERM else 130)
            rest = p.stderr.read().strip().splitlines()
            assert rest == [f"stopped ({sig.name})"], rest
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--name", "a b"], "--name 'a b': a model name takes letters, digits"),
        (["--port", "{busy}"], "cannot listen there"),
        (["--no-knn-members"], "--no-knn-members applies to a run directory"),
    ],
)
def test_serve_errors(runs, args, message):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = [a.replace("{busy}", str(busy.getsockname()[1])) for a in args]
        r = run_cli("serve", runs["typed-knn-tabm"][1], *args)
    assert message in error_line(r)


def test_serve_needs_a_run_or_an_export(tmp_path):
    r = run_cli("serve", tmp_path, "--port", "0")
    assert "neither a run directory (no status.json) nor an export" in error_line(r)
