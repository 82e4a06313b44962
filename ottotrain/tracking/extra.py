"""``log_to_run``: more files and metrics for the MLflow run a run directory was recorded as
(what ``explain`` and ``evaluate`` add to a finished run)."""

from __future__ import annotations

from pathlib import Path

from ottotrain.log import Log
from ottotrain.tracking.client import Tracker
from ottotrain.tracking.content import RunContent
from ottotrain.tracking.settings import Record, Settings


def log_to_run(
    run_dir, files=(), metrics: dict[str, float] | None = None, artifact_path: str | None = None, log=None
) -> bool:
    """Log ``files`` (under ``artifact_path``) and ``metrics`` to the run directory's MLflow run.

    A no-op (False) when the run was not tracked; an MLflow error costs one warning line
    (on ``log``, stderr by default) and False, never an exception. True when all was logged.
    """
    record = Record.of(run_dir)
    if record is None:
        return False
    log = log or Log(1)
    tracker = Tracker.open(Settings(record.tracking_uri, experiment=""), log)
    tracker.experiment_id = record.experiment_id
    content = RunContent(metrics=dict(metrics or {}), files=[Path(f) for f in files])
    tracker.record(record.run_id, content, artifact_path)
    return tracker.failed is None
