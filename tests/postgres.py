"""A throwaway PostgreSQL server for tests: the system's binaries, a temporary data directory,
a free loopback port, a password-protected user; stopped and deleted afterwards.

The binaries are PostgreSQL's own (``/usr/lib/postgresql/*/bin`` or ``PATH``); ``.ci/run``
installs them when a machine has none, and sets ``OTTOTRAIN_REQUIRE_POSTGRES=1`` so that CI
fails rather than skips without them. PostgreSQL refuses to run as root: as root the server
runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "ottotest"
PASSWORD = "s3cret-Pw-4711"  # must never appear in anything ottotrain prints or writes


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    port: int
    database: str = "postgres"

    def url(self, password=True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{self.database}"


def start_server():
    """Yield a running ``Server``; stop and remove it afterwards."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        msg = "no PostgreSQL binaries (initdb, pg_ctl); install postgresql (.ci/run does)"
        if os.environ.get("OTTOTRAIN_REQUIRE_POSTGRES"):
            pytest.fail(msg)
        pytest.skip(msg)
    root = Path(tempfile.mkdtemp(prefix="ottotrain-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        os.chown(pwfile, pg.pw_uid, pg.pw_gid)
    data, log = root / "data", root / "server.log"

    def run(*cmd):
        subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True, timeout=120)

    port = _free_port()
    try:
        run(bin_dir / "initdb", "-D", data, "-U", USER, "--auth=scram-sha-256", f"--pwfile={pwfile}")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start")
        yield Server(port)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)
