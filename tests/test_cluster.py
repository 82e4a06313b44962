"""cv members and tune trials on a real Dask cluster on loopback, against the serial runs."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import default_sigint, error_line, python_cmd, run_cli, subprocess_env, tiny_config

DASK = str(Path(sys.executable).with_name("dask"))
FOLDS, SEEDS = 2, 2
RECORDS = "fold*-seed?.json"  # the members' records: each one's "finished" marker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Cluster:
    """A ``dask scheduler`` and N ``dask worker`` processes (one thread each) on 127.0.0.1.

    No nannies: a killed worker stays dead, so no test waits for its restart.
    """

    def __init__(self, tmp: Path, workers: int, worker_env: dict | None = None, tls: dict | None = None):
        """``worker_env``: the workers' environment on top of this process's; ``tls``: the ca, cert
        and key files of a TLS cluster (every process uses the one certificate)."""
        port = _free_port()
        self.address = f"{'tls' if tls else 'tcp'}://127.0.0.1:{port}"
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OTTOTRAIN_CACHE=str(tmp / "cache"))
        self.log = open(tmp / "dask.log", "ab")  # noqa: SIM115 (closed in stop)
        common = {"start_new_session": True, "stdout": subprocess.DEVNULL, "stderr": self.log}
        certs = [f"--tls-{k}={v}" for k, v in (tls or {}).items()]
        self.scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard", *certs],
            env=env,
            **common,
        )
        self.workers = [
            subprocess.Popen(
                [DASK, "worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
                + ["--host", "127.0.0.1", "--death-timeout", "60", *certs],
                env={**env, **(worker_env or {})},
                **common,
            )
            for _ in range(workers)
        ]
        from distributed import Client
        from distributed.security import Security

        security = None
        if tls:
            security = Security(
                tls_ca_file=tls["ca-file"],
                tls_client_cert=tls["cert"],
                tls_client_key=tls["key"],
                require_encryption=True,
            )
        try:
            self.client = Client(self.address, timeout=60, set_as_default=False, security=security)
            self.client.wait_for_workers(workers, timeout=60)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> dict:
        return self.client.run(os.getpid)

    def stop(self):
        with contextlib.suppress(Exception):  # (no client: it never connected)
            self.client.close(timeout=5)
        for p in (*self.workers, self.scheduler):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = _Cluster(tmp_path_factory.mktemp("dask"), workers=2)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def threads():
    """This process's TensorFlow threads: the serial runs here use them, so the workers do too."""
    from ottotrain import engine

    return engine.env.intra_op_threads()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """300 rows, 100 test rows, Dense(8), 2 epochs: a config and its data."""
    from ottotrain.data.synth import make_data

    d = tmp_path_factory.mktemp("small")
    train, test = make_data(d, rows=300, seed=3, test_rows=100)
    cfg = tiny_config({"train": train, "test": test}, epochs=2)
    cfg["model"]["layers"][0]["Dense"]["units"] = 8
    path = d / "small.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def serial_cv(small, threads, tmp_path_factory):
    from ottotrain.config import load_config
    from ottotrain.log import Log
    from ottotrain.workflows.cv import run_cv

    run_dir = tmp_path_factory.mktemp("serial") / "run"
    run_cv(load_config(small), folds=FOLDS, seeds=SEEDS, run_dir=run_dir, log=Log(0), member_threads=threads)
    return run_dir


def _files(run_dir: Path) -> list[str]:
    return sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())


def _same_predictions(a: Path, b: Path):
    for name in ("oof.csv", "submission.csv"):
        x, y = pd.read_csv(a / name), pd.read_csv(b / name)
        assert list(x.columns) == list(y.columns)
        assert np.array_equal(x.iloc[:, 0], y.iloc[:, 0])
        numeric = [c for c in x.columns if c.startswith("Class_")]
        np.testing.assert_allclose(x[numeric].to_numpy(), y[numeric].to_numpy(), atol=1e-6, rtol=0)


