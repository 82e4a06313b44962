"""What a client and its workers must share: ottotrain's version and source, Keras, TensorFlow.

A worker that runs other code would train other members under the same names, so a run
is refused, in one line naming both sides, unless every worker matches the client.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from pathlib import Path

from ottotrain import __version__

SOURCE = "ottotrain source"  # the key of the source hash
VERSIONED = ("ottotrain", SOURCE, "keras", "tensorflow")  # what client and workers must share


@functools.cache
def source_hash() -> str:
    """A hash of this ottotrain's own files (code and package data), 12 hex digits."""
    return tree_hash(Path(__file__).resolve().parents[1])


def tree_hash(root: Path) -> str:
    """A hash of the files under ``root`` (their paths and contents; no bytecode), 12 hex digits."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def versions() -> dict[str, str]:
    """The versions that must agree between client and workers (package metadata: no import)."""
    out = {"ottotrain": __version__, SOURCE: source_hash()}
    for dist in VERSIONED[2:]:
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


def nthreads_line(address: str, nthreads: int) -> str:
    """The line refusing a worker that runs several tasks at once."""
    return (
        f"worker {address}: runs {nthreads} tasks at once; ottotrain trains one model per worker "
        "process (Keras' seeds are per process): start workers with 'dask worker ADDRESS "
        "--nthreads 1 --nworkers N'"
    )
