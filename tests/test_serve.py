"""ottotrain serve: real servers on free loopback ports, called with a real HTTP client (httpx).

Good requests match ``ottotrain predict``; each bad request gets its 4xx and one message
naming the column, and the next good request still works. The runs are those of
tests/export_runs.py (trained once per session).
"""

import asyncio
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


class Served:
    """A server of ``target`` in a thread of this process, on a free loopback port."""

    def __init__(self, target, name, **limits):
        from ottotrain.serving.app import make_app
        from ottotrain.serving.limits import Limits
        from ottotrain.workflows import serve

        predict, self.schema = serve.load(target)
        self.limits = Limits(**limits)
        self.app = make_app(name, self.schema, predict, self.limits)
        self.server = serve.server(self.app, self.limits)
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
    """The typed-columns + KNN + TabM export, served from its export folder (256 KiB bodies, 50 rows,
    a 1 s header timeout, 40 connections)."""
    run, export, test, sub = runs["typed-knn-tabm"]
    s = Served(export, "typed", max_body=256 << 10, max_rows=50, header_timeout=1.0, max_connections=40)
    s.rows, s.want = export_runs.request_rows(test, s.schema), pd.read_csv(sub)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def v1cv(runs):
    """The 1.0 cv run directory, served directly (no export written); it fills no missing values."""
    run, export, test, sub = runs["1.0-cv"]
    s = Served(run, "v1")
    s.rows, s.want = export_runs.request_rows(test, s.schema), pd.read_csv(sub)
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


class Raw(str):
    """A JSON token written as is into the request (json.dumps cannot write 1e308 or a lone surrogate)."""


DEEP = b"[" * 100_000 + b"]" * 100_000  # 200 kB
BAD = [
    # (what is sent: a body, or instance changes), status, message
    (b"{not json", 400, "request body is not JSON"),
    (b"", 400, "empty request body"),
    (b"[1, 2]", 400, 'must be a JSON object {"instances"'),
    (b'{"instances": []}', 400, "'instances' must be a non-empty list"),
    (b'{"instances": [1]}', 400, "instance 0: expected an object"),
    (b'{"instances": [{}], "signature": "x"}', 400, "unknown key 'signature'"),
    (
        b'{"instances": [{}], "signature_name": "x"}',
        400,
        "signature_name 'x': this model has 'serving_default'",
    ),
    (b'{"instances": [{}], "inputs": {}}', 400, 'must be a JSON object {"instances"'),
    (b'{"inputs": [1]}', 400, "'inputs' must be an object {column: [value, ...], ...}"),
    (b'{"inputs": {"feat_1": [1, 2], "feat_2": [1]}}', 400, "'inputs': missing column"),
    (b"\xff\xfe{}", 400, "request body is not UTF-8 (byte 0"),
    (b'{"\\ud800": 1}', 400, "must be a JSON object"),
    (DEEP, 400, "nested too deep"),
    ({"feat_3": ...}, 400, "instance 0: missing column 'feat_3'"),
    ({"feat_33": 1}, 400, "instance 0: unknown column 'feat_33' (did you mean 'feat_3'?)"),
    ({Raw('"x\\ud800"'): 1}, 400, "instance 0: a column name: 'x\ud800' holds a lone surrogate"),
    ({"feat_1": "abc"}, 400, "column 'feat_1' is numeric: expected a number, got 'abc'"),
    ({"feat_1": True}, 400, "column 'feat_1' is numeric: expected a number, got True"),
    ({"feat_2": [1]}, 400, "column 'feat_2' is numeric"),
    ({"cat_1": 1.5}, 400, "column 'cat_1' is categorical: expected a string, got 1.5"),
    ({"cat_2": {"a": 1}}, 400, "column 'cat_2' is categorical"),
    ({"cat_2": Raw('"\\udc80"')}, 400, "instance 0: column 'cat_2': '\udc80' holds a lone surrogate"),
    ({"feat_1": math.inf}, 400, "column 'feat_1': inf is not a finite number"),
    ({"feat_1": Raw("-Infinity")}, 400, "column 'feat_1': -inf is not a finite number"),
    ({"feat_1": Raw("1e308")}, 400, "instance 0: column 'feat_1': 1e+308 is out of float32's range"),
    ({"feat_4": Raw("-1e308")}, 400, "instance 0: column 'feat_4': -1e+308 is out of float32's range"),
    ({"feat_6": Raw("1e39")}, 400, "instance 0: column 'feat_6': 1e+39 is out of float32's range"),
    ({"feat_1": Raw("1e400")}, 400, "column 'feat_1': inf is not a finite number"),
    ({"feat_2": Raw("1" + "0" * 400)}, 400, "column 'feat_2': an integer of 401 digits is out of float32's"),
    ({"feat_3": Raw("1" + "0" * 5000)}, 400, "request body is not JSON (Exceeds the limit (4300 digits)"),
    (
        b'{"instances": [' + b'{"x": 1}, ' * 51 + b"{}]}",
        413,
        "52 rows in one request; at most 50 (--max-rows)",
    ),
    (
        b'{"instances": [' + b'{"x": 1}, ' * 30_000 + b"{}]}",
        413,
        "request body of 300,019 bytes; at most 262,144 (--max-body)",
    ),
]


