"""The executor's interface: typed jobs, what each one came to, and the in-process executor.

A ``Job`` is a name and a function ``work(data, out, log=...)``: it trains (or tries)
something from the run's ``data``, writes its run-directory files under ``out`` (``last``,
its "done" marker, last of all) and returns a typed record. An ``Executor`` runs jobs and
calls ``on_done`` in this process as each one finishes, its files already in the run
directory. Here (``InProcess``) ``out`` is the run directory itself; on worker processes
(``execute.dask``) it is a temporary folder on the worker whose files come back.
"""

from __future__ import annotations

import os
import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from ottotrain import engine
from ottotrain.log import Log

# The one fault policy: a job whose process dies (killed, out of memory) runs again on
# another worker process this many times; then the run stops with one line, resumable.
RERUNS = 3

R = TypeVar("R")


@dataclass(frozen=True)
class Job(Generic[R]):
    """One unit of work. ``work`` must pickle (a module-level function, or a
    ``functools.partial`` of one): it may run in another process or on another machine."""

    name: str  # unique in its run: fold1-seed1, trial-0003
    work: Callable[..., R]  # work(data, out: Path, log=Log) -> R
    last: str | None = None  # the file under ``out`` written last: the job's "done" marker


@dataclass(frozen=True)
class Done(Generic[R]):
    """A finished job: its record and where and how long it ran."""

    job: Job[R]
    value: R
    seconds: float  # the job's wall time where it ran
    host: str
    worker: str  # the worker's address, or "this process"


OnDone = Callable[[Done], None]


class Executor(ABC):
    """Runs jobs: in this process, on local worker processes, or on a Dask cluster."""

    threads: int  # TensorFlow intra-op threads of every job
    slots: int  # jobs that run at once
    where: str  # for a log line: "this process", "a local cluster of 2 workers", ...
    in_process = False  # whether jobs write straight into the run directory, one at a time

    @abstractmethod
    def map(
        self,
        jobs: Iterable[Job],
        on_done: OnDone,
        *,
        out: Path,
        data: Any = None,
        resume_hint: str = "",
        pull: bool = False,
    ) -> None:
        """Run ``jobs``; ``on_done(Done)`` here as each one finishes, its files under ``out``.

        Args:
            jobs: iterated lazily when ``pull``: a job is taken only when a slot is free
                (tune asks a trial when a worker can take it); else all at once, earlier
                ones first.
            out: the run directory the jobs' files go to.
            data: what every job's ``work`` gets first; sent once to each worker process.
            resume_hint: how to go on after a stop ("continue with: ottotrain cv --resume
                DIR"), the end of the line that stops the run.
        """


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads(parallel: int = 1) -> int:
    """TensorFlow threads per job when ``parallel`` jobs run at once on these cores.

    A process started with TF_NUM_INTRAOP_THREADS (a worker process) has its share already.
    """
    env = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    if parallel == 1 and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, cores() // parallel)


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a process whose TensorFlow runs ``threads`` intra-op threads,
    read by TensorFlow at its start (the process also sets and checks it: engine.env)."""
    n = str(threads)
    return {"TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": n}


class InProcess(Executor):
    """The jobs one after the other in this process, writing straight into the run directory
    (a job killed here is resumed from its own files by the next run)."""

    in_process = True

    def __init__(self, threads: int, log: Log):
        self.threads, self.slots, self.where, self.log = threads, 1, "this process", log

    def map(self, jobs, on_done, *, out, data=None, resume_hint="", pull=False):
        started = False
        for job in jobs:
            if not started:  # only a run with work fixes this process's thread count
                engine.env.use_threads(self.threads)
                started = True
            t0 = time.perf_counter()
            value = job.work(data, out, log=self.log)
            on_done(Done(job, value, time.perf_counter() - t0, platform.node(), self.where))
