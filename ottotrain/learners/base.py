"""What every learner shares: its fit summary, its probabilities' last step, its learner.json."""

from __future__ import annotations

import contextlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from ottotrain.errors import RunError, first_line, fmt
from ottotrain.io import atomic_path, read_json, write_json

MANIFEST = "learner.json"
FORMAT = 1
# The smallest probability a learner returns: log loss stays finite and a level-2 learner
# can take logarithms of every member's predictions.
FLOOR = 1e-15


@dataclass(frozen=True)
class FitInfo:
    """What one fit did.

    Attributes:
        rounds: boosting rounds kept (LightGBM: the best round), solver iterations (logistic),
            None where nothing iterates (knn).
        stop_log_loss: log loss on the early-stopping rows at the kept round; None if unused.
        seconds: wall time of the fit.
    """

    rounds: int | None
    stop_log_loss: float | None
    seconds: float


def finish(p) -> np.ndarray:
    """Probabilities as every learner returns them: float64, at least ``FLOOR``, rows summing to 1."""
    p = np.maximum(np.asarray(p, dtype=np.float64), FLOOR)
    return p / p.sum(axis=1, keepdims=True)


def check_xy(x, y, n_classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows and labels as arrays, checked: 2-D rows, one label per row, labels in 0..n_classes-1."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{where}: needs rows (n, d) and n labels; got {x.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"{where}: labels must be integers 0..{n_classes - 1}")
    return x, y.astype(np.int64)


def check_rows(x, features: int, where: str) -> np.ndarray:
    """Rows to predict, checked: 2-D, with the number of features the learner was fitted on."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != features:
        raise ValueError(f"{where}: needs rows of {features} features; got shape {x.shape}")
    return x


class Learner:
    """The protocol: ``fit``, ``predict_proba``, ``save``; ``learners.load`` reads a saved one.

    A subclass sets ``kind`` and ``params_model``, implements ``fit``, ``predict_proba``,
    ``_save_files`` (its files beside learner.json, plus what learner.json should hold) and
    ``_restore`` (the reverse, from a folder).
    """

    kind: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]

    def __init__(self, params: BaseModel, *, n_classes: int, seed: int, threads: int):
        if n_classes < 2:
            raise ValueError(f"{self.kind}: n_classes must be at least 2, got {n_classes}")
        self.params = params
        self.n_classes = int(n_classes)
        self.seed = int(seed)
        self.threads = max(1, int(threads))

    def fit(self, x, y, x_stop=None, y_stop=None) -> FitInfo:
        raise NotImplementedError

    def predict_proba(self, x) -> np.ndarray:
        raise NotImplementedError

    def _save_files(self, folder: Path) -> dict[str, Any]:
        raise NotImplementedError

    def _restore(self, folder: Path, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, folder) -> None:
        """Write the learner's files, then learner.json (last: a folder with it is complete)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = self._save_files(folder)
        manifest = {
            "kind": self.kind,
            "format": FORMAT,
            "params": self.params.model_dump(mode="json"),
            "n_classes": self.n_classes,
            "seed": self.seed,
            "threads": self.threads,
            "state": state,
        }
        write_json(folder / MANIFEST, manifest)


def save_npz(path: Path, **arrays) -> None:
    """``np.savez_compressed``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# What every learner.json holds, and of which JSON type.
_KEYS = {
    "kind": str,
    "format": int,
    "params": dict,
    "n_classes": int,
    "seed": int,
    "threads": int,
    "state": dict,
}
_NAMES = {str: "a string", int: "an integer", dict: "a JSON object"}


def read_manifest(folder: Path) -> dict[str, Any]:
    """learner.json, checked for the keys every learner has; one-line RunError otherwise."""
    path = folder / MANIFEST
    if not path.is_file():
        raise RunError(f"{path}: not found; {folder} holds no saved learner")
    try:
        m = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({type(e).__name__}); save the learner again") from None
    if not isinstance(m, dict):
        raise RunError(f"{path}: must hold a JSON object, got {type(m).__name__}; save the learner again")
    for key, typ in _KEYS.items():
        if not isinstance(m.get(key), typ) or isinstance(m.get(key), bool):
            got = "missing" if key not in m else f"got {fmt(m[key])}"
            raise RunError(f"{path}: '{key}' must be {_NAMES[typ]} ({got}); save the learner again")
    if m["format"] > FORMAT:
        raise RunError(f"{path}: format {m['format']} is newer than this ottotrain reads ({FORMAT}); upgrade")
    return m


@contextlib.contextmanager
def reading(path: Path, *errors: type[BaseException]):
    """Turn a damaged or missing learner file into one line naming it."""
    try:
        yield
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, *errors) as e:
        raise RunError(f"{path}: cannot be read ({first_line(e)}); save the learner again") from None
