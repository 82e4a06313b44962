"""A worker's member process: where a worker process runs its jobs.

Not the worker process itself, because Keras draws initial weights from Python's global
random module, which the worker's own threads (heartbeats, comms) draw from too; and
TensorFlow fixes its thread count once per process, so a run with another count gets a
new member process. Calls and replies are pickled over the child's stdin and stdout, between
a worker and its own child, never into a run directory.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from ottotrain import engine
from ottotrain.execute.jobs import thread_env

_member_process: list = []  # [threads, Popen] of this worker process


def in_member_process(threads: int, fn: Callable, *args):
    """``fn(*args)`` in this worker's member process (started, or restarted, with ``threads``)."""
    if _member_process and (_member_process[0] != threads or _member_process[1].poll() is not None):
        _stop(_member_process.pop())
        _member_process.clear()
    if not _member_process:
        serve = "from ottotrain.execute.member_process import serve; serve()"
        proc = subprocess.Popen(
            [sys.executable, "-c", serve],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **thread_env(threads)},
        )
        _member_process.extend([threads, proc])
    proc = _member_process[1]
    try:
        _send(proc.stdin, (fn, args))
        ok, value = _receive(proc.stdout)
    except (EOFError, OSError):
        # Killed (the OOM killer takes the biggest process): as if its worker had been, so
        # that Dask runs the job again elsewhere, and stops after jobs.RERUNS deaths.
        os._exit(1)
    if not ok:
        raise value
    return value


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    data = stream.read(int.from_bytes(head, "little"))
    return pickle.loads(data)


def serve() -> None:
    """A member process: run the calls its worker sends until the worker closes the pipe or dies."""
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a print goes to stderr, never into the replies
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the client's to handle
    parent = os.getppid()

    def orphaned():  # a killed worker (SIGKILL) takes its member process with it
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    engine.env.use_threads(int(os.environ["TF_NUM_INTRAOP_THREADS"]))
    while True:
        try:
            fn, args = _receive(requests)
        except EOFError:
            return
        try:
            reply = (True, fn(*args))
        except Exception as e:
            reply = (False, e)
        try:
            _send(replies, reply)
        except (pickle.PicklingError, TypeError, AttributeError):  # an exception pickle cannot carry
            _send(replies, (False, RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))