def _kill_when_busy(cluster: _Cluster, done: threading.Event, killed: list):
    """SIGKILL the first worker seen running a task, half a second into it."""
    pids = cluster.pids()
    while not done.is_set():
        busy = [w for w, tasks in cluster.client.processing().items() if tasks]
        if busy:
            time.sleep(0.5)
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(busy[0])
            return
        time.sleep(0.05)


def test_cv_on_a_cluster_with_a_killed_worker_matches_the_serial_run(
    small, serial_cv, cluster, threads, tmp_path
):
    """Same files, same predictions (1e-6), though a worker was SIGKILLed in mid-member."""
    import io

    from ottotrain.config import load_config
    from ottotrain.log import Log
    from ottotrain.workflows.cv import run_cv

    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_when_busy, args=(cluster, done, killed), daemon=True)
    killer.start()
    out = io.StringIO()
    try:
        m = run_cv(
            load_config(small), folds=FOLDS, seeds=SEEDS, run_dir=tmp_path / "run", log=Log(1, out),
            member_threads=threads, scheduler=cluster.address,
        )  # fmt: skip
    finally:
        done.set()
        killer.join(10)
    assert killed, "no worker was busy to kill"
    assert m.n_models == FOLDS * SEEDS
    assert _files(tmp_path / "run") == _files(serial_cv)
    _same_predictions(tmp_path / "run", serial_cv)
    text = out.getvalue()
    assert text.count(" s on ") == FOLDS * SEEDS  # one line per member: where, how long
    assert "wall for" in text
    cv_json = yaml.safe_load((tmp_path / "run" / "cv.json").read_text())
    assert cv_json["member_threads"] == threads


def _tune_config(small: Path, tmp: Path) -> Path:
    cfg = yaml.safe_load(small.read_text())
    cfg["tune"] = {
        "trials": 2,
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "space": {
            "model.layers[0].Dense.units": {"int": [4, 16]},
            "train.optimizer.learning_rate": {"float": [0.001, 0.05], "log": True},
        },
    }
    path = tmp / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_tune_on_a_cluster_matches_the_serial_study(small, cluster, threads, tmp_path):
    """Trials asked and told here, trained on the workers: the same values, the same trial files."""
    from ottotrain.config import load_config
    from ottotrain.log import Log
    from ottotrain.workflows.tune import tune

    cfg = load_config(_tune_config(small, tmp_path))
    here = tune(cfg, study_dir=tmp_path / "serial", log=Log(0), member_threads=threads)
    there = tune(
        cfg, study_dir=tmp_path / "cluster", log=Log(0), member_threads=threads, scheduler=cluster.address
    )
    assert (here.best_trial, here.trials) == (there.best_trial, there.trials)
    a, b = pd.read_csv(tmp_path / "serial" / "trials.csv"), pd.read_csv(tmp_path / "cluster" / "trials.csv")
    np.testing.assert_allclose(a["value"], b["value"], atol=1e-6, rtol=0)
    assert a.drop(columns=["value", "seconds"]).equals(b.drop(columns=["value", "seconds"]))
    assert _files(tmp_path / "serial" / "trials") == _files(tmp_path / "cluster" / "trials")


HERE = {"ottotrain": "2.0.0", "ottotrain source": "0123456789ab", "keras": "3.15.1", "tensorflow": "2.21.0"}


