"""A workflow's run inside ``tracked``: its MLflow run started (or continued) when the run
directory exists, everything logged from the finished run directory at the end, and the
MLflow run ended as the run ended (KILLED when interrupted or pruned, FAILED on an error)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path

from ottotrain import tracking
from ottotrain.config import Config
from ottotrain.errors import Stopped
from ottotrain.log import Log
from ottotrain.tracking.content import run_tags
from ottotrain.tracking.settings import Settings


@dataclass
class _Start:
    """The MLflow run's start, made beside the training: MLflow's import (a second or two)
    and the first requests (seconds of retries when the server is down) cost it no time."""

    settings: Settings
    cfg: Config
    run_dir: Path
    kind: str
    log: Log
    tracker: object = None  # client.Tracker, once started
    run_id: str | None = None

    def __call__(self) -> None:
        try:
            self.tracker = tracker = tracking.client.Tracker.open(self.settings, self.log)
        except Exception as e:  # MLflow itself cannot be imported: no MLflow call was made
            self.log(f"Warning: MLflow tracking is off for this run ({type(e).__name__}: {e})", 0)
            return
        tags = lambda: run_tags(self.cfg, self.run_dir, self.kind)  # noqa: E731
        self.run_id = tracker.call("starting", lambda: tracker.start(self.run_dir, self.run_dir.name, tags()))
        if self.run_id is not None and self.settings.log_model and self.settings.export_model is not None:
            with contextlib.suppress(Exception):  # a warm-up only: the real save reports its own errors
                tracking.model.warm_up()


@contextlib.contextmanager
def tracked(settings: Settings | None, cfg: Config, run_dir: Path, kind: str, log: Log):
    """Track the block's run in MLflow when ``settings`` say so (a no-op for None).

    Logging never stops the run: the first MLflow error costs one warning line and
    tracking stops there (``client.Tracker``); the run goes on and says so at its end.
    """
    if settings is None:
        yield
        return
    start = _Start(settings, cfg, run_dir, kind, log)
    thread = threading.Thread(target=start, name="ottotrain-mlflow", daemon=True)
    thread.start()
    try:
        yield
    except (KeyboardInterrupt, Stopped):
        _end(thread, start, "KILLED")
        raise
    except BaseException:
        _end(thread, start, "FAILED")
        raise
    thread.join()
    tracker = start.tracker
    if tracker is None:  # MLflow could not be imported: said in the thread
        return
    tracker.call("logging the run", tracking.kinds.log_run, kind, tracker, run_dir, start.run_id)
    tracker.end(start.run_id, "FINISHED")
    tracker.closing_line(run_dir)


def _end(thread: threading.Thread, start: _Start, status: str) -> None:
    thread.join()
    if start.tracker is not None:
        start.tracker.end(start.run_id, status)
