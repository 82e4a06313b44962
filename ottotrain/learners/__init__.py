"""Learners that are not Keras nets: LightGBM, nearest-neighbour votes, logistic regression.

Every learner follows one protocol, so the stack trains, saves and reloads them alike::

    learner = learners.make(kind, params, n_classes=9, seed=42, threads=2)
    info = learner.fit(x, y, x_stop, y_stop)   # FitInfo; the stop rows serve early stopping
    p = learner.predict_proba(x)               # float64 (rows, n_classes), rows sum to 1, no zeros
    learner.save(folder)                       # folder/learner.json + the learner's own files
    learner = learners.load(folder)            # dispatches on learner.json's kind; no pickle

``knn_votes`` gives a nearest-neighbour member's probabilities for several k from one search.
No TensorFlow here: the stack's level-1 and level-2 learners run without it.
"""

from __future__ import annotations

import os

# Before lightgbm loads its OpenMP runtime, which reads this once: its waiting threads would
# otherwise spin, and on a busy machine (load 6, 2 cores) 2 threads trained 4-10x slower than 1
# (100 rounds on 6,667 rows: 27-67 s against 6.4 s passive). A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ottotrain.errors import ConfigError, RunError, did_you_mean, fmt
from ottotrain.learners.base import MANIFEST, FitInfo, Learner, read_manifest
from ottotrain.learners.gbdt import LightGBMLearner
from ottotrain.learners.logistic import LogisticLearner
from ottotrain.learners.neighbours import KnnLearner, knn_votes

KINDS: dict[str, type[Learner]] = {c.kind: c for c in (LightGBMLearner, KnnLearner, LogisticLearner)}

__all__ = ["KINDS", "FitInfo", "Learner", "knn_votes", "load", "make"]


def _params(cls: type[Learner], params: BaseModel | dict[str, Any] | None) -> BaseModel:
    if params is None:
        params = {}
    if isinstance(params, cls.params_model):
        return params
    if isinstance(params, BaseModel):
        params = params.model_dump()
    return cls.params_model.model_validate(params)


def _where(e: ValidationError) -> str:
    err = e.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"


def make(
    kind: str, params: BaseModel | dict[str, Any] | None, *, n_classes: int, seed: int, threads: int
) -> Learner:
    """A new, unfitted learner of ``kind`` ("lightgbm", "knn" or "logistic").

    ``params``: the kind's section of the stack config (LightGBMMember, KnnMember,
    LogisticLevel2) or its dict form; None: its defaults.
    """
    if kind not in KINDS:
        raise ConfigError(
            f"unknown learner kind {fmt(kind)}{did_you_mean(kind, KINDS)}; use one of {', '.join(KINDS)}"
        )
    cls = KINDS[kind]
    try:
        p = _params(cls, params)
    except ValidationError as e:
        raise ConfigError(f"{kind} learner: {_where(e)}") from None
    try:
        return cls(p, n_classes=n_classes, seed=seed, threads=threads)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def load(folder) -> Learner:
    """The learner saved in ``folder`` (``Learner.save``); one-line RunError if it cannot be."""
    folder = Path(folder)
    m = read_manifest(folder)
    path = folder / MANIFEST
    cls = KINDS.get(m["kind"])
    if cls is None:
        raise RunError(
            f"{path}: unknown learner kind {fmt(m['kind'])}{did_you_mean(m['kind'], KINDS)}; "
            f"this ottotrain knows {', '.join(KINDS)}"
        )
    try:
        params = cls.params_model.model_validate(m["params"])
        learner = cls(params, n_classes=m["n_classes"], seed=m["seed"], threads=m["threads"])
    except ValidationError as e:
        raise RunError(f"{path}: params.{_where(e)}; save the learner again") from None
    except ValueError as e:
        raise RunError(f"{path}: {e}; save the learner again") from None
    learner._restore(folder, m["state"])
    return learner
