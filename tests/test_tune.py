"""ottotrain tune: the search space validated at load, studies on Optuna's journal file."""

import csv
import json

import pytest
import yaml

from tests.conftest import error_line, run_cli, tiny_config

SPACE = {
    "model.layers[0].Dense.units": {"int": [4, 32], "log": True},
    "train.optimizer.learning_rate": {"float": [0.001, 0.05], "log": True},
    "train.batch_size": {"choice": [32, 64]},
}


def _tune_config(data, space=None, epochs=2, **tune):
    cfg = tiny_config(data, epochs=epochs)
    cfg["tune"] = {
        "trials": 3,
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "space": space or SPACE,
        **tune,
    }
    return cfg


@pytest.mark.parametrize(
    "space, message",
    [
        (
            {"train.epoch": {"int": [1, 3]}},
            "tune.space.train.epoch: the value 1 makes the config invalid: "
            "train.epoch: unknown key 'epoch' in train (did you mean 'epochs'?)",
        ),
        ({"model.layers[0].Dense.units": {"int": [32, 4]}}, "low 32 is above high 4; write [low, high]"),
        (
            {"train.optimizer.learning_rate": {"float": [0.0, 0.1], "log": True}},
            "log: true needs an int or float range with low > 0",
        ),
        (
            {"train.batch_size": {"choice": []}},
            "tune.space.train.batch_size.choice: needs at least 1 item(s)",
        ),
        (
            {"model.layers[1].Dense.units": {"choice": [8, "n_classes", 0]}},
            "the value 0 makes the config invalid",
        ),
        (
            {"train.batch_size": {"int": [8, 64], "choice": [8]}},
            "give exactly one of int: [low, high], float: [low, high] or choice: [...] (got int and choice)",
        ),
        (
            {"train.batch_size": {"flot": [8, 64]}},
            "unknown key 'flot' in tune.space.train.batch_size (did you mean 'float'?)",
        ),
        ({"model.layers[7].Dense.units": {"int": [4, 8]}}, "index [7] is out of range"),
        ({"data.tfidf": {"choice": [True, False]}}, "a trial cannot change 'data'"),
    ],
)
def test_bad_search_spaces_are_one_line_naming_the_key(tiny_data, write_config, space, message):
    r = run_cli("check", write_config(_tune_config(tiny_data, space)))
    line = error_line(r)
    assert message in line, line
    assert "tune.space." in line


