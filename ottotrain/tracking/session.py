"""A workflow's run inside ``tracked``: its MLflow run started (or continued) when the run
directory exists, everything logged from the finished run directory at the end, and the
MLflow run ended as the run ended (KILLED when interrupted or pruned, FAILED on an error).

MLflow runs in a child process (``_side``), beside the training. In a thread of the training
process, its import and its requests (a second of Python) held the interpreter lock that a
small net's training loop needs: a tracked 20-epoch tutorial-MLP fit was 4 % slower with the
model left out. The run's SavedModel (for the MLflow model) is exported here, where TensorFlow
is loaded already, while the child logs the run's params, metrics and files; the child sends
its warning and closing lines back through a pipe, and this process prints them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from ottotrain import tracking
from ottotrain.config import Config
from ottotrain.errors import RunError, Stopped
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
    side = _Side(settings, cfg, run_dir, kind, log)
    try:
        yield
    except (KeyboardInterrupt, Stopped):
        side.end("KILLED")
        raise
    except BaseException:
        side.end("FAILED")
        raise
    side.end("FINISHED")


@dataclass(frozen=True)
class _Job:
    """What the child needs to track the run (picklable: no callables)."""

    settings: Settings  # export_model None: the model is exported by the parent
    cfg: Config
    run_dir: Path
    kind: str
    argv: list[str]  # the command, for the run's tags
    wants_model: bool  # the parent exports the run once it has finished


class _Side:
    """The parent's end: the child process, the pipes and the thread that prints its lines."""

    def __init__(self, settings: Settings, cfg: Config, run_dir: Path, kind: str, log: Log):
        wants_model = settings.log_model and settings.export_model is not None
        self.log, self.run_dir = log, run_dir
        self.export = settings.export_model if wants_model else None
        self.started: bool | None = None  # the child's MLflow run started (None: not heard yet)
        job = _Job(replace(settings, export_model=None), cfg, run_dir, kind, list(sys.argv), wants_model)
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs TensorFlow
        commands_in, self.commands = ctx.Pipe(duplex=False)
        self.replies, replies_out = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=_side, args=(job, commands_in, replies_out), name="ottotrain-mlflow", daemon=True
        )
        with _sigint_ignored():  # Ctrl-C stops the training; the child still ends the MLflow run
            self.process.start()
        commands_in.close()
        replies_out.close()
        self.done = False
        self.reader = threading.Thread(target=self._read, name="ottotrain-mlflow-lines", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                what, *args = self.replies.recv()
            except (EOFError, OSError):
                return
            if what == "log":
                self.log(*args)
            elif what == "started":
                self.started = args[0]
            elif what == "done":
                self.done = True
                return

    def end(self, status: str) -> None:
        """Tell the child how the run ended, hand it the export, wait for it to finish."""
        with contextlib.suppress(OSError):
            self.commands.send(("end", status))
        scratch = None
        if status == "FINISHED" and self.export is not None and self.started is not False:
            scratch = Path(tempfile.mkdtemp(prefix="ottotrain-mlflow-"))
            self._send_export(scratch / "saved_model")
        self.reader.join()
        self.process.join()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if not self.done:
            code = self.process.exitcode
            self.log(f"Warning: MLflow tracking stopped (its process exited with code {code})", 0)

    def _send_export(self, out: Path) -> None:
        try:
            self.export(self.run_dir, out, packed_only=True)
            reply = ("model", str(out), None)
        except Exception as e:  # the child reports it as tracking's one warning
            reply = ("model", None, f"{type(e).__name__}: {e}")
        with contextlib.suppress(OSError):
            self.commands.send(reply)


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored while the child starts: it inherits that, and Python leaves an ignored
    SIGINT ignored, so a Ctrl-C meant for the training never interrupts the child."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


# ---------------------------------------------------------------------------------------
# The child process


class _Lines:
    """The child's ``Log``: every line goes to the parent, which prints it at its verbosity."""

    def __init__(self, replies):
        self.replies = replies

    def __call__(self, msg, level=1):
        with contextlib.suppress(OSError):
            self.replies.send(("log", msg, level))


class _Received:
    """The child's ``Settings.export_model``: the SavedModel the parent exported, moved to ``out``."""

    def __init__(self, commands):
        self.commands = commands

    def __call__(self, run_dir, out, packed_only=True) -> None:
        _, path, error = self.commands.recv()
        if error is not None:
            raise RunError(f"exporting the run: {error}")
        shutil.move(path, out)


def _side(job: _Job, commands, replies) -> None:
    """The child: start the MLflow run, wait for the run's end, log it, end the MLflow run.
    Its lines go through ``replies``; what MLflow would print itself (links, notices) nowhere."""
    _quiet()
    log = _Lines(replies)
    export = _Received(commands) if job.wants_model else None
    tracker, run_id = _start(replace(job.settings, export_model=export), job, log)
    replies.send(("started", run_id is not None))
    try:
        _, status = commands.recv()
    except EOFError:  # the parent died
        status = "KILLED"
    if tracker is not None:
        if status == "FINISHED":
            tracker.call("logging the run", tracking.kinds.log_run, job.kind, tracker, job.run_dir, run_id)
        tracker.end(run_id, status)
        if status == "FINISHED":
            tracker.closing_line(job.run_dir)
    replies.send(("done",))


def _quiet() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _start(settings: Settings, job: _Job, log: _Lines):
    """(the tracker, the MLflow run's id), either None where MLflow failed (said in one line)."""
    try:
        tracker = tracking.client.Tracker.open(settings, log)
    except Exception as e:  # MLflow itself cannot be imported: no MLflow call was made
        log(f"Warning: MLflow tracking is off for this run ({type(e).__name__}: {e})", 0)
        return None, None
    tags = lambda: run_tags(job.cfg, job.run_dir, job.kind, job.argv)  # noqa: E731
    run_id = tracker.call("starting", lambda: tracker.start(job.run_dir, job.run_dir.name, tags()))
    if run_id is not None and job.wants_model:
        with contextlib.suppress(Exception):  # a warm-up only: the real save reports its own errors
            tracking.model.warm_up()
    return tracker, run_id
