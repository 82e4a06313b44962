"""The HTTP app (Starlette): TensorFlow Serving's and KServe v2's REST routes over one model.

TensorFlow Serving (https://www.tensorflow.org/tfx/serving/api_rest):

- ``POST /v1/models/<name>[/versions/1]:predict``: ``{"instances": [...]}`` ->
  ``{"predictions": [...]}``, or ``{"inputs": {column: [...]}}`` -> ``{"outputs": {...}}``;
- ``GET /v1/models/<name>``: the model's status, inputs and classes; ``GET .../metadata``:
  its signatures.

Open Inference Protocol / KServe v2: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
``/v2/models/<name>``, ``/v2/models/<name>/ready``; ``POST /v2/models/<name>/infer``.

And ``GET /healthz``, ``GET /metrics`` (Prometheus). Every error is a 4xx (or 503 past a
limit) with ``{"error": message}``; no response names a path of this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ottotrain import __version__
from ottotrain.serving.batcher import Batcher
from ottotrain.serving.limits import DEFAULTS, Limits
from ottotrain.serving.metrics import Metrics
from ottotrain.serving.requests import (
    SIGNATURE,
    RequestError,
    RequestReader,
    columnar,
    decode,
    predictions,
    v2_asked,
    v2_outputs,
)
from ottotrain.serving.schema import CATEGORICAL, ModelSchema

ACCESS = logging.getLogger("ottotrain.access")
_OK = {"error_code": "OK", "error_message": ""}
_VERBS = ("predict", "classify", "regress")


def json_body(content) -> bytes:
    """JSON (UTF-8); an error message echoing a lone surrogate from a request, which UTF-8
    cannot hold, is written in ASCII with escapes instead."""
    try:
        return orjson.dumps(content)  # a few times faster than json's
    except TypeError:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def json_response(content, status=200, headers=None) -> Response:
    return Response(json_body(content), status, headers, media_type="application/json")


def _retry_after(status: int, headers=None):
    return {"retry-after": "1"} if status in (429, 503) and not headers else headers


def error(message: str, status: int, headers=None) -> Response:
    return json_response({"error": message}, status, _retry_after(status, headers))


async def read_body(scope, receive, limit: int) -> bytes:
    """The request's body, read from the ASGI ``receive`` (RequestError 413 past ``limit``)."""
    size = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if size is not None and size.isdigit() and int(size) > limit:
        raise RequestError(f"request body of {int(size):,} bytes; at most {limit:,} (--max-body)", 413)
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body += message.get("body", b"")
        if len(body) > limit:
            raise RequestError(f"request body over {limit:,} bytes (--max-body)", 413)
        if not message.get("more_body", False):
            return bytes(body)


class ModelService:
    """One model behind the routes: reads requests, batches them, answers."""

    def __init__(self, name, schema: ModelSchema, predict, limits: Limits, metrics: Metrics):
        self.name, self.schema, self.limits, self.metrics = name, schema, limits, metrics
        self.reader = RequestReader(schema, limits.max_rows)
        self.batcher = Batcher(predict, limits.batch_rows, limits.max_queue, metrics.batch_rows.observe)

    def check_name(self, asked: str):
        if asked != self.name:
            raise RequestError(f"no model {asked!r} here; this server has {self.name!r}", 404)

    async def body(self, scope, receive, deadline: float):
        try:
            async with asyncio.timeout(deadline - time.monotonic()):  # a timer, not a task
                raw = await read_body(scope, receive, self.limits.max_body)
        except TimeoutError:
            raise RequestError(
                "the request body did not arrive within the time budget (--time-budget)", 408
            ) from None
        return decode(raw)

    async def probabilities(self, scope, batch, deadline, row_word: str) -> np.ndarray:
        scope.setdefault("state", {})["rows"] = batch.rows  # for the access log (Request.state's dict)
        proba = await self.batcher(batch, deadline)
        bad = ~np.isfinite(proba).all(axis=1)
        if bad.any():  # values float32 holds, but too large for the model's arithmetic
            raise RequestError(
                f"{row_word} {int(np.argmax(bad))}: the model's output is not finite for these values; "
                "they are far outside the training data's range"
            )
        self.metrics.rows.inc(batch.rows)
        self.metrics.request_rows.observe(batch.rows)
        return proba

    async def predict_v1(self, scope, receive, deadline: float) -> dict:
        doc = await self.body(scope, receive, deadline)
        batch, row_word = self.reader.tf_serving(doc)
        proba = await self.probabilities(scope, batch, deadline, row_word)
        if "instances" in doc:
            return {"predictions": predictions(proba, self.schema.classes)}
        return {"outputs": columnar(proba, self.schema.classes)}

    async def infer_v2(self, scope, receive, deadline: float) -> dict:
        doc = await self.body(scope, receive, deadline)
        batch = self.reader.v2(doc)
        asked = v2_asked(doc)
        proba = await self.probabilities(scope, batch, deadline, "row")
        out = {"model_name": self.name, "model_version": "1"}
        if isinstance(doc.get("id"), str):
            out["id"] = doc["id"]
        out["outputs"] = v2_outputs(proba, self.schema.classes, asked)
        return out

    def status(self) -> dict:
        s = self.schema
        return {
            "model_version_status": [{"version": "1", "state": "AVAILABLE", "status": _OK}],
            "name": self.name,
            "source": Path(s.source).name,  # the run's folder name: no path of this machine
            "kind": s.kind,
            "classes": s.classes,
            "inputs": [
                {"name": c.name, "key": c.key, "type": c.kind, "missing_allowed": c.missing}
                for c in s.columns
            ],
            "ignored": s.ignored,
            "members": [asdict(m) for m in s.members],
        }

    def tf_metadata(self) -> dict:
        def tensor(key, dtype, dims):
            shape = {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}
            return {"dtype": dtype, "tensor_shape": shape, "name": key}

        n_cls = len(self.schema.classes)
        inputs = {
            c.key: tensor(c.key, "DT_STRING" if c.kind == CATEGORICAL else "DT_FLOAT", [-1])
            for c in self.schema.columns
        }
        outputs = {
            "probabilities": tensor("probabilities", "DT_FLOAT", [-1, n_cls]),
            "classes": tensor("classes", "DT_STRING", [-1, n_cls]),
        }
        sig = {"inputs": inputs, "outputs": outputs, "method_name": "tensorflow/serving/predict"}
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": "1"},
            "metadata": {"signature_def": {"signature_def": {SIGNATURE: sig}}},
        }

    def v2_metadata(self) -> dict:
        def dtype(c):
            return "BYTES" if c.kind == CATEGORICAL else "FP32"

        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "tensorflow_savedmodel",
            "inputs": [{"name": c.name, "datatype": dtype(c), "shape": [-1]} for c in self.schema.columns],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.schema.classes)]},
                {"name": "class", "datatype": "BYTES", "shape": [-1]},
            ],
            "parameters": {"classes": self.schema.classes},
        }


