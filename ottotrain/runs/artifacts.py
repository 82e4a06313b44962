"""What a run writes besides its models: history, predictions, submission, versions."""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict

import numpy as np
import pandas as pd

from ottotrain import __version__
from ottotrain.io import atomic_path
from ottotrain.runs.state import HISTORY_COLUMNS, EpochRow


def write_history(path, history: list[EpochRow]):
    """history.csv: one row per completed epoch."""
    with atomic_path(path) as tmp:
        pd.DataFrame([asdict(r) for r in history], columns=list(HISTORY_COLUMNS)).to_csv(tmp, index=False)


def write_member_oof(path, proba):
    """A cv member's probabilities on its validation fold (``models/<member>.oof.npz``), in
    the fold's row order; saved with the member, so that the run's end loads no model for them."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, proba=np.asarray(proba))


def read_member_oof(path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        return z["proba"]


CSV_DIGITS = 6  # significant digits of the probabilities in a CSV of predictions


def write_predictions(path, proba, columns, leading: dict):
    """A table of probabilities with some leading columns (ids, folds, targets), atomically:
    Parquet or Arrow IPC (Feather) by the name's suffix, else CSV (gzip for ``.gz``)."""
    df = pd.DataFrame(proba, columns=list(columns))
    for i, (name, values) in enumerate(leading.items()):
        df.insert(i, name, values)
    suffix = str(path).rsplit(".", 1)[-1].lower()
    with atomic_path(path) as tmp:
        if suffix == "parquet":
            df.to_parquet(tmp, index=False)
        elif suffix in ("feather", "arrow"):
            df.to_feather(tmp)
        else:
            df.to_csv(tmp, index=False, float_format=f"%.{CSV_DIGITS}g")


def write_submission(path, ids, proba, classes, id_column="id"):
    """Kaggle layout: id column then one probability column per class, atomically."""
    write_predictions(path, proba, classes, {id_column: ids})


def proba_rows(p) -> np.ndarray:
    """Class probabilities as float64 rows that sum to 1."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0, None)
    return p / p.sum(axis=1, keepdims=True)


def as_written(p) -> np.ndarray:
    """Probabilities as a CSV of ``write_predictions`` holds them, read back by ``proba_rows``:
    rounded to ``CSV_DIGITS`` significant digits, rows summing to 1 again.

    What reads a model's predictions from its files (a stack's level 2) sees these values; a
    model that recomputes them from raw rows must see the same, or trees split between two
    nearly equal values send a row the other way.
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 0, None)
    out = np.zeros_like(p)
    pos = p > 0
    # 10**k is exact for the k of probabilities down to 1e-16, so the quotient is the double
    # nearest the decimal that "%.6g" writes.
    scale = 10.0 ** (CSV_DIGITS - 1 - np.floor(np.log10(p[pos])))
    out[pos] = np.round(p[pos] * scale) / scale
    return proba_rows(out)


def versions() -> dict:
    """The versions of what trained the run (the libraries it had imported)."""
    out = {"ottotrain": __version__, "python": platform.python_version()}
    for mod in ("tensorflow", "keras", "numpy", "pandas", "sklearn"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out
