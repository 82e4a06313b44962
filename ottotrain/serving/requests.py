"""Reading a predict request's JSON into the model's packed inputs, and shaping the answer (pure Python).

Three request shapes give one ``Batch`` (a float32 matrix of the numeric columns and a
matrix of the categorical ones, in the schema's order):

- TensorFlow Serving's rows, ``{"instances": [{column: value, ...}, ...]}``;
- its columns, ``{"inputs": {column: [value, ...], ...}}``;
- the Open Inference Protocol's (KServe v2) tensors, ``{"inputs": [{"name", "shape",
  "datatype", "data"}, ...]}``: one tensor per column, or one ``numbers`` tensor (rows x
  numeric columns) and, where the run has categorical columns, one ``strings`` tensor.

A numeric column takes a number, or null (or one of the run's missing-value markers, such
as "NA", or NaN) where the run fills missing values; a categorical column takes a string
(an integer is read as its digits), null or "" being missing. The id column and the
columns fit dropped may be sent and are ignored, as ``predict`` ignores them in a test file.
Anything else is a ``RequestError``: one message naming the row and the column. A number
that float32 cannot hold (1e39, a 400-digit integer, Infinity) is refused, never rounded
to infinity and computed on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import chain

import numpy as np
import orjson

from ottotrain.errors import did_you_mean, fmt
from ottotrain.serving.schema import CATEGORICAL, ModelSchema

F32_MAX = float(np.finfo(np.float32).max)
SIGNATURE = "serving_default"  # the one signature name a request may give
PACKED_NUMBERS, PACKED_STRINGS = "numbers", "strings"  # the packed inputs' names (v2 tensors)
_NUMBER = (int, float)
_NUMBER_TYPES, _STR_TYPE = frozenset(_NUMBER), frozenset([str])  # exact types: a bool is refused


class RequestError(ValueError):
    """A request the server refuses, with its HTTP status (a 4xx, or 503)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Batch:
    """Rows as the model's packed function takes them."""

    numbers: np.ndarray  # float32 (rows, numeric columns)
    strings: np.ndarray | None  # object (rows, categorical columns) of str; None without such columns

    @property
    def rows(self) -> int:
        return len(self.numbers)


def decode(body: bytes):
    """The JSON document of a request body (UTF-8), or a RequestError saying what is wrong."""
    if not body.strip():
        raise RequestError('empty request body; send {"instances": [{column: value, ...}, ...]}')
    try:
        return orjson.loads(body)  # a few times faster than json's
    except orjson.JSONDecodeError:
        pass  # json's reading and messages for the rest: NaN, lone surrogates, huge numbers, depth
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(
            f"request body is not UTF-8 (byte {e.start}: {body[e.start : e.start + 1]!r})"
        ) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise RequestError("request body is not JSON this server reads: nested too deep") from None
    except ValueError as e:
        raise RequestError(f"request body is not JSON ({str(e)[:200]})") from None


