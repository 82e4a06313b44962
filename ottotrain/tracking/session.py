"""A workflow's run inside ``tracked``: its MLflow run started (or continued) when the run
directory exists, everything logged from the finished run directory at the end, and the
MLflow run ended as the run ended (KILLED when interrupted or pruned, FAILED on an error)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ottotrain import tracking
from ottotrain.config import Config
from ottotrain.errors import Stopped
from ottotrain.log import Log
from ottotrain.tracking.content import run_tags
from ottotrain.tracking.settings import Settings


@contextlib.contextmanager
def tracked(settings: Settings | None, cfg: Config, run_dir: Path, kind: str, log: Log):
    """Track the block's run in MLflow when ``settings`` say so (a no-op for None).

    Logging never stops the run: the first MLflow error costs one warning line and
    tracking stops there (``client.Tracker``); the run goes on and says so at its end.
    """
    if settings is None:
        yield
        return
    tracker = tracking.client.Tracker.open(settings, log)
    run_id = tracker.call(
        "starting", lambda: tracker.start(run_dir, run_dir.name, run_tags(cfg, run_dir, kind))
    )
    try:
        yield
    except (KeyboardInterrupt, Stopped):
        tracker.end(run_id, "KILLED")
        raise
    except BaseException:
        tracker.end(run_id, "FAILED")
        raise
    tracker.call("logging the run", tracking.kinds.log_run, kind, tracker, run_dir, run_id)
    tracker.end(run_id, "FINISHED")
    tracker.closing_line(run_dir)
