"""TensorFlow and Keras, imported quietly, seeded and made deterministic.

Importing this module imports TensorFlow: first TF's native log lines are filtered
out of fd 2 (oneDNN notices, missing CUDA drivers), then Keras is imported with the
TensorFlow backend. At exit the interpreter is spared its last garbage collections over
TensorFlow's objects (``_quick_exit``), which made every command that had imported it take
a second longer to exit, Ctrl-C included.
"""

from __future__ import annotations

import atexit
import gc
import os
import platform
import re
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up log noise


# TensorFlow's C++ start-up chatter ("oneDNN custom operations are on", "Could not find
# cuda drivers", "failed call to cuInit") ignores TF_CPP_MIN_LOG_LEVEL in recent releases
# and goes straight to file descriptor 2. We filter those lines out of fd 2.
_NATIVE_LOG = re.compile(
    rb"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\]"
    rb"|WARNING: All log messages before absl)"
)


def _filter_native_stderr():
    """Route fd 2 through a thread that drops TensorFlow's native log lines."""
    if os.environ.get("OTTOTRAIN_TF_LOGS") or getattr(_filter_native_stderr, "done", False):
        return
    _filter_native_stderr.done = True
    try:
        sys.stderr.flush()
        real = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
    except OSError:  # no usable fd 2 (embedded, closed): leave it alone
        return
    # The pump stops at this marker, which restore() writes through ``w`` (kept open for it,
    # and not inherited by child processes) once fd 2 is the real stderr again. Waiting for
    # the pipe's EOF instead waited for every copy of its write end to close: one inherited
    # by a child process or dup'ed by a library kept the exit waiting for the join's timeout.
    end = b"\0ottotrain-stderr-end-" + os.urandom(8).hex().encode()

    def pump():
        with os.fdopen(r, "rb", buffering=0) as src:
            buf, done = b"", False
            while not done:
                chunk = src.read(65536)
                buf += chunk
                i = buf.find(end)
                if i >= 0 or not chunk:
                    buf, done = (buf[:i] if i >= 0 else buf), True
                *lines, buf = buf.split(b"\n")
                out = b"".join(line + b"\n" for line in lines if not _NATIVE_LOG.match(line))
                if buf and not _NATIVE_LOG.match(buf) and (done or b"\r" in buf or b"\x1b" in buf):
                    # Progress-bar updates have no newline. The start of an end marker that
                    # a read cut in two (from its NUL byte) stays until the rest arrives.
                    keep = len(buf) if done or b"\0" not in buf else buf.index(b"\0")
                    out, buf = out + buf[:keep], buf[keep:]
                if out:
                    os.write(real, out)

    thread = threading.Thread(target=pump, name="ottotrain-stderr", daemon=True)
    thread.start()

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 2)  # what is written from here on goes straight to the real stderr
        try:
            if thread.is_alive():
                os.set_blocking(w, False)  # never block on a full pipe nobody reads
                os.write(w, end)  # after everything already in the pipe: the pump drains it
        except OSError:
            pass
        finally:
            os.close(w)
        thread.join(timeout=2)

    atexit.register(restore)


def _quick_exit():
    """Spare the interpreter's exit its garbage collections over TensorFlow's objects.

    After TensorFlow has been imported, Python's finalization spent about a second (2 CPU
    cores) collecting its million objects once more: every command that imported it took
    that much longer to exit after its work was done, Ctrl-C included. Frozen objects are
    skipped by those collections (measured: 1.1 s -> 0.1 s from the last statement to the
    process exit); the files ottotrain writes are closed and renamed into place before
    this, and the standard streams are flushed by the interpreter whatever the GC does.
    """
    gc.freeze()


os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_filter_native_stderr()
atexit.register(_quick_exit)  # before TensorFlow's and Keras' own: runs after them

import absl.logging  # noqa: E402  (after the filter: importing TensorFlow logs)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from ottotrain.errors import RunError  # noqa: E402

__all__ = ["keras", "tf"]

absl.logging.set_verbosity(absl.logging.ERROR)

# TensorFlow and Keras leave about 400,000 objects that live as long as the process. Frozen,
# every later full collection skips them: Keras' clear_session() runs one per model built
# (a cv or stack member, a member averaged from its file), 0.19 s each here, 0 s frozen.
# Frozen is all that is alive at this import, a library caller's objects too: reference
# counting still frees them, but cyclic garbage among them is never collected.
gc.freeze()


def intra_op_threads() -> int:
    """The intra-op thread count TensorFlow's kernels run with in this process."""
    n = tf.config.threading.get_intra_op_parallelism_threads()
    env = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    if not n and env.isdigit() and int(env) > 0:
        n = int(env)  # what TensorFlow reads when nothing set the count
    return n or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def use_threads(n: int) -> None:
    """Run TensorFlow's kernels with ``n`` intra-op threads in this process.

    TensorFlow fixes the count when it first runs an op, and its CPU kernels' last bits
    depend on it: a process that already ran with another count is refused, not used.
    """
    have = intra_op_threads()
    if have == n:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
    except RuntimeError:
        raise RunError(
            f"process {os.getpid()} on {platform.node()}: TensorFlow already runs with {have} "
            f"intra-op threads here, and this run's members need {n} (--member-threads {n}); "
            f"start a fresh process (restart the worker), or run with --member-threads {have}"
        ) from None
