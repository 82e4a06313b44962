"""The tracking process (``session.process`` starts it): MLflow's side of a tracked run.

    python -m ottotrain.tracking.side FD

reads pickled messages on stdin: the ``Opening`` (it then imports MLflow and warms it up
while the command reads its data), the ``Job`` once the run directory exists (end of input
first: the command failed before, and nothing is tracked), then ``("end", status)``, then (a
finished run that logs its model) ``("model", path, error)``, the SavedModel the command
exported. It writes pickled replies to the pipe FD: ``("log", line, level)``, ``("started",
bool)`` and ``("done",)`` last. What MLflow would print itself (links, notices) goes nowhere.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ottotrain import tracking
from ottotrain.config import Config
from ottotrain.errors import RunError
from ottotrain.tracking.content import run_tags
from ottotrain.tracking.settings import Settings


@dataclass(frozen=True)
class Opening:
    """How to track, sent as the command starts (picklable: no callables)."""

    settings: Settings  # export_model None: the command exports the model
    wants_model: bool  # the command sends its export once the run has finished


@dataclass(frozen=True)
class Job:
    """The run to track, sent once its run directory exists."""

    cfg: Config
    run_dir: Path
    kind: str
    argv: list[str]  # the command, for the run's tags


class _Lines:
    """The tracking process's ``Log``: every line goes to the command, which prints it at its verbosity."""

    def __init__(self, replies):
        self.replies = replies

    def __call__(self, msg, level=1):
        _reply(self.replies, ("log", msg, level))


class _Received:
    """The tracking process's ``Settings.export_model``: the command's export, moved to ``out``."""

    def __init__(self, commands):
        self.commands = commands

    def __call__(self, run_dir, out, packed_only=True) -> None:
        _, path, error = pickle.load(self.commands)
        if error is not None:
            raise RunError(f"exporting the run: {error}")
        shutil.move(path, out)


def _reply(replies, message) -> None:
    with contextlib.suppress(OSError):
        pickle.dump(message, replies)
        replies.flush()


def main(fd: int) -> None:
    """Open MLflow, wait for the run, start its MLflow run, wait for its end, log it, end it."""
    commands = sys.stdin.buffer
    with open(fd, "wb") as replies:
        opening: Opening = pickle.load(commands)
        log = _Lines(replies)
        export = _Received(commands) if opening.wants_model else None
        tracker = _open(replace(opening.settings, export_model=export), opening.wants_model, log)
        try:
            job: Job = pickle.load(commands)
        except EOFError:  # the command ended before its run: nothing to track
            return
        run_id = None
        if tracker is not None:
            tags = lambda: run_tags(job.cfg, job.run_dir, job.kind, job.argv)  # noqa: E731
            run_id = tracker.call("starting", lambda: tracker.start(job.run_dir, job.run_dir.name, tags()))
        _reply(replies, ("started", run_id is not None))
        try:
            _, status = pickle.load(commands)
        except EOFError:  # the command died
            status = "KILLED"
        if tracker is not None:
            _end(tracker, job, run_id, status)
        _reply(replies, ("done",))


def _end(tracker, job: Job, run_id: str | None, status: str) -> None:
    if status == "FINISHED":
        tracker.call("logging the run", tracking.kinds.log_run, job.kind, tracker, job.run_dir, run_id)
    tracker.end(run_id, status)
    if status == "FINISHED":
        tracker.closing_line(job.run_dir)


def _open(settings: Settings, wants_model: bool, log: _Lines):
    """The tracker, None where MLflow cannot be imported (said in one line)."""
    try:
        tracker = tracking.client.Tracker.open(settings, log)
    except Exception as e:  # MLflow itself cannot be imported: no MLflow call was made
        log(f"Warning: MLflow tracking is off for this run ({type(e).__name__}: {e})", 0)
        return None
    if wants_model:
        with contextlib.suppress(Exception):  # a warm-up only: the real save reports its own errors
            tracking.model.warm_up()
    return tracker


if __name__ == "__main__":
    main(int(sys.argv[1]))
    # Everything is logged and the command told: skip the interpreter's shutdown, which with
    # MLflow loaded (its exit hooks, a last collection over its objects) took 0.6 s that the
    # command waited for at the end of every tracked run.
    os._exit(0)
