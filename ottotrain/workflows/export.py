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
from pathlib import Path

from ottotrain import __version__, engine
from ottotrain import log as progress
from ottotrain.data import missing_allowed
from ottotrain.data.csv import NA_VALUES
from ottotrain.errors import DataError, RunError
from ottotrain.io import new_beside
from ottotrain.serving.schema import (
    CATEGORICAL,
    NUMERIC,
    SCHEMA_FILE,
    SCHEMA_FORMAT,
    Column,
    MemberInfo,
    ModelSchema,
    signature_keys,
)
from ottotrain.workflows.predictor import Predictor, open_run
from ottotrain.workflows.stack.predict import graph_refusal, is_stack_run


def _members(predictor: Predictor, no_knn_members: bool):
    members = predictor.members
    if not no_knn_members:
        return members
    where = f"{predictor.run_dir}: --no-knn-members"
    if predictor.kind != "cv":
        raise RunError(f"{where}: a fit run has one model; the option leaves out members of a cv run")
    kept = [m for m in members if m.pre.state.knn is None]
    if len(kept) == len(members):
        raise RunError(f"{where}: no member of this run uses data.knn; leave the option out")
    if not kept:
        raise RunError(f"{where}: every member uses data.knn, none would be left; leave the option out")
    return kept


def schema_for(predictor: Predictor, members) -> ModelSchema:
    """The inputs, classes and members of the export (pure Python, from the fitted state)."""
    s = predictor.state
    cats = {c.column for c in s.categorical or ()}
    keys = signature_keys(s.features)
    tokens = s.na_tokens or {}
    numeric_text = [v for v in (*NA_VALUES, *(s.na_values or ())) if v]  # "" is no number in JSON
    columns = [
        Column(f, keys[f], CATEGORICAL, True)
        if f in cats
        else Column(f, keys[f], NUMERIC, missing_allowed(s), [*numeric_text, *tokens.get(f, ())])
        for f in s.features
    ]
    ignored = [c for c in (s.id_column, *(s.dropped or {})) if c is not None]
    return ModelSchema(
        SCHEMA_FORMAT,
        str(predictor.run_dir),
        predictor.kind,
        list(s.classes),
        columns,
        ignored,
        [MemberInfo(m.name, m.weight, m.pre.state.knn is not None) for m in members],
        __version__,
    )


def open_graph(run_dir, no_knn_members=False):
    """(the run's ``engine.export.ExportModule``, its ``ModelSchema``), built in memory."""
    predictor = open_run(run_dir)
    members = _members(predictor, no_knn_members)
    schema = schema_for(predictor, members)
    graph_members = [
        engine.export.GraphMember(
            m.name, m.pre.state, m.model, m.weight, m.pre.knn_reference() if m.pre.state.knn else None
        )
        for m in members
    ]
    inputs = [engine.export.GraphInput(c.name, c.key, c.kind == CATEGORICAL) for c in schema.columns]
    na_text = [*NA_VALUES, *(predictor.state.na_values or ())]  # a categorical cell read as missing
    module = engine.export.build(graph_members, inputs, predictor.state.classes, na_text)
    return module, schema


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


def export(run_dir, out_dir, no_knn_members=False) -> dict:
    """Write the SavedModel of a finished run (fit or cv) to the new folder ``out_dir``.

    A stack run is refused (one line naming its first model that is not a Keras net).

    Missing parent folders of ``out_dir`` are created. Returns a dict: the folder, its size
    in bytes, the members exported, seconds taken.
    """
    if is_stack_run(run_dir):
        raise graph_refusal(run_dir, "export")
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    with progress.phase("Loading the run into a graph"):
        module, schema = open_graph(run_dir, no_knn_members)
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
    return {
        "output": str(out),
        "bytes": folder_bytes(out),
        "members": len(schema.members),
        "knn_members": sum(m.knn for m in schema.members),
        "seconds": round(time.perf_counter() - t0, 2),
    }
