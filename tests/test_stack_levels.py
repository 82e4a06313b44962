"""The stack's level 2, its top, its leaderboard and predicting with a stack run."""

import json

import numpy as np
import pandas as pd
import pytest

from ottotrain.config.stack_section import Level2Spec, TopSpec
from ottotrain.errors import ConfigError
from ottotrain.log import Log
from ottotrain.metrics import log_loss
from ottotrain.workflows.blend import fit_weights
from ottotrain.workflows.cv_member import FoldedData
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


# --- level 2 -------------------------------------------------------------------------------

FOLDS = 3


def _table(rows=240, test_rows=40, n_features=8, seed=0):
    """A small TrainData (counts) with its folds, and test rows (ids, x)."""
    from ottotrain.data import TrainData, fold_assignment
    from ottotrain.data.synth import make_arrays

    x, y = make_arrays(rows + test_rows, seed=seed, n_classes=N_CLASSES, n_features=n_features)
    x = x.astype(np.float32)
    features = [f"feat_{j + 1}" for j in range(n_features)]
    train = TrainData(np.arange(1, rows + 1), x[:rows], y[:rows], ["a", "b", "c"], features, "train.csv")
    data = FoldedData(train, fold_assignment(y[:rows], FOLDS, seed))
    return data, (np.arange(1, test_rows + 1), x[rows:])


def _given_outputs(data, test, seed=0):
    """Two level-1 models' OOF and test probabilities, made up (level 2 only reads them)."""
    rng = np.random.default_rng(seed)
    y = data.train.y
    return [
        ModelOutput(f"m{i}", 1, _proba(y, r, rng), _proba(np.zeros(len(test[0]), int), r, rng))
        for i, r in enumerate((0.3, 0.5))
    ]


def _by_hand(outs, data, test, features=(), C=0.5):
    """The level-2 logistic regression computed directly with scikit-learn, fold by fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    t = data.train
    cols = [t.features.index(f) for f in features]
    x = np.hstack([np.log(np.clip(o.oof, 1e-15, None)) for o in outs])
    xt = np.hstack([np.log(np.clip(o.test, 1e-15, None)) for o in outs])
    z, zt = np.log1p(t.x[:, cols].astype(np.float64)), np.log1p(test[1][:, cols].astype(np.float64))
    oof, tests = np.zeros_like(outs[0].oof), []
    for k in range(FOLDS):
        tr, va = data.fold_of != k, data.fold_of == k
        parts = [x, xt]
        if cols:
            sc = StandardScaler().fit(z[tr])
            parts = [np.hstack([x, sc.transform(z)]), np.hstack([xt, sc.transform(zt)])]
        m = LogisticRegression(C=C, max_iter=1000).fit(parts[0][tr], t.y[tr])
        oof[va] = m.predict_proba(parts[0][va])
        tests.append(m.predict_proba(parts[1]))
    return oof, np.mean(tests, axis=0)


@pytest.mark.parametrize("features", [[], ["feat_2", "feat_5"]])
def test_level2_logistic_equals_a_direct_computation(tmp_path, features):
    from ottotrain.workflows.stack.level2 import train_level2

    data, test = _table()
    outs = _given_outputs(data, test)
    spec = Level2Spec(name="lr", logistic={"C": 0.5}, features=features)
    got = train_level2(
        spec, outs, data, test, tmp_path / "lr", Log(0), inner_validation=0.1, seed=1, threads=1
    )
    want_oof, want_test = _by_hand(outs, data, test, features)
    np.testing.assert_allclose(got.oof, want_oof, atol=2e-5)
    np.testing.assert_allclose(got.test, want_test, atol=2e-5)
    written = pd.read_csv(tmp_path / "lr" / "oof.csv")
    assert list(written.columns[:3]) == ["id", "fold", "target"]
    np.testing.assert_array_equal(written["fold"], data.fold_of + 1)
    info = json.loads((tmp_path / "lr" / "level2.json").read_text())
    assert info["inputs"] == ["m0", "m1"] and info["features"] == features
    assert sorted(p.name for p in (tmp_path / "lr" / "models").iterdir()) == ["fold1", "fold2", "fold3"]
    m = json.loads((tmp_path / "lr" / "metrics.json").read_text())
    assert m["oof_log_loss"] == pytest.approx(log_loss(data.train.y, want_oof), abs=1e-5)


def test_level2_all_features_are_every_input_column(tmp_path):
    from ottotrain.workflows.stack.level2 import train_level2

    data, test = _table()
    outs = _given_outputs(data, test)
    spec = Level2Spec(name="lr", logistic={}, features=["all"])
    got = train_level2(
        spec, outs, data, test, tmp_path / "lr", Log(0), inner_validation=0.1, seed=1, threads=1
    )
    want_oof, _ = _by_hand(outs, data, test, data.train.features, C=1.0)
    np.testing.assert_allclose(got.oof, want_oof, atol=2e-5)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (
            ["feat_22"],
            "stack.level2[1].features[0]: 'feat_22' is not an input column (did you mean 'feat_2'?)",
        ),
        (["all", "target"], "stack.level2[1].features[1]: 'target' is not an input column"),
    ],
)
def test_level2_unknown_feature_is_one_line(features, message):
    from ottotrain.workflows.stack.level2 import check_features

    specs = [Level2Spec(name="a", logistic={}), Level2Spec(name="b", logistic={}, features=features)]
    with pytest.raises(ConfigError) as e:
        check_features(specs, ["feat_1", "feat_2", "feat_3"], "stack.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)
