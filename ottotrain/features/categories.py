"""Categorical columns as model inputs: a vocabulary per column, learned from training rows only.

A column's codes (``data.typed``: the position of each value among the training file's
sorted values, NaN missing, -1 a value the training file lacked) become an index: 0 is the
'other' bucket (a category rarer than ``data.categorical.min_count`` in the training rows,
or never seen there), then the kept categories in sorted order; a missing value is a
category like any other (an index of its own when it is common enough, else 'other').
Few categories are one-hot columns; more go to a learned embedding in the model (the
``CategoryEmbedding`` layer of the engine reads the indices from the input's last columns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ONE_HOT, EMBEDDING = "one_hot", "embedding"


@dataclass
class CategoryState:
    """One categorical column's vocabulary (preprocess.json)."""

    column: str
    values: list[str]  # the training file's values, sorted: what the codes index
    index: list[int]  # the model index of each value: 0 'other', 1.. kept
    missing: int  # the index of a missing value (0: 'other')
    size: int  # indices in all, 'other' included
    encoding: str  # one_hot or embedding
    dim: int = 0  # embedding width


def embedding_dim(size: int, cfg) -> int:
    """fastai's rule, round(1.6 * n ** 0.56), capped; or the configured width."""
    if cfg.embedding_dim is not None:
        return int(cfg.embedding_dim)
    return int(min(cfg.embedding_max, max(1, round(1.6 * size**0.56))))


def fit_category(column: str, values: list[str], codes: np.ndarray, cfg) -> CategoryState:
    """The vocabulary of one column from its training rows' codes (``cfg``: data.categorical)."""
    missing = np.isnan(codes)
    counts = np.bincount(codes[~missing].astype(np.int64), minlength=len(values))
    kept = counts >= cfg.min_count
    index = np.where(kept, np.cumsum(kept), 0)
    size = int(kept.sum()) + 1
    miss = 0
    if missing.sum() >= cfg.min_count:
        miss, size = size, size + 1
    if size <= cfg.one_hot_max:
        return CategoryState(column, list(values), index.tolist(), miss, size, ONE_HOT)
    return CategoryState(
        column, list(values), index.tolist(), miss, size, EMBEDDING, embedding_dim(size, cfg)
    )


def indices(state: CategoryState, codes: np.ndarray) -> np.ndarray:
    """Each row's model index (int32)."""
    out = np.zeros(len(codes), dtype=np.int32)  # -1 (unseen) stays 'other'
    known = codes >= 0  # NaN compares false
    out[known] = np.asarray(state.index, dtype=np.int32)[codes[known].astype(np.int64)]
    out[np.isnan(codes)] = state.missing
    return out


def one_hot(state: CategoryState, codes: np.ndarray) -> np.ndarray:
    out = np.zeros((len(codes), state.size), dtype=np.float32)
    out[np.arange(len(codes)), indices(state, codes)] = 1.0
    return out


def unseen(states: list[CategoryState], xc: np.ndarray) -> dict[str, int]:
    """Cells per column holding a value the training file did not have."""
    counts = (xc == -1).sum(axis=0)
    return {s.column: int(n) for s, n in zip(states, counts) if n}


@dataclass
class InputBlock:
    """How the model's input columns split: ``numeric`` columns of the numeric block (numbers,
    TF-IDF, KNN, 'was missing'), then one-hot columns (``passthrough`` in all), then one
    embedding index column per entry of ``sizes`` (vocabulary sizes) and ``dims`` (widths).
    ``edges``: the quantile bins of the numeric block's columns, for a model that opens with
    a PiecewiseLinearEmbedding."""

    passthrough: int
    sizes: list[int]
    dims: list[int]
    names: list[str]
    numeric: int = 0
    edges: list[list[float]] | None = None

    @property
    def width(self) -> int:
        """The width the model body sees."""
        return self.passthrough + sum(self.dims)
