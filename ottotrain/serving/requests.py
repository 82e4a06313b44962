"""Checking a predict request's JSON against the export's inputs, and shaping the answer (pure Python).

A request is TensorFlow Serving's row format, ``{"instances": [{column: value, ...}, ...]}``.
A numeric column takes a number, or null (or one of the run's missing-value markers, such
as "NA") where the run fills missing values; a categorical column takes a string (an
integer is read as its digits), null or "" being missing. The id column and the columns
fit dropped may be sent and are ignored, as ``predict`` ignores them in a test file.
Anything else is a ``RequestError``: one message naming the instance and the column.
"""

from __future__ import annotations

import json
import math

import numpy as np

from ottotrain.errors import did_you_mean, fmt
from ottotrain.serving.schema import CATEGORICAL, ModelSchema

MAX_BODY_BYTES = 16 << 20  # a request body beyond this is refused (413)
MAX_ROWS = 100_000  # instances per request


class RequestError(ValueError):
    """A request the server refuses, with its HTTP status (a 4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_body(body: bytes) -> list:
    """The ``instances`` list of a request body."""
    if not body.strip():
        raise RequestError('empty request body; send {"instances": [{column: value, ...}, ...]}')
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"request body is not JSON ({e})") from None
    if not isinstance(doc, dict) or "instances" not in doc:
        raise RequestError('request body must be a JSON object {"instances": [{column: value, ...}, ...]}')
    odd = [k for k in doc if k != "instances"]
    if odd:
        raise RequestError(f"unknown key {fmt(odd[0])} in the request; it takes only 'instances'")
    instances = doc["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError("'instances' must be a non-empty list of objects {column: value, ...}")
    if len(instances) > MAX_ROWS:
        raise RequestError(f"{len(instances)} instances in one request; at most {MAX_ROWS}", 413)
    return instances


def _number(v, col, where):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if math.isnan(v) and col.missing:
            return math.nan
        if math.isfinite(v):
            return v
        raise RequestError(f"{where}: column '{col.name}': {v} is not a finite number")
    if v is None or (isinstance(v, str) and v in col.na_text):
        if col.missing:
            return math.nan
        raise RequestError(
            f"{where}: column '{col.name}': missing value; this run does not fill missing values "
            "(it was trained with data.missing: none), send a number"
        )
    raise RequestError(f"{where}: column '{col.name}' is numeric: expected a number, got {fmt(v)}")


def _text(v, col, where):
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    raise RequestError(f"{where}: column '{col.name}' is categorical: expected a string, got {fmt(v)}")


def to_columns(instances: list, schema: ModelSchema) -> dict[str, np.ndarray]:
    """The instances as one array per signature input: float32 numbers, or strings (object)."""
    known = {c.name for c in schema.columns} | set(schema.ignored)
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise RequestError(f"instance {i}: expected an object {{column: value, ...}}, got {fmt(row)}")
        if not known.issuperset(row):
            k = next(k for k in row if k not in known)
            raise RequestError(f"instance {i}: unknown column {fmt(k)}{did_you_mean(k, sorted(known))}")
    out = {}
    for c in schema.columns:
        try:
            values = [row[c.name] for row in instances]
        except KeyError:
            i = next(i for i, row in enumerate(instances) if c.name not in row)
            raise RequestError(f"instance {i}: missing column '{c.name}'") from None
        out[c.key] = _text_column(values, c) if c.kind == CATEGORICAL else _number_column(values, c)
    return out


def _number_column(values, col) -> np.ndarray:
    if set(map(type, values)) <= {float, int}:  # the common case, checked at C speed
        x = np.asarray(values, dtype=np.float32)
        if np.isfinite(x).all():
            return x
    return np.array([_number(v, col, f"instance {i}") for i, v in enumerate(values)], dtype=np.float32)


def _text_column(values, col) -> np.ndarray:
    if set(map(type, values)) <= {str}:
        return np.array(values, dtype=object)
    return np.array([_text(v, col, f"instance {i}") for i, v in enumerate(values)], dtype=object)


def predictions(proba: np.ndarray, classes: list[str]) -> list[dict]:
    """``[{"probabilities": {class: p, ...}, "class": the most likely}, ...]``, one per instance."""
    top = proba.argmax(axis=1)
    return [
        {"probabilities": dict(zip(classes, map(float, p))), "class": classes[t]} for p, t in zip(proba, top)
    ]
