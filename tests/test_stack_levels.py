"""The stack's level 2, its top, its leaderboard and predicting with a stack run."""

import numpy as np
import pytest

from ottotrain.config.stack_section import TopSpec
from ottotrain.metrics import log_loss
from ottotrain.workflows.blend import fit_weights
from ottotrain.workflows.stack.outputs import ModelOutput
from ottotrain.workflows.stack.top import combine, greedy_weights, mix

N_CLASSES = 3


def _proba(y, right: float, rng, noise=0.5) -> np.ndarray:
    """Probabilities that give the true class about ``right`` of the mass, with noise."""
    p = rng.random((len(y), N_CLASSES)) * noise + (1 - right) / N_CLASSES
    p[np.arange(len(y)), y] += right
    return p / p.sum(axis=1, keepdims=True)


def _outputs(y, rights, seed=0, level=1):
    rng = np.random.default_rng(seed)
    return [
        ModelOutput(f"m{i}", level, _proba(y, r, rng), _proba(np.zeros(20, int), r, rng))
        for i, r in enumerate(rights)
    ]


def _labels(n=300, seed=0):
    return np.random.default_rng(seed).integers(0, N_CLASSES, n)


def _reference_greedy(probas, y, rounds):
    """Caruana's selection written the plain way: full probability averages, metrics.log_loss."""
    picks, best, best_loss = [], None, np.inf
    for _ in range(rounds):
        losses = [log_loss(y, np.mean([probas[i] for i in [*picks, j]], axis=0)) for j in range(len(probas))]
        picks.append(int(np.argmin(losses)))
        if min(losses) < best_loss - 1e-12:
            best, best_loss = list(picks), min(losses)
    return np.bincount(best, minlength=len(probas)) / len(best)


def test_greedy_picks_the_obviously_best_model_and_weights_sum_to_one():
    y = _labels()
    outs = _outputs(y, [0.05, 0.6, 0.1])
    r = combine(outs, y, TopSpec(method="greedy", rounds=20))
    assert r.weights["m1"] == max(r.weights.values())
    assert sum(r.weights.values()) == pytest.approx(1.0)
    assert r.oof_log_loss <= log_loss(y, outs[1].oof) + 1e-12
    assert r.test.shape == (20, N_CLASSES)
    np.testing.assert_allclose(r.test.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    ("rights", "rounds"), [((0.3, 0.35), 3), ((0.2, 0.3, 0.25), 4), ((0.4, 0.1, 0.4), 5)]
)
def test_greedy_equals_a_plain_reference(rights, rounds):
    y = _labels(200, seed=len(rights) + rounds)
    probas = [o.oof for o in _outputs(y, rights, seed=rounds)]
    np.testing.assert_allclose(greedy_weights(probas, y, rounds), _reference_greedy(probas, y, rounds))


def test_blend_method_is_the_blend_optimiser():
    y = _labels()
    outs = _outputs(y, [0.3, 0.35, 0.2])
    r = combine(outs, y, TopSpec(method="blend"))
    want = fit_weights([o.oof for o in outs], y)
    np.testing.assert_allclose([r.weights[o.name] for o in outs], want)
    np.testing.assert_allclose(r.oof, mix(want, [o.oof for o in outs]))


def test_top_level1_false_offers_level2_only():
    y = _labels()
    outs = _outputs(y, [0.6, 0.1]) + _outputs(y, [0.2], seed=1, level=2)
    outs[-1].name = "l2"
    r = combine(outs, y, TopSpec(level1=False))
    assert r.weights == {"l2": 1.0}


@pytest.mark.parametrize("method", ["greedy", "blend"])
def test_nested_figure_chooses_weights_on_the_other_folds(method):
    """Model a is right on fold 0 only, b on fold 1 only: in-sample the top mixes them, but
    weights chosen on fold 1 pick b, which then fails on fold 0 (and the other way round)."""
    y = _labels(400, seed=7)
    fold_of = np.arange(400) % 2
    good, bad = np.full((400, N_CLASSES), 0.05), np.full((400, N_CLASSES), 0.475)
    good[np.arange(400), y] = 0.9
    bad[np.arange(400), y] = 0.05
    a = np.where((fold_of == 0)[:, None], good, bad)
    b = np.where((fold_of == 1)[:, None], good, bad)
    outs = [ModelOutput("a", 1, a, None), ModelOutput("b", 1, b, None)]
    r = combine(outs, y, TopSpec(method=method, rounds=10), fold_of=fold_of)
    assert r.test is None
    assert r.nested_oof_log_loss == pytest.approx(log_loss(y, bad))
    assert r.oof_log_loss < r.nested_oof_log_loss - 1.0
    np.testing.assert_allclose(r.output().oof, bad)
