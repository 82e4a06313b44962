"""cv members and tune trials on a Dask distributed cluster (``--scheduler`` / ``--workers``).

The client (the ``ottotrain`` process) keeps the run directory; the workers need no shared
filesystem and no access to the data files. The training data goes to the workers once per
run (as a worker plugin); each task trains one member (or trial) through the same code a serial run
uses, in a temporary folder on its worker, and returns that folder's files as bytes, which
the client writes into the run directory as a serial run would have. A worker runs one
task at a time (``nthreads=1``): Keras' seeds and graphs are per process.

Before any task, every worker's ottotrain, Keras and TensorFlow versions are compared with
the client's (package metadata, no import) and each task checks its own worker again (a
worker may join later). TensorFlow's intra-op thread count (the run's member threads) is
set in the worker process before its first op, and a worker process that already runs with
another count is refused (``engine.env.use_threads``): the last bits of the results depend
on it.

Faults: Dask runs a lost worker's task again elsewhere, up to ``ALLOWED_FAILURES`` deaths
of workers running it (the local cluster's setting; a remote scheduler has its own). The
scheduler going away, or a task that kept killing its workers, stops the run with one
line; what came back is already written, and ``--resume`` trains only the rest.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import pickle
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dask
from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from ottotrain import __version__, engine
from ottotrain.errors import ConfigError, RunError, first_line
from ottotrain.io import atomic_path
from ottotrain.log import Log

ALLOWED_FAILURES = 3  # worker deaths one task may cause before the run stops (local cluster)
CONNECT_TIMEOUT = 20  # seconds to reach a scheduler and see its first worker
VERSIONED = ("ottotrain", "keras", "tensorflow")  # what client and workers must share


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads(parallel: int = 1) -> int:
    """TensorFlow threads per member when ``parallel`` members run at once on these cores.

    A process started with TF_NUM_INTRAOP_THREADS (tune's --workers) has that share already.
    """
    env = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    if parallel == 1 and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, cores() // parallel)


def versions() -> dict[str, str]:
    """The versions that must agree between client and workers, from package metadata."""
    out = {"ottotrain": __version__}
    for dist in VERSIONED[1:]:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "none"
    return out


def version_mismatch(here: dict[str, str], workers: dict[str, dict[str, str]]) -> str | None:
    """The line refusing the first worker whose versions differ from ``here``, or None."""
    for address, there in sorted(workers.items()):
        differ = [k for k in VERSIONED if there.get(k) != here.get(k)]
        if differ:
            theirs = ", ".join(f"{k} {there.get(k, 'none')}" for k in differ)
            ours = ", ".join(f"{k} {here.get(k, 'none')}" for k in differ)
            return (
                f"worker {address}: runs {theirs}, this client {ours}; install the same versions "
                "on the workers and the client (pip install -e . in the same checkout), then restart them"
            )
    return None


def check_worker(client_versions: dict[str, str]) -> None:
    """In a task: refuse a worker whose versions differ from the client's, or that runs tasks at once."""
    worker = get_worker()
    wrong = version_mismatch(client_versions, {worker.address: versions()})
    if wrong:
        raise RunError(wrong)
    if worker.state.nthreads != 1:
        raise RunError(_nthreads_line(worker.address, worker.state.nthreads))


def _nthreads_line(address: str, nthreads: int) -> str:
    return (
        f"worker {address}: runs {nthreads} tasks at once; ottotrain trains one model per worker "
        "process (Keras' seeds are per process): start workers with 'dask worker ADDRESS "
        "--nthreads 1 --nworkers N'"
    )


@dataclass
class Cluster:
    """A connected cluster: its client, and how its members run."""

    client: Client
    address: str  # the scheduler's
    threads: int  # TensorFlow intra-op threads of every member
    slots: int  # members that run at once (worker processes)
    local: bool  # started by this run (--workers), stopped at its end


@dataclass
class TaskResult:
    """What a task sends back: the files of its run-directory part, and where it ran."""

    name: str
    files: dict[str, bytes]  # path relative to the run directory -> content
    host: str
    worker: str
    seconds: float  # the task's wall time on its worker
    value: object = None  # the task's own result (a tune trial's outcome)


def run_task(name: str, threads: int, work: Callable[[Path], object]) -> TaskResult:
    """In a task: ``work(folder)`` in the worker's member process, in a fresh temporary folder;
    the folder's files come back."""
    t0 = time.perf_counter()
    value, files = _in_member_process(threads, _in_folder, work)
    return TaskResult(name, files, platform.node(), get_worker().address, time.perf_counter() - t0, value)


def _in_folder(work: Callable[[Path], object]) -> tuple[object, dict[str, bytes]]:
    with tempfile.TemporaryDirectory(prefix="ottotrain-") as tmp:
        out = Path(tmp)
        value = work(out)
        return value, {
            p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
        }


# The worker process's member process, started at its first task: not the worker process
# itself, because Keras draws initial weights from Python's global random module, which the
# worker's own threads (heartbeats, comms) draw from too; and TensorFlow fixes its thread
# count once per process, so a run with another count gets a new member process.
_member_process: list = []  # [threads, Popen]


def _in_member_process(threads: int, fn: Callable, *args):
    if _member_process and (_member_process[0] != threads or _member_process[1].poll() is not None):
        _stop(_member_process.pop())
        _member_process.clear()
    if not _member_process:
        env = dict(
            os.environ,
            TF_NUM_INTRAOP_THREADS=str(threads),
            TF_NUM_INTEROP_THREADS="1",
            OMP_NUM_THREADS=str(threads),
        )
        serve = "from ottotrain.workflows.cluster import serve_member_process; serve_member_process()"
        proc = subprocess.Popen(
            [sys.executable, "-c", serve], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        _member_process.extend([threads, proc])
    proc = _member_process[1]
    try:
        _send(proc.stdin, (fn, args))
        ok, value = _receive(proc.stdout)
    except (EOFError, OSError):
        # Killed (the OOM killer takes the biggest process): as if its worker had been, so
        # that Dask runs the task again elsewhere, and stops after ALLOWED_FAILURES deaths.
        os._exit(1)
    if not ok:
        raise value
    return value


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _send(stream, obj) -> None:
    # pickle between a worker and its own child process, never into a run directory
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    data = stream.read(int.from_bytes(head, "little"))
    return pickle.loads(data)


def serve_member_process() -> None:
    """A member process: run the calls its worker sends until the worker closes the pipe or dies."""
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a print goes to stderr, never into the replies
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the client's to handle
    parent = os.getppid()

    def orphaned():  # a killed worker (SIGKILL) takes its member process with it
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    engine.env.use_threads(int(os.environ["TF_NUM_INTRAOP_THREADS"]))
    while True:
        try:
            fn, args = _receive(requests)
        except EOFError:
            return
        try:
            reply = (True, fn(*args))
        except Exception as e:
            reply = (False, e)
        try:
            _send(replies, reply)
        except (pickle.PicklingError, TypeError, AttributeError):  # an exception pickle cannot carry
            _send(replies, (False, RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))


def write_files(root: Path, files: dict[str, bytes], last: str | None = None) -> None:
    """Write a task's files under ``root``, each atomically, ``last`` (a done marker) last."""
    for rel in sorted(files, key=lambda r: (r == last, r)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(files[rel])


def check_options(scheduler: str | None, workers: int | None) -> None:
    if scheduler is not None and workers is not None:
        raise ConfigError(
            "--scheduler and --workers: give one (--workers N starts a local cluster; "
            "--scheduler tcp://HOST:PORT uses a running one)"
        )
    if scheduler is not None and "://" not in scheduler:
        raise ConfigError(f"--scheduler {scheduler}: expected a scheduler address such as tcp://HOST:8786")


@contextlib.contextmanager
def open_cluster(
    scheduler: str | None, workers: int | None, threads: int | None, log: Log
) -> Iterator[Cluster]:
    """Connect to ``scheduler``, or start a local cluster of ``workers`` processes; yield it.

    ``threads`` (None: the cores shared out among the members that run at once) is set in
    every worker's TensorFlow. The workers' versions are checked first.
    """
    check_options(scheduler, workers)
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # a lost scheduler is one line of ours, not tracebacks
    local = None
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
            if workers is not None:
                threads = threads or default_threads(workers)
                with _ignoring_sigint():  # inherited by the workers: a Ctrl-C is the client's
                    local = LocalCluster(
                        n_workers=workers,
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address=":0",  # no dashboard clash with another cluster
                        silence_logs=logging.CRITICAL,
                        # Read by TensorFlow at its start; each task sets (and checks) it too.
                        env={
                            "TF_NUM_INTRAOP_THREADS": str(threads),
                            "TF_NUM_INTEROP_THREADS": "1",
                            "OMP_NUM_THREADS": str(threads),
                        },
                    )
                client = Client(local)
            else:
                client = _connect(scheduler)
        with _closing(client):
            address = client.scheduler.address
            info = _workers(client, address, wait=workers is None)
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
                    raise RunError(_nthreads_line(w, nthreads))
            if threads is None:  # each worker's cores shared among the worker processes on its host
                per_host = client.run(lambda: (platform.node(), cores()))
                count: dict[str, int] = {}
                for host, _ in per_host.values():
                    count[host] = count.get(host, 0) + 1
                threads = max(1, min(n // count[h] for h, n in per_host.values()))
            where = f"a local cluster of {workers} workers" if local else f"{len(info)} workers of {address}"
            log(f"Cluster: {where}, {threads} TensorFlow thread(s) per member", 1)
            yield Cluster(client, address, threads, len(info), local is not None)
    finally:
        if local is not None:
            with contextlib.suppress(Exception):
                local.close(timeout=10)
        quiet.setLevel(level)


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
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
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


# The runs' training data in this worker process, by token (see ``shared_data``).
_run_data: dict[str, object] = {}


class _RunData(WorkerPlugin):
    """A run's training data, kept in every worker process, those that join later included."""

    def __init__(self, token: str, data):
        self.name = f"ottotrain-data-{token}"
        self.token, self.data = token, data

    def setup(self, worker):
        _run_data[self.token] = self.data

    def teardown(self, worker):
        _run_data.pop(self.token, None)


@contextlib.contextmanager
def shared_data(cluster: Cluster, data) -> Iterator[str]:
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


def run_data(token: str):
    """In a task: the data that ``shared_data`` sent to this worker."""
    return _run_data[token]


def run_tasks(
    cluster: Cluster,
    next_task: Callable[[], tuple[str, Callable, tuple] | None],
    on_done: Callable[[TaskResult], None],
    resume_hint: str,
    in_flight: int | None = None,
) -> None:
    """Run tasks on the cluster until ``next_task()`` has none left; ``on_done`` each result as it comes.

    ``next_task()`` gives (name, function, args): all of them at once, earlier ones preferred,
    or at most ``in_flight`` at a time (tune asks a trial when a worker can take it). Ctrl-C,
    an error or a lost scheduler cancels this run's tasks on the cluster.
    """
    run_id = uuid.uuid4().hex[:8]
    names: dict = {}
    pending = as_completed(loop=cluster.client.loop)

    def fill():
        while in_flight is None or pending.count() < in_flight:
            task = next_task()
            if task is None:
                return
            name, fn, args = task
            key = f"ottotrain-{run_id}-{name}"
            future = cluster.client.submit(fn, *args, key=key, pure=False, priority=-len(names))
            names[future] = name
            pending.add(future)

    try:
        fill()
        for future in pending:
            on_done(_result(cluster, future, names[future], resume_hint))
            fill()
    except BaseException:
        with contextlib.suppress(Exception):
            cluster.client.cancel(list(names), force=True)
        raise


def _result(cluster: Cluster, future, name: str, resume_hint: str) -> TaskResult:
    try:
        return future.result()
    except KilledWorker:
        raise RunError(
            f"{name}: {ALLOWED_FAILURES} workers died while running it (killed, or out of memory?); "
            f"the finished ones are kept; {resume_hint}"
        ) from None
    except (FutureCancelledError, OSError) as e:
        if cluster.client.status == "running" and "connection" not in str(e):
            raise
        raise RunError(
            f"{cluster.address}: the Dask scheduler went away ({name} was not finished); the "
            f"finished ones are kept; start the scheduler again (or use --workers N) and {resume_hint}"
        ) from None
