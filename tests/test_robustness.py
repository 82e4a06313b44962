"""Crashes, interrupts, NaN and reproducibility.

A run killed with SIGKILL resumes from its last completed epoch and ends exactly where an
uninterrupted run ends; Ctrl-C stops cleanly and leaves a resumable run; a NaN loss stops
with advice and keeps the best model; two runs of one config with one seed agree to the
last digit, Dropout included, and never share a run directory.
"""

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, default_sigint, python_cmd, subprocess_env, tiny_config
from tests.conftest import error_line as _error_line


def _start(args, tmp, name):
    out, err = open(tmp / f"{name}.out", "w"), open(tmp / f"{name}.err", "w")
    proc = subprocess.Popen(
        [*python_cmd(), *map(str, args)],
        cwd=ROOT,
        env=subprocess_env(tmp),
        stdout=out,
        stderr=err,
        preexec_fn=default_sigint,
    )
    proc.out_path, proc.err_path = tmp / f"{name}.out", tmp / f"{name}.err"
    return proc


def _wait(proc, timeout=180):
    """Wait for a process; return (exit code, stdout, stderr)."""
    rc = proc.wait(timeout=timeout)
    return rc, proc.out_path.read_text(), proc.err_path.read_text()


def _trainer_epoch(run_dir):
    try:
        return json.loads((Path(run_dir) / "state" / "trainer.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def _wait_for_epoch(proc, run_dir, epoch, timeout=180):
    deadline = time.monotonic() + timeout
    while _trainer_epoch(run_dir) < epoch:
        assert proc.poll() is None, f"the run ended early:\n{proc.err_path.read_text()}"
        assert time.monotonic() < deadline, f"the run did not reach epoch {epoch} in time"
        time.sleep(0.02)


def _status(run_dir):
    return json.loads((Path(run_dir) / "status.json").read_text())


def _history(run_dir):
    return pd.read_csv(Path(run_dir) / "history.csv")


def resume_config(data):
    """Dropout (seed generators), LR schedule and early stopping: all the state there is."""
    cfg = tiny_config(
        data,
        epochs=20,
        batch_size=32,
        early_stopping={"patience": 3},
        optimizer={"name": "adam", "learning_rate": 0.005},
        lr_schedule={"name": "reduce_on_plateau", "patience": 1, "factor": 0.5},
    )
    cfg["model"]["layers"].insert(1, {"Dropout": {"rate": 0.3}})
    return cfg


@pytest.fixture(scope="module")
def crash_story(tiny_data, tmp_path_factory):
    """One config, trained four ways: a run SIGKILLed after epoch 2, resumed in a new
    process that gets Ctrl-C a little later, then resumed again to the end; and two
    uninterrupted reference runs (in this process: process start-ups are the slow part on
    a busy machine, so only the crash and the interrupt get their own process).

    Everything is recorded here; the tests below check one aspect each.
    """
    from ottotrain.config import load_config
    from ottotrain.log import Log
    from ottotrain.workflows.fit import fit
    from tests.conftest import run_cli

    tmp = tmp_path_factory.mktemp("crash")
    cfg = tmp / "resume.yaml"
    cfg.write_text(yaml.safe_dump(resume_config(tiny_data)))
    rec = {"tmp": tmp}
    run = rec["run"] = tmp / "victim"
    victim = _start(["fit", cfg, "--run-dir", run], tmp, "victim")
    try:
        _wait_for_epoch(victim, run, 2)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    rec["killed_at"] = _trainer_epoch(run)
    rec["status_after_kill"] = _status(run)
    rec["runs_after_kill"] = json.loads(run_cli("runs", tmp, "--json").stdout)

    second = _start(["fit", "--resume", run], tmp, "resume1")
    try:
        _wait_for_epoch(second, run, rec["killed_at"] + 1)
        # Hold it mid-run (SIGSTOP): a tiny run's remaining epochs take well under a second,
        # so it could otherwise finish before the checks below and the Ctrl-C land.
        second.send_signal(signal.SIGSTOP)
        # While it trains, nobody else may resume it.
        rec["refused_while_running"] = run_cli("fit", "--resume", run)
        rec["second_pid"] = second.pid
        second.send_signal(signal.SIGINT)  # delivered as soon as it continues
        second.send_signal(signal.SIGCONT)
        rec["sigint"] = _wait(second, timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    rec["interrupted_at"] = _trainer_epoch(run)
    rec["status_after_sigint"] = _status(run)
    rec["history_after_sigint"] = _history(run)
    rec["model_after_sigint"] = (run / "model.keras").is_file()
    rec["changed_config"] = run_cli(
        "fit", "--resume", run, "--set", "train.batch_size=64", "--set", "train.optimizer.learning_rate=0.1"
    )
    rec["predict_interrupted"] = run_cli("predict", run, tiny_data["test"], "-o", tmp / "sub.csv")
    rec["final"] = run_cli("fit", "--resume", run)
    rec["refs"] = [
        Path(fit(load_config(cfg), runs_root=tmp / "runs", log=Log(0), config_name="resume")["run_dir"])
        for _ in range(2)
    ]
    return rec


@pytest.mark.slow
def test_sigkill_then_resume_ends_where_an_uninterrupted_run_ends(crash_story):
    k = crash_story
    ref, run = k["refs"][0], k["run"]
    ref_metrics = json.loads((ref / "metrics.json").read_text())
    assert 2 <= k["killed_at"] < k["interrupted_at"] < ref_metrics["epochs_run"], (
        "the kill or the interrupt did not land mid-run"
    )
    # SIGKILL leaves no chance to say anything: still 'running', with the dead process's pid;
    # 'ottotrain runs' sees through it.
    assert k["status_after_kill"]["status"] == "running" and k["status_after_kill"]["pid"] > 0
    assert [(x["name"], x["status"]) for x in k["runs_after_kill"]] == [("victim", "interrupted")]
    assert f"Resuming {run} after epoch {k['killed_at']}" in k["sigint"][2]
    final = k["final"]
    assert final.exit_code == 0, final.output
    assert f"Resuming {run} after epoch {k['interrupted_at']}" in final.stderr

    assert _status(run)["status"] == "finished"
    assert not (run / "state").exists() and not list(run.rglob(".*.tmp*"))
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("epochs_run", "best_epoch", "stopped_by"):
        assert metrics[key] == ref_metrics[key], key
    assert metrics["val_log_loss"] == pytest.approx(ref_metrics["val_log_loss"], abs=1e-4)

    hist, ref_hist = _history(run), _history(ref)
    assert hist["epoch"].tolist() == list(range(1, len(ref_hist) + 1))  # continuous, no repeats
    for col in ("loss", "val_loss", "val_accuracy", "lr"):
        np.testing.assert_allclose(hist[col], ref_hist[col], atol=1e-5, err_msg=col)
    assert ref_hist["lr"].nunique() > 1  # the plateau schedule's state mattered

    sub, ref_sub = pd.read_csv(run / "submission.csv"), pd.read_csv(ref / "submission.csv")
    np.testing.assert_allclose(sub.iloc[:, 1:], ref_sub.iloc[:, 1:], atol=1e-5)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_leaves_a_resumable_run(crash_story):
    k = crash_story
    run = k["run"]
    line = _error_line(k["refused_while_running"])
    assert f"is still being trained by process {k['second_pid']}" in line and "stop it first" in line
    rc, out, err = k["sigint"]
    assert rc == 130, err
    assert "Traceback" not in err
    assert f"Interrupted: kept the best model and the history so far in {run}" in err
    assert f"ottotrain fit --resume {run}" in err
    assert k["status_after_sigint"]["status"] == "interrupted"
    done = k["interrupted_at"]
    assert k["history_after_sigint"]["epoch"].tolist() == list(range(1, done + 1))
    assert k["model_after_sigint"]
    # Resumable: a changed config is refused with the list of changes...
    line = _error_line(k["changed_config"])
    assert "the config changed since the run started" in line
    assert "train.batch_size: 32 -> 64" in line and "train.optimizer.learning_rate: 0.005 -> 0.1" in line
    # ... and the best model so far is usable as it is.
    assert k["predict_interrupted"].exit_code == 0, k["predict_interrupted"].output
    assert len(pd.read_csv(k["tmp"] / "sub.csv")) == 200


@pytest.mark.slow
def test_same_config_same_seed_same_result_in_separate_dirs(crash_story):
    a, b = crash_story["refs"]
    assert a != b and a.parent == b.parent  # never sharing a dir (see also test_runs)
    ha, hb = _history(a), _history(b)
    assert ha["val_loss"].tolist() == hb["val_loss"].tolist()  # bit for bit, Dropout included
    assert ha["loss"].tolist() == hb["loss"].tolist()
    assert (a / "submission.csv").read_bytes() == (b / "submission.csv").read_bytes()
    assert (a / "val_predictions.csv").read_bytes() == (b / "val_predictions.csv").read_bytes()


def nan_config(data):
    """Plain SGD at learning rate 10 without activations: the loss overflows by epoch 3."""
    cfg = tiny_config(data, epochs=6, optimizer={"name": "sgd", "learning_rate": 10})
    cfg["model"]["layers"] = [
        {"Dense": {"units": 16}},
        {"Dense": {"units": "n_classes"}},
        {"Activation": "softmax"},
    ]
    return cfg


def test_nan_loss_stops_with_advice_and_keeps_the_best_model(tiny_data, write_config, cli, tmp_path):
    run = tmp_path / "run"
    line = _error_line(cli("fit", write_config(nan_config(tiny_data)), "--run-dir", run))
    assert "the loss became nan" in line or "the loss became inf" in line
    assert "Lower the learning rate (now 10)" in line and "gradient_clip_norm" in line
    assert "the best model so far (epoch 1) is kept" in line
    status = _status(run)
    assert status["status"] == "failed" and status["reason"] == "nan"
    hist = _history(run)
    assert len(hist) >= 1 and np.isfinite(hist["val_loss"]).all()
    assert (run / "model.keras").is_file()
    from ottotrain.engine.inference import load_model

    load_model(run / "model.keras")  # the kept model loads


def _copy_tiny(tiny_data, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    shutil.copy(tiny_data["train"], d / "train.csv")
    shutil.copy(tiny_data["test"], d / "test.csv")
    return {"train": d / "train.csv", "test": d / "test.csv"}


def test_crash_after_early_stopping_resumes_without_training_on(
    tiny_data, write_config, cli, tmp_path, monkeypatch
):
    import ottotrain.workflows.fit as T

    data = _copy_tiny(tiny_data, tmp_path)
    cfg = tiny_config(
        data, epochs=40, optimizer={"name": "adam", "learning_rate": 0.05}, early_stopping={"patience": 0}
    )
    path, run = write_config(cfg), tmp_path / "run"

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(T, "_finish", crash)
    with pytest.raises(RuntimeError, match="disk full"):  # a bug keeps its traceback
        cli("fit", path, "--run-dir", run)
    monkeypatch.undo()
    status = _status(run)
    assert status["status"] == "failed" and status["message"] == "RuntimeError: disk full"
    state = json.loads((run / "state" / "trainer.json").read_text())
    assert state["stop"] == "early_stopping" and state["epoch"] < 40

    # Other data under the same path: refused, the learned preprocessing would differ.
    original = data["train"].read_bytes()
    df = pd.read_csv(data["train"])
    df.loc[0, "feat_1"] += 1000
    df.to_csv(data["train"], index=False)
    line = _error_line(cli("fit", "--resume", run))
    assert "the training data changed since the run started" in line and "center" in line
    data["train"].write_bytes(original)

    r = cli("fit", "--resume", run, "--json")
    assert r.exit_code == 0, r.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == state["epoch"] and metrics["stopped_by"] == "early_stopping"
    assert _status(run)["status"] == "finished"


def test_resume_state_that_was_tampered_with_is_refused(tiny_data, write_config, cli, tmp_path, monkeypatch):
    import ottotrain.workflows.fit as T

    monkeypatch.setattr(T, "_finish", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    run = tmp_path / "run"
    r = cli("fit", write_config(tiny_config(tiny_data)), "--run-dir", run)
    assert r.exit_code == 130 and _status(run)["status"] == "interrupted"
    monkeypatch.undo()
    p = run / "state" / "trainer.json"
    state = json.loads(p.read_text())
    # The resume point is plain arrays (no pickles, no .keras): weights+optimizer, best weights.
    assert sorted(f.name for f in p.parent.iterdir()) == sorted(
        {"trainer.json", state["checkpoint"], state["best_file"]}
    )
    ckpt = p.parent / state["checkpoint"]
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[:100])
    assert "damaged resume checkpoint" in _error_line(cli("fit", "--resume", run))
    np.savez(ckpt, np.zeros(3))  # arrays that do not fit the model built from config.yaml
    assert "do not fit the model" in _error_line(cli("fit", "--resume", run))
    ckpt.write_bytes(good)
    p.write_text(json.dumps({**state, "checkpoint": "../../../etc/passwd"}))
    assert "damaged or foreign resume state" in _error_line(cli("fit", "--resume", run))
    p.write_text("{")
    assert "damaged resume state" in _error_line(cli("fit", "--resume", run))


def test_seed_generator_states_round_trip():
    """Keras does not save dropout seed states in .keras files; the resume state does."""
    from ottotrain.engine.checkpoints import restore_seed_state as _restore_seed_state
    from ottotrain.engine.checkpoints import seed_state as _seed_state
    from ottotrain.engine.env import keras

    keras.utils.set_random_seed(3)

    def model():
        return keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(4),
                keras.layers.Dropout(0.5),
                keras.layers.GaussianNoise(0.1),
                keras.layers.Dense(2),
            ]
        )

    a = model()
    a.layers[1].seed_generator.next()  # advance one generator
    saved = json.loads(json.dumps(_seed_state(a)))
    assert set(saved) == {a.layers[1].name, a.layers[2].name}
    b = model()
    assert _seed_state(b) != saved
    names = {lb.name: la.name for la, lb in zip(a.layers, b.layers)}
    _restore_seed_state(b, {k: saved[v] for k, v in names.items() if v in saved})
    assert list(_seed_state(b).values()) == list(saved.values())
