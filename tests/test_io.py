"""Atomic writes (ottotrain/io.py): the permissions of what they write, and of what others do."""

import os
import stat
import sys
from pathlib import Path

import pytest

from ottotrain import io


@pytest.fixture
def umask_027():
    """The process umask set to 0o027 for the test (the files' expected modes follow it)."""
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_folders_get_the_modes_open_and_mkdir_give(tmp_path, umask_027):
    io.write_text(tmp_path / "a.txt", "x")
    with io.atomic_path(tmp_path / "m.keras", durable=False) as tmp:
        assert tmp.endswith(".keras") and _mode(tmp) == 0o640
        Path(tmp).write_text("y")
    folder = io.new_beside(tmp_path / "export", ".tmp", folder=True)
    assert _mode(tmp_path / "a.txt") == 0o640 and _mode(tmp_path / "m.keras") == 0o640
    assert os.path.isdir(folder) and _mode(folder) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [Path(folder).name]


def test_a_file_created_at_any_moment_of_an_atomic_write_keeps_the_umask(tmp_path, umask_027):
    """A file another thread creates while an atomic write runs gets the umask's bits off.

    The profiler hook runs after every built-in call of the write, in its thread, at the
    moment another thread could run: setting the umask to 0 to read it, however briefly,
    made such a file world-writable.
    """
    theirs, modes = tmp_path / "theirs", set()
    theirs.mkdir()

    def create_a_file(frame, event, arg):
        if event == "c_return":
            f = theirs / str(len(modes))
            os.close(os.open(f, os.O_CREAT | os.O_WRONLY, 0o666))
            modes.add(_mode(f))
            os.unlink(f)

    sys.setprofile(create_a_file)
    try:
        io.write_text(tmp_path / "ours.txt", "x")
    finally:
        sys.setprofile(None)
    assert (tmp_path / "ours.txt").read_text() == "x"
    assert modes == {0o640}, sorted(oct(m) for m in modes)
