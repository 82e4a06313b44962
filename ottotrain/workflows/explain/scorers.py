"""Class probabilities of a run for many permuted copies of the same rows, a batch at a time.

A task is (group index, row permutation): the rows with that group's inputs taken from the
permuted rows; group index None is the rows as they are. Both scorers stack the tasks' rows
into one matrix per model call (up to ``MAX_ROWS`` rows), so a model is called a few times,
not once per permutation.

- ``MatrixScorer`` (fit and cv runs): every member's rows are preprocessed once, by its own
  saved Preprocessor; a task copies that matrix and permutes its group's columns only.
- ``RawScorer`` (a stack; the naive way for fit and cv runs): a task permutes one raw column
  and the run's own prediction path preprocesses every copy again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ottotrain import engine
from ottotrain.workflows.average import Member
from ottotrain.workflows.explain.groups import Group, preprocessed_groups

MAX_ROWS = 1 << 18  # rows per model call: 26 permutations of 10,000 rows
Task = tuple[int | None, np.ndarray | None]


def permutation(seed: int, repeat: int, group: int, n: int) -> np.ndarray:
    """The row order of one (repeat, group): the same whatever the batching or the scorer."""
    return np.random.default_rng((seed, repeat, group)).permutation(n)


def stacked(z: np.ndarray, tasks: Sequence[Task], columns: Callable[[int], np.ndarray]) -> np.ndarray:
    """The tasks' copies of ``z`` one under the other, each with its group's columns permuted."""
    n = len(z)
    out = np.empty((n * len(tasks), z.shape[1]), dtype=z.dtype)
    for t, (g, perm) in enumerate(tasks):
        block = out[t * n : (t + 1) * n]
        block[:] = z
        if g is not None:
            cols = columns(g)
            block[:, cols] = z[np.ix_(perm, cols)]
    return out


def split(p: np.ndarray, tasks: Sequence[Task]) -> list[np.ndarray]:
    return np.split(p, len(tasks)) if len(tasks) > 1 else [p]


@dataclass
class _Part:
    """One member's preprocessed rows and where each group's inputs are in them."""

    weight: float
    model: object
    z: np.ndarray
    columns: list[np.ndarray]  # per group, in the scorer's group order


class MatrixScorer:
    """fit and cv runs: each member's rows preprocessed once, its groups' blocks permuted."""

    def __init__(self, members: Sequence[Member], x: np.ndarray):
        self.groups = preprocessed_groups(members[0].pre)
        names = [g.name for g in self.groups]
        self.rows = len(x)
        self.parts: list[_Part] = []
        done: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
        for m in members:
            key = m.pre.to_json()  # the members of one fold share their preprocessing
            if key not in done:
                own = {g.name: g.columns for g in preprocessed_groups(m.pre)}
                done[key] = (m.pre.transform(x), [own.get(n, np.array([], dtype=np.int64)) for n in names])
            model = engine.inference.load_model(m.model) if isinstance(m.model, Path) else m.model
            self.parts.append(_Part(m.weight, model, *done[key]))
        self.total = sum(p.weight for p in self.parts)

    def proba(self, tasks: Sequence[Task]) -> list[np.ndarray]:
        """The weighted mean of the members' probabilities, per task (as ``predict`` averages)."""
        acc = None
        for part in self.parts:
            big = stacked(part.z, tasks, part.columns.__getitem__)
            q = engine.inference.predict_proba(part.model, big) * part.weight
            acc = q if acc is None else acc + q
        return split(acc / self.total, tasks)


class RawScorer:
    """A run predicted from raw rows: a stack, or the naive way for any run."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, groups: list[Group]):
        self.predict, self.x, self.groups, self.rows = predict, x, groups, len(x)

    def proba(self, tasks: Sequence[Task]) -> list[np.ndarray]:
        big = stacked(self.x, tasks, lambda g: self.groups[g].columns)
        return split(np.asarray(self.predict(big)), tasks)
