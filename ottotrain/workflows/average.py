"""The one way to average members: fit's one model, a cv run's members, a predictor's ensemble.

Each member's rows are transformed by its own preprocessing (one transform kept at a time:
the members of one fold are adjacent and share it), each ``proba(model, rows)`` is weighted
by the member's weight, and the sums are divided by the total weight once: members of
weight 1 are averaged as ``sum / n``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ottotrain import engine
from ottotrain.features import Preprocessor


@dataclass
class Member:
    """One model of an ensemble: its preprocessing (None: rows come transformed) and its
    model, or the path of one, loaded when used and freed after."""

    name: str
    pre: Preprocessor | None
    model: object  # a keras.Model, or the Path of its .keras file
    weight: float = 1.0


def average(members: Sequence[Member], x, *probas: Callable) -> list[np.ndarray]:
    """Each ``proba(model, rows)`` averaged over ``members`` (weighted), for rows ``x``."""
    total = sum(m.weight for m in members)
    sums: list = [None] * len(probas)
    cache: dict = {}
    for m in members:
        rows = x if m.pre is None else _transformed(m.pre, x, cache)
        loaded = isinstance(m.model, Path)
        model = engine.inference.load_model(m.model) if loaded else m.model
        for i, proba in enumerate(probas):
            q = proba(model, rows) * m.weight
            sums[i] = q if sums[i] is None else sums[i] + q
        if loaded:
            del model
            engine.env.keras.backend.clear_session()  # free the member's graph
    return [s / total for s in sums]


def _transformed(pre: Preprocessor, x, cache: dict):
    key = pre.to_json()
    if key not in cache:
        cache.clear()
        cache[key] = pre.transform(x)
    return cache[key]
