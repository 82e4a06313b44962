"""The executor: typed jobs in this process, and the files a worker sends back."""

import functools
import os
from pathlib import Path

import pytest

from ottotrain.errors import RunError
from ottotrain.execute import Job, open_executor, write_files
from ottotrain.log import Log


@pytest.mark.parametrize(
    "rel",
    ["/tmp/ottotrain-outside.txt", "../outside.txt", "models/../../outside.txt", "link/outside.txt", "."],
)
def test_write_files_refuses_a_path_outside_the_run_directory(tmp_path, rel):
    """The paths come from another machine: absolute, .., a symbolic link out: refused, and
    nothing of that job written."""
    root, outside = tmp_path / "run", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    files = {"models/a.json": b"{}", rel: b"pwned"}
    with pytest.raises(RunError, match=f"a worker sent the file '{rel}', which is outside the run directory"):
        write_files(root, files, last="models/a.json")
    assert not (root / "models").exists() and not any(outside.iterdir())
    assert not (tmp_path / "outside.txt").exists() and not Path("/tmp/ottotrain-outside.txt").exists()


def test_write_files_writes_the_done_marker_last(tmp_path):
    files = {"models/z.keras": b"model", "models/a.json": b"{}", "models/b.csv": b"x"}
    write_files(tmp_path, files, last="models/a.json")
    times = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "models").iterdir()}
    assert (
        max(times, key=times.get) == "a.json" and (tmp_path / "models" / "z.keras").read_bytes() == b"model"
    )


def _square(offset: int, data: list, out: Path, log: Log) -> int:
    (out / f"{offset}.txt").write_text(str(data[offset] ** 2))
    return data[offset] ** 2


def test_in_process_runs_the_jobs_in_order_with_the_data(tmp_path):
    jobs = [Job(f"job{i}", functools.partial(_square, i), last=f"{i}.txt") for i in range(3)]
    done = []
    with open_executor(None, None, None, Log(0)) as ex:
        assert ex.in_process and ex.slots == 1
        ex.map(jobs, done.append, out=tmp_path, data=[3, 4, 5])
    assert [(d.job.name, d.value, d.worker) for d in done] == [
        ("job0", 9, "this process"),
        ("job1", 16, "this process"),
        ("job2", 25, "this process"),
    ]
    assert (
        sorted(os.listdir(tmp_path)) == ["0.txt", "1.txt", "2.txt"]
        and (tmp_path / "2.txt").read_text() == "25"
    )


@pytest.mark.parametrize(
    "scheduler, workers, message",
    [
        ("tcp://127.0.0.1:1", 2, "--scheduler and --workers: give one"),
        ("127.0.0.1:8786", None, "--scheduler 127.0.0.1:8786: expected a scheduler address"),
        (None, 0, "--workers 0: needs at least 1 worker process"),
    ],
)
def test_executor_options_refused_in_one_line(scheduler, workers, message):
    from ottotrain.errors import ConfigError

    with pytest.raises(ConfigError, match=message), open_executor(scheduler, workers, None, Log(0)):
        pass
