"""A finished stack as one TensorFlow graph: raw feature columns in, the top's probabilities out.

Built from the per-run export (``engine.export``): each level-1 Keras member is a run's
``ExportModule`` (its preprocessing and its models, averaged as ``predict`` averages them).
Then, as ``workflows.stack.predict`` computes them in numpy, in float64: each level-2 learner
reads the level-1 probabilities as log-probabilities (clipped at 1e-15) and its chosen input
columns as ``sign(x) log(1 + |x|)`` (missing: 0), scales them with each fold's scaler and
averages its fold models (a logistic regression: ``softmax(x W^T + b)`` floored at 1e-15; a
Keras net: its outputs clipped at 0, rows summing to 1); the top mixes the models it weights
(``sum w_i p_i``, rows renormalised). The signatures are a run export's (``serving_default``
per column, ``packed``), so whatever serves a run's export serves a stack's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ottotrain.engine.env import tf
from ottotrain.engine.export import ExportModule

_BIG = np.finfo(np.float64).max
FLOOR = 1e-15  # the level-2 inputs' clip and a logistic regression's floor (learners.base.FLOOR)


@dataclass
class Level2Graph:
    """One level-2 learner: what it reads and its fold models."""

    name: str
    kind: str  # logistic | net
    inputs: list[int]  # the level-1 members it reads (their index), in order
    features: list[int]  # the numeric input columns it joins (their index in the packed numbers)
    means: list[np.ndarray]  # per fold: its scaler's
    scales: list[np.ndarray]
    models: list  # per fold: (coef (classes x columns), intercept) for logistic, a keras.Model for net


@dataclass
class TopWeight:
    """A model the top weights: ``level`` 1 (a level-1 member) or 2, its index there, its weight."""

    level: int
    index: int
    weight: float


def _order(columns: list[str], given: list[str]) -> list[int] | None:
    """Where ``columns`` are among ``given`` (None: the same columns in the same order)."""
    at = [given.index(c) for c in columns]
    return None if at == list(range(len(given))) else at


def _signed_log1p(x):
    return tf.sign(x) * tf.math.log1p(tf.abs(x))


def _rows(q, dtype=tf.float64):
    """A net's outputs as ``proba_rows`` makes them: clipped at 0, rows summing to 1 (float64)."""
    q = tf.maximum(tf.cast(q, dtype), 0.0)
    return q / tf.reduce_sum(q, axis=1, keepdims=True)


class StackModule(ExportModule):
    """The stack behind a run export's serving functions (``_probabilities`` computes the stack).

    ``exact``: float64 where predict computes in float64 (the SavedModel's signatures); float32
    throughout for ``serve_lite`` (TensorFlow Lite has no float64; serve checks it on probe rows).
    """

    def __init__(self, level1: list[ExportModule], level2: list[Level2Graph], top: list[TopWeight], *run):
        """``run``: (inputs, classes, na_tokens) as ``ExportModule`` takes them."""
        super().__init__([], *run)
        self.level1 = level1
        self._level1_at = [
            (_order(m.numeric_columns, self.numeric_columns), _order(m.string_columns, self.string_columns))
            for m in level1
        ]
        self._level2 = level2
        self.level2_nets = [list(g.models) if g.kind == "net" else [] for g in level2]  # tracked: saved
        self._top = top

    def _probabilities(self, numbers, strings, exact=True):
        dtype = tf.float64 if exact else tf.float32
        p1 = [self._member(m, at, numbers, strings, exact) for m, at in zip(self.level1, self._level1_at)]
        p2 = [self._learner(g, p1, numbers, dtype) for g in self._level2]
        p = None
        for t in self._top:
            q = (p1 if t.level == 1 else p2)[t.index] * t.weight
            p = q if p is None else p + q
        p = p / tf.reduce_sum(p, axis=1, keepdims=True)
        return {"probabilities": tf.cast(p, tf.float32)}

    @staticmethod
    def _member(module: ExportModule, at, numbers, strings, exact):
        """A level-1 member's probabilities (float64 when exact) from the stack's packed inputs."""
        num_at, str_at = at
        nums = numbers if num_at is None else tf.gather(numbers, num_at, axis=1)
        strs = strings if str_at is None or strings is None else tf.gather(strings, str_at, axis=1)
        p = module._probabilities(nums, strs if module.string_columns else None, exact)["probabilities"]
        return tf.cast(p, tf.float64 if exact else tf.float32)

    def _learner(self, g: Level2Graph, p1, numbers, dtype):
        """A level-2 learner's probabilities: the mean over its fold models."""
        cols = [tf.math.log(tf.maximum(p1[i], FLOOR)) for i in g.inputs]
        if g.features:
            x = tf.cast(tf.gather(numbers, g.features, axis=1), dtype)
            big = _BIG if dtype == tf.float64 else np.finfo(np.float32).max
            x = tf.where(tf.math.is_nan(x), tf.zeros_like(x), x)  # np.nan_to_num: missing is 0,
            cols.append(_signed_log1p(tf.clip_by_value(x, -big, big)))  # infinities the largest
        x = tf.concat(cols, axis=1) if len(cols) > 1 else cols[0]
        total = None
        for mean, scale, model in zip(g.means, g.scales, g.models):
            z = (x - tf.constant(mean, dtype)) / tf.constant(scale, dtype)
            q = (
                _rows(model(tf.cast(z, tf.float32), training=False), dtype)
                if g.kind == "net"
                else _logistic(z, *model)
            )
            total = q if total is None else total + q
        return total / len(g.models)


def _logistic(z, coef, intercept):
    """``LogisticLearner.predict_proba``: softmax(z W^T + b), floored at 1e-15, rows summing to 1."""
    a = tf.matmul(z, tf.constant(coef, z.dtype), transpose_b=True) + tf.constant(intercept, z.dtype)
    p = tf.nn.softmax(a, axis=1)
    p = tf.maximum(p, FLOOR)
    return p / tf.reduce_sum(p, axis=1, keepdims=True)


def build(level1, level2, top, inputs, classes, na_tokens) -> StackModule:
    return StackModule(level1, level2, top, inputs, classes, na_tokens)
