"""The top of the stack: the level-2 (and level-1) models combined into one submission.

``greedy`` is Caruana et al.'s ensemble selection with replacement (ICML 2004): start from the
best single model, then add, ``rounds`` times, the model (any, again allowed) whose addition
lowers the OOF log loss of the running average most; keep the best prefix of those picks.
The weights are the counts of each model over the picks kept. ``blend`` is the simplex blend
of ``ottotrain blend`` (its optimiser, ``blend.fit_weights``).

Either way the weights are chosen on the OOF rows that also score them, so the OOF figure of
the top is slightly optimistic. With the folds given, ``combine`` also reports the honest
figure: for each fold k the weights are chosen on the other folds' OOF rows and applied to
fold k (``nested_oof_log_loss``); that is the figure to quote.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ottotrain.config.stack_section import TopSpec
from ottotrain.metrics import log_loss
from ottotrain.workflows.blend import fit_weights, true_class_proba
from ottotrain.workflows.stack.outputs import ModelOutput

TOP_NAME = "top"
TOP_LEVEL = 3


@dataclass
class TopResult:
    """The top's choice and its predictions."""

    method: str  # greedy | blend
    rounds: int  # greedy's steps (the TopSpec's)
    weights: dict[str, float]  # every model offered to the top -> its weight (0: not chosen)
    oof: np.ndarray  # the weighted OOF probabilities (weights chosen on these rows)
    test: np.ndarray | None
    oof_log_loss: float
    oof_accuracy: float
    nested_oof: np.ndarray | None = None  # fold k weighted by weights chosen on the other folds
    nested_oof_log_loss: float | None = None  # its score: the honest figure
    nested_oof_accuracy: float | None = None
    seconds: float = 0.0

    def output(self) -> ModelOutput:
        """The top as a model of the stack (level 3): its honest (nested) OOF where there is
        one, and its test prediction (made with the weights chosen on all OOF rows)."""
        oof = self.oof if self.nested_oof is None else self.nested_oof
        return ModelOutput(TOP_NAME, TOP_LEVEL, oof, self.test, train_seconds=self.seconds)


def greedy_weights(probas: list[np.ndarray], y, rounds: int) -> np.ndarray:
    """Caruana ensemble selection with replacement: weights (counts over the picks kept, summing to 1).

    Step 1 picks the best single model; each later step adds the model that makes the running
    average's log loss lowest (ties: the first model). Of the ``rounds`` prefixes the one with
    the lowest log loss is kept (ties: the shortest).
    """
    py = true_class_proba(probas, y)  # the log loss of an average depends on these only
    counts = np.zeros(py.shape[1], dtype=np.int64)
    total = np.zeros(py.shape[0])
    best, best_loss = counts, np.inf
    for step in range(rounds):
        losses = -np.log((total[:, None] + py) / (step + 1)).mean(axis=0)
        j = int(np.argmin(losses))
        counts = counts.copy()
        counts[j] += 1
        total += py[:, j]
        if losses[j] < best_loss - 1e-12:
            best, best_loss = counts, float(losses[j])
    return best / best.sum()


def _chooser(top: TopSpec) -> Callable[[list[np.ndarray], np.ndarray], np.ndarray]:
    if top.method == "greedy":
        return lambda probas, y: greedy_weights(probas, y, top.rounds)
    return fit_weights


def mix(weights: np.ndarray, probas: list[np.ndarray]) -> np.ndarray:
    """``sum w_i p_i``, rows renormalised (the members' files hold rounded probabilities)."""
    p = sum(w * q for w, q in zip(weights, probas) if w > 0)
    return p / p.sum(axis=1, keepdims=True)


def offered(outputs: list[ModelOutput], top: TopSpec) -> list[ModelOutput]:
    """The models the top chooses from: level 2, and level 1 too with ``top.level1`` (or when
    there is no level 2)."""
    above = [o for o in outputs if o.level >= 2]
    return outputs if top.level1 or not above else above


def nested_oof(probas: list[np.ndarray], y, fold_of, choose) -> np.ndarray:
    """The top's OOF with fold k's rows weighted by weights chosen on the other folds' rows."""
    y, fold_of = np.asarray(y), np.asarray(fold_of)
    out = np.empty_like(probas[0], dtype=np.float64)
    for k in np.unique(fold_of):
        tr, va = fold_of != k, fold_of == k
        w = choose([p[tr] for p in probas], y[tr])
        out[va] = mix(w, [p[va] for p in probas])
    return out


def combine(outputs: list[ModelOutput], y, top: TopSpec, fold_of=None) -> TopResult:
    """Choose the top's weights on the OOF rows; with ``fold_of`` (the stack's folds), also
    the nested figure (weights chosen on K-1 folds, scored on the K-th)."""
    t0 = time.perf_counter()
    models = offered(outputs, top)
    probas = [o.oof for o in models]
    choose = _chooser(top)
    w = choose(probas, np.asarray(y))
    oof = mix(w, probas)
    tests = [o.test for o in models]
    test = mix(w, tests) if all(t is not None for t in tests) else None
    seconds = time.perf_counter() - t0
    result = TopResult(
        top.method,
        top.rounds,
        {o.name: float(wi) for o, wi in zip(models, w)},
        oof,
        test,
        log_loss(y, oof),
        float((oof.argmax(1) == np.asarray(y)).mean()),
        seconds=seconds,
    )
    if fold_of is not None:
        nested = nested_oof(probas, y, fold_of, choose)
        result.nested_oof = nested
        result.nested_oof_log_loss = log_loss(y, nested)
        result.nested_oof_accuracy = float((nested.argmax(1) == np.asarray(y)).mean())
    return result


@dataclass
class Ablation:
    """The top made another way, scored as the stack's top is (nested; in-sample beside it)."""

    method: str  # greedy | blend
    models: str  # "levels 1 and 2" | "level 1" | "level 2"
    nested_oof_log_loss: float
    in_sample_oof_log_loss: float


def ablations(outputs: list[ModelOutput], y, fold_of, rounds: int) -> list[Ablation]:
    """The top by greedy selection and by the blend, over both levels, level 1 only (the stack
    without level 2) and level 2 only: what the choice of method and levels is worth."""
    sets = {
        "levels 1 and 2": outputs,
        "level 1": [o for o in outputs if o.level == 1],
        "level 2": [o for o in outputs if o.level == 2],
    }
    out = []
    for models, chosen in sets.items():
        if not chosen or (models != "levels 1 and 2" and len(chosen) == len(outputs)):
            continue  # nothing to choose from, or the same set again
        for method in ("greedy", "blend"):
            r = combine(chosen, y, TopSpec(method=method, rounds=rounds, level1=True), fold_of=fold_of)
            out.append(Ablation(method, models, round(r.nested_oof_log_loss, 6), round(r.oof_log_loss, 6)))
    return out
