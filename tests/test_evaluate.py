"""evaluate's per-class quality, calibration and files, on hand-made cv runs (no TensorFlow)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_recall_fscore_support

from ottotrain.errors import ConfigError
from ottotrain.io import write_folder
from ottotrain.metrics import log_loss
from tests.conftest import ROOT, error_line
from tests.test_calibration import calibrated_rows, sharpen
from tests.test_plots import png_size

FILES = ["confusion.png", "evaluation.json", "per_class.csv", "reliability.png", "reliability_classes.png"]


@pytest.fixture
def cv_run(tmp_path):
    """A finished cv run's status.json and oof.csv: 9 classes, overconfident probabilities."""
    run = tmp_path / "cv-run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"status": "finished", "kind": "cv", "format": 1}))
    y, proba = calibrated_rows(3000, seed=1)
    proba = sharpen(proba, 2.0)
    classes = [f"Class_{k + 1}" for k in range(9)]
    oof = pd.DataFrame(proba.round(6), columns=classes)
    oof.insert(0, "target", [classes[k] for k in y])
    oof.insert(0, "fold", np.arange(len(y)) % 3)
    oof.insert(0, "id", np.arange(1, len(y) + 1))
    oof.to_csv(run / "oof.csv", index=False)
    return {"run": run, "y": y, "proba": oof[classes].to_numpy(), "classes": classes}


def test_per_class_scores_agree_with_scikit_learn_and_the_overall_log_loss(cv_run):
    from ottotrain.workflows.evaluate import evaluate

    r = evaluate(cv_run["run"])
    y, proba = cv_run["y"], cv_run["proba"]
    prec, rec, f1, support = precision_recall_fscore_support(y, proba.argmax(axis=1), labels=range(9))
    assert [c.precision for c in r.per_class] == pytest.approx(prec, abs=1e-6)
    assert [c.recall for c in r.per_class] == pytest.approx(rec, abs=1e-6)
    assert [c.f1 for c in r.per_class] == pytest.approx(f1, abs=1e-6)
    assert [c.support for c in r.per_class] == list(support)
    # Each class's mean -log p over its rows, weighted by its rows, is the overall log loss.
    weighted = sum(c.log_loss * c.support for c in r.per_class) / r.rows
    assert weighted == pytest.approx(r.log_loss, abs=1e-5)
    assert r.log_loss == pytest.approx(log_loss(y, proba), abs=1e-6)
    assert r.classwise_ece == pytest.approx(np.mean([c.ece for c in r.per_class]), abs=1e-6)
    assert r.ece > 0.05  # sharpened: overconfident


def test_evaluate_a_cv_run_on_its_oof_rows_writes_every_file(cv_run, cli):
    run = cv_run["run"]
    r = cli("evaluate", run, "--json", "--bins", 10)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["rows"] == 3000 and res["data"] == str(run / "oof.csv")
    assert res["calibration"]["bins"] == 10 and len(res["calibration"]["top_label"]["count"]) == 10
    assert len(res["calibration"]["classes"]) == 9 and res["ece"] == res["calibration"]["ece"]
    folder = run / "evaluate" / "oof"
    assert sorted(p.name for p in folder.iterdir()) == FILES
    assert sorted(res["files"]) == sorted(str(folder / f) for f in FILES)
    assert json.loads((folder / "evaluation.json").read_text()) == res
    table = pd.read_csv(folder / "per_class.csv")
    assert list(table.columns) == ["class", "precision", "recall", "f1", "support", "log_loss", "ece"]
    assert table.to_dict("records") == res["per_class"] and table["support"].sum() == 3000
    assert png_size(folder / "reliability.png") == (600, 650)
    assert png_size(folder / "reliability_classes.png") == (990, 1080)  # 3 x 3 panels
    assert png_size(folder / "confusion.png") == (700, 600)
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_the_printout_names_ece_and_the_per_class_table(cv_run, cli):
    text = cli("evaluate", cv_run["run"]).stdout
    first = text.splitlines()[0]
    assert first.startswith("log_loss=") and " ece=" in first and " classwise_ece=" in first
    assert "log_loss     ece" in text and "ECE over 15 equal-width bins: top-label" in text
    assert f"written to {cv_run['run'] / 'evaluate' / 'oof'}/: evaluation.json" in text
    assert cli("evaluate", "-q", cv_run["run"]).stdout.strip() == first


