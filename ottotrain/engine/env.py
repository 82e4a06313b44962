"""TensorFlow and Keras, imported quietly, seeded and made deterministic.

Importing this module imports TensorFlow: first TF's native log lines are filtered
out of fd 2 (oneDNN notices, missing CUDA drivers), then Keras is imported with the
TensorFlow backend.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up log noise


# TensorFlow's C++ start-up chatter ("oneDNN custom operations are on", "Could not find
# cuda drivers", "failed call to cuInit") ignores TF_CPP_MIN_LOG_LEVEL in recent releases
# and goes straight to file descriptor 2. We filter those lines out of fd 2.
_NATIVE_LOG = re.compile(rb"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\]|WARNING: All log messages before absl)")


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
        os.close(w)
    except OSError:  # no usable fd 2 (embedded, closed): leave it alone
        return

    def pump():
        with os.fdopen(r, "rb", buffering=0) as src:
            buf = b""
            while True:
                chunk = src.read(65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                out = b"".join(line + b"\n" for line in lines if not _NATIVE_LOG.match(line))
                if buf and not _NATIVE_LOG.match(buf) and (b"\r" in buf or b"\x1b" in buf):
                    out, buf = out + buf, b""  # progress-bar updates have no newline
                if out:
                    os.write(real, out)
            if buf and not _NATIVE_LOG.match(buf):
                os.write(real, buf)

    thread = threading.Thread(target=pump, name="ottotrain-stderr", daemon=True)
    thread.start()

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 2)  # closes the pipe's write end: the pump sees EOF and drains
        thread.join(timeout=2)

    atexit.register(restore)


os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_filter_native_stderr()

import absl.logging  # noqa: E402  (after the filter: importing TensorFlow logs)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "tf"]

absl.logging.set_verbosity(absl.logging.ERROR)

