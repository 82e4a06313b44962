"""A real ``mlflow server`` for tests: a free loopback port, a backend store given by the test
(PostgreSQL from tests/postgres.py, or SQLite), artifacts served from a temporary folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.postgres import _free_port


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen
    log: Path

    def wait(self, timeout: float = 180) -> MlflowServer:
        """Return once /health answers; raise (with the server's log) if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not up in {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own group: uvicorn's workers too
            self.process.wait(timeout=30)


def start_mlflow(backend: str, root: Path) -> MlflowServer:
    """Start the server (its database migrations take a while: ``wait`` for it); stop it with ``.stop()``."""
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow), "server", "--backend-store-uri", backend, "--artifacts-destination",
           str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    log = open(root / "mlflow-server.log", "wb")  # noqa: SIM115 (the server's, closed with it)
    # Without this, MLflow 3 starts a job runner beside the server: eight more Python processes
    # (huey consumers for its GenAI jobs, which ottotrain never submits), each importing MLflow
    # on the machine's two cores while the tests or the benchmarks beside them train.
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    return MlflowServer(f"http://127.0.0.1:{port}", process, root / "mlflow-server.log")
