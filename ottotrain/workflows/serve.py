"""``ottotrain serve``: one run or export behind an HTTP JSON API (``serving.app``) under uvicorn.

An export folder is loaded with TensorFlow alone; a run directory is opened as ``export``
opens it and served through the same in-graph function, without writing it anywhere. Both
are called through the packed function (one float32 matrix in), traced once.
Ctrl-C and SIGTERM stop the server after the requests under way (uvicorn's graceful
shutdown; rows of a big request not yet computed are refused with a 503 at once);
``serve`` then returns instead of re-raising the signal. With ``workers`` > 1, that many
processes each load the model and accept on the one listening socket (the kernel spreads
the connections); this process only supervises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import queue
import re
import resource
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn

from ottotrain import engine
from ottotrain.errors import DataError, RunError
from ottotrain.execute.jobs import cores
from ottotrain.runs.rundir import STATUS
from ottotrain.serving.app import ACCESS, make_app
from ottotrain.serving.limits import DEFAULTS, Limits
from ottotrain.serving.protocol import LimitedH11Protocol
from ottotrain.serving.schema import CATEGORICAL, ModelSchema
from ottotrain.workflows.stack.export import graph_plan, open_any_graph
from ottotrain.workflows.stack.predict import is_stack_run

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# TensorFlow Lite serves a model only where its probabilities are within this of the
# SavedModel's on every probe row (rows of every size, some far outside any training range).
LITE_TOLERANCE = 1e-5


def load(target, no_knn_members=False, lite=True, threads=None, warm_rows=1):
    """(packed predict function, ModelSchema) of an export folder or a run directory, called
    once on a row of zeros, and on ``warm_rows`` rows (a model call's most, --batch-rows): the
    first calls' set-up (TensorFlow Lite's buffers for that many rows) is paid here, not by
    the first requests, and the memory a server holds after its start does not grow with them.

    With ``lite``, the function is TensorFlow Lite's where the model converts and matches the
    SavedModel on probe rows (``LITE_TOLERANCE``), the SavedModel's otherwise; either way its
    ``runtime`` says which (and why not TensorFlow Lite)."""
    predict, schema = _load(target, no_knn_members)
    if lite:
        predict = _lite_or_saved(predict, schema, threads or cores())
    else:
        predict.runtime = "SavedModel (--no-lite)"
    n_num = sum(c.kind != CATEGORICAL for c in schema.columns)
    n_txt = len(schema.columns) - n_num
    for rows in sorted({1, warm_rows}):
        predict(np.zeros((rows, n_num), np.float32), np.full((rows, n_txt), "", object) if n_txt else None)
    return predict, schema


def probe_rows(schema: ModelSchema, n=48, seed=0):
    """(numbers, strings) rows to compare two runtimes on: zeros, sparse counts, signed values
    of several sizes, missing values where allowed, empty and unseen strings."""
    rng = np.random.default_rng(seed)
    num = [c for c in schema.columns if c.kind != CATEGORICAL]
    txt = [c for c in schema.columns if c.kind == CATEGORICAL]
    counts = rng.poisson(2.0, (n, len(num))) * (rng.random((n, len(num))) < 0.3)
    signed = rng.normal(0, 1, (n, len(num))) * 10.0 ** rng.integers(-2, 3, (n, 1))
    x = np.where(np.arange(n)[:, None] % 2 == 0, counts, signed).astype(np.float32)
    x[0] = 0
    gaps = [j for j, c in enumerate(num) if c.missing]
    if gaps:
        x[1::3, gaps] = np.where(rng.random((len(x[1::3]), len(gaps))) < 0.3, np.nan, x[1::3][:, gaps])
    strings = None
    if txt:
        strings = rng.choice(np.array(["", "a", "0", "other value"], dtype=object), (n, len(txt)))
    return x, strings


def _lite_or_saved(saved, schema: ModelSchema, threads: int):
    """TensorFlow Lite's function where it converts and gives the SavedModel's answers on
    ``probe_rows`` (batches of 1 and of all), else ``saved``; ``runtime`` set on the one chosen."""
    knn_rows = engine.export.KNN_CHUNK if any(m.knn for m in schema.members) else None
    try:
        fast = engine.lite.lite_function(saved.module, threads=threads, max_rows=knn_rows)
    except engine.lite.LiteUnavailable as e:
        saved.runtime = f"SavedModel (not TensorFlow Lite: {e})"
        return saved
    x, s = probe_rows(schema)
    want = saved(x, s)
    part = (lambda a, b: None) if s is None else (lambda a, b: s[a:b])
    got = np.concatenate([fast(x[:1], part(0, 1)), fast(x[1:], part(1, None))])
    both = np.isfinite(want)
    diff = float(np.abs(got - want)[both].max(initial=0.0))
    if not diff <= LITE_TOLERANCE or not np.array_equal(both, np.isfinite(got)):
        saved.runtime = f"SavedModel (TensorFlow Lite differs from it by {diff:.2g} on probe rows)"
        return saved
    fast.runtime = f"TensorFlow Lite (within {diff:.1g} of the SavedModel on probe rows)"
    fast.module = saved.module
    return fast


def _load(target, no_knn_members):
    target = Path(target)
    if (target / "saved_model.pb").is_file():
        if no_knn_members:
            raise RunError(
                f"{target}: --no-knn-members applies to a run directory; export it with the option"
            )
        schema = ModelSchema.read(target)
        keys = [[c.key for c in schema.columns if (c.kind == CATEGORICAL) == t] for t in (False, True)]
        return engine.export.packed_function(target, keys), schema
    if (target / STATUS).is_file():
        module, schema = open_any_graph(target, no_knn_members, "serve")
        return engine.export.packed_function(module), schema
    raise RunError(
        f"{target}: neither a run directory (no {STATUS}) nor an export (no saved_model.pb); "
        "give a run made by fit, cv or stack, or a folder made by 'ottotrain export'"
    )


def model_name(target, name=None) -> str:
    name = name if name is not None else Path(target).resolve().name
    if not _NAME.fullmatch(name):
        raise DataError(
            f"--name {name!r}: a model name takes letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit); give --name"
        )
    return name


class _Server(uvicorn.Server):
    """uvicorn's server, but a signal stops it without being raised again afterwards, and
    tells ``on_exit`` (the batcher's stop) at once."""

    stopped_by = None
    on_exit = None
    loop = None

    async def startup(self, sockets=None):
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        sigs = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame):
        self.stopped_by = self.stopped_by or signal.Signals(sig)
        super().handle_exit(sig, frame)
        if self.on_exit is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.on_exit)