def test_a_1_0_cv_run_is_evaluated_on_its_oof_rows(tmp_path, cli):
    run = tmp_path / "cv"
    shutil.copytree(ROOT / "tests" / "data" / "runs-1.0" / "cv", run)
    r = cli("evaluate", run, "--json", "-q")
    assert r.exit_code == 0, r.output
    oof = pd.read_csv(run / "oof.csv")
    classes = list(oof.columns[3:])
    y = oof["target"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    res = json.loads(r.stdout)
    assert res["rows"] == len(oof) and res["log_loss"] == round(log_loss(y, oof[classes].to_numpy()), 6)
    assert (run / "evaluate" / "oof" / "reliability_classes.png").is_file()


def test_an_error_while_drawing_leaves_no_file(cv_run, monkeypatch):
    from ottotrain.workflows import evaluate as ev

    folder = cv_run["run"] / "evaluate" / "oof"
    ev.evaluate(cv_run["run"], bins=5)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(ev, "class_reliability_figure", broken)
    with pytest.raises(RuntimeError, match="drawing failed"):
        ev.evaluate(cv_run["run"], bins=20)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the 5-bin set, whole
    assert [p.name for p in folder.parent.iterdir()] == ["oof"]


def test_write_folder_replaces_all_files_or_none(tmp_path):
    folder = tmp_path / "out"
    write_folder(folder, {"a.txt": b"old a", "b.txt": b"old b"})
    with pytest.raises(FileNotFoundError):
        write_folder(folder, {"a.txt": b"new a", "no/such/b.txt": b"new b"})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {"a.txt": b"old a", "b.txt": b"old b"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    written = write_folder(folder, {"c.txt": b"c"})
    assert written == [folder / "c.txt"] and [p.name for p in folder.iterdir()] == ["c.txt"]


@pytest.mark.parametrize(
    ("bins", "message"),
    [
        ("0", "Invalid value for '--bins': 0 is not in the range 1<=x<=1000"),
        ("-3", "Invalid value for '--bins': -3 is not in the range 1<=x<=1000"),
        ("1001", "Invalid value for '--bins': 1001 is not in the range 1<=x<=1000"),
        ("ten", "Invalid value for '--bins': 'ten' is not a valid integer range"),
    ],
)
def test_bad_bins_are_one_line(cv_run, cli, bins, message):
    r = cli("evaluate", cv_run["run"], "--bins", bins)
    assert r.exit_code == 2 and "Traceback" not in r.output
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert line == f"Error: {message}."
    assert not (cv_run["run"] / "evaluate").exists()


@pytest.mark.parametrize("bins", [0, -1])
def test_the_library_refuses_bad_bins_before_reading_anything(tmp_path, bins):
    from ottotrain.workflows.evaluate import evaluate

    with pytest.raises(ConfigError, match=f"^--bins: must be an integer from 1 to 1000, got {bins};"):
        evaluate(tmp_path / "absent", bins=bins)


def test_a_fit_run_without_data_is_one_line(tmp_path, cli):
    run = tmp_path / "fit-run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"status": "finished", "format": 1}))
    assert "a fit run has no out-of-fold predictions" in error_line(cli("evaluate", run))


def test_an_unwritable_evaluate_folder_is_one_line(cv_run, cli):
    (cv_run["run"] / "evaluate").write_text("not a folder")
    line = error_line(cli("evaluate", cv_run["run"]))
    assert line.startswith(f"Error: {cv_run['run'] / 'evaluate' / 'oof'}: cannot write the evaluation there")
    assert "RUN/evaluate/, which must be a folder" in line
    assert [p.name for p in cv_run["run"].iterdir() if p.name.startswith(".")] == []
