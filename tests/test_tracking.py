"""MLflow tracking against real stores: a SQLite file and a file store without a server, and
a real ``mlflow server`` on a PostgreSQL backend store (started once for the module, first,
so that its database migrations run while the serverless tests train)."""

import contextlib
import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("mlflow")  # the dev extra installs it (CI: always)

from tests.conftest import default_sigint, error_line, run_cli, subprocess_env, tiny_config
from tests.mlflow_server import start_mlflow
from tests.postgres import PASSWORD, USER, start_server


@pytest.fixture(scope="module", autouse=True)
def mlflow_server(tmp_path_factory):
    """An ``mlflow server`` on PostgreSQL; tests that use it call ``.wait()`` first."""
    postgres = start_server()
    pg = next(postgres)
    root = tmp_path_factory.mktemp("mlflow")
    server = start_mlflow(pg.url().replace("postgresql://", "postgresql+psycopg://"), root)
    yield server
    server.stop()
    with contextlib.suppress(StopIteration):
        next(postgres)


@pytest.fixture(autouse=True)
def _no_ambient_tracking(monkeypatch):
    names = ("URI", "USERNAME", "PASSWORD")
    for var in [f"MLFLOW_TRACKING_{n}" for n in names] + ["MLFLOW_ALLOW_FILE_STORE"]:
        monkeypatch.delenv(var, raising=False)


def _history(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _steps(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def _expected_steps(history_csv, key):
    return [(int(r["epoch"]), float(r[key])) for r in _history(history_csv)]


def _children(client, run):
    found = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    return {r.info.run_name: r for r in found}


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("tracking.experimnt", "x", "unknown key 'experimnt' in tracking (did you mean 'experiment'?)"),
        ("tracking.uri", "http://me:pw-123@db:5000", "tracking.uri: holds a password"),
        ("tracking.uri", " ", "tracking.uri: is empty"),
        ("tracking.tags", {"a%b": "x"}, "tracking.tags: tag name 'a%b'"),
        ("tracking.log_model", "yes", "tracking.log_model: must be true or false"),
        ("tracking.experiment", "", "tracking.experiment"),
    ],
)
def test_bad_tracking_keys(tiny_data, write_config, key, value, expected):
    cfg = tiny_config(tiny_data)
    section, name = key.split(".")
    cfg[section] = {name: value}
    line = error_line(run_cli("config", write_config(cfg)))
    assert expected in line
    assert "pw-123" not in line


@pytest.mark.parametrize(
    "track, env, section, expected",
    [
        (None, None, None, None),  # off: nothing names a URI
        (None, None, {"experiment": "x"}, None),  # a section without a URI turns nothing on
        (None, None, {"uri": "sqlite:///c.db"}, "sqlite:///c.db"),
        (None, "http://env:5000", {"uri": "sqlite:///c.db"}, "http://env:5000"),
        ("http://opt:5000", "http://env:5000", {"uri": "sqlite:///c.db"}, "http://opt:5000"),
        (False, "http://env:5000", {"uri": "sqlite:///c.db"}, None),  # a trial's, a stack member's
        ("https://me:pw%40x@host:8443/p", None, None, "https://host:8443/p"),
    ],
)
def test_which_uri_tracks_a_run(tiny_data, track, env, section, expected, monkeypatch):
    import os

    from ottotrain.config.schema import Config
    from ottotrain.tracking import resolve

    if env:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    tree = tiny_config(tiny_data) | ({"tracking": section} if section else {})
    settings = resolve(Config.model_validate(tree), track, "tiny")
    assert (settings and settings.uri) == expected
    if expected and "host" in expected:  # the credentials moved to MLflow's variables
        assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == (
            "me",
            "pw@x",
        )


def test_a_store_mlflow_cannot_open_is_one_warning_and_nothing_written(tmp_path):
    from ottotrain.log import Log
    from ottotrain.tracking import RECORD_FILE, Settings
    from ottotrain.tracking.client import Tracker

    out = io.StringIO()
    tracker = Tracker.open(Settings("foo://nowhere", "x"), Log(1, out))
    assert tracker.start(tmp_path, "run", {}) is None
    tracker.end(None, "FINISHED")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "Warning: MLflow tracking at foo://nowhere stopped (connecting:"
    )
    assert not (tmp_path / RECORD_FILE).exists()


