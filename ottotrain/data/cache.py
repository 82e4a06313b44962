"""A cache of parsed CSV tables, as Arrow IPC files (plain columnar data, no code).

Keyed by the file's absolute path, size and modification time and the columns read:
the daily loop reads the same files again and again, and parsing is most of the load
time. OTTOTRAIN_CSV_CACHE=0 turns it off. Small files are not worth it. The folder is
kept under OTTOTRAIN_CSV_CACHE_MAX_MB (default 2048): least recently used entries go
first, and a table bigger than that is not cached at all (generated files of millions
of rows would otherwise pile up gigabytes that are never read again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa

from ottotrain.io import atomic_path, cache_dir

CSV_CACHE_MIN_BYTES = 1 << 20
CSV_CACHE_MAX_BYTES = 2048 << 20
CSV_CACHE_FORMAT = 2  # 2: the columns read, features as one matrix; 1 (pandas frames): unread


def _csv_cache_budget() -> int:
    try:
        return int(float(os.environ["OTTOTRAIN_CSV_CACHE_MAX_MB"]) * (1 << 20))
    except (KeyError, ValueError):
        return CSV_CACHE_MAX_BYTES


def csv_cache_path(path: Path, columns=()):
    if os.environ.get("OTTOTRAIN_CSV_CACHE", "1") == "0":
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    if st.st_size < CSV_CACHE_MIN_BYTES:
        return None
    key = f"{CSV_CACHE_FORMAT}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{json.dumps(list(columns))}"
    return cache_dir("csv", hashlib.sha256(key.encode()).hexdigest()[:32] + ".arrow")


def cache_load(cache, columns):
    try:
        with pa.memory_map(str(cache)) as src:
            table = pa.ipc.open_file(src).read_all()
    except Exception:  # a damaged cache entry is simply re-made
        return None
    if table.column_names != list(columns):
        return None
    with contextlib.suppress(OSError):
        cache.touch()  # recently used: pruned last
    return table


def cache_store(cache, table):
    budget = _csv_cache_budget()
    if table.nbytes > budget:
        return
    with contextlib.suppress(Exception):  # a cache is an optimisation: never fail a run on it
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp, pa.OSFile(tmp, "wb") as sink:
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        _prune_cache(cache.parent, budget, keep=cache)


def _prune_cache(folder, budget: int, keep):
    """Delete the least recently used entries until the folder holds at most ``budget`` bytes."""
    entries = []
    for f in folder.glob("*.arrow"):
        with contextlib.suppress(OSError):
            st = f.stat()
            entries.append((st.st_mtime, st.st_size, f))
    total = sum(size for _, size, _ in entries)
    for _, size, f in sorted(entries, key=lambda e: e[0]):
        if total <= budget:
            break
        if f != keep:
            with contextlib.suppress(OSError):
                f.unlink()
                total -= size
