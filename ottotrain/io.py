"""Atomic file writes: a crash at any moment never leaves a truncated artifact."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path

from ottotrain.errors import DataError


@contextlib.contextmanager
def atomic_path(path, durable=True):
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary file lives in the same folder (so the rename is atomic on POSIX)
    and is removed if the block raises. A crashed or killed process therefore never
    leaves a truncated file. ``durable`` also fsyncs the file and the folder so the
    result survives a power cut; the per-epoch resume files, rewritten every epoch,
    skip it (fsync costs tens of milliseconds; a lost resume point costs one epoch).
    """
    path = Path(path)
    # Keep the real suffix last: Keras insists that a model file ends in ".keras".
    tmp = new_beside(path, f".tmp{path.suffix}")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)  # the rename itself survives a power cut
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def new_beside(path, suffix: str, folder=False) -> str:
    """Create a new, uniquely named, empty file (or ``folder``) beside ``path``; return its path.

    Created with the permissions ``open`` and ``mkdir`` give (0o666 and 0o777, less the
    umask, which the kernel applies): reading or setting the process umask instead would
    leave other threads' files world-writable for that moment.
    """
    path = Path(path)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}")
        with contextlib.suppress(FileExistsError):  # taken: draw another name
            if folder:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
    raise FileExistsError(f"{path.parent}: no free temporary name beside {path.name}")


def _fsync_dir(folder):
    with contextlib.suppress(OSError):  # not supported everywhere (Windows); best effort
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path, text: str, durable=True):
    with atomic_path(path, durable) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json(path, obj, durable=True):
    write_text(path, json.dumps(obj, indent=1, default=_json_default) + "\n", durable)


def _json_default(o):
    # numpy scalars and arrays, known by their method: this module stays free of numpy,
    # which config errors and `ottotrain runs` would otherwise wait for.
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_folder(path, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` (name: content) as the folder ``path``, replacing it all at once.

    They are written into a new folder beside it, which then takes its place: a reader sees
    the old set or the new one, never a mix, and an error leaves the old set as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(new_beside(path, ".tmp", folder=True))
    old = None
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if path.exists():
            # A folder can only be renamed onto an empty one: move the old set aside first.
            old = Path(new_beside(path, ".old", folder=True))
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old, path)
        raise
    _fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return [path / name for name in files]


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def cache_dir(*parts) -> Path:
    """ottotrain's cache folder: $OTTOTRAIN_CACHE, else $XDG_CACHE_HOME/ottotrain, else ~/.cache/ottotrain."""
    root = (
        os.environ.get("OTTOTRAIN_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ottotrain"
    )
    return Path(root, *parts)


# What a table of predictions can be written as (``runs.artifacts.write_predictions``).
TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".feather", ".arrow")


def check_output_path(path) -> Path:
    """Check that a table of predictions can be written at ``path``: its folder exists, it is
    not a folder, its name says a known format."""
    path = Path(path)
    if not path.parent.exists():
        raise DataError(f"{path}: the output folder {path.parent} does not exist; create it first")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give a file name such as submission.csv")
    if not path.name.lower().endswith(TABLE_SUFFIXES):
        raise DataError(
            f"{path}: unknown output format {''.join(path.suffixes) or '(no extension)'}; "
            f"name the file {', '.join(TABLE_SUFFIXES[:-1])} or {TABLE_SUFFIXES[-1]}"
        )
    return path
