"""Jobs on Dask worker processes: a local cluster (``--workers N``) or a running one (``--scheduler``).

The client (the ``ottotrain`` process) keeps the run directory; the workers need no shared
filesystem and no access to the data files. The run's data goes to every worker process
once (a worker plugin); each task runs one job in its worker's member process
(``execute.member_process``), in a temporary folder, and returns that folder's files as
bytes, which the client writes into the run directory as an in-process job would have. A
worker runs one task at a time (``nthreads=1``): Keras' seeds and graphs are per process.

Before any task, every worker's versions (``execute.versions``) are compared with the
client's, and each task checks its own worker again (a worker may join later).

Faults: a job whose worker dies runs again elsewhere up to ``jobs.RERUNS`` times (the
local cluster's setting; a remote scheduler applies its own ``allowed-failures``). The
scheduler going away, or a job that kept killing its workers, stops the run with one
line; what came back is already written, and a resumed run does only the rest.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import platform
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import dask
from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker
from distributed.security import Security

from ottotrain import __version__
from ottotrain.errors import ConfigError, RunError, first_line
from ottotrain.execute.jobs import RERUNS, Done, Executor, cores, default_threads, thread_env
from ottotrain.execute.member_process import in_member_process
from ottotrain.execute.versions import nthreads_line, version_mismatch, versions
from ottotrain.io import atomic_path
from ottotrain.log import Log

CONNECT_TIMEOUT = 20  # seconds to reach a scheduler and see its first worker


class DaskExecutor(Executor):
    """Jobs as tasks on a connected cluster's worker processes (``slots`` of them), each one's
    files written here as it comes back."""

    def __init__(self, client: Client, address: str, threads: int, slots: int, local: bool):
        self.client, self.address, self.threads, self.slots = client, address, threads, slots
        self.local = local  # started by this run (--workers), stopped at its end
        self.where = f"{slots} local worker(s)" if local else f"{slots} worker(s) of {address}"

    def map(self, jobs, on_done, *, out, data=None, resume_hint="", pull=False):
        jobs = iter(jobs)
        first = next(jobs, None)
        if first is None:
            return  # nothing to run: no data sent
        jobs, here, run_id = itertools.chain([first], jobs), versions(), uuid.uuid4().hex[:8]
        submitted: dict = {}  # future -> job
        pending = as_completed(loop=self.client.loop)

        def fill(token: str):  # all jobs at once, earlier ones first; or, with pull, one per slot
            while not pull or pending.count() < self.slots:
                job = next(jobs, None)
                if job is None:
                    return
                key, priority = f"ottotrain-{run_id}-{job.name}", -len(submitted)
                future = self.client.submit(
                    _task, job, token, here, self.threads, key=key, pure=False, priority=priority
                )
                submitted[future] = job
                pending.add(future)

        with shared_data(self, data) as token:
            try:
                fill(token)
                for future in pending:
                    job = submitted[future]
                    value, files, host, worker, seconds = self._result(future, job.name, resume_hint)
                    write_files(Path(out), files, last=job.last)
                    on_done(Done(job, value, seconds, host, worker))
                    fill(token)
            except BaseException:  # Ctrl-C, an error, a lost scheduler: this run's tasks go
                with contextlib.suppress(Exception):
                    self.client.cancel(list(submitted), force=True)
                raise

    def _result(self, future, name: str, resume_hint: str):
        try:
            return future.result()
        except KilledWorker:
            raise RunError(
                f"{name}: the worker processes running it kept dying (killed, or out of memory?; "
                f"{RERUNS} reruns on a local cluster); the finished ones are kept; {resume_hint}"
            ) from None
        except (FutureCancelledError, OSError) as e:
            if self.client.status == "running" and "connection" not in str(e):
                raise
            raise RunError(
                f"{self.address}: the Dask scheduler went away ({name} was not finished); the "
                f"finished ones are kept; start the scheduler again (or use --workers N) and {resume_hint}"
            ) from None


def _task(job, token: str, client_versions: dict, threads: int):
    """On a worker: one job in the worker's member process, in a fresh temporary folder.

    Returns its record, the folder's files, and where and how long it ran. A worker whose
    versions differ from the client's, or that runs tasks at once, is refused first.
    """
    worker = get_worker()
    wrong = version_mismatch(client_versions, {worker.address: versions()})
    if wrong:
        raise RunError(wrong)
    if worker.state.nthreads != 1:
        raise RunError(nthreads_line(worker.address, worker.state.nthreads))
    t0 = time.perf_counter()
    value, files = in_member_process(threads, _in_folder, job.work, _run_data[token])
    return value, files, platform.node(), worker.address, time.perf_counter() - t0


def _in_folder(work: Callable, data) -> tuple[object, dict[str, bytes]]:
    with tempfile.TemporaryDirectory(prefix="ottotrain-") as tmp:
        out = Path(tmp)
        value = work(data, out, log=Log(0))  # its log lines unsaid: the client says its own
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        return value, files


def write_files(root: Path, files: dict[str, bytes], last: str | None = None) -> None:
    """Write a task's files under ``root``, each atomically, ``last`` (a done marker) last.

    A path that is absolute or would land outside ``root`` (``..``, a symbolic link out of
    it) is refused before anything is written: the paths come from another machine.
    """
    base = root.resolve()
    for rel in files:
        target = (root / rel).resolve()
        if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts or base not in target.parents:
            raise RunError(
                f"{root}: a worker sent the file {rel!r}, which is outside the run directory; "
                "refused (nothing of that job was written); check the workers' ottotrain"
            )
    for rel in sorted(files, key=lambda r: (r == last, r)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(files[rel])


@contextlib.contextmanager
def open_cluster(
    scheduler: str | None, workers: int | None, threads: int | None, log: Log
) -> Iterator[DaskExecutor]:
    """Connect to ``scheduler``, or start a local cluster of ``workers`` processes; yield it.

    ``threads`` (None: the cores shared out among the jobs that run at once) is set in
    every worker's TensorFlow. The workers' versions are checked first.
    """
    # A lost scheduler, or a local cluster stopped by Ctrl-C, is one line of ours, not the
    # tracebacks Dask's and asyncio's loggers would print.
    quiet = [logging.getLogger(name) for name in ("distributed", "asyncio")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    local = None
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": RERUNS}):
            if workers is not None:
                threads = threads or default_threads(workers)
                local = _local_cluster(workers, threads)
                client = Client(local)
            else:
                client = _connect(scheduler)
        with _closing(client):
            address = client.scheduler.address
            info = _workers(client, address, wait=workers is None)
            _check_workers(client, address, info)
            threads = threads or _threads_per_host(client)
            where = f"a local cluster of {workers} workers" if local else f"{len(info)} workers of {address}"
            log(f"Cluster: {where}, {threads} TensorFlow thread(s) per member", 1)
            yield DaskExecutor(client, address, threads, len(info), local is not None)
    finally:
        if local is not None:
            with contextlib.suppress(Exception):
                local.close(timeout=10)
        gc.collect()  # the cluster's unretrieved futures say their exceptions now, quietly
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)


def _local_cluster(workers: int, threads: int) -> LocalCluster:
    with _ignoring_sigint():  # inherited by the workers: a Ctrl-C is the client's
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",  # no dashboard clash with another cluster
            silence_logs=logging.CRITICAL,
            env=thread_env(threads),
        )


def _check_workers(client: Client, address: str, info: dict[str, int]) -> None:
    try:
        theirs = client.run(versions)
    except Exception as e:  # e.g. a worker without ottotrain, or an older one
        raise RunError(
            f"{address}: a worker could not run ottotrain's version check ({first_line(e)}); "
            f"install ottotrain {__version__} on every worker"
        ) from None
    wrong = version_mismatch(versions(), theirs)
    if wrong:
        raise RunError(wrong)
    for w, nthreads in info.items():
        if nthreads != 1:
            raise RunError(nthreads_line(w, nthreads))


def _threads_per_host(client: Client) -> int:
    """Each worker's cores shared among the worker processes on its host (the least of them)."""
    per_host = client.run(lambda: (platform.node(), cores()))
    count: dict[str, int] = {}
    for host, _ in per_host.values():
        count[host] = count.get(host, 0) + 1
    return max(1, min(n // count[h] for h, n in per_host.values()))


@contextlib.contextmanager
def _ignoring_sigint():
    """SIGINT ignored for the block (in the main thread): processes started in it inherit that,
    so a terminal's Ctrl-C, sent to the whole process group, reaches only the client, which
    stops the local cluster itself (without a traceback from every worker)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def _closing(client: Client):
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a lost scheduler: nothing to say goodbye to
            client.close(timeout=5)


def _connect(scheduler: str) -> Client:
    # tls:// takes its certificates from Dask's configuration (docs/cluster.md).
    security = Security()
    if scheduler.startswith("tls://") and not (security.tls_ca_file and security.tls_client_cert):
        raise ConfigError(
            f"--scheduler {scheduler}: Dask's configuration names no TLS certificates; set "
            "distributed.comm.tls.ca-file, .client.cert and .client.key (or their "
            "DASK_DISTRIBUTED__COMM__TLS__* variables), see docs/cluster.md"
        )
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False, security=security)
    except (OSError, TimeoutError) as e:
        raise RunError(
            f"--scheduler {scheduler}: no Dask scheduler answered within {CONNECT_TIMEOUT} s "
            f"({type(e).__name__}); start one with 'dask scheduler' and workers with "
            f"'dask worker {scheduler} --nthreads 1', or check the address"
        ) from None


def _workers(client: Client, address: str, wait: bool) -> dict[str, int]:
    """The workers and their task threads; a remote scheduler's first worker is waited for."""
    if wait:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except TimeoutError:
            raise RunError(
                f"--scheduler {address}: no worker joined within {CONNECT_TIMEOUT} s; start "
                f"workers with 'dask worker {address} --nthreads 1'"
            ) from None
    return {w: d["nthreads"] for w, d in client.scheduler_info(n_workers=-1)["workers"].items()}


# The runs' data in this worker process, by token (see ``shared_data``).
_run_data: dict[str, object] = {}


class _RunData(WorkerPlugin):
    """A run's data, kept in every worker process, those that join later included."""

    def __init__(self, token: str, data):
        self.name = f"ottotrain-data-{token}"
        self.token, self.data = token, data

    def setup(self, worker):
        _run_data[self.token] = self.data

    def teardown(self, worker):
        _run_data.pop(self.token, None)


@contextlib.contextmanager
def shared_data(cluster: DaskExecutor, data) -> Iterator[str]:
    """Send ``data`` to every worker once for the block; yield the token a task finds it by.

    A worker plugin, not a scattered value: the scheduler hands it to a worker that joins or
    restarts later, and a killed worker takes no data with it (Dask keeps one replica of a
    scattered value, which would be gone with its worker).
    """
    plugin = _RunData(uuid.uuid4().hex[:12], data)
    cluster.client.register_plugin(plugin)
    try:
        yield plugin.token
    finally:
        # A local cluster is closed next, with the data; workers it is stopping would only
        # make an unregistering broadcast fail loudly.
        if not cluster.local:
            with contextlib.suppress(Exception):  # a lost scheduler: nothing left to unregister
                cluster.client.unregister_worker_plugin(plugin.name)