def _body(typed, change) -> bytes:
    """A good row, then the changed one; Raw values and keys go into the JSON text as they are."""
    raws = {}
    for k, v in list(change.items()):
        if isinstance(k, Raw):
            change[f"@key{len(raws)}@"] = change.pop(k)
            raws[f'"@key{len(raws)}@"'] = k
        elif isinstance(v, Raw):
            change[k] = f"@{k}@"
            raws[f'"@{k}@"'] = v
    text = json.dumps({"instances": [typed.rows[1], _instance(typed, **change)]})
    for placeholder, raw in raws.items():
        text = text.replace(placeholder, raw)
    return text.encode()


@pytest.mark.parametrize("sent, status, message", BAD)
def test_a_bad_request_gets_a_4xx_and_the_next_good_one_works(typed, sent, status, message):
    url = "/v1/models/typed:predict"
    if not isinstance(sent, bytes):  # json.dumps writes inf as Infinity
        sent = _body(typed, dict(sent))
        message = message.replace("instance 0", "instance 1")
    r = typed.client.post(url, content=sent, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
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
        ("get", "/v1/models/typed:predict", 405, "GET is not allowed here; use POST"),
        ("post", "/v1/models/typed", 405, "POST is not allowed here; use GET"),
        ("post", "/v1/models/typed:classify", 404, "':classify' is not served here; use ':predict'"),
        ("post", "/v1/models/typed/versions/2:predict", 404, "has version 1 only, not '2'"),
        ("get", "/v2/models/typed/infer", 405, "Method Not Allowed"),
        ("post", "/v2/models/other/infer", 404, "no model 'other' here"),
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


def _batch(n, start=0):
    from ottotrain.serving.requests import Batch

    return Batch(np.arange(start, start + n, dtype=np.float32)[:, None], None)


def _double(sizes, seconds=0.0):
    def predict(numbers, strings):
        sizes.append(len(numbers))
        time.sleep(seconds)
        return numbers * 2

    return predict


def test_the_batcher_joins_waiting_requests_into_one_call_and_chunks_big_ones():
    from ottotrain.serving.batcher import Batcher

    sizes = []

    async def main():
        b = Batcher(_double(sizes), batch_rows=5, direct_seconds=0)
        far = time.monotonic() + 60
        return await asyncio.gather(*(b(_batch(n, 10 * n), far) for n in (1, 2, 2, 3, 12)))

    out = asyncio.run(main())
    assert sizes == [5, 3, 5, 5, 2]  # 1+2+2, then 3, then the 12 in chunks of at most 5
    for n, p in zip((1, 2, 2, 3, 12), out):
        np.testing.assert_array_equal(p[:, 0], (np.arange(n) + 10 * n) * 2)


def test_a_small_request_to_an_idle_fast_model_skips_the_queue_and_a_slow_model_batches():
    from ottotrain.serving.batcher import Batcher

    async def main(seconds):
        sizes = []
        # "fast": calls under 1 s on average (every call here); "slow": over 1 ms (each sleeps 10)
        b = Batcher(_double(sizes, seconds), batch_rows=50, direct_seconds=1.0 if not seconds else 1e-3)
        far = time.monotonic() + 60
        first = await b(_batch(2), far)  # idle: computed at once, no task started
        direct = b.worker is None
        for _ in range(30):
            await b(_batch(1), far)  # the model's mean time per call is learnt from these
        out = await asyncio.gather(*(b(_batch(1, 10 * i), far) for i in range(6)))
        return sizes, direct, first, out

    sizes, direct, first, out = asyncio.run(main(0.0))
    assert direct and sizes == [2] + [1] * 36  # every request computed as it came
    np.testing.assert_array_equal(first[:, 0], [0, 2])
    assert [float(p[0, 0]) for p in out] == [20.0 * i for i in range(6)]
    sizes, direct, first, out = asyncio.run(main(0.01))
    assert direct and sizes[:31] == [2] + [1] * 30 and sizes[31:] == [6]  # then the waiting ones joined
    assert [float(p[0, 0]) for p in out] == [20.0 * i for i in range(6)]


def test_a_small_request_that_others_arrive_with_joins_them_in_one_call():
    """The server says how many requests it has under way (uvicorn's tasks): alone, a small
    request to a fast model is computed at once; with others, they share one call (where the
    model's calls take ``share_seconds`` or more)."""
    from ottotrain.serving.batcher import Batcher

    async def main(in_flight, share_seconds=0.0):
        sizes = []
        b = Batcher(_double(sizes), batch_rows=50, direct_seconds=1.0, share_seconds=share_seconds)
        b.in_flight = lambda: in_flight
        far = time.monotonic() + 60
        out = await asyncio.gather(*(b(_batch(1, 10 * i), far) for i in range(3)))
        return sizes, [float(p[0, 0]) for p in out]

    assert asyncio.run(main(1)) == ([1, 1, 1], [0.0, 20.0, 40.0])
    assert asyncio.run(main(3)) == ([3], [0.0, 20.0, 40.0])
    # a model faster than the queue's hops: sharing its calls would cost more than it saves
    assert asyncio.run(main(3, share_seconds=1.0)) == ([1, 1, 1], [0.0, 20.0, 40.0])


def test_the_batcher_refuses_past_its_queue_its_time_budget_and_once_stopped():
    from ottotrain.serving.batcher import Batcher
    from ottotrain.serving.requests import RequestError

    sizes = []

    async def main():
        b = Batcher(_double(sizes, 0.05), batch_rows=10, max_queue=2)
        soon, far = time.monotonic() + 0.12, time.monotonic() + 60
        got = await asyncio.gather(
            b(_batch(100), soon), b(_batch(1), far), b(_batch(1), far), return_exceptions=True
        )
        late = asyncio.ensure_future(b(_batch(1000), far))
        await asyncio.sleep(0.02)
        b.stop()
        got.append((await asyncio.gather(late, return_exceptions=True))[0])
        got.append((await asyncio.gather(b(_batch(1), far), return_exceptions=True))[0])
        return got

    out = asyncio.run(main())
    statuses = [(e.status, str(e)) if isinstance(e, RequestError) else "ok" for e in out]
    assert statuses[0] == (
        503,
        "the request took longer than its time budget (--time-budget); send fewer rows",
    )
    assert (
        statuses[1] == "ok" and statuses[2][0] == 429 and "requests waiting (--max-queue)" in statuses[2][1]
    )
    assert statuses[3] == (503, "the server is shutting down") and statuses[4][0] == 503
    assert sum(sizes) < 100 + 1 + 1000  # neither the late rows of the first nor the stopped one's


def _schema():
    from ottotrain.serving.schema import Column, ModelSchema

    return ModelSchema(
        1,
        "run",
        "fit",
        ["a", "b"],
        [Column("x y", "x_y", "numeric", True, ["NA", "?"]), Column("c", "c", "categorical", True)],
        ["id"],
        [],
        "1.0.0",
    )


def test_requests_are_read_into_one_matrix_whatever_their_shape():
    """The pure-Python request reading: rows, columns (by name or key) and v2 tensors give one Batch."""
    from ottotrain.serving.requests import RequestError, RequestReader

    reader = RequestReader(_schema(), max_rows=10)
    rows = reader.instances(
        [{"x y": 1.5, "c": "u", "id": 9}, {"x y": "?", "c": None}, {"x y": None, "c": 12}]
    )
    assert rows.numbers.dtype == np.float32 and rows.numbers.shape == (3, 1)
    assert rows.numbers[0, 0] == 1.5 and np.isnan(rows.numbers[1:]).all()
    assert rows.strings.tolist() == [["u"], [""], ["12"]]
    cols = reader.columns({"x_y": [1.5, "?", None], "c": ["u", None, 12], "id": [1, 2, 3]})
    v2 = reader.v2(
        {
            "inputs": [
                {"name": "numbers", "shape": [3, 1], "datatype": "FP32", "data": [[1.5], ["?"], [None]]},
                {"name": "strings", "shape": [3, 1], "datatype": "BYTES", "data": ["u", None, 12]},
            ]
        }
    )
    for other in (cols, v2):
        np.testing.assert_array_equal(other.numbers, rows.numbers)
        assert other.strings.tolist() == rows.strings.tolist()
    with pytest.raises(
        RequestError, match="instance 0: column 'x y' is numeric: expected a number, got 'oops'"
    ):
        reader.instances([{"x y": "oops", "c": "u"}])
    with pytest.raises(RequestError, match="row 1: column 'x y': 1e\\+39 is out of float32's range"):
        reader.columns({"x y": [1, 1e39], "c": ["a", "b"]})
    with pytest.raises(RequestError, match="input 'numbers': shape \\[2, 1\\] does not match its 3 values"):
        reader.v2({"inputs": [{"name": "numbers", "shape": [2, 1], "data": [1, 2, 3]}]})


def _raw(url, data: bytes, wait=10.0) -> bytes:
    """What the server answers on a raw socket to ``data`` (until it closes the connection)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_bad_http_gets_a_json_400_and_a_slow_header_a_408(typed):
    head = b"POST /v1/models/typed:predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
    out = _raw(typed.url, head)
    assert out.startswith(b"HTTP/1.1 400 ") and b"application/json" in out
    assert json.loads(out.split(b"\r\n\r\n", 1)[1]) == {"error": "invalid HTTP request: bad Content-Length"}
    t0 = time.monotonic()
    out = _raw(typed.url, b"POST /v1/models/typed:predict HTTP/1.1\r\nHost: x\r\n")  # never finished
    assert out.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s (--header-timeout)" in out
    assert 0.9 < time.monotonic() - t0 < 8
    assert typed.client.get("/healthz").status_code == 200


def _answer(url, method, path, body: bytes, length=None) -> tuple[bytes, dict, bytes]:
    """(status line, headers but the date, body) of one request on its own connection
    (``length``: the Content-Length said, where it is not the body's)."""
    length = len(body) if length is None else length
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {length}\r\n\r\n"
    out = _raw(url, head.encode() + body)
    top, rest = out.split(b"\r\n\r\n", 1)
    status, *lines = top.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    headers.pop(b"date")
    return status, headers, rest


@pytest.mark.parametrize(
    "body, status",
    [
        ("good", b"HTTP/1.1 200 OK"),
        (b'{"inputs": [{"name": "numbers"}]}', b"HTTP/1.1 400 Bad Request"),
        (b"", b"HTTP/1.1 413 Request Entity Too Large"),  # 300 KiB said: refused before reading
    ],
)
def test_the_predict_routes_answer_as_the_other_routes(typed, body, status):
    """A POST to the model's own infer path is answered before Starlette's routing; the same
    request through the routes (another version's path) gets the same bytes back."""
    if body == "good":
        kinds = {c.name: "BYTES" if c.kind == "categorical" else "FP32" for c in typed.schema.columns}
        inputs = [
            {"name": k, "shape": [4], "datatype": d, "data": [r[k] for r in typed.rows[:4]]}
            for k, d in kinds.items()
        ]
        body = json.dumps({"inputs": inputs}).encode()
    length = None if body else 300 << 10
    fast = _answer(typed.url, "POST", "/v2/models/typed/infer", body, length)
    routed = _answer(typed.url, "POST", "/v2/models/typed/versions/2/infer", body, length)
    assert fast == routed and fast[0] == status, fast
    assert fast[1][b"content-type"] == b"application/json" and json.loads(fast[2])


def test_a_response_leaves_in_one_write():
    """uvicorn writes a head, a body and an end: OneWrite sends the head with the body; a 100
    Continue goes at once, and a head held when the connection closes is written first."""
    from ottotrain.serving.protocol import OneWrite

    class Recorder:
        def __init__(self):
            self.writes = []

        def write(self, data):
            self.writes.append(bytes(data))

        def close(self):
            self.writes.append("closed")

        def is_closing(self):
            return False

    t = OneWrite(Recorder())
    for data in (b"HTTP/1.1 200 OK\r\n\r\n", b'{"a": 1}', b""):
        t.write(data)
    t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    t.write(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
    t.close()
    assert t.transport.writes == [
        b'HTTP/1.1 200 OK\r\n\r\n{"a": 1}',
        b"",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\n\r\n",
        "closed",
    ]
    assert t.is_closing() is False  # the rest of the transport's interface, passed through


def test_past_the_connection_cap_a_json_503_and_the_server_goes_on(typed):
    import socket

    host, port = typed.url.removeprefix("http://").split(":")
    typed.client.get("/healthz")  # the client's own connection is open
    held = [socket.create_connection((host, int(port))) for _ in range(39)]  # 40 with the client's
    try:
        time.sleep(0.2)
        out = _raw(typed.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 503 ") and b"too many open connections (at most 40" in out
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert typed.client.get("/healthz").json() == {"status": "ok"}


def test_tf_serving_columns_signature_name_metadata_and_no_paths(typed):
    url = "/v1/models/typed:predict"
    cols = {k: [r.get(k) for r in typed.rows[:3]] for k in typed.rows[0]}
    r = typed.client.post(url, json={"inputs": cols, "signature_name": "serving_default"})
    assert r.status_code == 200, r.text
    rows = typed.client.post("/v1/models/typed/versions/1:predict", json={"instances": typed.rows[:3]}).json()
    got = r.json()["outputs"]
    assert got["classes"] == [p["class"] for p in rows["predictions"]]
    np.testing.assert_allclose(got["probabilities"], typed.want.iloc[:3, 1:].to_numpy(), atol=1e-5)
    meta = typed.client.get("/v1/models/typed/metadata").json()
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert (
        sig["inputs"]["cat_1"]["dtype"] == "DT_STRING"
        and sig["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    )
    status = typed.client.get("/v1/models/typed").json()
    assert status["source"] == "typed-knn-tabm"  # the folder's name, no path of the machine


def test_kserve_v2_routes_and_infer(typed):
    c = typed.client
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").json() == {"ready": True}
    assert c.get("/v2/models/typed/ready").json() == {"name": "typed", "ready": True}
    meta = c.get("/v2/models/typed").json()
    assert meta["name"] == "typed" and {"name": "cat_2", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
    kinds = {i["name"]: i["datatype"] for i in meta["inputs"]}
    inputs = [
        {"name": k, "shape": [4], "datatype": kinds[k], "data": [r[k] for r in typed.rows[:4]]} for k in kinds
    ]
    r = c.post(
        "/v2/models/typed/infer", json={"id": "q1", "inputs": inputs, "outputs": [{"name": "probabilities"}]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "q1" and body["model_name"] == "typed" and len(body["outputs"]) == 1
    out = body["outputs"][0]
    assert out["name"] == "probabilities" and out["shape"] == [4, 3] and out["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(out["data"], (4, 3)), typed.want.iloc[:4, 1:].to_numpy(), atol=1e-5)
    bad = c.post("/v2/models/typed/infer", json={"inputs": inputs, "outputs": [{"name": "logits"}]})
    assert bad.status_code == 400 and "'logits' is no output of this model" in bad.json()["error"]


def test_metrics_count_requests_errors_rows_and_batches(typed):
    typed.client.post("/v1/models/typed:predict", json={"instances": typed.rows[:3]})
    typed.client.post("/v1/models/typed:predict", content=b"{")
    text = typed.client.get("/metrics").text
    assert 'ottotrain_requests_total{code="200",route="v1_predict"}' in text
    assert 'ottotrain_requests_total{code="400",route="v1_predict"}' in text
    assert "ottotrain_request_seconds_bucket{" in text and "ottotrain_batch_rows_bucket{" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("ottotrain_rows_total ")]
    assert rows and float(rows[0].split()[1]) >= 3


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
            assert rest[0].startswith("Model computed by SavedModel (not TensorFlow Lite: "), rest
            assert rest[1:] == [f"stopped ({sig.name})"], rest
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-rows", "0"], "Invalid value for '--max-rows': 0 is not in the range x>=1"),
        (["--time-budget", "0"], "Invalid value for '--time-budget': 0.0 is not in the range x>0"),
    ],
)
def test_serve_limits_are_checked_before_anything_loads(tmp_path, args, message):
    r = run_cli("serve", tmp_path, *args)
    assert r.exit_code == 2 and message in r.output


def test_serve_needs_a_run_or_an_export(tmp_path):
    r = run_cli("serve", tmp_path, "--port", "0")
    assert "neither a run directory (no status.json) nor an export" in error_line(r)


def test_two_workers_answer_on_one_port_and_metrics_add_up(runs, tmp_path):
    """`serve --workers 2`: both processes answer (their pids in the access log), /metrics sums them."""
    export = runs["cv"][1]
    p = subprocess.Popen(
        [*python_cmd(), "serve", str(export), "--port", "0", "--name", "w", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(tmp_path),
    )
    try:
        line = p.stderr.readline()
        assert line.startswith("Serving w on http://127.0.0.1:") and "(2 workers, loaded in" in line, line
        url = line.split(" on ")[1].split()[0]
        schema = json.loads((export / "assets.extra" / "ottotrain.json").read_text())
        row = {c["name"]: (1.0 if c["kind"] == "numeric" else "a") for c in schema["columns"]}

        def ask(i):
            with httpx.Client(timeout=60) as c:  # a new connection each time
                return c.post(url + ":predict", json={"instances": [row]}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(ask, range(48))) == {200}
        text = httpx.get(url.split("/v1/")[0] + "/metrics", timeout=60).text
        total = [
            ln
            for ln in text.splitlines()
            if ln.startswith('ottotrain_requests_total{code="200",route="v1_predict"')
        ]
        assert total and float(total[0].split()[-1]) == 48
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0
        pids = {json.loads(ln)["pid"] for ln in p.stdout.read().splitlines() if ln.startswith("{")}
        assert len(pids) == 2
        assert p.stderr.read().strip().splitlines()[-1] == "stopped (SIGTERM)"
    finally:
        if p.poll() is None:
            p.kill()


def test_a_signal_stops_the_model_queue_at_once(runs):
    """SIGTERM's handler tells the batcher: rows not yet computed are refused, not computed."""
    s = Served(runs["cv"][1], "stop")
    try:
        assert not s.app.state.service.batcher.stopping
        s.server.handle_exit(signal.SIGTERM, None)
        deadline = time.monotonic() + 10
        while not s.app.state.service.batcher.stopping:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert s.server.stopped_by == signal.SIGTERM
    finally:
        s.stop()
