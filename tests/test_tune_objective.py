"""A trial trains with its own config: its own preprocessing (a PiecewiseLinearEmbedding's
bins are fitted for it), and a trial whose values make an invalid config fails alone."""

import csv
import json

import yaml

from tests.conftest import run_cli, tiny_config

PLE = {"PiecewiseLinearEmbedding": {"bins": 4, "d_embedding": 4}}
DENSE = {"Dense": {"units": 16, "activation": "relu"}}


def _study(data, layers, space, trials, sampler=None):
    cfg = tiny_config(data, epochs=2)
    cfg["model"]["layers"] = [*layers, {"Dense": {"units": "n_classes"}}, {"Activation": "softmax"}]
    cfg["tune"] = {
        "trials": trials,
        "sampler": sampler or {"name": "grid", "seed": 0},
        "pruner": {"name": "none"},
        "space": space,
    }
    return cfg


def _trials(study):
    with open(study / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def _refit(study, row, out):
    """``ottotrain fit`` of a trial's own config.yaml: its val_log_loss."""
    r = run_cli("fit", study / row["run_dir"] / "config.yaml", "--run-dir", out, "--json", "-q")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["val_log_loss"]


def _edges(run):
    return json.loads((run / "preprocess.json").read_text())["bins"]


def test_each_trial_fits_its_own_bins_and_fit_repeats_its_score(tiny_data, write_config, tmp_path):
    space = {"model.layers[0].PiecewiseLinearEmbedding.bins": {"choice": [2, 3, 24]}}
    study = tmp_path / "study"
    r = run_cli("tune", write_config(_study(tiny_data, [PLE], space, 3)), "--study-dir", study, "-q")
    assert r.exit_code == 0, r.output
    rows = _trials(study)
    assert sorted(row["model.layers[0].PiecewiseLinearEmbedding.bins"] for row in rows) == ["2", "24", "3"]
    assert len({row["value"] for row in rows}) == 3, rows  # different bins, different scores
    for row in rows:  # fit of the trial's own config: the same bins' edges, the same score
        refit = tmp_path / f"refit-{row['number']}"
        assert _refit(study, row, refit) == float(row["value"])
        assert _edges(refit) == _edges(study / row["run_dir"])


def test_a_space_that_adds_the_embedding_later_trains_it_with_its_bins(tiny_data, write_config, tmp_path):
    # Trial 0 (Dense first) prepares no bins; the next trial's model opens with the embedding.
    space = {"model.layers[0]": {"choice": [DENSE, PLE]}}
    study = tmp_path / "study"
    cfg = _study(tiny_data, [DENSE], space, 3, sampler={"name": "random", "seed": 0})
    r = run_cli("tune", write_config(cfg), "--study-dir", study, "-q")
    assert r.exit_code == 0, r.output
    rows = _trials(study)
    assert [row["state"] for row in rows] == ["complete"] * 3, rows
    assert "Dense" in rows[0]["model.layers[0]"]
    ple = next(row for row in rows if "Piecewise" in row["model.layers[0]"])
    assert _refit(study, ple, tmp_path / "refit") == float(ple["value"])


def test_a_trial_whose_values_make_an_invalid_config_fails_alone(tiny_data, write_config, tmp_path):
    # Each value is valid alone (tune checks them so); together, sgd takes no amsgrad.
    space = {
        "train.optimizer": {
            "choice": [{"name": "adam", "learning_rate": 0.01}, {"name": "sgd", "learning_rate": 0.01}]
        },
        "train.optimizer.amsgrad": {"choice": [False, True]},
    }
    cfg = _study(tiny_data, [DENSE], space, 4)
    study = tmp_path / "study"
    r = run_cli("tune", write_config(cfg), "--study-dir", study)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    rows = _trials(study)
    assert sorted(row["state"] for row in rows) == ["complete", "complete", "fail", "fail"], rows
    failed = [line for line in r.stderr.splitlines() if ": failed" in line]
    assert len(failed) == 2 and all("amsgrad" in line for line in failed), r.stderr
    best = yaml.safe_load((study / "best.yaml").read_text())
    assert best["train"]["optimizer"]["name"] == "adam"
