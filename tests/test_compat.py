"""Run directories written by ottotrain 1.0 still predict and evaluate, to the same numbers."""

import json
import shutil

import pandas as pd
import pytest

from tests.conftest import ROOT

V1 = ROOT / "tests" / "data" / "runs-1.0"


@pytest.fixture
def v1(tmp_path):
    shutil.copytree(V1, tmp_path / "v1")
    return tmp_path / "v1"


@pytest.mark.parametrize("kind", ["fit", "cv"])
def test_a_1_0_run_predicts_what_1_0_predicted(v1, cli, kind):
    out = v1 / f"{kind}-now.csv"
    r = cli("predict", v1 / kind, v1 / "unlabelled.csv", "-o", out)
    assert r.exit_code == 0, r.output
    now, then = pd.read_csv(out), pd.read_csv(v1 / f"{kind}-predict.csv")
    assert list(now.columns) == list(then.columns) and (now.iloc[:, 0] == then.iloc[:, 0]).all()
    # Written to 6 decimals: another BLAS or numpy build may move the last one.
    assert (now.iloc[:, 1:] - then.iloc[:, 1:]).abs().to_numpy().max() <= 1.5e-6


def test_a_1_0_cv_run_evaluates_as_1_0_did(v1, cli):
    r = cli("evaluate", v1 / "cv", v1 / "labelled.csv", "--json")
    assert r.exit_code == 0, r.output
    now, then = json.loads(r.stdout), json.loads((v1 / "cv-evaluate.json").read_text())
    for key in ("rows", "log_loss", "accuracy", "confusion"):
        assert now[key] == then[key], key
    # Later versions add per-class figures (log loss, ECE); 1.0's are unchanged.
    kept = [{k: c[k] for k in old} for c, old in zip(now["per_class"], then["per_class"])]
    assert kept == then["per_class"]


def test_1_0_runs_are_listed_and_summarised(v1, cli):
    rows = json.loads(cli("runs", v1, "--json").stdout)
    assert sorted((r["name"], r["kind"], r["status"]) for r in rows) == [
        ("cv", "cv", "finished"),
        ("fit", "fit", "finished"),
    ]
    assert cli("summary", v1 / "fit").output.count("Total params") == 1
    assert cli("summary", v1 / "cv").output.count("Total params") == 2  # one per variant