def test_mlflow_warnings_stay_out_of_the_output_even_under_its_own_filters():
    """MLflow shows some warnings with a filter of its own in front (``once``), as its
    PythonModel check does when the logged model's code is read: still none is shown."""
    import warnings

    from ottotrain.log import Log
    from ottotrain.tracking import Settings
    from ottotrain.tracking.client import Tracker

    def noisy():
        with warnings.catch_warnings():
            warnings.simplefilter("once", UserWarning)
            warnings.warn("Add type hints to the `predict` method", UserWarning, stacklevel=1)
        return 42

    shown = []
    with warnings.catch_warnings():
        warnings.showwarning = lambda *args, **kwargs: shown.append(args[0])
        assert Tracker(Settings("sqlite:///unused.db", "x"), Log(0)).call("logging the model", noisy) == 42
    assert shown == []


def test_the_model_save_warm_up_shows_and_leaves_nothing(tmp_path, capfd, monkeypatch):
    """The start thread's throw-away save (tracking.model.warm_up): no output, no warning,
    no scratch folder left behind."""
    import tempfile
    import warnings

    from ottotrain.tracking import model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    shown = []
    with warnings.catch_warnings():
        warnings.showwarning = lambda *args, **kwargs: shown.append(args[0])
        model.warm_up()
    assert shown == [] and capfd.readouterr() == ("", "")
    assert list(tmp_path.iterdir()) == []


def test_sqlite_resume_runs_and_log_to_run(tiny_data, write_config, tmp_path):
    from mlflow.tracking import MlflowClient

    from ottotrain import tracking
    from ottotrain.config import load_config
    from ottotrain.log import Log
    from ottotrain.workflows.fit import fit

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = tiny_config(tiny_data, epochs=2)
    cfg["tracking"] = {"log_model": False}
    config = load_config(write_config(cfg))
    run_dir = tmp_path / "run"

    def stop(row):
        if row.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, run_dir=run_dir, track=uri, on_epoch=stop, log=Log(0))
    record = tracking.Record.of(run_dir)
    client = MlflowClient(uri)
    assert client.get_run(record.run_id).info.status == "KILLED"
    # No --track: the run stays tracked where it was.
    fit(config, resume=run_dir, log=Log(0))
    assert tracking.Record.of(run_dir) == record
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED"
    assert _steps(client, run.info.run_id, "loss") == _expected_steps(run_dir / "history.csv", "loss")
    assert [s for s, _ in _steps(client, run.info.run_id, "val_loss")] == [1, 2]

    r = run_cli("runs", "--track", uri, "--experiment", "tiny")
    assert r.exit_code == 0, r.output
    assert "run  " in r.output and "finished" in r.output

    extra = tmp_path / "importance.csv"
    extra.write_text("column,importance\nfeat_1,0.1\n")
    assert tracking.log_to_run(run_dir, files=[extra], metrics={"explain.top": 0.1}, artifact_path="explain")
    assert client.get_run(record.run_id).data.metrics["explain.top"] == 0.1
    assert [a.path for a in client.list_artifacts(record.run_id, "explain")] == ["explain/importance.csv"]
    assert (tmp_path / "mlartifacts").is_dir()  # beside the database, not in the working directory
    assert not tracking.log_to_run(tmp_path, files=[extra])  # not a tracked run: nothing to do

    # evaluate and explain add their files and figures to the run's MLflow run.
    for args in (
        ["evaluate", run_dir, tiny_data["train"]],
        ["explain", run_dir, tiny_data["train"], "--repeats", "1"],
    ):
        r = run_cli(*args)
        assert r.exit_code == 0, r.output
    metrics = client.get_run(record.run_id).data.metrics
    evaluated = json.loads((run_dir / "evaluate/train/evaluation.json").read_text())
    assert metrics["evaluate.train.log_loss"] == evaluated["log_loss"]
    assert "explain.base_log_loss" in metrics
    listed = {a.path for a in client.list_artifacts(record.run_id, "evaluate/train")}
    assert "evaluate/train/per_class.csv" in listed and "evaluate/train/reliability.png" in listed
    assert "explain/importance.csv" in {a.path for a in client.list_artifacts(record.run_id, "explain")}


def _epochs_done(run_dir) -> int:
    try:
        return len(json.loads((run_dir / "state" / "trainer.json").read_text())["history"])
    except (OSError, ValueError, KeyError):
        return 0