def server(app, limits: Limits = DEFAULTS) -> _Server:
    """The uvicorn server of ``app`` (made by ``make_app``); ``run(sockets=[bind(...)])`` serves it."""
    config = uvicorn.Config(
        app,
        http=LimitedH11Protocol,
        log_level="warning",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=limits.idle_timeout,
        backlog=_backlog(limits),
    )
    config.limits = limits  # read by LimitedH11Protocol
    srv = _Server(config)
    batcher = app.state.service.batcher
    srv.on_exit = batcher.stop
    # uvicorn's task per request under way: those created in the same turn of the event loop
    # as a request reaching the batcher have not started yet, but will join its model call
    batcher.in_flight = srv.server_state.tasks.__len__
    return srv


def bind(host: str, port: int) -> socket.socket:
    """A listening socket at host:port (port 0: a free one), or a one-line error."""
    # IPPROTO_TCP named: asyncio then sets TCP_NODELAY on each connection (it checks the protocol);
    # without it a kept-alive connection's responses waited ~40 ms for delayed ACKs.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise DataError(
            f"{host}:{port}: cannot listen there ({e.strerror}); give another --port or --host"
        ) from None
    return sock


def _listen(sock: socket.socket, limits: Limits):
    """Listen before the "Serving ... on" line: a client that connects as soon as it reads the
    line waits in the backlog until uvicorn accepts, instead of being refused (uvicorn's own
    listen() comes a moment later, once its event loop has started)."""
    sock.listen(_backlog(limits))


def _backlog(limits: Limits) -> int:
    return min(2048, limits.max_connections * 2)


