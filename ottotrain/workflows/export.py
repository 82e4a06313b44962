"""``ottotrain export``: a finished run as a self-contained TensorFlow SavedModel.

The run is opened as ``predict`` opens it (every file checked first), then the engine
rebuilds its preprocessing as graph ops in front of its models (``engine.export``). The
SavedModel is written into a temporary folder beside OUT_DIR and renamed into place:
never a half-written export.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ottotrain import engine
from ottotrain import log as progress
from ottotrain.errors import DataError
from ottotrain.io import new_beside
from ottotrain.serving.schema import SCHEMA_FILE
from ottotrain.workflows.run_graph import open_graph, schema_for
from ottotrain.workflows.stack.export import open_any_graph

__all__ = ["ExportResult", "check_out_dir", "export", "folder_bytes", "open_graph", "schema_for"]


def check_out_dir(out_dir) -> Path:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not an empty folder; give a new folder name")
    above = next(p for p in out.absolute().parents if p.exists())
    if not above.is_dir():
        raise DataError(f"{out}: {above} is a file, not a folder; give another output folder")
    return out


def folder_bytes(path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


@dataclass(frozen=True)
class ExportResult:
    """What ``export`` wrote."""

    output: str
    bytes: int
    members: int
    knn_members: int  # of them, those with nearest-neighbour features
    seconds: float


def export(run_dir, out_dir, no_knn_members=False, packed_only=False) -> ExportResult:
    """Write the SavedModel of a finished run (fit, cv or stack) to the new folder ``out_dir``.

    A stack run is exported as one graph (``workflows.stack.export``) when every model its top
    uses is a Keras net or a level-2 learner; otherwise refused in one line naming the member.

    ``packed_only``: the packed signature alone (``ExportModule.packed_only``: MLflow's model).
    Missing parent folders of ``out_dir`` are created.
    """
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    with progress.phase("Loading the run into a graph"):
        module, schema = open_any_graph(run_dir, no_knn_members, "export")
        if packed_only:
            module.packed_only()
    out.parent.mkdir(parents=True, exist_ok=True)  # as --run-dir does; only once the run opened
    tmp = Path(new_beside(out, ".tmp", folder=True))
    try:
        with progress.phase("Writing the SavedModel"):
            engine.export.save(module, tmp)
        (tmp / SCHEMA_FILE).parent.mkdir(exist_ok=True)
        (tmp / SCHEMA_FILE).write_text(schema.to_json(), encoding="utf-8")
        with contextlib.suppress(FileNotFoundError):
            out.rmdir()  # empty (checked above): the rename needs it gone or empty
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(
        str(out),
        bytes=folder_bytes(out),
        members=len(schema.members),
        knn_members=sum(m.knn for m in schema.members),
        seconds=round(time.perf_counter() - t0, 2),
    )
