"""LightGBM at level 2 of the stack: its folds, its early stopping, its files and commands."""

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import error_line, run_cli
from test_stack import LGBM, stack_tree, write
from test_stack_levels import FOLDS, _proba, _table

from ottotrain.config.stack_section import Level2Spec
from ottotrain.data import inner_split
from ottotrain.learners.gbdt import LightGBMLearner
from ottotrain.log import Log
from ottotrain.workflows.cv_member import member_seed
from ottotrain.workflows.stack.level2 import train_level2
from ottotrain.workflows.stack.outputs import ModelOutput

# Small trees and few rounds: the tests check the plumbing, not the score.
GBM = {"num_leaves": 4, "min_child_samples": 5, "max_rounds": 60, "early_stopping_rounds": 5}
SEED = 1


def _weak_outputs(data, test, seed=0):
    """Two level-1 models that know little (so that boosting soon overfits and stops early)."""
    rng = np.random.default_rng(seed)
    n_test = len(test[0])
    return [
        ModelOutput(f"m{i}", 1, _proba(data.train.y, r, rng, 1.0), _proba(np.zeros(n_test, int), r, rng, 1.0))
        for i, r in enumerate((0.05, 0.1))
    ]


def _train(tmp_path, features, spy=None, monkeypatch=None):
    data, test = _table()
    outs = _weak_outputs(data, test)
    if spy is not None:
        real = LightGBMLearner.fit

        def fit(self, x, y, x_stop=None, y_stop=None):
            spy.append((np.array(x), np.array(x_stop)))
            return real(self, x, y, x_stop, y_stop)

        monkeypatch.setattr(LightGBMLearner, "fit", fit)
    spec = Level2Spec(name="gbm", lightgbm=GBM, features=features)
    got = train_level2(
        spec, outs, data, test, tmp_path / "gbm", Log(0), inner_validation=0.2, seed=SEED, threads=1
    )
    return data, test, outs, got


def _by_hand(outs, data, test, features):
    """The level-2 LightGBM computed directly: the same columns, scaling, stop rows and booster."""
    t = data.train
    cols = [t.features.index(f) for f in features]
    x = np.hstack([np.log(np.clip(o.oof, 1e-15, None)) for o in outs] + [np.log1p(t.x[:, cols])])
    xt = np.hstack([np.log(np.clip(o.test, 1e-15, None)) for o in outs] + [np.log1p(test[1][:, cols])])
    oof, tests, rounds = np.zeros_like(outs[0].oof), [], []
    for k in range(FOLDS):
        tr, va = np.flatnonzero(data.fold_of != k), data.fold_of == k
        mean, sd = x[tr].mean(axis=0), x[tr].std(axis=0)
        sd[sd == 0] = 1.0
        z, zv, zt = (x[tr] - mean) / sd, (x[va] - mean) / sd, (xt - mean) / sd
        fit, stop = inner_split(np.arange(len(tr)), t.y[tr], 0.2, member_seed(SEED, k, 0))
        params = {
            "objective": "multiclass",
            "num_class": 3,
            "learning_rate": 0.05,
            "num_leaves": 4,
            "min_data_in_leaf": 5,
            "feature_fraction": 0.5,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "num_threads": 1,
            "seed": member_seed(SEED, k, 0),
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }
        train = lgb.Dataset(z[fit].astype(np.float32), t.y[tr][fit])
        valid = lgb.Dataset(z[stop].astype(np.float32), t.y[tr][stop], reference=train)
        booster = lgb.train(
            params, train, 60, valid_sets=[valid], callbacks=[lgb.early_stopping(5, verbose=False)]
        )
        n = booster.best_iteration
        oof[va] = booster.predict(zv.astype(np.float32), num_iteration=n)
        tests.append(booster.predict(zt.astype(np.float32), num_iteration=n))
        rounds.append(n)
    return oof, np.mean(tests, axis=0), rounds


@pytest.mark.parametrize("features", [[], ["feat_2", "feat_5"]])
def test_level2_lightgbm_equals_a_direct_computation(tmp_path, features):
    data, test, outs, got = _train(tmp_path, features)
    want_oof, want_test, rounds = _by_hand(outs, data, test, features)
    np.testing.assert_allclose(got.oof, want_oof, atol=1e-6)
    np.testing.assert_allclose(got.test, want_test, atol=1e-6)
    metrics = json.loads((tmp_path / "gbm" / "metrics.json").read_text())
    assert [f["rounds"] for f in metrics["folds"]] == rounds
    assert all(0 < r < 60 for r in rounds)  # early stopping, not the round limit, ended each fold
    info = json.loads((tmp_path / "gbm" / "level2.json").read_text())
    assert info["kind"] == "lightgbm" and info["features"] == features
    assert info["spec"]["lightgbm"]["num_leaves"] == 4


