"""A run's life, for fit and cv alike: TensorBoard steps across epochs and resumes, SIGTERM
and crashes recorded in status.json, resuming after a SIGKILL (even mid-write), and which
config changes a resume accepts.

Interrupts are real: a signal to a real ``ottotrain`` process, or a KeyboardInterrupt
raised by a Keras callback inside the real epoch loop (what Ctrl-C does) in this process.
"""

import importlib.util
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, error_line, python_cmd, run_cli, subprocess_env, tiny_config

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason="tensorboard not installed (pip install -e .[dev])",
)


def _status(run_dir):
    return json.loads((Path(run_dir) / "status.json").read_text())


def _write(path, cfg):
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _start(args, tmp, name):
    """Start ``ottotrain ARGS`` in its own process; its output goes to tmp/<name>.err."""
    with open(tmp / f"{name}.err", "w") as err:
        proc = subprocess.Popen(
            [*python_cmd(), *map(str, args)],
            cwd=ROOT,
            env=subprocess_env(tmp),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    proc.err_path = tmp / f"{name}.err"
    return proc


def _wait_for(proc, pattern_root, pattern, timeout=120):
    """Wait until a file matching ``pattern`` exists under ``pattern_root``; return it."""
    deadline = time.monotonic() + timeout
    while True:
        found = sorted(Path(pattern_root).glob(pattern))
        if found:
            return found[0]
        assert proc.poll() is None, f"the run ended early:\n{proc.err_path.read_text()}"
        assert time.monotonic() < deadline, f"no {pattern} after {timeout} s"
        time.sleep(0.02)


def _interrupt_after(monkeypatch, epochs):
    """Ctrl-C inside the real epoch loop, once ``epochs`` epochs of a member are saved."""
    import ottotrain.engine.member as member
    from ottotrain.engine.env import keras

    real_loop = member.train_loop

    class CtrlC(keras.callbacks.Callback):
        calls = 0  # the loop calls model.fit once per epoch

        def on_train_begin(self, logs=None):
            CtrlC.calls += 1
            if CtrlC.calls == epochs + 1:
                raise KeyboardInterrupt

    def loop(*args, **kwargs):
        call = inspect.signature(real_loop).bind(*args, **kwargs)
        call.arguments["callbacks"] = [*call.arguments.get("callbacks", ()), CtrlC()]
        return real_loop(*call.args, **call.kwargs)

    monkeypatch.setattr(member, "train_loop", loop)


def _killed_mid_write(path, data=b"half a file"):
    """Leave the temporary file of an atomic write exactly as a SIGKILL mid-write does.

    A process opens ``io.atomic_path(path)``, writes into the temporary file and is killed
    before the rename. Returns the temporary file it left beside ``path``.
    """
    path = Path(path)
    before = set(path.parent.iterdir())
    code = (
        "import os, signal, sys\n"
        "from ottotrain.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    open(tmp, 'wb').write(sys.argv[2].encode())\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(path), data.decode()],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=60,
    )
    assert r.returncode == -signal.SIGKILL
    (left,) = set(path.parent.iterdir()) - before
    assert left.name.startswith(f".{path.name}.") and ".tmp" in left.name
    return left


def _event_steps(folder, tag="epoch_loss"):
    """The steps of ``tag`` over every event file in ``folder``, in the order they were written;
    and the number of event files."""
    from tensorflow.core.util import event_pb2

    from ottotrain.engine.env import tf

    points = []
    files = list(Path(folder).glob("events.out.tfevents.*"))
    for f in files:
        for record in tf.data.TFRecordDataset(str(f)):
            event = event_pb2.Event.FromString(record.numpy())
            points += [(event.wall_time, event.step) for v in event.summary.value if v.tag == tag]
    return [step for _, step in sorted(points)], len(files)


def _tensorboard_steps(folder, tag="epoch_loss"):
    """The steps of ``tag`` in the order TensorBoard itself reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    ea.Reload()
    return [e.step for e in ea.Tensors(tag)]


# --------------------------------------------------------------------------------------
# TensorBoard: one step per epoch, numbered across the loop's per-epoch fit calls and resumes


@needs_tensorboard
def test_cv_tensorboard_steps_count_each_members_epochs(tiny_data, tmp_path):
    cfg = _write(tmp_path / "cv.yaml", tiny_config(tiny_data, epochs=3, tensorboard=True))
    run = tmp_path / "run"
    r = run_cli("cv", cfg, "--folds", 2, "--run-dir", run, "-q")
    assert r.exit_code == 0, r.output
    members = sorted(p.name for p in (run / "tensorboard").iterdir())
    assert members == ["fold1-seed1", "fold2-seed1"]
    for name in members:
        for sub in ("train", "validation"):
            folder = run / "tensorboard" / name / sub
            steps, files = _event_steps(folder)
            assert steps == [0, 1, 2], (name, sub, steps)
            # One event file per writer for a member trained in one go. TensorBoard reads a
            # folder's files in name order, and names made within one second differ only by
            # a per-process counter compared as text ('...11.v2' < '...7.v2'): with one file
            # per epoch it showed this member's epochs as [2, 0, 1].
            assert files == 1, (name, sub, sorted(p.name for p in folder.iterdir()))
            assert _tensorboard_steps(folder) == [0, 1, 2], (name, sub)


@needs_tensorboard
def test_fit_tensorboard_steps_continue_after_a_resume(tiny_data, tmp_path, monkeypatch):
    cfg = _write(tmp_path / "fit.yaml", tiny_config(tiny_data, epochs=3, tensorboard=True))
    run = tmp_path / "run"
    _interrupt_after(monkeypatch, 1)
    assert run_cli("fit", cfg, "--run-dir", run, "-q").exit_code == 130  # as after Ctrl-C
    assert _status(run)["status"] == "interrupted"
    assert _event_steps(run / "tensorboard" / "validation")[0] == [0]
    monkeypatch.undo()
    r = run_cli("fit", "--resume", run, "-q")
    assert r.exit_code == 0, r.output
    for sub in ("train", "validation"):
        steps, files = _event_steps(run / "tensorboard" / sub)
        assert steps == [0, 1, 2], (sub, steps)
        assert files >= 2  # the resumed session wrote its own


# --------------------------------------------------------------------------------------
# SIGTERM and crashes: recorded in status.json, the run resumable


@pytest.mark.slow
def test_cv_sigterm_mid_training_is_recorded_and_resumes_with_fewer_epochs(tiny_data, tmp_path):
    """SIGTERM (kill, a batch system's time limit) stops cv like Ctrl-C: exit 130, status
    interrupted. The run resumes with --set train.epochs (here fewer) even after a SIGKILL
    left a half-written resume file in a member's work folder."""
    cfg = _write(tmp_path / "cv.yaml", tiny_config(tiny_data, epochs=200))
    run = tmp_path / "run"
    proc = _start(["cv", cfg, "--folds", 2, "--run-dir", run], tmp_path, "cv")
    try:
        _wait_for(proc, run, "work/*/state/trainer.json")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.err_path.read_text()
    assert rc == 130, err
    assert "Traceback" not in err and f"continue with: ottotrain cv --resume {run}" in err
    status = _status(run)
    assert (status["status"], status["kind"], status["folds"]) == ("interrupted", "cv", 2)
    state = run / "work" / "fold1-seed1" / "state"
    done = json.loads((state / "trainer.json").read_text())["epoch"]
    assert 1 <= done < 200 and not (run / "models" / "fold1-seed1.json").exists()
    left = [
        _killed_mid_write(state / f"epoch-{done + 1:05d}.npz"),
        _killed_mid_write(run / "models" / "fold1-seed1.keras"),
    ]

    r = run_cli("cv", "--resume", run, "--set", "train.epochs=2", "-q")
    assert r.exit_code == 0, r.output
    assert _status(run)["status"] == "finished" and not any(p.exists() for p in left)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2
    oof = pd.read_csv(run / "oof.csv")
    assert len(oof) == 600 and oof["id"].is_unique
    first = json.loads((run / "models" / "fold1-seed1.json").read_text())
    second = json.loads((run / "models" / "fold2-seed1.json").read_text())
    assert first["epochs_run"] == max(done, 2) and second["epochs_run"] == 2
    assert not (run / "work").exists() and not list(run.rglob(".*.tmp*"))


def test_cv_crash_is_recorded_failed_keeps_its_traceback_and_resumes(tiny_data, tmp_path, monkeypatch):
    """A bug mid-run (here: saving the first member's record fails) propagates as itself,
    and status.json says failed, with the error; resuming then finishes the run."""
    from ottotrain.runs.state import MemberRecord

    cfg = _write(tmp_path / "cv.yaml", tiny_config(tiny_data, epochs=2))
    run = tmp_path / "run"

    def broken_save(self, path):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(MemberRecord, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_cli("cv", cfg, "--folds", 2, "--run-dir", run, "-q")
    status = _status(run)
    assert (status["status"], status["reason"], status["kind"]) == ("failed", "error", "cv")
    assert status["message"] == "RuntimeError: disk on fire"
    # It failed after the model moved to models/, before the record: the member is unfinished.
    assert (run / "models" / "fold1-seed1.keras").exists()
    assert not (run / "models" / "fold1-seed1.json").exists()
    monkeypatch.undo()

    r = run_cli("cv", "--resume", run)
    assert r.exit_code == 0, r.output
    assert "Resuming fold1-seed1 after epoch 2" in r.stderr  # not trained again
    assert _status(run)["status"] == "finished" and len(pd.read_csv(run / "oof.csv")) == 600
    assert json.loads((run / "models" / "fold1-seed1.json").read_text())["epochs_run"] == 2


# --------------------------------------------------------------------------------------
# fit: resuming an interrupted run


@pytest.fixture(scope="module")
def interrupted_fit(tiny_data, tmp_path_factory):
    """A fit run (3 epochs, early stopping patience 1) Ctrl-C'd after its first epoch."""
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("interrupted")
    cfg = _write(d / "fit.yaml", tiny_config(tiny_data, epochs=3, early_stopping={"patience": 1}))
    run = d / "run"
    try:
        _interrupt_after(mp, 1)
        assert run_cli("fit", cfg, "--run-dir", run, "-q").exit_code == 130
    finally:
        mp.undo()
    assert _status(run)["status"] == "interrupted"
    assert json.loads((run / "state" / "trainer.json").read_text())["epoch"] == 1
    return run


@pytest.fixture
def fit_run(interrupted_fit, tmp_path):
    """A private copy of the interrupted run."""
    return Path(shutil.copytree(interrupted_fit, tmp_path / "run"))


def test_fit_resume_deletes_what_a_killed_write_left_and_predict_ignores_it(fit_run, tiny_data, tmp_path):
    run = fit_run
    left = [
        _killed_mid_write(run / "state" / "epoch-00002.npz"),  # .npz: refused if not a temp file
        _killed_mid_write(run / "model.keras"),
        _killed_mid_write(run / "history.csv"),
    ]
    r = run_cli("fit", "--resume", run, "-q")
    assert r.exit_code == 0, r.output
    assert _status(run)["status"] == "finished"
    assert not any(p.exists() for p in left) and not list(run.rglob(".*.tmp*"))

    # A finished run with a stray temporary file (a KNN cache write, a model save) still predicts.
    stray = [_killed_mid_write(run / "knn-0123456789abcdef.npz"), _killed_mid_write(run / "model.keras")]
    r = run_cli("predict", run, tiny_data["test"], "-o", tmp_path / "sub.csv")
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "sub.csv")) == 200 and all(p.exists() for p in stray)


def test_fit_resume_accepts_more_epochs_and_patience_and_refuses_other_changes(fit_run):
    run = fit_run
    saved = (run / "config.yaml").read_text()
    line = error_line(
        run_cli("fit", "--resume", run, "--set", "train.epochs=4", "--set", "model.layers[0].Dense.units=8")
    )
    assert "the config changed since the run started, refusing to resume" in line
    assert (
        "model.layers[0].Dense.units: 16 -> 8" in line and "train.epochs" not in line.split("; only")[0]
    )  # the refused change is listed, the allowed one is not
    assert "only train.epochs and train.early_stopping.patience may change on resume" in line
    assert (run / "config.yaml").read_text() == saved and _status(run)["status"] == "interrupted"

    r = run_cli(
        "fit", "--resume", run, "--set", "train.epochs=4", "--set", "train.early_stopping.patience=50"
    )
    assert r.exit_code == 0, r.output
    assert f"Resuming {run} after epoch 1" in r.stderr
    hist = pd.read_csv(run / "history.csv")
    assert hist["epoch"].tolist() == [1, 2, 3, 4]
    m = json.loads((run / "metrics.json").read_text())
    assert m["epochs_run"] == 4 and m["stopped_by"] == "epochs"
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert train["epochs"] == 4 and train["early_stopping"]["patience"] == 50
