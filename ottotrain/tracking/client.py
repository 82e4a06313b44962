"""MLflow behind a wrapper that never fails a run: the first error costs one warning line,
and from then on the run is not tracked (``Tracker.failed`` says why, at the end).

This module imports MLflow: ``ottotrain.tracking`` imports it only when a run is tracked.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ottotrain.errors import first_line
from ottotrain.log import Log
from ottotrain.tracking.content import RunContent
from ottotrain.tracking.settings import Record, Settings, allow_file_store, artifact_root, redact

# MLflow's HTTP defaults retry a refused request for minutes: a server that is down
# would stall the run. A user's own settings of these win.
ENV_DEFAULTS = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # a bar per artifact copy, in the run's output
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # Its links to each ended run on stdout (a -q run prints its result alone there), and the
    # request for the run that each link costs.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
_BATCH = 100  # MLflow's limit on params (and tags) per log_batch; metrics: 1000
PARENT_TAG = "mlflow.parentRunId"
NAME_TAG = "mlflow.runName"


@dataclass
class Tracker:
    """One command's MLflow connection."""

    settings: Settings
    log: Log
    client: MlflowClient | None = None  # None once connecting failed (``failed`` says why)
    experiment_id: str | None = None
    failed: str | None = None  # why tracking stopped, once it did
    continued: bool = False  # the run directory's recorded MLflow run goes on (a resumed run)

    @classmethod
    def open(cls, settings: Settings, log: Log) -> Tracker:
        for key, value in ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        allow_file_store(settings.uri)
        # MLflow's own retry and deprecation messages would add lines to the run's output.
        for name in ("mlflow", "urllib3", "alembic"):
            logging.getLogger(name).setLevel(logging.ERROR)
        tracker = cls(settings, log)
        tracker.client = tracker.call("connecting", MlflowClient, settings.uri)
        return tracker

    def call(self, what: str, fn: Callable | str, *args, **kwargs):
        """``fn(*args, **kwargs)`` (a name: the client's method), or None once tracking has
        failed (one warning line)."""
        if self.failed is not None:
            return None
        try:
            # Recorded, not only ignored: MLflow puts its own filters in front of this one
            # (its PythonModel check shows "Add type hints" once, whatever the filters said).
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("ignore")
                return (getattr(self.client, fn) if isinstance(fn, str) else fn)(*args, **kwargs)
        except Exception as e:
            why = first_line(e)
            why = why if len(why) <= 200 else why[:200] + "..."
            self.failed = redact(f"{what}: {type(e).__name__}: {why}")
            self.log(
                f"Warning: MLflow tracking at {self.settings.uri} stopped ({self.failed}); "
                "the run goes on without it",
                0,
            )
            return None

    def experiment(self) -> str | None:
        if self.experiment_id is None:
            name = self.settings.experiment
            found = self.call("finding the experiment", "get_experiment_by_name", name)
            self.experiment_id = (
                found.experiment_id
                if found is not None
                else self.call(
                    "creating the experiment",
                    "create_experiment",
                    name,
                    artifact_location=artifact_root(self.settings.uri),
                )
            )
        return self.experiment_id

    def start(self, run_dir: Path, name: str, tags: dict[str, str]) -> str | None:
        """The run directory's MLflow run: its recorded one continued, else a new one."""
        record = Record.of(run_dir)
        if record is not None:
            self.experiment_id, self.continued = record.experiment_id, True
            self.call("continuing the run", "update_run", record.run_id, status="RUNNING")
            return None if self.failed else record.run_id
        run = self.new_run(name, tags)
        if run is not None:
            Record(self.settings.uri, self.experiment_id, run).save(run_dir)
        return run

    def new_run(self, name: str, tags: dict[str, str], parent: str | None = None) -> str | None:
        if self.experiment() is None:
            return None
        tags = tags | ({PARENT_TAG: parent} if parent else {})
        run = self.call("creating a run", "create_run", self.experiment_id, tags=tags, run_name=name)
        return None if run is None else run.info.run_id

    def record(self, run_id: str | None, content: RunContent, artifact_path: str | None = None) -> None:
        """Log ``content``: params, tags and metrics in batches, then its files."""
        if run_id is None:
            return
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in content.params.items()]
        tags = [RunTag(k, v) for k, v in content.tags.items()]
        metrics = [Metric(k, v, now, 0) for k, v in content.metrics.items()]
        metrics += [Metric(s.key, s.value, now, s.step) for s in content.steps]
        for i in range(0, max(len(params), len(tags), 1), _BATCH):
            batch = {"params": params[i : i + _BATCH], "tags": tags[i : i + _BATCH]}
            self.call("logging params", "log_batch", run_id, **batch)
        for i in range(0, len(metrics), 1000):
            self.call("logging metrics", "log_batch", run_id, metrics=metrics[i : i + 1000])
        for path in content.files:
            self.call("logging artifacts", "log_artifact", run_id, str(path), artifact_path)

    def existing_children(self, parent: str) -> dict[str, object]:
        """The child runs a parent has already, by name (MLflow ``Run``s, with their metrics)."""
        found = self.call(
            "listing child runs",
            "search_runs",
            [self.experiment_id],
            filter_string=f"tags.{PARENT_TAG} = '{parent}'",
            max_results=50_000,
        )
        return {r.info.run_name: r for r in found or ()}

    def end(self, run_id: str | None, status: str) -> None:
        if run_id is not None:
            self.call("ending the run", "set_terminated", run_id, status)

    def closing_line(self, run_dir: Path) -> None:
        """After the run: where it was recorded, or that it was not (the warning said why)."""
        if self.failed is not None:
            self.log(f"MLflow: not fully recorded (see the warning above); {run_dir} is complete", 1)
        else:
            self.log(f"MLflow: experiment '{self.settings.experiment}' at {self.settings.uri}", 1)