def fit_connections(limits: Limits) -> Limits:
    """``limits`` with ``max_connections`` under the open-file limit (raised to its hard limit
    first): a connection past the cap is refused with a 503, never an accept() failing."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limits.max_connections + 128  # the model's files, the log, the listening socket
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and limits.max_connections > soft - 128:
        return Limits(**{**limits.__dict__, "max_connections": max(1, soft - 128)})
    return limits


def _access_log(enabled: bool):
    if enabled and not ACCESS.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        ACCESS.addHandler(handler)
        ACCESS.setLevel(logging.INFO)
        ACCESS.propagate = False


def _app(target, name, no_knn_members, limits, access_log, lite=True, threads=None):
    """(the app, seconds taken to load the model, the runtime that computes it)."""
    t0 = time.perf_counter()
    predict, schema = load(target, no_knn_members, lite, threads, limits.batch_rows)
    _access_log(access_log)
    app = make_app(name, schema, predict, limits, access_log=access_log)
    return app, time.perf_counter() - t0, predict.runtime


def serve(
    target, host="127.0.0.1", port=8501, name=None, no_knn_members=False, limits=DEFAULTS,
    workers=1, access_log=True, log=print, lite=True,
):  # fmt: skip
    """Serve ``target`` until Ctrl-C or SIGTERM; returns the signal that stopped it (or None).
    ``lite``: computed by TensorFlow Lite where the model converts and matches (``load``)."""
    name = model_name(target, name)
    limits = fit_connections(limits)
    if is_stack_run(target):  # before the port and the workers: a refusal said at once
        graph_plan(target, "serve")
    sock = bind(host, port)  # first: a port in use is said at once, not after loading the model
    with sock:
        port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}/v1/models/{name}"
        if workers > 1:  # the cores shared out among the workers' model threads
            args = (target, name, no_knn_members, limits, access_log, lite, max(1, cores() // workers))
            return _supervise(sock, args, workers, url, log)
        app, seconds, runtime = _app(target, name, no_knn_members, limits, access_log, lite)
        _listen(sock, limits)
        log(f"Serving {name} on {url} (loaded in {seconds:.1f}s; Ctrl-C stops)")
        log(f"Model computed by {runtime}")
        srv = server(app, limits)
        srv.run(sockets=[sock])
    return srv.stopped_by


def _worker(sock, args, ready):
    """One worker process of ``serve --workers N``: load the model, say so, serve."""
    limits = args[3]
    try:
        app, _, runtime = _app(*args)
    except Exception as e:  # noqa: BLE001 (said to the supervisor in one line)
        ready.put(f"error: {e}")
        return
    srv = server(app, limits)
    ready.put(f"ready: {runtime}")
    srv.run(sockets=[sock])


def _wait_ready(procs, ready, stopped) -> str | None:
    """The runtime once every worker loaded its model (None: a signal came first); a worker
    that failed or died while loading is a RunError."""
    left, runtime = len(procs), None
    while left and not stopped:
        try:
            msg = ready.get(timeout=0.5)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode is not None]
            if dead and not stopped:
                raise RunError(f"a worker stopped while loading the model (exit code {dead[0]})") from None
            continue
        if not msg.startswith("ready: "):
            raise RunError(msg.removeprefix("error: "))
        left, runtime = left - 1, msg.removeprefix("ready: ")
    return None if left else runtime


def _stop_all(procs):
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM: each stops gracefully
    for p in procs:
        p.join(timeout=15)
        if p.is_alive():
            p.kill()


def _supervise(sock, args, workers, url, log):
    """Start ``workers`` processes on ``sock``, restart one that dies, stop them all on a signal."""
    metrics_dir = tempfile.mkdtemp(prefix="ottotrain-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # the workers' metrics, summed by /metrics
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    stopped = []
    handlers = {
        s: signal.signal(s, lambda sig, _: stopped.append(signal.Signals(sig)))
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    t0 = time.perf_counter()
    start = lambda: ctx.Process(target=_worker, args=(sock, args, ready), daemon=True)  # noqa: E731
    procs = [start() for _ in range(workers)]
    try:
        for p in procs:
            p.start()
        runtime = _wait_ready(procs, ready, stopped)
        if runtime is not None:
            seconds = time.perf_counter() - t0
            _listen(sock, args[3])
            log(f"Serving {args[1]} on {url} ({workers} workers, loaded in {seconds:.1f}s; Ctrl-C stops)")
            log(f"Model computed by {runtime}")
        while not stopped:
            time.sleep(0.2)
            for i, p in enumerate(procs):
                if not p.is_alive() and not stopped:  # a worker died: another takes its place
                    procs[i] = start()
                    procs[i].start()
    finally:
        _stop_all(procs)
        for s, h in handlers.items():
            signal.signal(s, h)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return stopped[0]
