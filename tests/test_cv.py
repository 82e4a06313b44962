"""Cross-validation, bagging, resuming and blending, on tiny synthetic data."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_cli, tiny_config

FOLDS, SEEDS = 3, 2


@pytest.fixture(scope="session")
def cv_config(tiny_data, tmp_path_factory):
    cfg = tiny_config(tiny_data, epochs=2, early_stopping={"patience": 1})
    # A varied bag: seed 2 of every fold adds TF-IDF features and uses smaller batches.
    cfg["cv"] = {"variants": [{}, {"data.tfidf": True, "train.batch_size": 32}]}
    p = tmp_path_factory.mktemp("cvcfg") / "tiny.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


@pytest.fixture(scope="session")
def cv_run(cv_config, tmp_path_factory):
    """One finished cv run: 3 folds x 2 seeds (one per cv.variants entry), made through the CLI."""
    run_dir = tmp_path_factory.mktemp("cvrun") / "run"
    r = run_cli("cv", cv_config, "--folds", FOLDS, "--run-dir", run_dir, "-q")
    assert r.exit_code == 0, r.output
    assert "oof_log_loss=" in r.output
    return run_dir


def _train_table(tiny_data):
    return pd.read_csv(tiny_data["train"])


def test_fold_assignment_stratified_and_deterministic(tiny_data):
    from ottotrain.data import fold_assignment

    y = pd.Categorical(_train_table(tiny_data)["target"]).codes
    a = fold_assignment(y, 5, seed=1)
    assert np.array_equal(a, fold_assignment(y, 5, seed=1))
    assert not np.array_equal(a, fold_assignment(y, 5, seed=2))
    assert sorted(set(a)) == [0, 1, 2, 3, 4]
    for c in np.unique(y):  # each class spread evenly over the folds
        counts = np.bincount(a[y == c], minlength=5)
        assert counts.max() - counts.min() <= 1
    with pytest.raises(Exception, match="at least 2 folds"):
        fold_assignment(y, 1, seed=1)


def test_fold_assignment_refuses_too_small_classes():
    from ottotrain.data import fold_assignment
    from ottotrain.errors import DataError

    with pytest.raises(DataError, match="smallest class has only 2 rows"):
        fold_assignment(np.array([0] * 10 + [1] * 2), 3, seed=0)


def test_every_training_row_gets_one_oof_prediction(cv_run, tiny_data):
    train = _train_table(tiny_data)
    oof = pd.read_csv(cv_run / "oof.csv")
    assert list(oof.columns[:3]) == ["id", "fold", "target"]
    assert len(oof) == len(train)
    assert sorted(oof["id"]) == sorted(train["id"]) and oof["id"].is_unique
    assert (oof["target"].to_numpy() == train.set_index("id").loc[oof["id"], "target"].to_numpy()).all()
    p = oof.iloc[:, 3:].to_numpy()
    assert np.allclose(p.sum(axis=1), 1, atol=1e-4)
    # Folds in the OOF table are those of folds.csv, and the OOF score matches the table.
    folds = pd.read_csv(cv_run / "folds.csv")
    assert np.array_equal(folds["fold"], oof["fold"]) and set(folds["fold"]) == {1, 2, 3}
    m = json.loads((cv_run / "metrics.json").read_text())
    from ottotrain.metrics import log_loss

    y = oof["target"].map({c: i for i, c in enumerate(oof.columns[3:])}).to_numpy()
    assert abs(log_loss(y, p) - m["oof_log_loss"]) < 1e-4
    assert m["kind"] == "cv" and m["folds"] == FOLDS and m["seeds"] == SEEDS
    assert len(m["fold_log_loss"]) == FOLDS and len(m["members"]) == FOLDS * SEEDS
    assert {"oof_accuracy", "fold_log_loss_mean", "fold_log_loss_std"} <= set(m)
    assert len(m["seed_oof_log_loss"]) == SEEDS  # each seed's models alone, without bagging
    status = json.loads((cv_run / "status.json").read_text())
    assert status["status"] == "finished" and status["kind"] == "cv"
    assert not (cv_run / "work").exists()


def test_each_member_is_trained_on_other_folds_only(cv_run):
    """A member's preprocessing statistics come from its own training rows."""
    pres = {
        f: json.loads((cv_run / "models" / f"fold{f}-seed1.preprocess.json").read_text())
        for f in range(1, FOLDS + 1)
    }
    assert pres[1]["center"] != pres[2]["center"]
    recs = [
        json.loads((cv_run / "models" / f"fold{f}-seed{s}.json").read_text())
        for f in range(1, FOLDS + 1)
        for s in range(1, SEEDS + 1)
    ]
    assert len({r["seed"] for r in recs}) == FOLDS * SEEDS  # every member has its own seed
    assert all(r["n_train"] + r["n_val"] == 600 for r in recs)