def test_level2_lightgbm_oof_rows_come_from_models_that_never_saw_them(tmp_path, monkeypatch):
    """Each fold's booster fitted and early-stopped on rows of the other folds only (told apart
    by their columns), and fold k's saved booster makes fold k's OOF rows."""
    from ottotrain import learners
    from ottotrain.workflows.stack.level2 import Scaler, joined, log_inputs

    spy = []
    data, _, outs, got = _train(tmp_path, [], spy, monkeypatch)
    x = joined(log_inputs([o.oof for o in outs]), None)
    assert len(spy) == FOLDS
    for k, (x_fit, x_stop) in enumerate(spy):
        scaled = Scaler(**json.loads((tmp_path / "gbm" / "level2.json").read_text())["scalers"][k]).apply(x)
        row_of = {r.tobytes(): i for i, r in enumerate(np.round(scaled, 9))}
        fit = [row_of[r.tobytes()] for r in np.round(x_fit, 9)]
        stop = [row_of[r.tobytes()] for r in np.round(x_stop, 9)]
        seen = set(np.flatnonzero(data.fold_of != k))
        assert set(fit) | set(stop) == seen and not set(fit) & set(stop)
        assert len(stop) == pytest.approx(0.2 * len(seen), abs=FOLDS)
        held = data.fold_of == k
        booster = learners.load(tmp_path / "gbm" / "models" / f"fold{k + 1}")
        np.testing.assert_allclose(booster.predict_proba(scaled[held]), got.oof[held], atol=1e-9)
    written = pd.read_csv(tmp_path / "gbm" / "oof.csv")
    np.testing.assert_array_equal(written["fold"], data.fold_of + 1)


def test_as_written_is_what_a_predictions_csv_gives_back(tmp_path):
    """The level-1 probabilities a stack's level 2 reads from the members' files, computed in
    memory (``predict`` on a stack run feeds level 2 these)."""
    from ottotrain.runs.artifacts import as_written, proba_rows, write_predictions

    rng = np.random.default_rng(0)
    p = np.maximum(rng.dirichlet(np.full(9, 0.3), size=3000), 1e-15)
    p /= p.sum(axis=1, keepdims=True)
    write_predictions(tmp_path / "p.csv", p, list("abcdefghi"), {"id": np.arange(len(p))})
    back = proba_rows(pd.read_csv(tmp_path / "p.csv").iloc[:, 1:].to_numpy())
    np.testing.assert_allclose(as_written(p), back, rtol=1e-14, atol=0)  # the same numbers
    assert np.abs(as_written(p) - p).max() > 1e-8  # the rounding is real


# --- through the stack command --------------------------------------------------------------

LEVEL2 = [
    {"name": "lr", "logistic": {"max_iter": 50}},
    {"name": "gbm", "lightgbm": GBM, "features": ["all"]},
]


@pytest.fixture(scope="module")
def gbm_stack(tiny_data, tmp_path_factory):
    """A finished stack (LightGBM and KNN members) whose top uses only the level-2 LightGBM."""
    d = tmp_path_factory.mktemp("gbmstack")
    tree = stack_tree(tiny_data, [LGBM, {"name": "knn", "knn": {"k": 8}}])
    tree["stack"] |= {"level2": LEVEL2, "top": {"method": "greedy", "level1": False}}
    result = run_cli("stack", write(d / "s.yaml", tree), "--run-dir", d / "run")
    assert result.exit_code == 0, result.output
    return d, d / "run", tree


def test_the_stack_command_trains_scores_and_predicts_with_a_level2_lightgbm(gbm_stack, tiny_data):
    d, run, _ = gbm_stack
    board = pd.read_csv(run / "leaderboard.csv").set_index("model")
    assert board.loc["gbm", "level"] == 2 and 0 < board.loc["gbm", "oof_log_loss"] < np.log(9)
    weights = json.loads((run / "top.json").read_text())["weights"]
    assert sorted(weights) == ["gbm", "lr"]
    out = d / "p.csv"
    r = run_cli("predict", run, tiny_data["test"], "-o", out, "-q")
    assert r.exit_code == 0, r.output
    got, saved = pd.read_csv(out), pd.read_csv(run / "submission.csv")
    np.testing.assert_array_equal(got["id"], saved["id"])
    np.testing.assert_allclose(got.iloc[:, 1:], saved.iloc[:, 1:], atol=2e-6)
    summary = run_cli("summary", run)
    assert summary.exit_code == 0 and any(
        ln.split()[:2] == ["gbm", "2"] for ln in summary.output.splitlines()
    )