def _utf8(s: str, where: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(
            f"{where}: {fmt(s[: e.start + 1])} holds a lone surrogate, not valid Unicode"
        ) from None
    return s


def _number(v, col, where) -> float:
    """One value of a numeric column, checked (the slow path: the fast one found something)."""
    if isinstance(v, _NUMBER) and not isinstance(v, bool):
        if isinstance(v, float) and math.isnan(v):
            if col.missing:
                return math.nan
            raise RequestError(f"{where}: column '{col.name}': NaN; this run does not fill missing values")
        if isinstance(v, float) and math.isinf(v):
            raise RequestError(f"{where}: column '{col.name}': {v} is not a finite number")
        if abs(v) > F32_MAX:
            shown = f"an integer of {len(str(abs(v)))} digits" if isinstance(v, int) else repr(v)
            raise RequestError(
                f"{where}: column '{col.name}': {shown} is out of float32's range (at most {F32_MAX:.4g})"
            )
        return v
    if v is None or (isinstance(v, str) and v in col.na_text):
        if col.missing:
            return math.nan
        raise RequestError(
            f"{where}: column '{col.name}': missing value; this run does not fill missing values "
            "(it was trained with data.missing: none), send a number"
        )
    if isinstance(v, str):
        _utf8(v, f"{where}: column '{col.name}'")
    raise RequestError(f"{where}: column '{col.name}' is numeric: expected a number, got {fmt(v)}")


def _text(v, col, where) -> str:
    if isinstance(v, str):
        return _utf8(v, f"{where}: column '{col.name}'")
    if v is None:
        return ""
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    raise RequestError(f"{where}: column '{col.name}' is categorical: expected a string, got {fmt(v)}")


class RequestReader:
    """Turns request documents into ``Batch``es for one model's schema."""

    def __init__(self, schema: ModelSchema, max_rows: int):
        self.schema, self.max_rows = schema, max_rows
        self.numeric = [c for c in schema.columns if c.kind != CATEGORICAL]
        self.text = [c for c in schema.columns if c.kind == CATEGORICAL]
        self.names = [c.name for c in schema.columns]
        self.known = set(self.names) | set(schema.ignored)
        self.by_name = {c.name: c for c in schema.columns}
        self.by_key = {c.key: c for c in schema.columns}

    # -- TensorFlow Serving: {"instances": [...]} or {"inputs": {...}}, "signature_name" optional

    def tf_serving(self, doc) -> tuple[Batch, str]:
        """(the batch, "instance" or "row": what the request calls a row) of a ``:predict`` body."""
        if not isinstance(doc, dict) or ("instances" in doc) == ("inputs" in doc):
            raise RequestError(
                'request body must be a JSON object {"instances": [{column: value, ...}, ...]} '
                'or {"inputs": {column: [value, ...], ...}}'
            )
        odd = [k for k in doc if k not in ("instances", "inputs", "signature_name")]
        if odd:
            raise RequestError(
                f"unknown key {fmt(odd[0])} in the request; "
                "it takes 'instances' or 'inputs', and 'signature_name'"
            )
        if doc.get("signature_name", SIGNATURE) != SIGNATURE:
            raise RequestError(f"signature_name {fmt(doc['signature_name'])}: this model has '{SIGNATURE}'")
        if "instances" in doc:
            return self.instances(doc["instances"]), "instance"
        if not isinstance(doc["inputs"], dict):
            raise RequestError("'inputs' must be an object {column: [value, ...], ...}")
        return self.columns(doc["inputs"]), "row"

    def _count(self, n: int, what: str):
        if n == 0:
            raise RequestError(f"{what} holds no rows; send at least one")
        if n > self.max_rows:
            raise RequestError(f"{n:,} rows in one request; at most {self.max_rows:,} (--max-rows)", 413)

    def instances(self, instances) -> Batch:
        if not isinstance(instances, list) or not instances:
            raise RequestError("'instances' must be a non-empty list of objects {column: value, ...}")
        self._count(len(instances), "'instances'")
        n_cols = len(self.names)
        for i, row in enumerate(instances):
            if type(row) is not dict:
                raise RequestError(f"instance {i}: expected an object {{column: value, ...}}, got {fmt(row)}")
            if len(row) != n_cols or not self.known.issuperset(row):
                self._check_keys(row, f"instance {i}")
        try:
            num = [[row[c.name] for c in self.numeric] for row in instances]
            txt = [[row[c.name] for c in self.text] for row in instances] if self.text else None
        except KeyError:
            i, c = next((i, c) for i, row in enumerate(instances) for c in self.names if c not in row)
            raise RequestError(f"instance {i}: missing column '{c}'") from None
        return Batch(self._numbers(num, "instance"), self._strings(txt, "instance"))

    def _check_keys(self, row: dict, where: str, known=None):
        known = known or self.known
        for k in row:
            if k not in known:
                shown = fmt(_utf8(k, f"{where}: a column name") if isinstance(k, str) else k)
                raise RequestError(f"{where}: unknown column {shown}{did_you_mean(k, sorted(self.known))}")

    def columns(self, cols: dict, where="'inputs'") -> Batch:
        """The columnar form: ``{column: [value per row]}``; columns may be named by their key too."""
        self._check_keys(cols, where, self.known | set(self.by_key))
        named = {}
        for k, v in cols.items():
            c = self.by_name.get(k) or self.by_key.get(k)
            if c is None:
                continue  # an ignored column
            if not isinstance(v, list):
                raise RequestError(f"{where}: column '{c.name}' must be a list of values, one per row")
            named[c.name] = v
        missing = [c for c in self.names if c not in named]
        if missing:
            raise RequestError(f"{where}: missing column '{missing[0]}'")
        sizes = {len(v) for v in named.values()}
        if len(sizes) > 1:
            raise RequestError(f"{where}: the columns have different lengths ({sorted(sizes)[:4]})")
        n = sizes.pop()
        self._count(n, where)
        num = list(zip(*(named[c.name] for c in self.numeric))) if self.numeric else [()] * n
        txt = list(zip(*(named[c.name] for c in self.text))) if self.text else None
        return Batch(self._numbers(num, "row"), self._strings(txt, "row"))

    def _numbers(self, rows: list, where: str) -> np.ndarray:
        """Float32 rows x numeric columns: at C speed when every value is a finite number
        float32 holds, else value by value, naming the first bad one."""
        if not self.numeric:
            return np.zeros((len(rows), 0), np.float32)
        if set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES:
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    x = np.array(rows, dtype=np.float32)
                if np.isfinite(x).all():
                    return x
            except OverflowError:  # an integer beyond float64
                pass
        return np.array(
            [[_number(v, c, f"{where} {i}") for v, c in zip(r, self.numeric)] for i, r in enumerate(rows)],
            dtype=np.float32,
        )

    def _strings(self, rows, where: str) -> np.ndarray | None:
        if rows is None:
            return None
        if set(map(type, chain.from_iterable(rows))) <= _STR_TYPE:
            try:
                "".join(v for r in rows for v in r).encode("utf-8")
                return np.array(rows, dtype=object).reshape(len(rows), len(self.text))
            except UnicodeEncodeError:
                pass
        out = [[_text(v, c, f"{where} {i}") for v, c in zip(r, self.text)] for i, r in enumerate(rows)]
        return np.array(out, dtype=object).reshape(len(rows), len(self.text))

    # -- Open Inference Protocol (KServe v2): {"inputs": [{"name", "shape", "datatype", "data"}]}

    def v2(self, doc) -> Batch:
        if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
            raise RequestError(
                'request body must be a JSON object {"inputs": [{"name", "shape", "datatype", "data"}, ...]}'
            )
        tensors = {}
        for j, t in enumerate(doc["inputs"]):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str) or "data" not in t:
                raise RequestError(
                    f"inputs[{j}]: expected an object with 'name', 'shape', 'datatype' and 'data'"
                )
            tensors[t["name"]] = t
        if PACKED_NUMBERS in tensors:
            return self._v2_packed(tensors)
        cols = {name: _flat(t, name, columns=1) for name, t in tensors.items()}
        return self.columns(cols, where="inputs")

    def _v2_packed(self, tensors: dict) -> Batch:
        odd = set(tensors) - {PACKED_NUMBERS, PACKED_STRINGS}
        if odd:
            raise RequestError(
                f"inputs: {fmt(sorted(odd)[0])} beside 'numbers'; send packed or per-column tensors"
            )
        numbers = _flat(tensors[PACKED_NUMBERS], PACKED_NUMBERS, len(self.numeric))
        n = len(numbers) // max(1, len(self.numeric))
        self._count(n, "inputs")
        num = [numbers[i * len(self.numeric) : (i + 1) * len(self.numeric)] for i in range(n)]
        if not self.text:
            return Batch(self._numbers(num, "row"), None)
        if PACKED_STRINGS not in tensors:
            raise RequestError(f"inputs: missing 'strings' ({len(self.text)} categorical columns)")
        strings = _flat(tensors[PACKED_STRINGS], PACKED_STRINGS, len(self.text))
        if len(strings) != n * len(self.text):
            raise RequestError(
                f"inputs: 'strings' holds {len(strings)} values, not {n} rows x {len(self.text)}"
            )
        txt = [strings[i * len(self.text) : (i + 1) * len(self.text)] for i in range(n)]
        return Batch(self._numbers(num, "row"), self._strings(txt, "row"))