def test_members_save_their_oof_predictions_and_a_run_without_them_gives_the_same_table(cv_run, tmp_path):
    """Each member's .oof.npz is what its model predicts on its fold's rows; a run whose members
    lack it (finished by ottotrain 1.0) gets the same OOF table from the models."""
    from ottotrain import engine
    from ottotrain.config import load_config
    from ottotrain.data import load_train
    from ottotrain.features import Preprocessor
    from ottotrain.runs.artifacts import read_member_oof
    from ottotrain.workflows.cv_result import member_oof as _member_oof

    train = load_train(load_config(cv_run / "config.yaml").data)
    folds = pd.read_csv(cv_run / "folds.csv")["fold"].to_numpy()
    for f in range(1, FOLDS + 1):
        name = f"fold{f}-seed2"
        pre = Preprocessor.from_json((cv_run / "models" / f"{name}.preprocess.json").read_text())
        model = engine.inference.load_model(cv_run / "models" / f"{name}.keras")
        again = engine.inference.predict_proba(model, pre.transform(train.x[folds == f]))
        saved = read_member_oof(cv_run / "models" / f"{name}.oof.npz")
        assert saved.shape == again.shape and np.abs(saved - again).max() < 1e-6

    old = tmp_path / "old"
    shutil.copytree(cv_run, old)
    for p in (old / "models").glob("*.oof.npz"):
        p.unlink()
    np.savez(old / "models" / "fold1-seed1.oof.npz", proba=np.zeros((3, 2)))
    with pytest.raises(Exception, match=r"fold1-seed1.oof.npz: holds probabilities of shape \(3, 2\)"):
        _member_oof(old, "fold1-seed1", None, train.x[folds == 1], 9)
    (old / "models" / "fold1-seed1.oof.npz").unlink()
    for f in range(1, FOLDS + 1):
        pre = Preprocessor.from_json((old / "models" / f"fold{f}-seed1.preprocess.json").read_text())
        from_model = _member_oof(old, f"fold{f}-seed1", pre, train.x[folds == f], 9)
        saved = read_member_oof(cv_run / "models" / f"fold{f}-seed1.oof.npz")
        assert np.abs(from_model - saved).max() < 1e-6


def test_cv_variants_vary_the_members(cv_run):
    cv = json.loads((cv_run / "cv.json").read_text())
    assert cv["seeds"] == SEEDS  # one seed per variant when --seeds is not given
    assert [(m["fold"], m["variant"]) for m in cv["members"]] == [
        (f, s) for s in range(SEEDS) for f in range(1, FOLDS + 1)
    ]  # seed 1 of every fold first
    for f in range(1, FOLDS + 1):
        plain, varied = (
            json.loads((cv_run / "models" / f"fold{f}-seed{s}.preprocess.json").read_text()) for s in (1, 2)
        )
        assert (plain["tfidf"], varied["tfidf"]) == (False, True)
    metrics = json.loads((cv_run / "metrics.json").read_text())
    assert [m["variant"] for m in metrics["members"]] == [0, 1] * FOLDS
    assert len(metrics["seed_oof_log_loss"]) == SEEDS  # each variant's own OOF score


