"""The stack's level 2, its top, its leaderboard and predicting with a stack run."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

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
    x, xt = (np.hstack([x, z]), np.hstack([xt, zt])) if cols else (x, xt)
    for k in range(FOLDS):
        tr, va = data.fold_of != k, data.fold_of == k
        sc = StandardScaler().fit(x[tr])
        m = LogisticRegression(C=C, max_iter=1000).fit(sc.transform(x[tr]), t.y[tr])
        oof[va] = m.predict_proba(sc.transform(x[va]))
        tests.append(m.predict_proba(sc.transform(xt)))
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


# --- a stack run directory, built by hand from learners ------------------------------------

MEMBERS = {
    "knn": {"k": 5, "space": "log1p"},
    "lgbm": {"num_leaves": 7, "min_child_samples": 5, "max_rounds": 30, "early_stopping_rounds": 5},
}


def _learner_member(run_dir, name, data, test, data_cfg):
    """A learner member as the stack leaves it: fold models, oof.csv, submission.csv, member.json."""
    from ottotrain import learners
    from ottotrain.data import inner_split
    from ottotrain.io import write_json
    from ottotrain.workflows.stack.outputs import write_output

    t, folder = data.train, run_dir / "members" / name
    oof, tests = np.zeros((len(t.y), len(t.classes))), []
    for k in range(FOLDS):
        tr, va = np.flatnonzero(data.fold_of != k), data.fold_of == k
        fit, stop = inner_split(tr, t.y, 0.1, 0)
        learner = learners.make(
            name if name == "knn" else "lightgbm", MEMBERS[name], n_classes=9, seed=0, threads=1
        )
        learner.fit(t.x[fit], t.y[fit], t.x[stop], t.y[stop])
        learner.save(folder / "models" / f"fold{k + 1}")
        oof[va] = learner.predict_proba(t.x[va])
        tests.append(learner.predict_proba(test[1]))
    out = ModelOutput(name, 1, oof, np.mean(tests, axis=0), train_seconds=1.0)
    write_output(folder, out, t.ids, data.fold_of, t.y, t.classes, "id", "target", test[0])
    write_json(folder / "member.json", {"kind": learner.kind, "params": MEMBERS[name]})
    return out


def _knn_list_member(run_dir, name, ks, data, test):
    """A KNN member with a list of k as the stack makes it: one search of the largest k for the
    fold's rows and the test rows together, one folder (and saved learners) per k."""
    from ottotrain import learners
    from ottotrain.workflows.stack.outputs import write_output

    t, n_va = data.train, None
    oof = {k: np.zeros((len(t.y), len(t.classes))) for k in ks}
    tests = {k: [] for k in ks}
    for f in range(FOLDS):
        tr, va = data.fold_of != f, data.fold_of == f
        for k in ks:
            learner = learners.make("knn", {"k": k, "space": "log1p"}, n_classes=9, seed=0, threads=1)
            learner.fit(t.x[tr], t.y[tr])
            learner.save(run_dir / "members" / f"{name}-k{k}" / "models" / f"fold{f + 1}")
        votes = learners.knn_votes(
            t.x[tr], t.y[tr], np.concatenate([t.x[va], test[1]]), ks, "log1p", "uniform", 9
        )
        n_va = int(va.sum())
        for k in ks:
            oof[k][va] = votes[k][:n_va]
            tests[k].append(votes[k][n_va:])
    outs = [ModelOutput(f"{name}-k{k}", 1, oof[k], np.mean(tests[k], axis=0)) for k in ks]
    for o in outs:
        write_output(
            run_dir / "members" / o.name, o, t.ids, data.fold_of, t.y, t.classes, "id", "target", test[0]
        )
    return outs


