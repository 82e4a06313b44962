"""``ottotrain serve``: one run or export behind an HTTP JSON API (``serving.app``) under uvicorn.

An export folder is loaded with TensorFlow alone; a run directory is opened as ``export``
opens it and served through the same in-graph function, without writing it anywhere.
Ctrl-C and SIGTERM stop the server after the requests under way (uvicorn's graceful
shutdown); ``serve`` then returns instead of re-raising the signal.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
from pathlib import Path

import uvicorn

from ottotrain import engine
from ottotrain.errors import DataError, RunError
from ottotrain.runs.rundir import STATUS
from ottotrain.serving.app import make_app
from ottotrain.serving.schema import ModelSchema
from ottotrain.workflows.export import open_graph

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def load(target, no_knn_members=False):
    """(predict function, ModelSchema) of an export folder or a run directory."""
    target = Path(target)
    if (target / "saved_model.pb").is_file():
        if no_knn_members:
            raise RunError(
                f"{target}: --no-knn-members applies to a run directory; export it with the option"
            )
        schema = ModelSchema.read(target)
        return engine.export.predict_function(target), schema
    if (target / STATUS).is_file():
        module, schema = open_graph(target, no_knn_members)
        return engine.export.predict_function(module), schema
    raise RunError(
        f"{target}: neither a run directory (no {STATUS}) nor an export (no saved_model.pb); "
        "give a run made by fit or cv, or a folder made by 'ottotrain export'"
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
    """uvicorn's server, but a signal stops it without being raised again afterwards."""

    stopped_by = None

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


def server(app) -> _Server:
    """The uvicorn server of ``app``; ``run(sockets=[bind(...)])`` serves it."""
    return _Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10))


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


def serve(target, host="127.0.0.1", port=8501, name=None, no_knn_members=False, log=print):
    """Serve ``target`` until Ctrl-C or SIGTERM; returns the signal that stopped it (or None)."""
    name = model_name(target, name)
    sock = bind(host, port)  # first: a port in use is said at once, not after loading the model
    with sock:
        predict, schema = load(target, no_knn_members)
        port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        log(f"Serving {name} on http://{shown}:{port}/v1/models/{name} (Ctrl-C stops)")
        srv = server(make_app(name, schema, predict))
        srv.run(sockets=[sock])
    return srv.stopped_by