def test_ensemble_submission_is_the_average_of_members(cv_run, tiny_data, tmp_path):
    from ottotrain.data import load_test
    from ottotrain.engine.inference import load_model, predict_proba
    from ottotrain.features import Preprocessor

    sub = pd.read_csv(cv_run / "submission.csv")
    ids, x = load_test(tiny_data["test"], "id", "target", [f"feat_{j}" for j in range(1, 94)])
    ps = []
    for f in range(1, FOLDS + 1):
        for s in range(1, SEEDS + 1):
            name = cv_run / "models" / f"fold{f}-seed{s}"
            pre = Preprocessor.from_json(name.with_suffix(".preprocess.json").read_text())
            model = load_model(name.with_suffix(".keras"))
            ps.append(predict_proba(model, pre.transform(x)))
    mean = np.mean(ps, axis=0)
    assert np.array_equal(sub["id"].to_numpy(), ids)
    assert np.allclose(sub.iloc[:, 1:].to_numpy(), mean, atol=1e-5)
    # 'predict' on a cv run uses the same ensemble.
    out = tmp_path / "pred.csv"
    r = run_cli("predict", cv_run, tiny_data["test"], "-o", out)
    assert r.exit_code == 0, r.output
    assert np.allclose(pd.read_csv(out).iloc[:, 1:].to_numpy(), mean, atol=1e-5)


def test_fit_weights_simplex_and_never_worse():
    from ottotrain.metrics import log_loss
    from ottotrain.workflows.blend import fit_weights

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 500)
    truth = np.eye(4)[y]
    probas = []
    for noise in (0.5, 1.0, 3.0):
        p = truth * 2 + rng.gamma(noise, 1.0, (500, 4))
        probas.append(p / p.sum(1, keepdims=True))
    w = fit_weights(probas, y)
    assert (w >= 0).all() and abs(w.sum() - 1) < 1e-9
    blended = sum(wi * p for wi, p in zip(w, probas))
    assert log_loss(y, blended) <= min(log_loss(y, p) for p in probas) + 1e-12
    # A useless member gets (nearly) no weight.
    uniform = np.full((500, 4), 0.25)
    w2 = fit_weights([probas[0], uniform], y)
    assert w2[1] < 0.05


def _copy_run(src, dst, mutate):
    shutil.copytree(src, dst)
    oof = pd.read_csv(dst / "oof.csv")
    oof = mutate(oof)
    oof.to_csv(dst / "oof.csv", index=False)
    return dst