@pytest.mark.parametrize(
    "theirs, message",
    [
        (HERE, None),
        (
            HERE | {"keras": "3.14.0"},
            "worker tcp://10.0.0.7:4001: runs keras 3.14.0, this client keras 3.15.1; install the same",
        ),
        (
            HERE | {"ottotrain": "1.0.0", "tensorflow": "2.20.0"},
            "worker tcp://10.0.0.7:4001: runs ottotrain 1.0.0, tensorflow 2.20.0, this client "
            "ottotrain 2.0.0, tensorflow 2.21.0;",
        ),
        (
            HERE | {"ottotrain source": "ba9876543210"},
            "runs ottotrain source ba9876543210, this client ottotrain source 0123456789ab;",
        ),
        (
            {"ottotrain": "1.0.0", "keras": "3.15.1", "tensorflow": "2.21.0"},  # a 1.0 worker: no hash
            "runs ottotrain 1.0.0, ottotrain source none, this client ottotrain 2.0.0, "
            "ottotrain source 0123456789ab;",
        ),
        (
            {"ottotrain": "2.0.0", "ottotrain source": "0123456789ab"},
            "runs keras none, tensorflow none, this client keras 3.15.1, tensorflow 2.21.0",
        ),
    ],
)
def test_a_worker_with_other_versions_is_refused_in_one_line(theirs, message):
    from ottotrain.execute import version_mismatch

    line = version_mismatch(HERE, {"tcp://10.0.0.7:4001": theirs})
    if message is None:
        assert line is None
    else:
        assert message in line and "\n" not in line


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--scheduler and --workers: give one"),
        (["--scheduler", "127.0.0.1:8786"], "--scheduler 127.0.0.1:8786: expected a scheduler address"),
    ],
)
def test_cluster_options_refused_in_one_line(small, args, message):
    assert message in error_line(run_cli("cv", small, *args))


def test_a_tensorflow_running_with_other_threads_is_refused(threads):
    from ottotrain import engine
    from ottotrain.errors import RunError

    engine.env.tf.constant(1.0) + 1  # TensorFlow has started
    with pytest.raises(
        RunError, match=f"already runs with {threads} intra-op threads here.*--member-threads"
    ):
        engine.env.use_threads(threads + 1)
    engine.env.use_threads(threads)  # its own count: fine


