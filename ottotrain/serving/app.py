"""The HTTP app (Starlette): TensorFlow Serving's REST routes over one exported run.

- ``POST /v1/models/<name>:predict``: ``{"instances": [...]}`` -> ``{"predictions": [...]}``
  (``requests.predictions``); a bad request gets a 4xx and ``{"error": message}``.
- ``GET /v1/models/<name>``: the model's status (TensorFlow Serving's shape), its inputs and classes.
- ``GET /healthz``: ``{"status": "ok"}`` once the model is loaded.

Requests that arrive while the model is busy are batched: the next call takes every
request waiting (up to ``MAX_BATCH_ROWS`` rows) as one batch, so 16 clients sending one
row each cost a few model calls, not 16. No request waits for others to arrive.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import asdict

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ottotrain.serving.requests import (
    MAX_BODY_BYTES,
    RequestError,
    parse_body,
    predictions,
    to_columns,
)
from ottotrain.serving.schema import ModelSchema

MAX_BATCH_ROWS = 8192
_OK = {"error_code": "OK", "error_message": ""}


class Batcher:
    """One model call at a time, over every request waiting for it."""

    def __init__(self, predict, max_rows=MAX_BATCH_ROWS):
        self.predict = predict
        self.max_rows = max_rows
        self.pending = collections.deque()  # (columns, rows, future)
        self.worker = None
        self.calls = 0

    async def __call__(self, columns: dict, rows: int) -> np.ndarray:
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((columns, rows, fut))
        if self.worker is None or self.worker.done():
            self.worker = asyncio.ensure_future(self._drain())
        return await fut

    async def _drain(self):
        while self.pending:
            batch, rows = [self.pending.popleft()], 0
            rows = batch[0][1]
            while self.pending and rows + self.pending[0][1] <= self.max_rows:
                batch.append(self.pending.popleft())
                rows += batch[-1][1]
            merged = {k: np.concatenate([b[0][k] for b in batch]) for k in batch[0][0]}
            try:
                proba = await run_in_threadpool(self.predict, merged)
            except Exception as e:  # a bug, not a bad request: every request of the batch gets it
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.calls += 1
            start = 0
            for _, n, fut in batch:
                if not fut.done():
                    fut.set_result(proba[start : start + n])
                start += n


async def _read_body(request: Request, limit: int) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise RequestError(f"request body of {int(size):,} bytes; at most {limit:,}", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(f"request body over {limit:,} bytes", 413)
    return bytes(body)


def make_app(name: str, schema: ModelSchema, predict, max_body=MAX_BODY_BYTES) -> Starlette:
    """The app serving ``predict`` (``{key: array} -> probabilities``) under ``name``."""
    batcher = Batcher(predict)

    def _error(message, status):
        return JSONResponse({"error": message}, status_code=status)

    def _check_name(request):
        asked = request.path_params["model"]
        if asked != name:
            raise HTTPException(404, f"no model {asked!r} here; this server has {name!r}")

    async def predict_route(request: Request):
        _check_name(request)
        try:
            columns = to_columns(parse_body(await _read_body(request, max_body)), schema)
        except RequestError as e:
            return _error(str(e), e.status)
        rows = len(next(iter(columns.values())))
        proba = await batcher(columns, rows)
        return JSONResponse({"predictions": predictions(proba, schema.classes)})

    async def status_route(request: Request):
        _check_name(request)
        return JSONResponse(
            {
                "model_version_status": [{"version": "1", "state": "AVAILABLE", "status": _OK}],
                "name": name,
                "source": schema.source,
                "kind": schema.kind,
                "classes": schema.classes,
                "inputs": [
                    {"name": c.name, "key": c.key, "type": c.kind, "missing_allowed": c.missing}
                    for c in schema.columns
                ],
                "ignored": schema.ignored,
                "members": [asdict(m) for m in schema.members],
            }
        )

    async def health(request: Request):
        return JSONResponse({"status": "ok"})

    async def http_error(request: Request, exc: HTTPException):
        return _error(exc.detail, exc.status_code)

    routes = [
        Route("/v1/models/{model}:predict", predict_route, methods=["POST"]),
        Route("/v1/models/{model}", status_route, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.batcher, app.state.name = batcher, name
    return app