def test_blend_cli(cv_run, tmp_path):
    # A second "run": the same OOF rows and folds, with differently wrong probabilities.
    def soften(oof):
        p = oof.iloc[:, 3:].to_numpy() ** 0.5
        oof.iloc[:, 3:] = p / p.sum(1, keepdims=True)
        return oof

    other = _copy_run(cv_run, tmp_path / "other", soften)
    sub = pd.read_csv(other / "submission.csv")
    sub.iloc[:, 1:] = 1 / 9
    sub.to_csv(other / "submission.csv", index=False)
    out = tmp_path / "blend.csv"
    r = run_cli("blend", cv_run, other, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    w = [x["weight"] for x in res["runs"]]
    assert all(x >= 0 for x in w) and abs(sum(w) - 1) < 1e-5
    assert res["oof_log_loss"] <= min(x["oof_log_loss"] for x in res["runs"]) + 1e-6
    assert res["oof_log_loss_temperature"] <= res["oof_log_loss"] + 1e-6
    a = pd.read_csv(cv_run / "submission.csv").iloc[:, 1:].to_numpy()
    expected = w[0] * a + w[1] / 9
    assert np.allclose(
        pd.read_csv(out).iloc[:, 1:].to_numpy(), expected / expected.sum(1, keepdims=True), atol=1e-4
    )
    # Human-readable report.
    r = run_cli("blend", cv_run, other)
    assert r.exit_code == 0 and "blend" in r.output and "weight=" in r.output


def test_blend_refuses_runs_with_other_folds(cv_run, tmp_path):
    def shift(oof):
        oof["fold"] = oof["fold"] % FOLDS + 1
        return oof

    other = _copy_run(cv_run, tmp_path / "shifted", shift)
    r = run_cli("blend", cv_run, other)
    assert r.exit_code == 1
    assert "folds differ" in r.output and "same config 'seed'" in r.output

    def drop(oof):
        return oof.iloc[5:]

    other2 = _copy_run(cv_run, tmp_path / "fewer", drop)
    r = run_cli("blend", cv_run, other2)
    assert r.exit_code == 1 and "ids" in r.output


def test_blend_refuses_a_fit_run(tmp_path, tiny_config_path):
    run_dir = tmp_path / "fitrun"
    assert run_cli("fit", tiny_config_path, "--run-dir", run_dir, "-q").exit_code == 0
    r = run_cli("blend", run_dir)
    assert r.exit_code == 1 and "not a cv run" in r.output
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["kept_epoch"] == m["best_epoch"]


def test_killed_cv_resumes_without_retraining(cv_config, tmp_path, monkeypatch):
    """Interrupt in the second member's second epoch; resume reuses member 1, continues member 2."""
    import ottotrain.engine.member as T
    from ottotrain.config import load_config
    from ottotrain.log import Log
    from ottotrain.workflows.cv import run_cv

    cfg = load_config(cv_config, ["train.epochs=3", "train.early_stopping=null"])
    run_dir = tmp_path / "run"
    real_loop = T.train_loop
    calls = []

    def interrupting_loop(model, job, log, state=None, extra=()):
        calls.append(job.work_dir.name)
        if len(calls) < 2:
            return real_loop(model, job, log, state, extra)
        from ottotrain.engine.env import keras

        class Stop(keras.callbacks.Callback):
            n = 0

            def on_train_begin(self, logs=None):
                Stop.n += 1
                if Stop.n == 2:  # during epoch 2, after epoch 1 was saved
                    raise KeyboardInterrupt

        return real_loop(model, job, log, state, [*extra, Stop()])

    monkeypatch.setattr(T, "train_loop", interrupting_loop)
    with pytest.raises(KeyboardInterrupt):
        run_cv(cfg, folds=FOLDS, seeds=1, run_dir=run_dir, log=Log(0))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    first = run_dir / "models" / "fold1-seed1.keras"
    done = {p: p.stat().st_mtime_ns for p in (run_dir / "models").iterdir()}
    assert first in done and not (run_dir / "models" / "fold2-seed1.json").exists()
    saved = json.loads((run_dir / "work" / "fold2-seed1" / "state" / "trainer.json").read_text())
    assert saved["epoch"] == 1

    monkeypatch.setattr(T, "train_loop", real_loop)
    import io

    out = io.StringIO()
    m = run_cv(cfg, resume=run_dir, log=Log(1, out))
    text = out.getvalue()
    assert "fold1-seed1: finished earlier, reused" in text
    assert "Resuming fold2-seed1 after epoch 1" in text
    for p, t in done.items():  # finished members untouched
        assert p.stat().st_mtime_ns == t
    assert m.n_models == FOLDS and len(pd.read_csv(run_dir / "oof.csv")) == 600
    rec = json.loads((run_dir / "models" / "fold2-seed1.json").read_text())
    assert rec["epochs_run"] == 3  # epoch 1 from before, 2 and 3 after resuming
    # A finished cv run cannot be resumed again; folds cannot change on resume.
    from ottotrain.errors import RunError

    with pytest.raises(RunError, match="already finished"):
        run_cv(cfg, resume=run_dir, log=Log(0))


def test_restore_best_weights_false_keeps_last_epoch(tiny_data, write_config, tmp_path):
    cfg = tiny_config(
        tiny_data,
        epochs=3,
        early_stopping={"patience": 5, "restore_best_weights": False},
        optimizer={"name": "adam", "learning_rate": 0.5},
    )
    run_dir = tmp_path / "run"
    assert run_cli("fit", write_config(cfg), "--run-dir", run_dir, "-q").exit_code == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["kept_epoch"] == m["epochs_run"] == 3


def test_summary_shows_every_variant(cv_config, cv_run):
    text = run_cli("summary", cv_config).output
    assert "cv.variants[0] {}: 93 inputs: 93 numeric; 9 classes" in text
    assert (
        "cv.variants[1] {'data.tfidf': True, 'train.batch_size': 32}: 186 inputs: 93 numeric, 93 TF-IDF"
        in text
    )
    assert text.count("Total params") == 2
    text = run_cli("summary", cv_run).output
    assert "fold1-seed1 (cv.variants[0])" in text and "fold1-seed2 (cv.variants[1])" in text
    assert text.count("Total params") == SEEDS


@pytest.mark.parametrize(
    "name, want",
    [("otto", "otto-cv"), ("otto-cv", "otto-cv"), ("my_cv", "my_cv"), ("cv", "cv"), ("cvx", "cvx-cv")],
)
def test_cv_run_directory_names_say_cv_once(name, want):
    from ottotrain.workflows.cv import cv_run_name

    assert cv_run_name(name) == want
