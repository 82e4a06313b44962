"""cv.inner_validation: a cv member early-stops on rows of its own training folds and is scored
on its fold, which chose nothing (workflows/cv_member.py)."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import error_line, run_cli, tiny_config

FOLDS, SEEDS, SHARE = 3, 2, 0.2
ROWS = 600  # tiny_data's training rows


def _config(tiny_data, tmp_path_factory, share):
    # Patience 1 and a learning-rate plateau: the stop rows choose the epoch and the rate.
    cfg = tiny_config(
        tiny_data,
        epochs=4,
        early_stopping={"patience": 1},
        lr_schedule={"name": "reduce_on_plateau", "monitor": "val_loss", "patience": 1},
    )
    if share is not None:
        cfg["cv"] = {"inner_validation": share}
    p = tmp_path_factory.mktemp("honestcfg") / "tiny.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


@pytest.fixture(scope="module")
def honest_config(tiny_data, tmp_path_factory):
    return _config(tiny_data, tmp_path_factory, SHARE)


@pytest.fixture(scope="module")
def honest_run(honest_config, tmp_path_factory):
    """A finished cv run with cv.inner_validation, 3 folds x 2 seeds, and its output."""
    run_dir = tmp_path_factory.mktemp("honestrun") / "run"
    r = run_cli("cv", honest_config, "--folds", FOLDS, "--seeds", SEEDS, "--run-dir", run_dir)
    assert r.exit_code == 0, r.output
    return run_dir, r.output


@pytest.fixture(scope="module")
def plain_run(tiny_data, tmp_path_factory):
    """The same config without cv.inner_validation: the old way."""
    run_dir = tmp_path_factory.mktemp("plainrun") / "run"
    config = _config(tiny_data, tmp_path_factory, None)
    r = run_cli("cv", config, "--folds", FOLDS, "--seeds", 1, "--run-dir", run_dir)
    assert r.exit_code == 0, r.output
    return run_dir, r.output


def _train(run_dir):
    from ottotrain.config import load_config
    from ottotrain.data import load_train

    cfg = load_config(run_dir / "config.yaml")
    return cfg, load_train(cfg.data), pd.read_csv(run_dir / "folds.csv")["fold"].to_numpy() - 1


def _members(run_dir):
    """(name, fold (0-based), seed, its record) of every member, from cv.json and models/."""
    plan = json.loads((run_dir / "cv.json").read_text())["members"]
    return [
        (
            m["name"],
            m["fold"] - 1,
            m["seed"],
            json.loads((run_dir / "models" / f"{m['name']}.json").read_text()),
        )
        for m in plan
    ]


def _kept(run_dir, name):
    from ottotrain import engine
    from ottotrain.features import Preprocessor

    pre = Preprocessor.from_json((run_dir / "models" / f"{name}.preprocess.json").read_text())
    return pre, engine.inference.load_model(run_dir / "models" / f"{name}.keras")


def _fitted(cfg, train, rows) -> dict:
    """The preprocessing state that fitting on ``rows`` gives."""
    from ottotrain.features import Preprocessor

    pre = Preprocessor.fit(train.x[rows], cfg.data, train.features, train.classes, train.y[rows], train.types)
    return json.loads(pre.to_json())


def test_stop_rows_lie_in_the_training_folds_and_the_fold_chose_nothing(honest_run):
    """The stop rows (data.inner_split with the member's seed, as cv.json records it) are a share of
    its training folds, apart from the rows it fitted on; its preprocessing is fitted on the fit
    rows only; its kept epoch is the stop rows' best; its fold is only scored."""
    from ottotrain.data import inner_split
    from ottotrain.metrics import log_loss

    run_dir, _ = honest_run
    cfg, train, fold_of = _train(run_dir)
    stops = {}
    for name, fold, seed, rec in _members(run_dir):
        tr, va = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        fit, stop = inner_split(tr, train.y, SHARE, seed)
        assert np.intersect1d(fit, stop).size == 0 and np.array_equal(np.union1d(fit, stop), tr)
        assert np.intersect1d(stop, va).size == 0 and np.intersect1d(fit, va).size == 0
        assert (rec["n_train"], rec["n_stop"], rec["n_val"]) == (len(fit), len(stop), len(va))
        assert rec["n_train"] + rec["n_stop"] + rec["n_val"] == ROWS
        assert abs(len(stop) - SHARE * len(tr)) <= 1
        saved = json.loads((run_dir / "models" / f"{name}.preprocess.json").read_text())
        assert saved["center"] == _fitted(cfg, train, fit)["center"]
        assert saved["center"] != _fitted(cfg, train, tr)["center"]
        pre, model = _kept(run_dir, name)
        from ottotrain import engine

        p_stop = engine.inference.predict_proba(model, pre.transform(train.x[stop]))
        assert rec["stop_log_loss"] == pytest.approx(log_loss(train.y[stop], p_stop), abs=1e-5)
        history = pd.read_csv(run_dir / "models" / f"{name}.history.csv")
        losses = history["val_loss"].to_numpy()  # the stop rows' loss, epoch by epoch
        assert rec["kept_epoch"] == int(np.argmin(losses)) + 1
        assert losses.min() == pytest.approx(rec["stop_log_loss"], abs=1e-4)
        stops.setdefault(fold, []).append(set(stop))
    # Each seed of a fold holds out its own stop rows (its own seed).
    assert all(len(s) == SEEDS and s[0] != s[1] for s in stops.values())


def test_the_oof_is_the_kept_model_on_its_fold(honest_run):
    """models/<m>.oof.npz and the record's val_* are the kept model's on fold k; oof.csv averages
    each row's seeds; metrics.json and the plan line say inner_validation."""
    from ottotrain import engine
    from ottotrain.metrics import log_loss
    from ottotrain.runs.artifacts import read_member_oof

    run_dir, output = honest_run
    _, train, fold_of = _train(run_dir)
    summed = np.zeros((ROWS, len(train.classes)))
    for name, fold, _, rec in _members(run_dir):
        va = np.flatnonzero(fold_of == fold)
        pre, model = _kept(run_dir, name)
        again = engine.inference.predict_proba(model, pre.transform(train.x[va]))
        saved = read_member_oof(run_dir / "models" / f"{name}.oof.npz")
        assert saved.shape == again.shape and np.abs(saved - again).max() < 1e-6
        assert rec["val_log_loss"] == pytest.approx(log_loss(train.y[va], again), abs=1e-5)
        assert rec["val_accuracy"] == pytest.approx(float((again.argmax(1) == train.y[va]).mean()), abs=1e-6)
        summed[va] += saved
    oof = pd.read_csv(run_dir / "oof.csv")[list(train.classes)].to_numpy()
    assert np.abs(oof - summed / SEEDS).max() < 1e-6
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["inner_validation"] == SHARE
    assert "early-stops on 20 % of its training rows" in output and "cv.inner_validation" in output


def test_off_by_default_members_stop_on_the_fold_that_scores_them(plain_run):
    """Without cv.inner_validation a member fits on all its training folds and early-stops on its
    fold (the old way): no stop rows, its kept epoch the fold's best, its files as before."""
    from ottotrain.config.cv_section import CvConfig

    assert CvConfig().inner_validation is None
    run_dir, output = plain_run
    cfg, train, fold_of = _train(run_dir)
    assert cfg.cv.inner_validation is None
    for name, fold, _, rec in _members(run_dir):
        assert "n_stop" not in rec and "stop_log_loss" not in rec  # the record file as it always was
        assert rec["n_train"] + rec["n_val"] == ROWS
        saved = json.loads((run_dir / "models" / f"{name}.preprocess.json").read_text())
        assert saved["center"] == _fitted(cfg, train, np.flatnonzero(fold_of != fold))["center"]
        losses = pd.read_csv(run_dir / "models" / f"{name}.history.csv")["val_loss"].to_numpy()
        assert rec["kept_epoch"] == int(np.argmin(losses)) + 1
        assert losses.min() == pytest.approx(rec["val_log_loss"], abs=1e-4)  # the fold chose it
    assert json.loads((run_dir / "metrics.json").read_text())["inner_validation"] is None
    assert "inner_validation" not in output


BAD = [
    ("0", "cv.inner_validation: must be a number > 0"),
    ("0.6", "cv.inner_validation: must be a number < 0.5"),
    ("0.5", "cv.inner_validation: must be a number < 0.5"),
    ("-0.1", "cv.inner_validation: must be a number > 0"),
    ("x", "cv.inner_validation: must be a number, got 'x'"),
    ("0.0005", "cv.inner_validation=0.0005 leaves no early-stopping rows out of fold1-seed1's 400"),
]


@pytest.mark.parametrize(("value", "message"), BAD)
def test_bad_values_are_one_line_errors(value, message, honest_config, tmp_path):
    run_dir = tmp_path / "run"
    r = run_cli(
        "cv", honest_config, "--folds", FOLDS, "--set", f"cv.inner_validation={value}", "--run-dir", run_dir
    )
    assert message in error_line(r)
    assert not run_dir.exists()  # refused before the run directory is made


@pytest.mark.parametrize(("value", "message"), BAD[:-1])
def test_bad_values_in_the_config_file_name_the_key(value, message, tiny_data, write_config):
    cfg = tiny_config(tiny_data)
    cfg["cv"] = {"inner_validation": yaml.safe_load(value)}
    assert message in error_line(run_cli("cv", write_config(cfg), "--folds", FOLDS))


def test_a_killed_run_resumes_with_its_share_and_refuses_another(
    honest_config, honest_run, tmp_path, monkeypatch
):
    """Interrupted in its second member, the run resumes that member from its work folder (its
    preprocessing checked) and ends as an uninterrupted run; a changed share is refused."""
    import ottotrain.engine.member as T
    from ottotrain.config import load_config
    from ottotrain.log import Log
    from ottotrain.runs.artifacts import read_member_oof
    from ottotrain.workflows.cv import run_cv

    run_dir, real_loop = tmp_path / "run", T.train_loop

    def ctrl_c(row):  # after the epoch's resume point is saved, as a Ctrl-C there
        raise KeyboardInterrupt

    def interrupting_loop(model, job, log, state=None, extra=()):
        if job.name == "fold2-seed1":
            job.on_epoch = ctrl_c
        return real_loop(model, job, log, state, extra)

    monkeypatch.setattr(T, "train_loop", interrupting_loop)
    with pytest.raises(KeyboardInterrupt):
        run_cv(load_config(honest_config), folds=FOLDS, seeds=SEEDS, run_dir=run_dir, log=Log(0))
    monkeypatch.setattr(T, "train_loop", real_loop)
    assert (run_dir / "work" / "fold2-seed1" / "preprocess.json").exists()

    for value, shown in (("0.3", "0.2 -> 0.3"), ("null", "0.2 -> null")):
        line = error_line(run_cli("cv", "--resume", run_dir, "--set", f"cv.inner_validation={value}"))
        assert f"cv.inner_validation: {shown}" in line and "refusing to resume" in line
    r = run_cli("cv", "--resume", run_dir)
    assert r.exit_code == 0, r.output
    assert (
        "fold1-seed1: finished earlier, reused" in r.output
        and "Resuming fold2-seed1 after epoch 1" in r.output
    )
    done, _ = honest_run
    for name, *_ in _members(done):
        a = read_member_oof(run_dir / "models" / f"{name}.oof.npz")
        b = read_member_oof(done / "models" / f"{name}.oof.npz")
        assert np.abs(a - b).max() < 1e-5, name


def test_member_records_of_every_version_load(tmp_path):
    """A record without the stop fields (before cv.inner_validation) loads; so does one with keys
    this version does not know; one without a score is a one-line RunError."""
    from ottotrain.errors import RunError
    from ottotrain.runs.state import MemberRecord

    old = {
        "name": "fold1-seed1", "seed": 1, "val_log_loss": 0.5, "val_accuracy": 0.8, "best_epoch": 2,
        "kept_epoch": 2, "epochs_run": 3, "stopped_by": "early_stopping", "n_train": 400, "n_val": 200,
        "train_seconds": 1.0, "wall_seconds_this_session": 1.2,
    }  # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps(old))
    rec = MemberRecord.load(tmp_path / "old.json")
    assert rec.n_stop is None and rec.stop_log_loss is None
    rec.save(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == old
    (tmp_path / "newer.json").write_text(json.dumps(old | {"n_stop": 40, "stop_log_loss": 0.4, "later": 1}))
    assert MemberRecord.load(tmp_path / "newer.json").stop_log_loss == 0.4
    (tmp_path / "damaged.json").write_text(json.dumps({k: v for k, v in old.items() if k != "val_log_loss"}))
    with pytest.raises(RunError, match="damaged member record"):
        MemberRecord.load(tmp_path / "damaged.json")