def _route_label(path: str) -> str:
    """A bounded set of labels for the metrics, whatever paths are asked."""
    if path.endswith(_VERBS) and ":" in path:
        return "v1_predict"
    if path.endswith("/infer"):
        return "v2_infer"
    if path in ("/metrics", "/healthz") or path.startswith("/v2/health"):
        return path.strip("/").replace("/", "_")
    if path.startswith(("/v1/models/", "/v2/models/", "/v2")):
        return "metadata"
    return "other"


class AccessLog:
    """The access log's JSON lines, handed to the ``ottotrain.access`` logger together at most
    ``FLUSH_SECONDS`` after the first of them (and at shutdown): one logging call per request
    cost as much as the rest of a one-row request's own work."""

    FLUSH_SECONDS = 0.05

    def __init__(self):
        self.pid, self.lines, self.second, self.stamp = os.getpid(), [], None, ""

    def add(self, scope, status: int, seconds: float):
        now = int(time.time())
        if now != self.second:
            self.second, self.stamp = now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        host, port = scope.get("client") or ("", 0)
        path = json.dumps(scope["path"][:200], ensure_ascii=True)
        rows = (scope.get("state") or {}).get("rows", 0)
        # The client's address and the method need no escaping (an IP address; h11 lets
        # only a token's characters through as a method): no json.dumps for them.
        self.lines.append(
            f'{{"pid": {self.pid}, "time": "{self.stamp}", "client": "{host}:{port}", '
            f'"method": "{scope["method"]}", "path": {path}, "status": {status}, '
            f'"ms": {round(seconds * 1000, 3)}, "rows": {rows}}}'
        )
        if len(self.lines) == 1:
            asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)

    def flush(self):
        if self.lines:
            lines, self.lines = self.lines, []
            ACCESS.info("\n".join(lines))