def _flat(t: dict, name: str, columns: int) -> list:
    """A v2 tensor's data, flat, checked against its shape (rows, or rows x ``columns``)."""
    shape, data = t.get("shape"), t["data"]
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise RequestError(f"input '{name}': 'shape' must be a list of sizes, got {fmt(shape)}")
    while data and all(isinstance(d, list) for d in data):  # nested rows, as some clients send them
        data = [v for d in data for v in d]
    if not isinstance(data, list):
        raise RequestError(f"input '{name}': 'data' must be a list")
    if math.prod(shape) != len(data) or (len(shape) > 1 and math.prod(shape[1:]) != columns):
        raise RequestError(
            f"input '{name}': shape {shape} does not match its {len(data)} values"
            + (f" as rows x {columns}" if columns > 1 else "")
        )
    return data


def predictions(proba: np.ndarray, classes: list[str]) -> list[dict]:
    """``[{"probabilities": {class: p, ...}, "class": the most likely}, ...]``, one per instance."""
    top = proba.argmax(axis=1).tolist()
    return [
        {"probabilities": dict(zip(classes, p)), "class": classes[t]} for p, t in zip(proba.tolist(), top)
    ]


def columnar(proba: np.ndarray, classes: list[str]) -> dict:
    """TensorFlow Serving's columnar answer: ``{"probabilities": [[...]], "classes": [...]}``."""
    return {"probabilities": proba.tolist(), "classes": [classes[t] for t in proba.argmax(axis=1)]}


def v2_outputs(proba: np.ndarray, classes: list[str], asked=None) -> list[dict]:
    """The v2 answer's tensors: ``probabilities`` (rows x classes, FP32) and ``class`` (BYTES)."""
    n = len(proba)
    out = {
        "probabilities": {"shape": [n, len(classes)], "datatype": "FP32", "data": proba.ravel().tolist()},
        "class": {"shape": [n], "datatype": "BYTES", "data": [classes[t] for t in proba.argmax(axis=1)]},
    }
    names = list(out) if not asked else asked
    return [{"name": k, **out[k]} for k in names]


def v2_asked(doc) -> list[str] | None:
    """The output names a v2 request asks for (None: all), checked."""
    asked = doc.get("outputs")
    if asked is None:
        return None
    names = (
        [o.get("name") if isinstance(o, dict) else None for o in asked] if isinstance(asked, list) else [None]
    )
    for k in names:
        if k not in ("probabilities", "class"):
            raise RequestError(
                f"outputs: {fmt(k)} is no output of this model; it has 'probabilities' and 'class'"
            )
    return names