def _trials(study):
    with open(study / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_study_searches_keeps_its_trials_and_hands_back_a_config(tiny_data, write_config, tmp_path):
    cfg = _tune_config(tiny_data)
    study = tmp_path / "study"
    r = run_cli("tune", write_config(cfg), "--study-dir", study)
    assert r.exit_code == 0, r.output
    assert r.stderr.count("val_log_loss") >= 3 and "3/3 done" in r.stderr  # a line per trial
    rows = _trials(study)
    assert [row["state"] for row in rows] == ["complete"] * 3
    # Trial 0 is the config as it is.
    assert (rows[0]["model.layers[0].Dense.units"], rows[0]["train.batch_size"]) == ("16", "64")
    assert float(rows[0]["train.optimizer.learning_rate"]) == 0.01
    for row in rows:  # every trial is an ordinary run with that trial's values
        run = study / row["run_dir"]
        assert json.loads((run / "status.json").read_text())["status"] == "finished"
        trial_cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert trial_cfg["model"]["layers"][0]["Dense"]["units"] == int(row["model.layers[0].Dense.units"])
        assert json.loads((run / "metrics.json").read_text())["val_log_loss"] == float(row["value"])
    m = json.loads((study / "metrics.json").read_text())
    assert m["best_val_log_loss"] == min(float(row["value"]) for row in rows)
    # best.yaml reproduces the best trial's value with the same seed.
    best = yaml.safe_load((study / "best.yaml").read_text())
    assert "tune" not in best
    r = run_cli("fit", study / "best.yaml", "--run-dir", tmp_path / "refit", "--json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["val_log_loss"] == m["best_val_log_loss"]
    listed = {x["name"]: x for x in json.loads(run_cli("runs", tmp_path, "--json").stdout)}
    assert listed["study"]["kind"] == "tune" and listed["study"]["log_loss"] == m["best_val_log_loss"]

    # More trials on resume; any other change is refused with its difference.
    line = error_line(run_cli("tune", "--resume", study, "--set", "train.epochs=3"))
    assert (
        "train.epochs: 2 -> 3" in line
        and "only tune.trials, tune.timeout and tune.heartbeat may change" in line
    )
    r = run_cli("tune", "--resume", study, "--set", "tune.trials=4", "-q")
    assert r.exit_code == 0, r.output
    assert len(_trials(study)) == 4


def test_the_same_seed_repeats_the_same_trials(tiny_data, write_config, tmp_path):
    path = write_config(_tune_config(tiny_data, epochs=1, trials=2))
    values = []
    for name in ("a", "b"):
        assert run_cli("tune", path, "--study-dir", tmp_path / name, "-q").exit_code == 0
        values.append([(r["value"], r["model.layers[0].Dense.units"]) for r in _trials(tmp_path / name)])
    assert values[0] == values[1]


@pytest.mark.parametrize("where", [[], ["--workers", "1"]], ids=["this-process", "local-worker"])
def test_a_hopeless_trial_is_pruned_at_epoch_2_and_its_run_says_so(where, tiny_data, write_config, tmp_path):
    # Two learning rates, the config's own (trial 0) and one that diverges at once: the median
    # pruner, comparing with the trials before, stops the second kind at its second epoch
    # (the first after warm-up), also on a worker process: the epochs' scores reach the
    # pruner while the trial trains, not when it ends.
    space = {"train.optimizer.learning_rate": {"choice": [0.01, 9.0]}}
    cfg = _tune_config(
        tiny_data, space, trials=4, pruner={"name": "median", "startup_trials": 1, "warmup_epochs": 1}
    )
    cfg["train"]["epochs"] = 4
    study = tmp_path / "study"
    r = run_cli("tune", write_config(cfg), "--study-dir", study, "-q", *where)
    assert r.exit_code == 0, r.output
    rows = _trials(study)
    states = {
        lr: {row["state"] for row in rows if row["train.optimizer.learning_rate"] == lr}
        for lr in ("0.01", "9.0")
    }
    assert states == {"0.01": {"complete"}, "9.0": {"pruned"}}, rows
    for row in rows:
        if row["state"] == "pruned":
            run = study / row["run_dir"]
            assert json.loads((run / "status.json").read_text())["status"] == "pruned"
            assert len(json.loads((run / "state" / "trainer.json").read_text())["history"]) == 2


def test_a_trial_left_running_by_a_killed_study_is_failed_on_resume(tiny_data, write_config, tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = write_config(_tune_config(tiny_data, epochs=1, trials=1))
    study = tmp_path / "study"
    assert run_cli("tune", path, "--study-dir", study, "-q").exit_code == 0
    # What a SIGKILL mid-trial leaves in the journal: a trial that stays 'running'.
    storage = JournalStorage(JournalFileBackend(str(study / "journal.log")))
    optuna.load_study(study_name="ottotrain", storage=storage).ask()
    r = run_cli("tune", "--resume", study, "--set", "tune.trials=2")
    assert r.exit_code == 0, r.output
    assert "trial 1: was running when the study stopped; recorded failed and queued again" in r.stderr
    assert [row["state"] for row in _trials(study)] == ["complete", "fail", "complete"]


@pytest.mark.parametrize(
    "key, value", [("best_fold_log_loss", 0.5), ("best_value", 0.5), ("best_trial", 1), ("trials", 3)]
)
def test_a_study_result_reads_as_the_dict_tune_returned_in_1_x(tmp_path, key, value):
    from ottotrain.workflows.tune import StudyResult

    result = StudyResult("fold_log_loss", 0.5, 1, {}, None, 3, 2, 1, 0, 1.0, tmp_path)
    assert key in result and result[key] == value
    assert "best_val_log_loss" not in result
