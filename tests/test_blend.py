"""Blend weights are optimal: ``fit_weights`` against a brute-force grid over the simplex.

The OOF probability sets are synthetic, made so that the best mixture is inside the
simplex (each run is right where the others are unsure), so a method that only ever
returned a vertex or the uniform mixture would lose to the grid.
"""

import itertools

import numpy as np
import pytest

from ottotrain.metrics import log_loss
from ottotrain.workflows.blend import fit_weights

TOL = 1e-6


def _runs(k, n=1500, c=5, seed=0):
    """``k`` OOF probability sets over the same ``n`` rows; each run is good on its own rows.

    Run ``i`` is confident and mostly right on the rows ``r`` with ``r % k == i`` and
    noisy elsewhere, so every run brings something the others lack.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    truth = np.eye(c)[y]
    probas = []
    for i in range(k):
        mine = (np.arange(n) % k) == i
        strength = np.where(mine, 2.5 + 0.8 * i, 0.3 + 0.2 * i)[:, None]
        logits = strength * truth + rng.normal(0, 1.0, (n, c))
        p = np.exp(logits)
        probas.append(p / p.sum(axis=1, keepdims=True))
    return probas, y


def _simplex_grid(k, step):
    """Every point of the simplex in ``k`` dimensions whose coordinates are multiples of ``step``."""
    m = round(1 / step)
    if k == 2:
        a = np.arange(m + 1) / m
        return np.stack([a, 1 - a], axis=1)
    pts = [(i, j, m - i - j) for i, j in itertools.product(range(m + 1), repeat=2) if i + j <= m]
    return np.array(pts, dtype=np.float64) / m


def _grid_losses(probas, y, grid):
    """The log loss of ``sum w_i p_i`` at every grid point (the blend's own metric)."""
    return np.array([log_loss(y, sum(w_i * p for w_i, p in zip(w, probas))) for w in grid])


@pytest.mark.parametrize("k, step, seed", [(2, 0.001, 0), (2, 0.001, 1), (3, 0.01, 0), (3, 0.01, 2)])
def test_fit_weights_matches_a_fine_grid_search(k, step, seed):
    probas, y = _runs(k, seed=seed)
    grid = _simplex_grid(k, step)
    losses = _grid_losses(probas, y, grid)
    best = int(np.argmin(losses))
    # The optimum is inside the simplex: every run has weight, and the mixture beats each run.
    assert (grid[best] > 0.1).all(), grid[best]
    singles = [log_loss(y, p) for p in probas]
    assert losses[best] < min(singles) - 0.01

    w = fit_weights(probas, y)
    assert w.shape == (k,) and (w >= 0).all() and abs(w.sum() - 1) < 1e-9
    fitted = log_loss(y, sum(w_i * p for w_i, p in zip(w, probas)))
    assert fitted <= losses[best] + TOL, (w, grid[best], fitted, losses[best])
    # ... and where it is: near the grid's best point (the loss is strictly convex here).
    assert np.abs(w - grid[best]).max() < 5 * step


def test_fit_weights_puts_no_weight_on_a_useless_run():
    """An edge of the simplex: two useful runs and pure noise. The optimum is on the edge."""
    probas, y = _runs(2, seed=3)
    rng = np.random.default_rng(3)
    noise = rng.dirichlet(np.ones(5), len(y))
    probas = [probas[0], noise, probas[1]]
    grid = _simplex_grid(3, 0.01)
    losses = _grid_losses(probas, y, grid)
    w = fit_weights(probas, y)
    fitted = log_loss(y, sum(w_i * p for w_i, p in zip(w, probas)))
    assert fitted <= losses.min() + TOL
    assert w[1] < 0.01 and w[0] > 0.1 and w[2] > 0.1


def test_fit_weights_on_one_run_and_identical_runs():
    probas, y = _runs(2, seed=4)
    assert fit_weights(probas[:1], y).tolist() == [1.0]
    w = fit_weights([probas[0], probas[0]], y)  # a flat direction: any split is optimal
    assert abs(w.sum() - 1) < 1e-9 and (w >= 0).all()
    assert log_loss(y, w[0] * probas[0] + w[1] * probas[0]) == pytest.approx(log_loss(y, probas[0]))


def test_fit_temperature_undoes_a_known_overconfidence():
    """Rows drawn from ``q``, predicted as ``q ** 1.6`` renormalised: the fitted T is 1.6."""
    from ottotrain.workflows.blend import apply_temperature, fit_temperature

    rng = np.random.default_rng(5)
    q = rng.dirichlet(np.ones(4), 20000)
    y = (rng.random((len(q), 1)) > q.cumsum(axis=1)).sum(axis=1)  # y ~ Categorical(q)
    sharp = q**1.6
    sharp /= sharp.sum(axis=1, keepdims=True)
    # The documented formula: p ** (1/T), renormalised; T > 1 softens.
    np.testing.assert_allclose(apply_temperature(sharp, 1.6), q, rtol=1e-9)
    t = fit_temperature(sharp, y)
    assert t == pytest.approx(1.6, abs=0.05)
    assert log_loss(y, apply_temperature(sharp, t)) < log_loss(y, sharp) - 0.01


def _fake_cv_run(path, ids, folds, y, classes, oof, sub):
    """A finished cv run's files as ``blend`` reads them: status, oof.csv, submission.csv."""
    import json

    import pandas as pd

    path.mkdir()
    (path / "status.json").write_text(json.dumps({"status": "finished", "kind": "cv"}))
    table = pd.DataFrame({"id": ids, "fold": folds, "target": [classes[i] for i in y]})
    pd.concat([table, pd.DataFrame(oof, columns=classes)], axis=1).to_csv(path / "oof.csv", index=False)
    s = pd.DataFrame(sub, columns=classes)
    s.insert(0, "id", np.arange(len(sub)) + 10000)
    s.to_csv(path / "submission.csv", index=False)
    return path


def test_blend_writes_the_weighted_mean_and_applies_the_temperature_only_when_asked(tmp_path):
    import pandas as pd

    from ottotrain.workflows.blend import apply_temperature, blend

    probas, y = _runs(2, n=600, seed=6)
    classes = [f"Class_{i}" for i in range(1, 6)]
    rng = np.random.default_rng(6)
    subs = [rng.dirichlet(np.ones(5), 50) for _ in range(2)]
    ids, folds = np.arange(len(y)) + 1, np.arange(len(y)) % 3 + 1
    dirs = [_fake_cv_run(tmp_path / f"run{i}", ids, folds, y, classes, probas[i], subs[i]) for i in range(2)]
    plain = blend(dirs, tmp_path / "plain.csv")
    tempered = blend(dirs, tmp_path / "tempered.csv", temperature=True)
    w = [r.weight for r in plain.runs]
    assert 0.1 < w[0] < 0.9 and [r.weight for r in tempered.runs] == w
    mean = w[0] * subs[0] + w[1] * subs[1]
    mean /= mean.sum(axis=1, keepdims=True)
    got = pd.read_csv(tmp_path / "plain.csv")
    assert got["id"].tolist() == list(range(10000, 10050)) and list(got.columns[1:]) == classes
    np.testing.assert_allclose(got[classes].to_numpy(), mean, atol=1e-5)
    t = tempered.temperature
    assert tempered.temperature_applied and not plain.temperature_applied and t != 1
    np.testing.assert_allclose(
        pd.read_csv(tmp_path / "tempered.csv")[classes].to_numpy(), apply_temperature(mean, t), atol=1e-4
    )
    assert plain.oof_log_loss_temperature <= plain.oof_log_loss + 1e-9


def _two_runs(tmp_path):
    probas, y = _runs(2, n=300, seed=7)
    classes = [f"Class_{i}" for i in range(1, 6)]
    rng = np.random.default_rng(7)
    ids, folds = np.arange(len(y)) + 1, np.arange(len(y)) % 3 + 1
    return [
        _fake_cv_run(tmp_path / f"run{i}", ids, folds, y, classes, probas[i], rng.dirichlet(np.ones(5), 20))
        for i in range(2)
    ]


def test_blend_says_applied_only_for_the_file_it_wrote(tmp_path, cli):
    runs = _two_runs(tmp_path)
    r = cli("blend", *runs, "--temperature")
    assert r.exit_code == 0, r.output
    assert "not applied: give -o" in r.stdout and ", applied" not in r.stdout
    r = cli("blend", *runs, "--temperature", "-o", tmp_path / "t.csv")
    assert r.exit_code == 0, r.output
    assert f", applied to {tmp_path / 't.csv'}" in r.stdout and (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("name", ["blend.parquet", "blend.feather", "blend.csv.gz"])
def test_blend_writes_the_format_its_name_says(tmp_path, name):
    import pandas as pd

    from ottotrain.workflows.blend import blend

    out = blend(_two_runs(tmp_path), tmp_path / name).output
    readers = {"parquet": pd.read_parquet, "feather": pd.read_feather, "gz": pd.read_csv}
    got = readers[name.rsplit(".", 1)[1]](out)
    assert list(got.columns) == ["id", *[f"Class_{i}" for i in range(1, 6)]] and len(got) == 20