def test_export_refuses_a_stack_whose_top_uses_a_level2_lightgbm(gbm_stack, tmp_path):
    _, run, _ = gbm_stack
    weights = json.loads((run / "top.json").read_text())["weights"]
    if weights["gbm"] == 0:
        pytest.skip("the top chose no LightGBM on these rows")
    line = error_line(run_cli("export", run, tmp_path / "out"))
    what = "level-2 learner 'gbm' is a LightGBM model, not a TensorFlow graph, and the top uses it"
    assert f"{what} (weight {weights['gbm']:.3g})" in line
    assert not (tmp_path / "out").exists()


def test_adding_a_level2_lightgbm_to_a_finished_stack_trains_only_it(gbm_stack, tmp_path):
    import shutil

    d, run, tree = gbm_stack
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    more = json.loads(json.dumps(tree))
    more["stack"]["level2"].append({"name": "gbm2", "lightgbm": GBM})
    r = run_cli("stack", write(tmp_path / "s.yaml", more), "--resume", copy)
    assert r.exit_code == 0, r.output
    assert "lgbm: finished earlier, reused" in r.output and "knn: finished earlier, reused" in r.output
    for name in ("lr", "gbm"):  # the same learners on the same members: not trained again
        assert f"level 2 {name}: finished earlier on the same members, reused" in r.output
    assert "level 2 gbm2: fold 1/3" in r.output
    board = pd.read_csv(copy / "leaderboard.csv").set_index("model")
    assert "gbm2" in board.index
    # The members' files are the ones the first run wrote.
    for name in ("lgbm", "knn"):
        assert (copy / f"members/{name}/oof.csv").read_bytes() == (
            run / f"members/{name}/oof.csv"
        ).read_bytes()
    assert (copy / "level2/gbm/oof.csv").read_bytes() == (run / "level2/gbm/oof.csv").read_bytes()
    # A level-2 learner whose spec changed is trained again.
    more["stack"]["level2"][1]["lightgbm"] = GBM | {"num_leaves": 3}
    r = run_cli("stack", write(tmp_path / "s.yaml", more), "--resume", copy)
    assert r.exit_code == 0, r.output
    assert "level 2 gbm: fold 1/3" in r.output and "level 2 gbm2: finished earlier" in r.output
    assert json.loads((copy / "level2/gbm/level2.json").read_text())["spec"]["lightgbm"]["num_leaves"] == 3
    assert yaml.safe_load((copy / "config.yaml").read_text())["stack"]["level2"][2]["name"] == "gbm2"


BAD = [
    (
        {"name": "g", "lightgbm": {"num_leave": 7}},
        ["stack.level2[0].lightgbm.num_leave: unknown key 'num_leave'", "did you mean 'num_leaves'"],
    ),
    (
        {"name": "g", "lightgbm": {"learning_rate": 0}},
        ["stack.level2[0].lightgbm.learning_rate", "must be a number > 0.0, got 0"],
    ),
    (
        {"name": "g", "lightgbm": {"num_leaves": "many"}},
        ["stack.level2[0].lightgbm.num_leaves: must be an integer, got 'many'"],
    ),
    (
        {"name": "g", "lightgbm": {}, "logistic": {}},
        ["level-2 learner 'g' needs exactly one of logistic, net, lightgbm, got logistic, lightgbm"],
    ),
    ({"name": "g", "lightgbmm": {}}, ["unknown key 'lightgbmm'", "did you mean 'lightgbm'"]),
]


@pytest.mark.parametrize(("level2", "fragments"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_level2_lightgbm_tables_are_one_line(level2, fragments, tiny_data, tmp_path):
    tree = stack_tree(tiny_data, [LGBM])
    tree["stack"]["level2"] = [level2]
    line = error_line(run_cli("stack", write(tmp_path / "s.yaml", tree), "--run-dir", tmp_path / "run"))
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "run").exists()