def test_ctrl_c_ends_the_mlflow_run_killed_and_mlflow_stays_out_of_the_training_process(
    tiny_data, write_config, tmp_path
):
    """A terminal's Ctrl-C (SIGINT to the whole process group) mid-training: the fit stops
    with no traceback, the tracking process (in a session of its own) ends the MLflow run
    KILLED. MLflow is imported by the tracking process only."""
    from mlflow.tracking import MlflowClient

    from ottotrain import tracking

    uri, run_dir = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "run"
    cfg = tiny_config(tiny_data, epochs=400, early_stopping={"patience": 400})
    cfg["tracking"] = {"log_model": False}
    path = write_config(cfg)
    code = (
        "import sys; from ottotrain.cli import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "finally:\n    print('mlflow imported:', 'mlflow' in sys.modules, file=sys.stderr)\n"
    )
    args = ["fit", path, "--run-dir", run_dir, "--track", uri]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        env=subprocess_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=default_sigint,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while (_epochs_done(run_dir) < 2 or tracking.Record.of(run_dir) is None) and proc.poll() is None:
        assert time.monotonic() < deadline, "the fit did not start training"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "mlflow imported: False" in err, err
    record = tracking.Record.of(run_dir)
    assert MlflowClient(uri).get_run(record.run_id).info.status == "KILLED"  # resumed: see the SQLite test


def test_a_tracking_process_that_cannot_start_is_one_warning(tiny_data, write_config, tmp_path, monkeypatch):
    from ottotrain.tracking import session

    def refuse(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(session.subprocess, "Popen", refuse)
    path = write_config(tiny_config(tiny_data, epochs=1))
    r = run_cli("fit", path, "--run-dir", tmp_path / "run", "--track", f"sqlite:///{tmp_path}/m.db")
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("Warning")]
    assert warnings == [
        "Warning: MLflow tracking is off for this run (its process did not start: "
        "[Errno 24] Too many open files)"
    ]
    assert (tmp_path / "run" / "submission.csv").is_file()


