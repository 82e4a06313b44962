"""What an export's signature takes and gives: ``assets.extra/ottotrain.json`` beside the SavedModel.

TensorFlow needs nothing of it (the signature describes itself); ``ottotrain serve`` reads it
for the request checks and the status route, and a user can read which input key a column
got when its header name is not a valid signature key (``sepal length`` -> ``sepal_length``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ottotrain.errors import RunError

SCHEMA_FORMAT = 1
SCHEMA_FILE = Path("assets.extra") / "ottotrain.json"
NUMERIC, CATEGORICAL = "numeric", "categorical"


@dataclass
class Column:
    """One feature column of the run and its signature input."""

    name: str  # as in the CSV header
    key: str  # the signature's input name
    kind: str  # numeric (float32, NaN missing) or categorical (string, "" missing)
    missing: bool  # whether a missing value is allowed (categorical: always)
    na_text: list[str] = field(default_factory=list)  # numeric: text cells read as missing


@dataclass
class MemberInfo:
    name: str
    weight: float
    knn: bool


@dataclass
class ModelSchema:
    format: int
    source: str  # the run directory it was exported from
    kind: str  # fit or cv
    classes: list[str]
    columns: list[Column]
    ignored: list[str]  # columns a test file may hold that are not inputs (id, dropped ones)
    members: list[MemberInfo]
    ottotrain: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def read(cls, export_dir) -> "ModelSchema":
        path = Path(export_dir) / SCHEMA_FILE
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if d.get("format") != SCHEMA_FORMAT:
                raise RunError(
                    f"{path}: schema format {d.get('format')!r}, this ottotrain reads {SCHEMA_FORMAT}; "
                    "export the run again with this version"
                )
            d["columns"] = [Column(**c) for c in d["columns"]]
            d["members"] = [MemberInfo(**m) for m in d["members"]]
            return cls(**d)
        except FileNotFoundError:
            raise RunError(
                f"{path}: missing; not a folder made by 'ottotrain export' (export the run with it)"
            ) from None
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise RunError(f"{path}: damaged ({e}); export the run again") from None


def signature_keys(columns) -> dict[str, str]:
    """Each column's signature input name: the column name itself where TensorFlow allows it,
    else with every other character made '_' (TensorFlow compares them case-blind: a clash
    gets a number)."""
    keys, seen = {}, set()
    for c in columns:
        k = re.sub(r"[^A-Za-z0-9_]", "_", c)
        if not re.match(r"[A-Za-z]", k):
            k = "f_" + k
        base, i = k, 2
        while k.lower() in seen:
            k, i = f"{base}_{i}", i + 1
        seen.add(k.lower())
        keys[c] = k
    return keys
