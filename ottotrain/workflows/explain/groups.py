"""Which model inputs belong to which raw column: the groups that explain permutes together.

``Preprocessor.transform`` lays a row out as: the numeric columns (transformed), their TF-IDF
values, the non-zero count, the KNN features (class-major, one per class and k), the 'was
missing' indicators, then the categorical one-hot columns and the embedding indices. Every
input but the non-zero count and the KNN features is a function of one raw column, and goes
to that column's group; those two depend on every column, and are a group each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ottotrain.errors import RunError
from ottotrain.features import Preprocessor
from ottotrain.features.categories import EMBEDDING, ONE_HOT, CategoryState

KNN_GROUP = "knn"
NONZERO_GROUP = "nonzero_count"


@dataclass
class Group:
    """What one importance is measured for: a raw column (or a derived block of its own) and the
    model inputs permuted together for it, by name; ``columns``: their positions in the
    preprocessed matrix (raw rows' column for a run that predicts raw rows)."""

    name: str
    inputs: list[str]
    columns: np.ndarray


def _category_labels(c: CategoryState) -> list[str]:
    """The name of each of a categorical column's model indices: 0 'other', the kept values."""
    labels = ["other"] * c.size
    for value, i in zip(c.values, c.index):
        if i > 0:
            labels[i] = value
    if c.missing:
        labels[c.missing] = "missing"
    return labels


def input_owners(pre: Preprocessor) -> list[tuple[str, str]]:
    """(group, input name) of every column ``pre.transform`` writes, in order."""
    s = pre.state
    num = s.numeric
    out = [(f, f) for f in num]
    if s.tfidf:
        out += [(f, f"{f}:tfidf") for f in num]
    if s.nonzero_count:
        out.append((NONZERO_GROUP, NONZERO_GROUP))
    if s.knn is not None:
        out += [(KNN_GROUP, f"knn:{c}:k{k}") for c in s.classes for k in s.knn.k]
    out += [(num[i], f"{num[i]}:missing") for i in s.indicators or ()]
    cats = s.categorical or ()
    for c in cats:
        if c.encoding == ONE_HOT:
            out += [(c.column, f"{c.column}={label}") for label in _category_labels(c)]
    out += [(c.column, f"{c.column}:embedding") for c in cats if c.encoding == EMBEDDING]
    if len(out) != pre.n_outputs:
        raise RunError(
            f"preprocess.json: its {pre.n_outputs} model inputs do not match its settings "
            f"({len(out)}); the run directory is damaged"
        )
    return out


def preprocessed_groups(pre: Preprocessor) -> list[Group]:
    """One group per raw feature column (file order), then the non-zero count and the KNN block."""
    owners = input_owners(pre)
    blocks = [g for g in (NONZERO_GROUP, KNN_GROUP) if any(o == g for o, _ in owners)]
    names = list(pre.state.features) + blocks
    return [
        Group(
            g,
            [name for o, name in owners if o == g],
            np.array([j for j, (o, _) in enumerate(owners) if o == g], dtype=np.int64),
        )
        for g in names
    ]


def raw_groups(features: list[str]) -> list[Group]:
    """One group per raw column, for a model that is given raw rows (a stack, the naive way)."""
    return [Group(f, [f], np.array([j])) for j, f in enumerate(features)]
