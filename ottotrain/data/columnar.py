"""Parquet and Arrow IPC (Feather v2) files: read by Arrow, checked as a CSV is.

The format is told by the file's first bytes, not its name: ``PAR1`` is Parquet, ``ARROW1``
an Arrow IPC file (what ``pandas.DataFrame.to_feather`` writes). Their columns are typed
already, so there is no parsing to cache; messages name a row (1-based, the first data row
is row 1) where a CSV's name a line (the header is line 1).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc
import pyarrow.parquet as pq

from ottotrain.errors import DataError, first_line

FORMATS = {"parquet": "Parquet", "arrow": "Arrow IPC (Feather)"}


def columnar_format(path) -> str | None:
    """``"parquet"``, ``"arrow"``, or None for anything else (a CSV, plain or gzip)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return None
    if head[:4] == b"PAR1":
        return "parquet"
    if head == b"ARROW1":
        return "arrow"
    return None


def row_place(path, i: int) -> str:
    """Where the 0-based data row ``i`` of a file is, in the file's own terms."""
    return f"row {i + 1}" if columnar_format(path) else f"line {i + 2}"


def _unreadable(path: Path, fmt: str, e: Exception) -> DataError:
    return DataError(
        f"{path}: cannot read the {FORMATS[fmt]} file ({first_line(e)}); is it whole? "
        "write it again, or export the table as CSV"
    )


def schema_names(path: Path, fmt: str) -> list[str]:
    """The column names of a Parquet or Arrow file."""
    try:
        if fmt == "parquet":
            return list(pq.read_schema(path).names)
        with pa.OSFile(str(path)) as source:
            return list(pa.ipc.open_file(source).schema.names)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, fmt, e) from None


def read_arrow(path: Path, fmt: str, columns=None) -> pa.Table:
    """The file's table (only ``columns``, if given)."""
    try:
        columns = list(columns) if columns is not None else None
        if fmt == "parquet":
            return pq.read_table(path, columns=columns)
        return feather.read_table(path, columns=columns, memory_map=False)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, fmt, e) from None
