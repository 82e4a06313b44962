"""The packed function as a TensorFlow Lite model: the same ops, without TensorFlow's cost per call.

A call of a TensorFlow function costs a few hundred microseconds whatever its size (the
arguments bound, the graph's executor run op by op), which is most of a one-row request.
TensorFlow Lite's interpreter runs the same float32 graph (``ExportModule.serve_lite``,
frozen: the variables become constants) in a few microseconds for a small model. Where the
graph holds an op TensorFlow Lite lacks (float64 arithmetic, the quantile transform), or the
export predates ``serve_lite``, ``lite_function`` raises ``LiteUnavailable`` saying why,
and the caller serves the SavedModel.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ottotrain.engine.env import tf

# A call of at most this many rows runs on one interpreter in the caller's thread: a thread
# pool's hand-offs cost more than such a call; a bigger one (a batch, a KNN search) uses the cores.
SMALL_ROWS = 8
# A bigger call is split over the cores only where it would take longer than this on one
# interpreter (its time per row learnt from the calls before, the start-up's warm-up first):
# handing a part to another thread and waiting for it costs tens of microseconds, more than
# a small model's whole call of 100 rows.
SPLIT_SECONDS = 1e-3


class LiteUnavailable(Exception):
    """Why a model cannot be run by TensorFlow Lite (one line)."""


@contextlib.contextmanager
def _quiet_fd2():
    """The converter and the interpreter write their notes to fd 2: kept off the server's log
    (the converter's errors come back in its exception)."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def convert(module) -> tuple[bytes, list]:
    """(the TensorFlow Lite model of ``module.serve_lite``, its input dtypes) of an
    ``ExportModule`` or a loaded export; LiteUnavailable if it has none or it does not convert."""
    fn = getattr(module, "serve_lite", None)
    if fn is None:
        raise LiteUnavailable("the export has no float32 function (made by an older ottotrain)")
    concrete = fn.get_concrete_function()
    if len(concrete.structured_input_signature[0]) > 1:
        raise LiteUnavailable("categorical columns: their vocabulary lookups are no TensorFlow Lite ops")
    try:
        with _quiet_fd2():
            # No trackable object given: the converter freezes the function's variables into
            # constants (with one, it keeps them as variables it does not initialise).
            flat = tf.lite.TFLiteConverter.from_concrete_functions([concrete]).convert()
    except Exception as e:  # noqa: BLE001 (the converter raises several kinds; all mean "cannot")
        lines = [line for line in str(e).splitlines() if "error:" in line] or [str(e) or type(e).__name__]
        raise LiteUnavailable(f"does not convert ({lines[0].split('error:')[-1].strip()[:160]})") from None
    return flat, [s.dtype for s in concrete.structured_input_signature[0]]


class _Interpreter:
    """One interpreter, resized to each call's rows."""

    def __init__(self, flat: bytes, threads: int):
        with _quiet_fd2(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's notice that LiteRT replaces it
            self.it = tf.lite.Interpreter(model_content=flat, num_threads=threads)
            self.it.allocate_tensors()
        self.inputs = [d["index"] for d in sorted(self.it.get_input_details(), key=lambda d: d["index"])]
        self.output = self.it.get_output_details()[0]["index"]
        self.rows = self.it.get_input_details()[0]["shape"][0]

    def __call__(self, args) -> np.ndarray:
        n = len(args[0])
        if n != self.rows:
            for i, a in zip(self.inputs, args):
                self.it.resize_tensor_input(i, a.shape)
            self.it.allocate_tensors()
            self.rows = n
        for i, a in zip(self.inputs, args):
            self.it.set_tensor(i, a)
        self.it.invoke()
        return self.it.get_tensor(self.output)


class _Parts:
    """One-thread interpreters computing a big call's rows in parts, one per core, at the same
    time (``Invoke`` releases the GIL): every op then runs on every core, where an interpreter's
    own threads share out only its matrix products (the KNN search's selection ops, gathers and
    sorts ran on one core). Each row's answer is computed by the same ops whatever part it is in.
    Split only where the call would take over ``SPLIT_SECONDS`` on one interpreter, and always
    the first time (the start-up's warm-up: every part's buffers are made then, not under load)."""

    def __init__(self, flat: bytes, threads: int, max_rows: int | None, small: _Interpreter):
        # one core: the small calls' interpreter serves the big ones too (resized between them)
        self.parts = [_Interpreter(flat, 1) for _ in range(threads)] if threads > 1 else [small]
        self.pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="lite") if threads > 1 else None
        self.max_rows = max_rows
        self.row_seconds = math.inf  # one interpreter's time per row, as the last big call took

    def chunked(self, it, args) -> np.ndarray:
        n = len(args[0])
        step = self.max_rows or max(n, 1)
        if n <= step:
            return it(args)
        return np.concatenate([it([a[i : i + step] for a in args]) for i in range(0, n, step)])

    def __call__(self, args) -> np.ndarray:
        n, t0 = len(args[0]), time.perf_counter()
        if self.pool is None or n * self.row_seconds <= SPLIT_SECONDS:
            out = self.chunked(self.parts[0], args)
            self.row_seconds = (time.perf_counter() - t0) / n
            return out
        k = min(len(self.parts), n)  # no part without rows
        bounds = np.linspace(0, n, k + 1).astype(int)
        split = [[a[lo:hi] for a in args] for lo, hi in zip(bounds[:-1], bounds[1:])]
        others = [self.pool.submit(self.chunked, it, p) for it, p in zip(self.parts[1:], split[1:])]
        out = np.concatenate([self.chunked(self.parts[0], split[0])] + [f.result() for f in others])
        self.row_seconds = (time.perf_counter() - t0) * k / n
        return out


def lite_function(module, threads: int = 1, max_rows: int | None = None):
    """``f(numbers, strings=None) -> probabilities`` as ``export.packed_function``'s, computed
    by TensorFlow Lite: ``module`` is an ``ExportModule`` or a loaded export. Thread-safe (one
    call at a time); calls of over ``max_rows`` rows are made in chunks of that many, and calls
    of over ``SMALL_ROWS`` rows over the cores (``_Parts``). LiteUnavailable where it cannot be."""
    if not hasattr(tf, "lite") or not hasattr(tf.lite, "Interpreter"):
        raise LiteUnavailable("this TensorFlow has no tf.lite.Interpreter")
    flat, dtypes = convert(module)
    try:
        small = _Interpreter(flat, 1)  # kept at a request's few rows: no resizing between calls
        big = _Parts(flat, threads, max_rows, small)
    except (RuntimeError, ValueError) as e:
        raise LiteUnavailable(f"the interpreter refused it ({str(e).splitlines()[0][:160]})") from None
    lock = threading.Lock()
    strings_in = len(dtypes) > 1

    def predict(numbers, strings=None) -> np.ndarray:
        args = [np.ascontiguousarray(numbers, np.float32)]
        if strings_in:
            args.append(np.asarray(strings, dtype=object).astype(bytes))
        with lock:
            return big.chunked(small, args) if len(args[0]) <= SMALL_ROWS else big(args)

    predict.flatbuffer_bytes = len(flat)
    return predict
