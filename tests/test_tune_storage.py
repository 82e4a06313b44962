"""Where a study lives and what happens when its processes die: a real throwaway PostgreSQL
server shared by two ``ottotrain tune`` processes, heartbeats, SIGKILL of a local worker and
of a whole study, ``--keep``, the cv objective."""

import contextlib
import csv
import json
import os
import signal
import subprocess
import time

import optuna
import psutil
import pytest
import yaml
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from ottotrain.workflows.tune.storage import hidden, without_password
from tests.conftest import default_sigint, error_line, python_cmd, run_cli, subprocess_env, tiny_config
from tests.postgres import PASSWORD, start_server

KILL_EPOCHS = 40  # a trial long enough (about a second) for a kill to land inside it
SPACE = {
    "model.layers[0].Dense.units": {"int": [4, 32], "log": True},
    "train.optimizer.learning_rate": {"float": [0.001, 0.05], "log": True},
}


def _config(data, epochs=1, **tune):
    cfg = tiny_config(data, epochs=epochs)
    cfg["tune"] = {"trials": 2, "sampler": {"name": "random", "seed": 0}, "space": SPACE, **tune}
    return cfg


def _trials(study_dir):
    with open(study_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def _spawn(tmp_path, *args, env=None):
    return subprocess.Popen(
        [*python_cmd(), "tune", *map(str, args)],
        env={**subprocess_env(tmp_path), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )


def _epochs(run_dir) -> int:
    """The epochs a trial's run has completed (its trainer state), 0 before the first."""
    try:
        return len(json.loads((run_dir / "state" / "trainer.json").read_text())["history"])
    except (OSError, ValueError, KeyError):
        return 0


def _wait_running(load, study_dir, timeout=120):
    """Poll a study until a trial is well into its epochs (1 to 10 of the kill tests' 40 in
    its run directory, so that a kill now lands mid-trial) and names its process; return it."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            running = [
                t
                for t in load().get_trials(states=(TrialState.RUNNING,))
                if "pid" in t.user_attrs and 1 <= _epochs(study_dir / t.user_attrs["run_dir"]) <= 10
            ]
        except (KeyError, ValueError, OSError):  # not made yet
            running = []
        if running:
            return running[0]
        time.sleep(0.2)
    raise AssertionError("no trial started running")


@pytest.mark.parametrize(
    "url, shown, written",
    [
        (
            "postgresql://me:pw@db:5432/optuna",
            "postgresql://me:***@db:5432/optuna",
            "postgresql://me@db:5432/optuna",
        ),
        (
            "postgresql://me@db/optuna?password=pw",
            "postgresql://me@db/optuna?password=***",
            "postgresql://me@db/optuna",
        ),
        ("mysql+pymysql://me@db/optuna", "mysql+pymysql://me@db/optuna", "mysql+pymysql://me@db/optuna"),
    ],
)
def test_a_password_is_hidden_when_shown_and_left_out_when_written(url, shown, written):
    assert hidden(url) == shown
    assert without_password(url) == written


@pytest.mark.parametrize(
    "args, message",
    [
        (["--study", "s"], "--study names a study in a database; give --storage URL with it"),
        (["--storage", "not a url"], "--storage: not a database URL; expected e.g. postgresql://"),
        (
            ["--storage", "oracle://me:pw@db/x"],
            "--storage oracle://me:***@db/x: database 'oracle' is not supported",
        ),
        (
            ["--storage", "postgresql://me:pw@127.0.0.1:1/none"],
            "--storage postgresql://me:***@127.0.0.1:1/none: cannot open the study's database",
        ),
    ],
)
def test_bad_storage_is_one_line_and_leaves_no_study(tiny_data, write_config, tmp_path, args, message):
    study = tmp_path / "study"
    line = error_line(run_cli("tune", write_config(_config(tiny_data)), "--study-dir", study, *args))
    assert message in line and ":pw@" not in line
    assert not study.exists()


def test_keep_bounds_the_trial_directories_and_cv_scores_fold_by_fold(tiny_data, write_config, tmp_path):
    cfg = _config(tiny_data, trials=3, objective={"cv": {"folds": 2}}, pruner={"name": "wilcoxon"})
    study = tmp_path / "study"
    r = run_cli("tune", write_config(cfg), "--study-dir", study, "--keep", "1", "-q")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("best_fold_log_loss=")
    rows = _trials(study)
    assert [row["state"] for row in rows] == ["complete"] * 3
    kept = [row for row in rows if row["run_dir"]]
    best = min(rows, key=lambda row: float(row["value"]))
    assert kept == [best] and sorted(p.name for p in (study / "trials").iterdir()) == [
        f"trial-{int(best['number']):04d}"
    ]
    run = study / best["run_dir"]
    m = json.loads((run / "metrics.json").read_text())
    assert json.loads((run / "status.json").read_text())["kind"] == "cv"
    assert float(best["value"]) == pytest.approx(m["fold_log_loss_mean"])
    assert not (run / "submission.csv").exists()  # trials make no test predictions
    found = yaml.safe_load((study / "best.yaml").read_text())
    assert found["cv"]["folds"] == 2 and "tune" not in found
    # 'ottotrain cv best.yaml --seeds 1' repeats the best trial's value
    again = run_cli(
        "cv", study / "best.yaml", "--seeds", "1", "--run-dir", tmp_path / "again", "-q", "--json"
    )
    assert json.loads(again.output)["fold_log_loss_mean"] == pytest.approx(float(best["value"]), abs=1e-6)


def _training_process(parent: int, timeout=120) -> psutil.Process:
    """The first process under ``parent`` that trains a trial (a worker's member process)."""
    end = time.time() + timeout
    while time.time() < end:
        for p in psutil.Process(parent).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "member_process import serve" in " ".join(p.cmdline()):
                    return p
        time.sleep(0.2)
    raise AssertionError("no worker started training")


@pytest.mark.slow
def test_sigkill_of_one_local_worker_costs_only_a_rerun_of_its_trial(tiny_data, write_config, tmp_path):
    study = tmp_path / "study"
    path = write_config(_config(tiny_data, epochs=KILL_EPOCHS, trials=4))
    proc = _spawn(tmp_path, path, "--study-dir", study, "--workers", "2")
    victim = _training_process(proc.pid)
    time.sleep(1.0)  # into its first trial's epochs
    victim.kill()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    trials = optuna.load_study(
        study_name="ottotrain", storage=JournalStorage(JournalFileBackend(str(study / "journal.log")))
    ).trials
    # The executor ran the killed trial again elsewhere: the study lost nothing and failed nothing.
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, trials
    assert [row["state"] for row in _trials(study)] == ["complete"] * 4
    for row in _trials(study):
        assert json.loads((study / row["run_dir"] / "status.json").read_text())["status"] == "finished"
    assert len({tuple(t.params.values()) for t in trials}) == 4


@pytest.mark.slow
def test_a_study_killed_whole_resumes_with_its_dead_trial_queued_again(tiny_data, write_config, tmp_path):
    study = tmp_path / "study"
    path = write_config(_config(tiny_data, epochs=KILL_EPOCHS, trials=2))
    proc = _spawn(tmp_path, path, "--study-dir", study)

    def load():
        return optuna.load_study(
            study_name="ottotrain", storage=JournalStorage(JournalFileBackend(str(study / "journal.log")))
        )

    _wait_running(load, study)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    (victim,) = load().get_trials(states=(TrialState.RUNNING,))  # what the kill left
    r = run_cli("tune", "--resume", study)
    assert r.exit_code == 0, r.output
    assert (
        f"trial {victim.number}: was running when the study stopped; recorded failed and queued again"
        in r.stderr
    )
    states = [row["state"] for row in _trials(study)]
    assert states.count("fail") == 1 and states.count("complete") == 2


@pytest.fixture(scope="module")
def postgres():
    yield from start_server()


@pytest.mark.slow
def test_two_machines_share_one_study_on_postgresql(tiny_data, write_config, tmp_path, postgres):
    path = write_config(_config(tiny_data, trials=6))
    # One process brings the password in the URL, the other in PGPASSWORD (as the README shows).
    a = _spawn(
        tmp_path, path, "--study-dir", tmp_path / "a", "--storage", postgres.url(), "--study", "shared"
    )
    b = _spawn(
        tmp_path,
        path,
        "--study-dir",
        tmp_path / "b",
        "--storage",
        postgres.url(password=False),
        "--study",
        "shared",
        env={"PGPASSWORD": PASSWORD},
    )
    outputs = [p.communicate(timeout=300) for p in (a, b)]
    assert [a.returncode, b.returncode] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=postgres.url())
    states = [t.state for t in study.trials]
    # Each process may finish the trial it started once the count is reached: 6 or 7, none lost.
    assert 6 <= len(states) <= 7 and set(states) == {TrialState.COMPLETE}, states
    assert {t.user_attrs["pid"] for t in study.trials} == {a.pid, b.pid}
    assert len({tuple(t.params.values()) for t in study.trials}) == len(states)
    for d in ("a", "b"):  # each machine lists the whole study
        assert len(_trials(tmp_path / d)) == len(states)
        assert json.loads((tmp_path / d / "study.json").read_text())["storage"] == postgres.url(
            password=False
        )
    # The password is nowhere: not in the output, the logs or any file of the study directories.
    assert all(PASSWORD not in text for out in outputs for text in out)
    for f in tmp_path.rglob("*"):
        if f.is_file() and "cache" not in f.parts:
            assert PASSWORD.encode() not in f.read_bytes(), f
    # Joining with another config is refused, with its differences.
    other = write_config(_config(tiny_data, epochs=2, trials=6), name="other.yaml")
    line = error_line(
        run_cli(
            "tune", other, "--storage", postgres.url(), "--study", "shared", "--runs-root", tmp_path / "c"
        )
    )
    assert "the study was started with another config: train.epochs: 1 -> 2" in line
    assert PASSWORD not in line
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())  # no study left


@pytest.mark.slow
def test_a_dead_machines_trial_is_failed_by_heartbeat_and_retried(
    tiny_data, write_config, tmp_path, postgres
):
    path = write_config(_config(tiny_data, epochs=KILL_EPOCHS, trials=2, heartbeat=1))
    args = ["--storage", postgres.url(), "--study", "heartbeat"]
    a = _spawn(tmp_path, path, "--study-dir", tmp_path / "a", *args)
    storage = RDBStorage(postgres.url())
    _wait_running(lambda: optuna.load_study(study_name="heartbeat", storage=storage), tmp_path / "a")
    os.killpg(a.pid, signal.SIGKILL)  # a machine gone: nobody on it will clean up
    a.wait(timeout=30)
    (victim,) = optuna.load_study(study_name="heartbeat", storage=storage).get_trials(
        states=(TrialState.RUNNING,)
    )
    time.sleep(2.5)  # more than the grace period of two heartbeats
    b = _spawn(tmp_path, path, "--study-dir", tmp_path / "b", *args)
    out, err = b.communicate(timeout=300)
    assert b.returncode == 0, err
    study = optuna.load_study(study_name="heartbeat", storage=postgres.url())
    assert study.trials[victim.number].state == TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retried) == 1 and retried[0].params == victim.params
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_ctrl_c_stops_a_study_in_one_line_and_resume_finishes_it(tiny_data, write_config, tmp_path, workers):
    study = tmp_path / "study"
    path = write_config(_config(tiny_data, epochs=KILL_EPOCHS, trials=3))
    proc = _spawn(tmp_path, path, "--study-dir", study, *workers)

    def load():
        return optuna.load_study(
            study_name="ottotrain", storage=JournalStorage(JournalFileBackend(str(study / "journal.log")))
        )

    if workers:
        _training_process(proc.pid)
        time.sleep(1.0)
    else:
        _wait_running(load, study)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.count("Interrupted") == 1, err
    assert f"Interrupted: finished trials are kept in {study}; continue with: ottotrain tune --resume" in err
    assert json.loads((study / "status.json").read_text())["status"] == "interrupted"
    r = run_cli("tune", "--resume", study, "-q")
    assert r.exit_code == 0, r.output
    states = [row["state"] for row in _trials(study)]
    assert states.count("complete") == 3 and set(states) <= {"complete", "fail"}, states
