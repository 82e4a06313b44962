"""A run's life: marked running, and whatever stops it (Ctrl-C, SIGTERM, NaN, a crash) recorded.

fit and cv both run inside ``running``: the status says how the run ended and the run
can be resumed from its last completed epoch (``ottotrain fit|cv --resume``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from ottotrain.errors import RunError, Stopped, TrainingError
from ottotrain.log import Log
from ottotrain.runs.rundir import FAILED, FINISHED, INTERRUPTED, RUNNING, RunStatus, read_status, write_status


def _sigterm_as_interrupt():
    """Treat SIGTERM (kill, a batch system's time limit) like Ctrl-C; returns an undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


def mark_stopped(run_dir, status: str, run: RunStatus, record: Callable[[], None] | None = None) -> bool:
    """Record why a run stopped: ``record()`` (e.g. the history so far), then the status.

    Returns False, writing nothing, if the run had already finished. A second Ctrl-C
    while this runs is ignored, so the record is never half-written.
    """
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        with contextlib.suppress(RunError):
            if read_status(run_dir).get("status") == FINISHED:
                return False
        if record is not None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                record()
        write_status(run_dir, status, run)
        return True
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def running(
    run_dir: Path,
    log: Log,
    status: RunStatus,
    interrupted: Callable[[], str],
    record: Callable[[], None] | None = None,
):
    """Mark ``run_dir`` running for the block; record how it stopped if it raises.

    Args:
        status: what status.json keeps whatever happens (kind, smoke, folds...).
        interrupted: the message after Ctrl-C or SIGTERM (what was kept, how to resume).
        record: writes what a stopped run keeps (e.g. history.csv), before the status.
    """
    write_status(run_dir, RUNNING, status)
    restore_term = _sigterm_as_interrupt()
    try:
        yield
    except KeyboardInterrupt:
        if mark_stopped(run_dir, INTERRUPTED, status, record):
            log(f"Interrupted: {interrupted()}", 0)
        raise
    except Stopped as e:  # on purpose (a pruned tune trial): kept as it was, resumable
        mark_stopped(run_dir, e.status, status, record)
        raise
    except TrainingError as e:
        mark_stopped(run_dir, FAILED, status.failed("nan", str(e)), record)
        raise
    except Exception as e:
        mark_stopped(run_dir, FAILED, status.failed("error", f"{type(e).__name__}: {e}"), record)
        raise
    finally:
        restore_term()