@pytest.fixture(scope="module")
def stack_run(tmp_path_factory):
    """A finished stack run (LightGBM, KNN with one k and with a list of k, a logistic level 2, the
    greedy top) and its data."""
    from ottotrain import runs
    from ottotrain.config.data_section import DataConfig
    from ottotrain.data import fold_assignment, load_test, load_train
    from ottotrain.data.synth import make_data
    from ottotrain.io import write_json
    from ottotrain.workflows.stack.leaderboard import write_results
    from ottotrain.workflows.stack.level2 import train_level2
    from ottotrain.workflows.stack.top import combine

    d = tmp_path_factory.mktemp("stackdata")
    train_csv, test_csv = make_data(d, rows=360, seed=0, test_rows=50)
    data_cfg = DataConfig(train=str(train_csv), test=str(test_csv))
    t = load_train(data_cfg)
    data = FoldedData(t, fold_assignment(t.y, FOLDS, 0))
    test = load_test(test_csv, "id", "target", t.features)
    run_dir = d / "run"
    outs = [_learner_member(run_dir, name, data, test, data_cfg) for name in MEMBERS]
    outs += _knn_list_member(run_dir, "votes", [2, 6], data, test)
    spec = Level2Spec(name="lr", logistic={"C": 0.5}, features=["feat_1", "feat_9"])
    outs.append(
        train_level2(
            spec, outs, data, test, run_dir / "level2" / "lr", Log(0), inner_validation=0.1, seed=0, threads=1
        )
    )
    top = combine(outs, t.y, TopSpec(method="greedy", rounds=10), fold_of=data.fold_of)
    write_results(run_dir, outs, top, data, test[0], data_cfg, timings={"total_seconds": 3.0})
    stack = {
        "folds": FOLDS,
        "seed": 0,
        "classes": t.classes,
        "members": [
            {"name": n, "kind": "knn" if n == "knn" else "lightgbm", "folder": f"members/{n}"}
            for n in MEMBERS
        ]
        + [
            {"name": n, "member": "votes", "kind": "knn", "folder": f"members/{n}"}
            for n in ("votes-k2", "votes-k6")
        ],
        "level2": ["lr"],
        "left_out": [],
        "time_limit_seconds": None,
    }
    write_json(run_dir / "stack.json", stack)
    runs.write_status(run_dir, runs.FINISHED, runs.RunStatus(kind="stack"))
    return {"run": run_dir, "test_csv": test_csv, "train_csv": train_csv, "test": test, "top": top, "y": t.y}