def _tracking_children() -> list[int]:
    """This process's tracking processes that are still there (zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"ottotrain.tracking.side" in cmdline:
            found.append(int(entry))
    return found


def test_a_command_that_fails_before_its_run_leaves_no_mlflow_run_and_no_process(
    tiny_data, write_config, tmp_path
):
    """The tracking process starts with the command, before the data is read: a command that
    then fails on its data ends it (no MLflow run made, no process left waiting)."""
    from mlflow.tracking import MlflowClient

    bad = tmp_path / "train.csv"
    bad.write_text(tiny_data["train"].read_text().splitlines()[0] + "\n")  # the columns, no row
    cfg = tiny_config(tiny_data, epochs=1)
    cfg["data"]["train"] = str(bad)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    r = run_cli("fit", write_config(cfg), "--run-dir", tmp_path / "run", "--track", uri)
    assert str(bad) in error_line(r)
    assert not (tmp_path / "run").exists()
    assert _tracking_children() == []
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []


def test_file_store_from_the_environment(tiny_data, write_config, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(store))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this test's own client below
    path = write_config(tiny_config(tiny_data, epochs=1))
    r = run_cli("fit", path, "--run-dir", tmp_path / "run", "--set", "tracking.log_model=false")
    assert r.exit_code == 0, r.output
    assert "Warning" not in r.output
    runs = MlflowClient(str(store)).search_runs(
        [MlflowClient(str(store)).get_experiment_by_name("tiny").experiment_id]
    )
    assert [x.data.params["train.epochs"] for x in runs] == ["1"]
    assert (
        runs[0].data.metrics["final_val_accuracy"]
        == json.loads((tmp_path / "run/metrics.json").read_text())["val_accuracy"]
    )


def test_a_stack_is_a_parent_with_its_members_and_levels_as_children(tiny_data, write_config, tmp_path):
    from mlflow.tracking import MlflowClient

    from ottotrain import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    members = [
        {"name": "lgbm", "lightgbm": {"max_rounds": 20, "num_leaves": 7, "early_stopping_rounds": 5}},
        {"name": "knn", "knn": {"k": [4, 16]}},
    ]
    tree = {
        "name": "st",
        "seed": 1,
        "data": {"train": str(tiny_data["train"]), "test": str(tiny_data["test"])},
        "cv": {"folds": 3},
        "stack": {"members": members, "level2": [{"name": "lr", "logistic": {"max_iter": 50}}]},
    }
    run_dir = tmp_path / "stack"
    r = run_cli("stack", write_config(tree), "--run-dir", run_dir, "--track", uri, "-q")
    assert r.exit_code == 0, r.output
    client = MlflowClient(uri)
    parent = client.get_run(tracking.Record.of(run_dir).run_id)
    scores = json.loads((run_dir / "metrics.json").read_text())
    assert parent.data.metrics["oof_log_loss"] == scores["oof_log_loss"]
    weights = json.loads((run_dir / "top.json").read_text())["weights"]
    assert {k: v for k, v in parent.data.metrics.items() if k.startswith("weights.")} == {
        f"weights.{k}": v for k, v in weights.items()
    }
    children = _children(client, parent)
    with open(run_dir / "leaderboard.csv", newline="") as f:
        board = {row["model"]: row for row in csv.DictReader(f) if row["level"] != "3"}
    assert set(children) == set(board) and "lgbm" in board and "lr" in board
    for name, child in children.items():
        assert child.data.tags["ottotrain.level"] == board[name]["level"]
        assert child.data.metrics["oof_log_loss"] == float(board[name]["oof_log_loss"])

    # Resumed with the level-2 learner changed: it is trained again, and its child run (the
    # same one) shows its new scores.
    tree["stack"]["level2"][0]["logistic"]["C"] = 0.01
    r = run_cli("stack", write_config(tree), "--resume", run_dir, "-q")
    assert r.exit_code == 0, r.output
    with open(run_dir / "leaderboard.csv", newline="") as f:
        new = {row["model"]: float(row["oof_log_loss"]) for row in csv.DictReader(f)}
    assert new["lr"] != float(board["lr"]["oof_log_loss"])
    again = _children(client, parent)
    assert again["lr"].info.run_id == children["lr"].info.run_id
    assert again["lr"].data.metrics["oof_log_loss"] == new["lr"]
    assert again["lgbm"].data.metrics["oof_log_loss"] == new["lgbm"]


def test_fit_on_a_server_model_registry_and_no_password(
    mlflow_server, tiny_data, write_config, tmp_path, monkeypatch
):
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from ottotrain import tracking
    from ottotrain.tracking.content import config_params

    server = mlflow_server.wait()
    uri = server.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    run_dir = tmp_path / "run"
    r = run_cli("fit", write_config(tiny_config(tiny_data, epochs=2)), "--run-dir", run_dir, "--track", uri)
    assert r.exit_code == 0, r.output
    assert PASSWORD not in r.output
    for f in run_dir.rglob("*"):
        assert not f.is_file() or PASSWORD.encode() not in f.read_bytes(), f
    assert [line for line in r.output.splitlines() if "Warning" in line] == []
    assert "View run" not in r.output  # MLflow's links to the run stay off stdout

    record = tracking.Record.of(run_dir)
    assert record.tracking_uri == server.url
    client = MlflowClient(server.url)
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params == config_params(run_dir)
    assert run.data.params["model.layers.0.Dense.units"] == "16"
    for key in ("loss", "val_loss", "val_accuracy"):
        assert _steps(client, record.run_id, key) == _expected_steps(run_dir / "history.csv", key)
    scores = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["val_log_loss"] == scores["val_log_loss"]
    tags = run.data.tags
    assert (
        tags["ottotrain.config_sha256"] == hashlib.sha256((run_dir / "config.yaml").read_bytes()).hexdigest()
    )
    assert tags["ottotrain.data.train.sha256"] == hashlib.sha256(tiny_data["train"].read_bytes()).hexdigest()
    assert tags["ottotrain.data.train.bytes"] == str(tiny_data["train"].stat().st_size)
    assert PASSWORD not in tags["ottotrain.command"]
    names = {a.path for a in client.list_artifacts(record.run_id)}
    assert {"config.yaml", "metrics.json", "history.csv", "submission.csv", "curves.png", "model"} <= names

    client.create_registered_model("tiny-model")
    client.create_model_version("tiny-model", f"runs:/{record.run_id}/model", run_id=record.run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    model = mlflow.pyfunc.load_model("models:/tiny-model/1")
    test = pd.read_csv(tiny_data["test"])
    got = model.predict(test.drop(columns=["id"]))
    r = run_cli("predict", run_dir, tiny_data["test"], "-o", tmp_path / "p.csv", "-q")
    assert r.exit_code == 0, r.output
    want = pd.read_csv(tmp_path / "p.csv")
    assert list(got.columns) == [c for c in want.columns if c != "id"]
    np.testing.assert_allclose(got.to_numpy(), want[got.columns].to_numpy(), atol=1e-5)


def test_cv_and_tune_on_a_server(mlflow_server, tiny_data, write_config, tmp_path):
    from mlflow.tracking import MlflowClient

    from ottotrain import tracking

    server = mlflow_server.wait()
    client = MlflowClient(server.url)
    cfg = tiny_config(tiny_data, epochs=1)
    cfg["tracking"] = {"experiment": "tiny-bags", "log_model": False, "tags": {"team": "tabular"}}
    cv_dir = tmp_path / "cv"
    r = run_cli("cv", write_config(cfg), "--folds", "2", "--run-dir", cv_dir, "--track", server.url, "-q")
    assert r.exit_code == 0, r.output
    parent = client.get_run(tracking.Record.of(cv_dir).run_id)
    scores = json.loads((cv_dir / "metrics.json").read_text())
    assert parent.data.metrics["oof_log_loss"] == scores["oof_log_loss"]
    assert parent.data.tags["team"] == "tabular" and parent.data.tags["ottotrain.kind"] == "cv"
    members = _children(client, parent)
    assert set(members) == {"fold1-seed1", "fold2-seed1"}
    for name, child in members.items():
        history = cv_dir / "models" / f"{name}.history.csv"
        assert _steps(client, child.info.run_id, "val_loss") == _expected_steps(history, "val_loss")
        assert child.info.status == "FINISHED"

    # A learning rate that diverges at once is pruned at its second epoch (as in test_tune):
    # its child run ends KILLED, the complete ones FINISHED.
    cfg["train"]["epochs"] = 3
    cfg["tune"] = {
        "trials": 4,
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "median", "startup_trials": 1, "warmup_epochs": 1},
        "space": {"train.optimizer.learning_rate": {"choice": [0.01, 9.0]}},
    }
    study = tmp_path / "study"
    r = run_cli("tune", write_config(cfg, "tune.yaml"), "--study-dir", study, "--track", server.url, "-q")
    assert r.exit_code == 0, r.output
    parent = client.get_run(tracking.Record.of(study).run_id)
    assert parent.data.tags["ottotrain.kind"] == "tune"
    trials = _children(client, parent)
    assert set(trials) == {f"trial-{n}" for n in range(4)}
    with open(study / "trials.csv", newline="") as f:
        rows = {f"trial-{r['number']}": r for r in csv.DictReader(f)}
    assert {row["state"] for row in rows.values()} == {"complete", "pruned"}, rows
    for name, trial in trials.items():
        state = rows[name]["state"]
        assert trial.data.tags["ottotrain.trial_state"] == state
        assert trial.info.status == {"complete": "FINISHED", "pruned": "KILLED"}[state]
        lr = trial.data.params["train.optimizer.learning_rate"]
        assert lr == rows[name]["train.optimizer.learning_rate"]
        assert trial.data.metrics["value"] == float(rows[name]["value"])


def test_a_server_killed_mid_run_costs_one_warning(mlflow_server, tiny_data, write_config, tmp_path):
    """Last in the module: it kills the module's server."""
    from ottotrain import runs
    from ottotrain.config import load_config
    from ottotrain.log import Log
    from ottotrain.workflows.fit import fit

    server = mlflow_server.wait()
    out = io.StringIO()

    def kill(row):
        if row.epoch == 1:
            server.stop()

    config = load_config(write_config(tiny_config(tiny_data, epochs=2)))
    run_dir = tmp_path / "run"
    result = fit(config, run_dir=run_dir, track=server.url, on_epoch=kill, log=Log(1, out))
    lines = out.getvalue().splitlines()
    assert len([line for line in lines if line.startswith("Warning")]) == 1, lines
    assert any(line.startswith("Warning: MLflow tracking at") for line in lines)
    assert lines[-1] == f"MLflow: not fully recorded (see the warning above); {run_dir} is complete"
    assert runs.read_status(run_dir)["status"] == runs.FINISHED
    assert result.epochs_run == 2
    assert {"metrics.json", "submission.csv", "history.csv", "model.keras"} <= {
        p.name for p in run_dir.iterdir()
    }