class Observed:
    """ASGI middleware: each request's status, time and rows go to the metrics and the access log."""

    def __init__(self, app, metrics: Metrics, access_log: AccessLog | None):
        self.app, self.metrics, self.access_log = app, metrics, access_log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.monotonic(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.monotonic() - t0
            self.metrics.observe(_route_label(scope["path"]), status[0], seconds)
            if self.access_log is not None:
                self.access_log.add(scope, status[0], seconds)


class PredictRoutes:
    """ASGI middleware: a POST to this model's own predict or infer path (version 1, the name
    exactly) is answered here, without Starlette's routing, ``Request`` and ``Response``
    objects (which cost a fifth of a one-row request's own time); every other request, these
    paths' other methods and names included, goes on to the routes, whose answers are the same."""

    def __init__(self, app, service: ModelService):
        self.app, self.svc = app, service
        n = service.name
        v1, v2 = service.predict_v1, service.infer_v2
        self.paths = {
            f"/v1/models/{n}:predict": v1,
            f"/v1/models/{n}/versions/1:predict": v1,
            f"/v2/models/{n}/infer": v2,
            f"/v2/models/{n}/versions/1/infer": v2,
        }

    async def __call__(self, scope, receive, send):
        fn = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            fn = self.paths.get(scope["path"])
        if fn is None:
            return await self.app(scope, receive, send)
        try:
            content = await fn(scope, receive, time.monotonic() + self.svc.limits.time_budget)
            status, headers = 200, ()
        except RequestError as e:
            content, status = {"error": str(e)}, e.status
            headers = ((b"retry-after", b"1"),) if status in (429, 503) else ()
        except ClientDisconnect:
            return  # nobody to answer
        body = json_body(content)
        head = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": head + list(headers)})
        await send({"type": "http.response.body", "body": body})


_ANY, _GET, _POST = ["GET", "POST", "PUT", "DELETE", "PATCH"], ["GET"], ["POST"]


def _allow(request, method):
    if request.method != method:
        raise RequestError(f"{request.method} is not allowed here; use {method}", 405)


def _v1_routes(svc: ModelService) -> list[tuple]:
    """TensorFlow Serving's routes: (path, handler(request, deadline), methods)."""

    async def v1(request, deadline, model, version, verb):
        svc.check_name(model)
        if version != "1":
            raise RequestError(f"model {model!r} has version 1 only, not {version!r}", 404)
        if not verb:
            _allow(request, "GET")
            return json_response(svc.status())
        if verb != "predict":
            raise RequestError(f"':{verb}' is not served here; use ':predict'", 404)
        _allow(request, "POST")
        return json_response(await svc.predict_v1(request.scope, request.receive, deadline))

    async def v1_model(request, deadline):
        model, _, verb = request.path_params["model"].partition(":")
        return await v1(request, deadline, model, "1", verb)

    async def v1_version(request, deadline):
        version, _, verb = request.path_params["version"].partition(":")
        return await v1(request, deadline, request.path_params["model"], version, verb)

    async def v1_metadata(request, deadline):
        svc.check_name(request.path_params["model"])
        return json_response(svc.tf_metadata())

    return [
        ("/v1/models/{model}", v1_model, _ANY),
        ("/v1/models/{model}/versions/{version}", v1_version, _ANY),
        ("/v1/models/{model}/metadata", v1_metadata, _GET),
    ]


def _v2_routes(svc: ModelService) -> list[tuple]:
    """The Open Inference Protocol's routes, and /healthz and /metrics."""

    async def v2_model(request, deadline):
        svc.check_name(request.path_params["model"])
        return json_response(svc.v2_metadata())

    async def v2_ready(request, deadline):
        svc.check_name(request.path_params["model"])
        return json_response({"name": svc.name, "ready": not svc.batcher.stopping})

    async def v2_infer(request, deadline):
        svc.check_name(request.path_params["model"])
        return json_response(await svc.infer_v2(request.scope, request.receive, deadline))

    async def ready(request, deadline):
        if svc.batcher.stopping:
            return error("the server is shutting down", 503)
        return json_response({"ready": True})

    async def metrics(request, deadline):
        body, media = svc.metrics.exposition()
        return Response(body, media_type=media)

    def constant(content):
        async def answer(request, deadline):
            return json_response(content)

        return answer

    return [
        ("/v2", constant({"name": "ottotrain", "version": __version__, "extensions": []}), _GET),
        ("/v2/health/live", constant({"live": True}), _GET),
        ("/v2/health/ready", ready, _GET),
        ("/v2/models/{model}", v2_model, _GET),
        ("/v2/models/{model}/versions/{version}", v2_model, _GET),
        ("/v2/models/{model}/ready", v2_ready, _GET),
        ("/v2/models/{model}/infer", v2_infer, _POST),
        ("/v2/models/{model}/versions/{version}/infer", v2_infer, _POST),
        ("/healthz", constant({"status": "ok"}), _GET),
        ("/metrics", metrics, _GET),
    ]


def _routes(svc: ModelService) -> list[Route]:
    def handler(fn):
        async def route(request: Request):
            deadline = time.monotonic() + svc.limits.time_budget
            try:
                return await fn(request, deadline)
            except RequestError as e:
                return error(str(e), e.status)

        return route

    return [Route(path, handler(fn), methods=m) for path, fn, m in _v1_routes(svc) + _v2_routes(svc)]


def make_app(name: str, schema: ModelSchema, predict, limits: Limits = DEFAULTS, access_log=False):
    """The app serving ``predict`` (``(numbers, strings) -> probabilities``) under ``name``."""
    metrics = Metrics()
    svc = ModelService(name, schema, predict, limits, metrics)

    async def http_error(request: Request, exc: HTTPException):
        return error(exc.detail, exc.status_code, exc.headers)

    async def crash(request: Request, exc: Exception):  # a bug: logged by uvicorn, no traceback sent
        return error("internal error; the server's log has the details", 500)

    log = AccessLog() if access_log else None

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if log is not None:
            log.flush()  # the lines of the last requests

    handlers = {HTTPException: http_error, Exception: crash}
    app = Starlette(routes=_routes(svc), exception_handlers=handlers, lifespan=lifespan)
    app.state.service, app.state.name = svc, name
    app.add_middleware(PredictRoutes, service=svc)
    app.add_middleware(Observed, metrics=metrics, access_log=log)  # added last: outside PredictRoutes
    return app
