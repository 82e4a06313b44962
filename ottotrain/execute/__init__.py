"""One way to run many jobs: in this process, on local worker processes, on a Dask cluster.

``cv`` (and ``tune``) are plans of typed jobs (``Job``) over an ``Executor``::

    with open_executor(scheduler, workers, threads, log) as ex:
        ex.map(jobs, on_done, out=run_dir, data=data, resume_hint="continue with: ...")

``--workers N`` means N local worker processes (Dask's ``LocalCluster``), ``--scheduler URL``
a running Dask cluster, neither: this process. The executor owns the fault policy
(``RERUNS``), each job's TensorFlow threads, the data sent once per worker process, Ctrl-C
and the workers' version check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ottotrain.errors import ConfigError
from ottotrain.execute.dask import open_cluster, write_files
from ottotrain.execute.jobs import RERUNS, Done, Executor, InProcess, Job, default_threads
from ottotrain.execute.versions import version_mismatch
from ottotrain.log import Log

__all__ = [
    "RERUNS",
    "Done",
    "Executor",
    "Job",
    "check_options",
    "open_executor",
    "version_mismatch",
    "write_files",
]


def check_options(scheduler: str | None, workers: int | None) -> None:
    """Refuse ``--scheduler`` with ``--workers``, a scheduler that is not an address, or no workers."""
    if scheduler is not None and workers is not None:
        raise ConfigError(
            "--scheduler and --workers: give one (--workers N starts a local cluster; "
            "--scheduler tcp://HOST:PORT uses a running one)"
        )
    if scheduler is not None and "://" not in scheduler:
        raise ConfigError(f"--scheduler {scheduler}: expected a scheduler address such as tcp://HOST:8786")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: needs at least 1 worker process")


@contextlib.contextmanager
def open_executor(
    scheduler: str | None, workers: int | None, threads: int | None, log: Log
) -> Iterator[Executor]:
    """The executor for ``--scheduler``/``--workers`` (neither: this process), for the block.

    ``threads``: TensorFlow intra-op threads of every job (None: the cores shared out among
    the jobs that run at once). A cluster is reached, and its workers checked, first.
    """
    check_options(scheduler, workers)
    if scheduler is None and workers is None:
        yield InProcess(threads or default_threads(), log)
        return
    with open_cluster(scheduler, workers, threads, log) as cluster:
        yield cluster