def test_cv_workers_starts_and_stops_a_local_cluster(small, serial_cv, threads, tmp_path):
    """--workers 1: a local cluster for the run, stopped at its end; the serial run's members."""
    run_dir = tmp_path / "run"
    r = run_cli(
        "cv", small, "--folds", FOLDS, "--seeds", 1, "--workers", 1,
        "--member-threads", threads, "--run-dir", run_dir,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "a local cluster of 1 workers" in r.stderr
    _same_members(run_dir, serial_cv)
    status = yaml.safe_load((run_dir / "status.json").read_text())
    assert status["status"] == "finished" and status["member_threads"] == threads


def _same_members(run_dir: Path, serial: Path):
    """The members of a one-seed run are the serial run's seed-1 members: weights to 1e-6."""
    from ottotrain import engine

    for fold in range(1, FOLDS + 1):
        mine, theirs = (
            engine.inference.load_model(d / "models" / f"fold{fold}-seed1.keras") for d in (run_dir, serial)
        )
        for a, b in zip(mine.get_weights(), theirs.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def _self_signed(tmp: Path) -> dict:
    """A certificate and its key for 127.0.0.1, made by openssl: the cluster's CA, server and client."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return {"ca-file": str(cert), "cert": str(cert), "key": str(key)}


def test_cv_on_a_tls_scheduler_with_dasks_security_settings(small, serial_cv, threads, tmp_path):
    """tls://: the client's certificates from Dask's configuration (distributed.comm.tls.*),
    as docs/cluster.md says; without them the scheduler is not reached."""
    import dask

    tls = _self_signed(tmp_path)
    tls_cluster = _Cluster(tmp_path, workers=1, tls=tls)
    run_dir = tmp_path / "run"
    settings = {
        "distributed.comm.tls.ca-file": str(tls["ca-file"]),
        "distributed.comm.tls.client.cert": str(tls["cert"]),
        "distributed.comm.tls.client.key": str(tls["key"]),
    }
    args = ["cv", small, "--folds", FOLDS, "--seeds", 1, "--scheduler", tls_cluster.address]
    try:
        with dask.config.set(settings):
            r = run_cli(*args, "--member-threads", threads, "--run-dir", run_dir)
        assert r.exit_code == 0, r.output
        assert f"workers of {tls_cluster.address}" in r.stderr
        _same_members(run_dir, serial_cv)
        line = error_line(run_cli(*args, "--run-dir", tmp_path / "refused"))
        assert f"--scheduler {tls_cluster.address}: Dask's configuration names no TLS certificates" in line
        assert not (tmp_path / "refused").exists()
    finally:
        tls_cluster.stop()


def test_a_worker_with_other_ottotrain_source_is_refused_naming_both(small, tmp_path):
    """The same version number on other code (one comment added) is another ottotrain."""
    import ottotrain
    from ottotrain.execute.versions import source_hash, tree_hash

    other = tmp_path / "other" / "ottotrain"
    shutil.copytree(Path(ottotrain.__file__).parent, other, ignore=shutil.ignore_patterns("__pycache__"))
    with open(other / "metrics.py", "a") as f:
        f.write("# another checkout\n")
    theirs = tree_hash(other)
    foreign = _Cluster(tmp_path, workers=1, worker_env={"PYTHONPATH": str(other.parent)})
    try:
        r = run_cli(
            "cv", small, "--folds", FOLDS, "--scheduler", foreign.address, "--run-dir", tmp_path / "run"
        )
    finally:
        foreign.stop()
    line = error_line(r)
    assert f"runs ottotrain source {theirs}, this client ottotrain source {source_hash()};" in line
    assert theirs != source_hash() and not (tmp_path / "run").exists()


def test_ctrl_c_on_local_workers_is_one_line_and_exit_130(small, tmp_path):
    """A terminal's Ctrl-C reaches the whole process group: the client says one line, exits 130,
    and stops its worker processes; no worker prints a traceback; the run resumes."""
    run_dir, err_path = tmp_path / "run", tmp_path / "err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [
                *python_cmd(),
                "cv",
                str(small),
                "--folds",
                str(FOLDS),
                "--workers",
                "2",
                "--run-dir",
                str(run_dir),
            ],
            env=subprocess_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            preexec_fn=default_sigint,
        )
    try:
        deadline = time.time() + 180
        while "members to train on" not in err_path.read_text() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # into the first members
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    text = err_path.read_text()
    assert rc == 130, text
    assert "Traceback" not in text and text.count("Interrupted") == 1, text
    assert f"continue with: ottotrain cv --resume {run_dir}" in text
    assert yaml.safe_load((run_dir / "status.json").read_text())["status"] == "interrupted"
    time.sleep(2)
    with pytest.raises(ProcessLookupError):  # the local cluster went with its client
        os.killpg(proc.pid, 0)


def test_scheduler_going_away_stops_with_one_line_and_resumes(small, serial_cv, cluster, threads, tmp_path):
    """The last test of the module: it kills the module's scheduler. Resumed here, serially."""
    run_dir = tmp_path / "run"

    def kill_scheduler():  # once the first member's record came back
        while not list((run_dir / "models").glob(RECORDS)) and cluster.scheduler.poll() is None:
            time.sleep(0.05)
        os.killpg(cluster.scheduler.pid, signal.SIGKILL)

    cluster.client.close()  # this test's own client would only complain

    killer = threading.Thread(target=kill_scheduler, daemon=True)
    killer.start()
    try:
        r = run_cli(
            "cv", small, "--folds", FOLDS, "--seeds", 1, "--scheduler", cluster.address,
            "--member-threads", threads, "--run-dir", run_dir,
        )  # fmt: skip
    finally:
        killer.join(60)
    line = error_line(r)
    assert "the Dask scheduler went away" in line and f"ottotrain cv --resume {run_dir}" in line
    finished = sorted(p.name for p in (run_dir / "models").glob(RECORDS))
    assert 1 <= len(finished) < FOLDS
    r = run_cli("cv", "--resume", run_dir)  # the recorded member threads: this process's
    assert r.exit_code == 0, r.output
    assert r.stderr.count("finished earlier, reused") == len(finished)
    _same_members(run_dir, serial_cv)
