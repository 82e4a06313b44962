"""A workflow's run inside ``tracked``: its MLflow run started (or continued) when the run
directory exists, everything logged from the finished run directory at the end, and the
MLflow run ended as the run ended (KILLED when interrupted or pruned, FAILED on an error).

MLflow runs in a process of its own (``tracking/side.py``), started with the command
(``process``) and given the run once its directory exists (``tracked``). In a thread
of the training process, its import and its requests (a second of Python) held the
interpreter lock that a small net's training loop needs: a tracked 20-epoch tutorial-MLP fit
was 4 % slower with the model left out. The run's SavedModel (for the MLflow model) is exported
here, where TensorFlow is loaded already, while the tracking process logs the run's params,
metrics and files; its warning and closing lines come back through a pipe and are printed
here. It runs in a session of its own: a terminal's Ctrl-C stops the training, not it, and
it still ends the MLflow run (KILLED).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import ottotrain
from ottotrain.config import Config
from ottotrain.errors import Stopped
from ottotrain.log import Log
from ottotrain.tracking.settings import Settings
from ottotrain.tracking.side import Job, Opening


@contextlib.contextmanager
def process(settings: Settings | None, log: Log):
    """The command's tracking process, started at once (None when tracking is off).

    Started before the data is read, its MLflow import and warm-up (a second of Python) run
    beside the data loading and TensorFlow's import, which leave a core free, not beside the
    training. ``tracked`` gives it the run; a command that fails before its run directory
    exists ends it here, with no MLflow run made.
    """
    if settings is None:
        yield None
        return
    try:
        side = _Side(settings, log)
    except OSError as e:  # no process to track in: the run goes on, as when MLflow fails
        log(f"Warning: MLflow tracking is off for this run (its process did not start: {e})", 0)
        yield None
        return
    try:
        yield side
    finally:
        side.abandon()


@contextlib.contextmanager
def tracked(side: _Side | None, cfg: Config, run_dir: Path, kind: str, log: Log):
    """Track the block's run in MLflow through ``process``'s ``side`` (a no-op for None).

    Logging never stops the run: the first MLflow error costs one warning line and
    tracking stops there (``client.Tracker``); the run goes on and says so at its end.
    """
    if side is None:
        yield
        return
    side.begin(Job(cfg, run_dir, kind, list(sys.argv)))
    try:
        yield
    except (KeyboardInterrupt, Stopped):
        side.end("KILLED")
        raise
    except BaseException:
        side.end("FAILED")
        raise
    side.end("FINISHED")


class _Side:
    """The command's end of the tracking process: its pipes, and the thread that prints its lines."""

    def __init__(self, settings: Settings, log: Log):
        wants_model = settings.log_model and settings.export_model is not None
        self.log, self.run_dir = log, None
        self.export = settings.export_model if wants_model else None
        self.started: bool | None = None  # its MLflow run started (None: not heard yet)
        self.done = self.ended = False
        replies, replies_w = os.pipe()
        # This ottotrain first on its path, whatever put it on this process's path.
        root = str(Path(ottotrain.__file__).resolve().parent.parent)
        path = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ottotrain.tracking.side", str(replies_w)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(replies_w,), start_new_session=True, env={**os.environ, "PYTHONPATH": path},
            )  # fmt: skip
        except OSError:
            os.close(replies)
            raise
        finally:
            os.close(replies_w)
        self._send(Opening(replace(settings, export_model=None), wants_model))
        self.replies = os.fdopen(replies, "rb")
        self.reader = threading.Thread(target=self._read, name="ottotrain-mlflow-lines", daemon=True)
        self.reader.start()

    def begin(self, job: Job) -> None:
        """The run directory exists: the tracking process starts (or continues) its MLflow run."""
        self.run_dir = job.run_dir
        self._send(job)

    def abandon(self) -> None:
        """The command ends without its run (it failed first): stop the process, which has made
        no MLflow run yet. Nothing once ``end`` has run."""
        if self.ended:
            return
        self.ended = True
        self.process.kill()
        self.process.wait()
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        self.reader.join()
        self.replies.close()

    def _send(self, message) -> None:
        with contextlib.suppress(OSError):
            pickle.dump(message, self.process.stdin)
            self.process.stdin.flush()

    def _read(self) -> None:
        while True:
            try:
                what, *args = pickle.load(self.replies)
            except (EOFError, OSError, pickle.UnpicklingError):
                return
            if what == "log":
                self.log(*args)
            elif what == "started":
                self.started = args[0]
            elif what == "done":
                self.done = True
                return

    def end(self, status: str) -> None:
        """Tell the tracking process how the run ended, hand it the export, wait for it."""
        self.ended = True
        self._send(("end", status))
        scratch = None
        if status == "FINISHED" and self.export is not None and self.started is not False:
            scratch = Path(tempfile.mkdtemp(prefix="ottotrain-mlflow-"))
            self._send(self._exported(scratch / "saved_model"))
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        self.reader.join()
        code = self.process.wait()
        self.replies.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if not self.done:
            self.log(f"Warning: MLflow tracking stopped (its process exited with code {code})", 0)

    def _exported(self, out: Path) -> tuple:
        try:
            self.export(self.run_dir, out, packed_only=True)
            return ("model", str(out), None)
        except Exception as e:  # the tracking process reports it as tracking's one warning
            return ("model", None, f"{type(e).__name__}: {e}")
