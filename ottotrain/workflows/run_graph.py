"""A finished fit or cv run as one TensorFlow graph in memory (``engine.export``) and its schema.

``export`` writes that graph as a SavedModel, ``serve`` serves it from memory, and a stack's
export (``workflows.stack.export``) joins one per Keras member.
"""

from __future__ import annotations

from ottotrain import __version__, engine
from ottotrain.data import missing_allowed
from ottotrain.data.csv import NA_VALUES
from ottotrain.errors import RunError
from ottotrain.features.preprocess import PreprocessState
from ottotrain.serving.schema import (
    CATEGORICAL,
    NUMERIC,
    SCHEMA_FORMAT,
    Column,
    MemberInfo,
    ModelSchema,
    signature_keys,
)
from ottotrain.workflows.predictor import Predictor, open_run


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


def columns_for(s: PreprocessState) -> tuple[list[Column], list[str]]:
    """The export's input columns, and the columns a request may hold that are not inputs."""
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
    return columns, [c for c in (s.id_column, *(s.dropped or {})) if c is not None]


def schema_for(predictor: Predictor, members) -> ModelSchema:
    """The inputs, classes and members of the export (pure Python, from the fitted state)."""
    s = predictor.state
    columns, ignored = columns_for(s)
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


def graph_inputs(schema: ModelSchema) -> list:
    """The schema's columns as the graph's inputs (``engine.export.GraphInput``)."""
    return [engine.export.GraphInput(c.name, c.key, c.kind == CATEGORICAL) for c in schema.columns]


def na_text(s: PreprocessState) -> list[str]:
    """The text cells a categorical column reads as missing."""
    return [*NA_VALUES, *(s.na_values or ())]


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
    module = engine.export.build(
        graph_members, graph_inputs(schema), predictor.state.classes, na_text(predictor.state)
    )
    return module, schema