def test_predict_stack_equals_the_saved_submission(stack_run):
    from ottotrain.workflows.stack.predict import predict_stack

    saved = pd.read_csv(stack_run["run"] / "submission.csv")
    p = predict_stack(stack_run["run"], stack_run["test"][1])
    np.testing.assert_allclose(p, saved.iloc[:, 1:].to_numpy(), atol=2e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_predict_command_on_a_stack_run(stack_run, tmp_path):
    out = tmp_path / "sub.csv"
    r = run_cli("predict", stack_run["run"], stack_run["test_csv"], "-o", out, "-q")
    assert r.exit_code == 0, r.output
    got, saved = pd.read_csv(out), pd.read_csv(stack_run["run"] / "submission.csv")
    assert list(got.columns) == list(saved.columns)
    np.testing.assert_array_equal(got["id"], saved["id"])
    np.testing.assert_allclose(got.iloc[:, 1:], saved.iloc[:, 1:], atol=2e-6)


def test_top_files_and_leaderboard(stack_run):
    run, top = stack_run["run"], stack_run["top"]
    board = pd.read_csv(run / "leaderboard.csv")
    assert list(board.columns) == [
        "model",
        "level",
        "oof_log_loss",
        "oof_accuracy",
        "train_seconds",
        "predict_seconds",
        "weight",
    ]
    assert sorted(board["model"]) == ["knn", "lgbm", "lr", "top", "votes-k2", "votes-k6"]
    assert board.set_index("model").loc["top", "level"] == 3
    assert board.loc[board.model != "top", "weight"].sum() == pytest.approx(1.0, abs=1e-5)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["kind"] == "stack"
    assert metrics["oof_log_loss"] == pytest.approx(top.nested_oof_log_loss, abs=1e-6)
    saved = json.loads((run / "top.json").read_text())
    assert saved["method"] == "greedy" and saved["weights"] == top.weights
    others = {(a["method"], a["models"]): a["nested_oof_log_loss"] for a in metrics["top_ablations"]}
    assert sorted(others) == sorted(
        itertools.product(("blend", "greedy"), ("level 1", "level 2", "levels 1 and 2"))
    )
    assert others["greedy", "levels 1 and 2"] == metrics["oof_log_loss"]
    assert others["greedy", "level 2"] == pytest.approx(log_loss(stack_run["y"], _level2_oof(run)), abs=1e-5)
    oof = pd.read_csv(run / "oof.csv")
    assert log_loss(stack_run["y"], oof.iloc[:, 3:].to_numpy()) == pytest.approx(
        metrics["oof_log_loss"], abs=1e-4
    )


def _level2_oof(run):
    return pd.read_csv(run / "level2" / "lr" / "oof.csv").iloc[:, 3:].to_numpy()


def test_summary_prints_the_leaderboard(stack_run):
    r = run_cli("summary", stack_run["run"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == [
        "model",
        "level",
        "oof_log_loss",
        "oof_accuracy",
        "train_s",
        "predict_s",
        "weight",
    ]
    assert {ln.split()[0] for ln in lines[1:7]} == {"knn", "lgbm", "lr", "top", "votes-k2", "votes-k6"}
    assert lines[7].startswith("top: greedy") and "chosen on the other folds" in lines[7]
    assert lines[8] == "other tops, OOF log loss with weights chosen on the other folds:"
    assert len(lines) == 15 and lines[9].startswith("  greedy over levels 1 and 2: ")


def test_evaluate_runs_and_blend_take_a_stack_run(stack_run, tmp_path):
    run = stack_run["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    r = run_cli("evaluate", run, "--json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["log_loss"] == pytest.approx(metrics["oof_log_loss"], abs=1e-4)
    assert (run / "evaluate" / "oof" / "per_class.csv").is_file()  # its oof.csv's rows
    r = run_cli("runs", run.parent, "--json")
    row = next(x for x in json.loads(r.output) if x["name"] == "run")
    assert row["kind"] == "stack" and row["log_loss"] == metrics["oof_log_loss"] and row["seconds"] == 3.0
    r = run_cli("blend", run, "-o", tmp_path / "b.csv", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["runs"][0]["weight"] == 1.0


def test_evaluate_a_stack_run_on_labelled_rows(stack_run):
    from ottotrain.config.data_section import DataConfig
    from ottotrain.data import load_train
    from ottotrain.workflows.evaluate import evaluate
    from ottotrain.workflows.stack.predict import predict_stack

    t = load_train(DataConfig(train=str(stack_run["train_csv"])))
    result = evaluate(stack_run["run"], stack_run["train_csv"])
    assert result.rows == 360
    assert result.log_loss == pytest.approx(log_loss(t.y, predict_stack(stack_run["run"], t.x)), abs=1e-6)


@pytest.mark.parametrize(
    ("command", "tail"),
    [
        ("export", "; export writes a stack whose used members are all Keras nets; 'ottotrain predict "),
        ("serve", "; serve serves a stack whose used members are all Keras nets; 'ottotrain predict "),
    ],
)
def test_export_and_serve_refuse_a_stack_run_in_one_line(stack_run, tmp_path, command, tail):
    from ottotrain.errors import RunError
    from ottotrain.workflows.export import export
    from ottotrain.workflows.serve import load

    with pytest.raises(RunError) as e:
        export(stack_run["run"], tmp_path / "out") if command == "export" else load(stack_run["run"])
    message = "member 'knn' is a nearest-neighbour vote model, not a TensorFlow graph, and the top uses it ("
    assert message in str(e.value) and tail in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_predict_on_a_stack_run_made_by_the_stack_command(tmp_path):
    """End to end: a Keras member (a cv run), a LightGBM member, a logistic and a net level 2."""
    import yaml

    from ottotrain.data.synth import make_data

    train_csv, test_csv = make_data(tmp_path / "data", rows=300, seed=0, test_rows=40)
    layers = [
        {"Dense": {"units": 8, "activation": "relu"}},
        {"Dense": {"units": "n_classes"}},
        {"Activation": "softmax"},
    ]
    train = {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 2, "batch_size": 64}
    (tmp_path / "net.yaml").write_text(
        yaml.safe_dump({"data": {"train": str(train_csv)}, "model": {"layers": layers}, "train": train})
    )
    stack = {
        "seed": 3,
        "data": {"train": str(train_csv), "test": str(test_csv)},
        "cv": {"folds": 3},
        "stack": {
            "members": [
                {"name": "nn", "config": "net.yaml"},
                {"name": "lgbm", "lightgbm": MEMBERS["lgbm"]},
            ],
            "level2": [
                {"name": "lr", "logistic": {"C": 0.5}},
                {"name": "net", "features": ["all"], "net": {"model": {"layers": layers}, "train": train}},
            ],
            "top": {"method": "blend", "level1": False},
        },
    }
    (tmp_path / "stack.yaml").write_text(yaml.safe_dump(stack))
    run = tmp_path / "run"
    r = run_cli("stack", tmp_path / "stack.yaml", "--run-dir", run, "-q")
    assert r.exit_code == 0, r.output
    assert sorted(json.loads((run / "top.json").read_text())["weights"]) == ["lr", "net"]
    out = tmp_path / "p.csv"
    assert run_cli("predict", run, test_csv, "-o", out, "-q").exit_code == 0
    got, saved = pd.read_csv(out), pd.read_csv(run / "submission.csv")
    np.testing.assert_allclose(got.iloc[:, 1:], saved.iloc[:, 1:], atol=2e-6)
    r = run_cli("export", run, tmp_path / "export")
    assert r.exit_code == 1 and "member 'lgbm' is a LightGBM model, not a TensorFlow graph" in r.output


def test_summary_of_a_stack_config_lists_its_levels(tmp_path, tiny_data):
    import yaml

    cfg = {
        "data": {"train": str(tiny_data["train"])},
        "stack": {
            "members": [{"name": "lgbm", "lightgbm": {}}, {"name": "knn", "knn": {"k": [2, 8]}}],
            "level2": [{"name": "lr", "logistic": {}, "features": ["feat_1"]}],
            "top": {"method": "blend", "level1": False},
        },
    }
    (tmp_path / "stack.yaml").write_text(yaml.safe_dump(cfg))
    r = run_cli("summary", tmp_path / "stack.yaml")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        "2 level-1 member(s):",
        "  lgbm: lightgbm",
        "  knn: knn",
        "1 level-2 learner(s):",
        "  lr: logistic, features feat_1",
        "top: blend over level 2; a finished stack run's summary is its leaderboard",
    ]


def test_evaluate_without_data_needs_out_of_fold_predictions(tmp_path):
    from ottotrain import runs
    from ottotrain.errors import RunError
    from ottotrain.workflows.evaluate import evaluate

    runs.write_status(tmp_path, runs.FINISHED)  # a fit run: no "kind"
    with pytest.raises(RunError) as e:
        evaluate(tmp_path)
    assert (
        str(e.value)
        == f"{tmp_path}: a fit run has no out-of-fold predictions; give a labelled DATA_CSV to score it on"
    )


def test_serve_command_refuses_a_stack_run_before_it_listens(stack_run):
    r = run_cli("serve", stack_run["run"], "--port", "0", "--workers", "2")
    assert r.exit_code == 1
    assert r.output.strip().endswith("predicts with the stack") and "member 'knn'" in r.output
    assert "Serving" not in r.output


def test_a_knn_member_predicts_every_k_from_one_search_as_the_stack_did(tmp_path):
    """A KNN member's k's come from one search of the largest k, as the stack computed them,
    and agree with each k's saved learner alone (Otto-shaped counts have near ties at the k-th
    place, where an unordered search kept other neighbours for a tenth of the rows)."""
    from ottotrain import learners
    from ottotrain.data.synth import make_arrays
    from ottotrain.workflows.stack.predict import _knn_member

    x, y = make_arrays(2500, seed=0)
    x_ref, y_ref, x = x[:2000].astype(np.float32), y[:2000], x[2000:].astype(np.float32)
    folders = []
    for k in (2, 32):
        folders.append(tmp_path / f"v-k{k}")
        learner = learners.make("knn", {"k": k, "space": "log1p"}, n_classes=9, seed=0, threads=1)
        learner.fit(x_ref, y_ref)
        learner.save(folders[-1] / "models" / "fold1")
    got = _knn_member(["v-k2", "v-k32"], folders, folds=1).predict(x)
    want = learners.knn_votes(x_ref, y_ref, x, [2, 32], "log1p", "uniform", 9)
    np.testing.assert_allclose(got["v-k2"], want[2])
    np.testing.assert_allclose(got["v-k32"], want[32])
    alone = learners.load(folders[0] / "models" / "fold1").predict_proba(x)
    np.testing.assert_allclose(alone, want[2])
