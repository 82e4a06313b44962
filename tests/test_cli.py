"""The CLI end to end on tiny generated data: fit -> run directory -> predict -> submission."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, SHARED_OTTO, error_line, tiny_config


def _run_dir(result):
    return Path(result.output.strip().splitlines()[-1])


def _check_submission(path, ids, classes):
    sub = pd.read_csv(path)
    assert list(sub.columns) == ["id"] + classes
    assert sub["id"].tolist() == list(ids)  # one row per test row, input order
    assert np.allclose(sub[classes].sum(axis=1), 1.0, atol=1e-4)
    assert (sub[classes].to_numpy() >= 0).all()


def test_fit_writes_a_complete_run_and_predict_reproduces_it(tiny_data, write_config, cli, tmp_path):
    cfg = write_config(
        tiny_config(tiny_data, epochs=3, early_stopping={"monitor": "val_loss", "patience": 1})
    )
    import gc
    import weakref

    from ottotrain.engine import env  # noqa: F401  (TensorFlow imported: its objects frozen)

    class Cycle:
        pass

    garbage = Cycle()
    garbage.me = garbage  # freed only by a collection
    ref = weakref.ref(garbage)
    del garbage
    r = cli("fit", cfg, "--run-dir", tmp_path / "run")
    assert r.exit_code == 0, r.output
    gc.collect()
    assert ref() is None  # the fit froze nothing of its caller's: only TensorFlow's import-time objects
    run = _run_dir(r)
    assert run == tmp_path / "run"
    for f in (
        "config.yaml",
        "model.keras",
        "preprocess.json",
        "history.csv",
        "metrics.json",
        "submission.csv",
        "status.json",
        "val_predictions.csv",
        "summary.txt",
    ):
        assert (run / f).is_file(), f
    assert not (run / "state").exists()  # resume state is dropped once finished
    assert not list(run.glob(".*.tmp*"))  # no temporary files left behind
    metrics = json.loads((run / "metrics.json").read_text())
    hist = pd.read_csv(run / "history.csv")
    assert metrics["epochs_run"] == len(hist) <= 3
    assert metrics["best_epoch"] == int(hist.loc[hist.val_loss.idxmin(), "epoch"])
    assert 0 < metrics["val_log_loss"] < 3 and 0 <= metrics["val_accuracy"] <= 1
    # history's val_loss is the validation log loss, the figure metrics.json gives for the
    # best epoch's model; val_accuracy likewise. The training batches' accuracy is off.
    best = hist.loc[hist.val_loss.idxmin()]
    assert metrics["val_log_loss"] == pytest.approx(best.val_loss, abs=2e-6)
    assert metrics["val_accuracy"] == pytest.approx(best.val_accuracy, abs=2e-6)
    assert hist["accuracy"].isna().all() and hist["val_accuracy"].between(0, 1).all()
    assert {"tensorflow", "keras", "numpy"} <= set(metrics["versions"])
    pre = json.loads((run / "preprocess.json").read_text())
    assert pre["classes"] == [f"Class_{i}" for i in range(1, 10)]
    assert len(pre["features"]) == 93 and len(pre["center"]) == 93
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["batch_size"] == 64 and saved["data"]["scaling"] == "standard"
    test_ids = pd.read_csv(tiny_data["test"])["id"]
    _check_submission(run / "submission.csv", test_ids, pre["classes"])

    out = tmp_path / "sub.csv"
    r = cli("predict", run, tiny_data["test"], "-o", out)
    assert r.exit_code == 0, r.output
    a, b = pd.read_csv(out), pd.read_csv(run / "submission.csv")
    assert np.allclose(a.iloc[:, 1:], b.iloc[:, 1:], atol=1e-5)


@pytest.mark.parametrize("train", [{"train_accuracy": True}, {"checkpoint": {"monitor": "accuracy"}}])
def test_train_accuracy_is_logged_when_asked_for_or_monitored(tiny_data, write_config, cli, tmp_path, train):
    r = cli("fit", write_config(tiny_config(tiny_data, **train)), "--run-dir", tmp_path / "run")
    assert r.exit_code == 0, r.output
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert hist["accuracy"].between(0, 1).all() and hist["val_loss"].notna().all()


def test_fit_prints_sizes_progress_and_result(tiny_config_path, cli, tmp_path):
    r = cli("fit", tiny_config_path, "--runs-root", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    out = r.output
    assert "93 features, 9 classes" in out
    assert "Epoch 1/2" in out and "val_loss" in out
    assert "val_log_loss=" in out and "best_epoch=" in out
    run = _run_dir(r)
    assert run.parent == tmp_path / "runs" and run.name.startswith("tiny-")


def test_existing_run_is_never_overwritten(tiny_config_path, cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_text("precious")
    r = cli("fit", tiny_config_path, "--run-dir", run)
    assert r.exit_code == 1 and "already exists" in r.output
    assert (run / "model.keras").read_text() == "precious"


def test_set_overrides_are_validated_and_applied(tiny_config_path, cli, tmp_path):
    r = cli(
        "fit",
        tiny_config_path,
        "--set",
        "train.epochs=1",
        "--set",
        "model.layers[0].Dense.units=4",
        "--run-dir",
        tmp_path / "r",
    )
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1
    assert saved["model"]["layers"][0]["Dense"]["units"] == 4
    r = cli("fit", tiny_config_path, "--set", "train.epochs=zero")
    assert r.exit_code == 1 and "train.epochs" in r.output and "'zero'" in r.output


def test_same_config_works_on_other_columns_and_class_counts(tmp_path, write_config, cli):
    from ottotrain.data.synth import make_data

    train, test = make_data(tmp_path / "d", rows=400, seed=2, test_rows=50, n_classes=4, n_features=12)
    cfg = write_config(tiny_config({"train": train, "test": test}, epochs=1))
    r = cli("fit", cfg, "--run-dir", tmp_path / "run")
    assert r.exit_code == 0, r.output
    sub = pd.read_csv(tmp_path / "run" / "submission.csv")
    assert list(sub.columns) == ["id", "Class_1", "Class_2", "Class_3", "Class_4"]


def test_summary_of_config_and_run(tiny_config_path, cli, tmp_path):
    r = cli("summary", tiny_config_path)
    assert r.exit_code == 0, r.output
    assert "93 inputs: 93 numeric; 9 classes" in r.output
    assert "Total params: 1,657" in r.output  # 93*16+16 + 16*9+9
    cli("fit", tiny_config_path, "--run-dir", tmp_path / "run", "-q")
    r = cli("summary", tmp_path / "run")
    assert r.exit_code == 0 and "Total params: 1,657" in r.output


def test_summary_reads_the_data_as_fit_does(tmp_path, write_config, cli, monkeypatch):
    """The model's inputs depend on the columns' types (one-hot widths, embeddings, 'was
    missing' columns): summary reads the training file as fit does, and a bad cell is the
    same one-line error."""
    from ottotrain.data.synth import make_data

    train, _ = make_data(tmp_path / "d", rows=100, seed=0, test_rows=0)
    lines = train.read_text().splitlines()
    parts = lines[5].split(",")
    parts[3] = "not-a-number"
    lines[5] = ",".join(parts)
    train.write_text("\n".join(lines) + "\n")
    cfg = tiny_config({"train": train, "test": None})
    del cfg["data"]["test"]
    errors = {cmd: error_line(cli(cmd, write_config(cfg))) for cmd in ("summary", "fit")}
    assert errors["summary"] == errors["fit"] and "non-numeric value 'not-a-number'" in errors["fit"]


# (id, what to summarize: made by the function, message fragments)
SUMMARY_ERRORS = [
    (
        "missing-run-dir",
        lambda tmp, cfg: tmp / "runs" / "nope",
        ["runs/nope: no such run directory or config file", "RUN_DIR made by 'ottotrain fit'"],
    ),
    ("missing-config", lambda tmp, cfg: tmp / "nope.yaml", ["nope.yaml: config file not found"]),
    (
        "not-a-run",
        lambda tmp, cfg: (tmp / "empty").mkdir() or tmp / "empty",
        ["empty: not an ottotrain run directory"],
    ),
    (
        "wrong-target-column",
        lambda tmp, cfg: cfg(target_column="label"),
        ["no column 'label' (data.target_column)", "columns that could be the target: target;"],
    ),
]


@pytest.mark.parametrize(
    "make,fragments", [c[1:] for c in SUMMARY_ERRORS], ids=[c[0] for c in SUMMARY_ERRORS]
)
def test_summary_errors_are_one_clear_line(make, fragments, tiny_data, write_config, cli, tmp_path):
    from tests.conftest import error_line

    def config(**data):
        cfg = tiny_config(tiny_data)
        cfg["data"].update(data)
        return write_config(cfg)

    line = error_line(cli("summary", make(tmp_path, config)))
    for frag in fragments:
        assert frag in line, line


def test_make_data_command(tmp_path, cli):
    r = cli("make-data", tmp_path / "d", "--rows", 300, "--seed", 3)
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "d" / "train.csv")) == 300
    assert len(pd.read_csv(tmp_path / "d" / "test.csv")) == 150


def _smoke_overrides(config_path, data):
    """Point a shipped config at generated data unless its real files exist."""
    cfg = yaml.safe_load(config_path.read_text())
    if cfg["data"].get("synthetic"):
        return []
    train = (config_path.parent / cfg["data"]["train"]).resolve()
    if train.exists():
        return []
    return ["--set", f"data.train={data['train']}", "--set", f"data.test={data['test']}"]


# Stack configs have no model of their own: tests/test_stack.py runs them.
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SHIPPED = [p for p in CONFIGS if "stack" not in yaml.safe_load(p.read_text())]


@pytest.mark.slow
@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_smoke_runs(config, tiny_data, cli, tmp_path):
    r = cli(
        "fit", config, "--smoke", "--run-dir", tmp_path / "run", "-q", *_smoke_overrides(config, tiny_data)
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["smoke"] is True and m["epochs_run"] == 1
    assert (tmp_path / "run" / "submission.csv").exists()


# Shipped cv configs run whole: every variant trains. The bench recipes (bench/configs/, kept
# to reproduce earlier results) are built variant by variant ('summary' builds each variant's
# model for the data), which is what a change to the schema or the layers could break.
SHIPPED_CV = [p for p in SHIPPED if "cv" in (yaml.safe_load(p.read_text()) or {})]
BENCH_CV = [
    p
    for p in sorted((ROOT / "bench" / "configs").glob("*.yaml"))
    if "cv" in (yaml.safe_load(p.read_text()) or {})
]


@pytest.mark.slow
@pytest.mark.parametrize("config", SHIPPED_CV, ids=lambda p: p.name)
def test_every_shipped_cv_recipe_smoke_runs(config, tiny_data, cli, tmp_path):
    """Configs with a cv section (varied bags) run end to end: every variant trains."""
    cfg = yaml.safe_load(config.read_text())
    r = cli(
        "cv",
        config,
        "--smoke",
        "--folds",
        2,
        "--run-dir",
        tmp_path / "run",
        "-q",
        *_smoke_overrides(config, tiny_data),
    )
    assert r.exit_code == 0, r.output
    # What trained, not the plan (cv.json is written before training, from the same
    # variant numbering): seed s of each fold is variant s-1, trained and scored, and its
    # preprocessing has the variant's data settings (read from the YAML, not from ottotrain).
    run = tmp_path / "run"
    variants = cfg["cv"]["variants"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_models"] == 2 * len(variants) and len(metrics["seed_oof_log_loss"]) == len(variants)
    base = cfg.get("data") or {}
    for fold in (1, 2):
        for s, variant in enumerate(variants, start=1):
            record = json.loads((run / "models" / f"fold{fold}-seed{s}.json").read_text())
            assert record["epochs_run"] == 1 and record["n_val"] > 0
            pre = json.loads((run / "models" / f"fold{fold}-seed{s}.preprocess.json").read_text())
            for key, default in (("tfidf", False), ("transform", "none")):
                want = variant.get(f"data.{key}", base.get(key, default))
                assert pre[key] == want, (fold, s, key)
    assert (run / "submission.csv").exists()


@pytest.mark.parametrize("config", BENCH_CV, ids=lambda p: p.name)
def test_every_bench_cv_recipe_builds_each_variant(config, tiny_data, cli):
    variants = yaml.safe_load(config.read_text())["cv"]["variants"]
    r = cli("summary", config, *_smoke_overrides(config, tiny_data))
    assert r.exit_code == 0, r.output
    assert r.output.count("Total params") == len(variants)
    for k in range(len(variants)):
        assert f"cv.variants[{k}] " in r.output


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_OTTO / "train.csv.gz").exists(), reason="real Otto data absent")
def test_real_otto_smoke(cli, tmp_path):
    r = cli(
        "fit",
        ROOT / "configs" / "mlp.yaml",
        "--smoke",
        "--run-dir",
        tmp_path / "run",
        "-q",
        "--set",
        f"data.train={SHARED_OTTO / 'train.csv.gz'}",
        "--set",
        f"data.test={SHARED_OTTO / 'test.csv.gz'}",
    )
    assert r.exit_code == 0, r.output
    sub = pd.read_csv(tmp_path / "run" / "submission.csv")
    assert list(sub.columns) == ["id"] + [f"Class_{i}" for i in range(1, 10)]


def test_quickstart_config_uses_builtin_data(cli, tmp_path):
    r = cli("fit", ROOT / "configs" / "quickstart.yaml", "--smoke", "--run-dir", tmp_path / "run", "-q")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "submission.csv").exists()


def test_help_version_and_module_entry_point_without_tensorflow():
    code = (
        "import sys; from click.testing import CliRunner; from ottotrain.cli import main;"
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output;"
        "assert 'fit' in r.output and 'predict' in r.output and 'summary' in r.output;"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    r = subprocess.run(
        [sys.executable, "-m", "ottotrain", "--version"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "ottotrain, version" in r.stdout


def test_config_error_does_not_import_tensorflow(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {train: x.csv}\nmodel: {layers: [Dense]}\ntrain: {epochs: 0}\n")
    code = (
        "import sys; from click.testing import CliRunner; from ottotrain.cli import main;"
        f"r = CliRunner().invoke(main, ['fit', {str(bad)!r}]); assert r.exit_code == 1;"
        "assert 'train.epochs' in r.output, r.output;"
        "assert 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- Paths: the config file's are relative to its folder, the command line's to the current one.


def test_config_paths_are_relative_to_the_config_and_set_paths_to_the_current_dir(
    tiny_data, cli, tmp_path, monkeypatch
):
    folder = tmp_path / "configs"
    folder.mkdir()
    cfg = tiny_config(tiny_data)
    cfg["data"] = {"train": "../data/train.csv", "test": "../data/test.csv"}
    (tmp_path / "data").symlink_to(tiny_data["dir"])
    path = folder / "rel.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tiny_data["dir"])  # elsewhere: the file's paths still mean ../data/
    r = cli("config", path)
    assert r.exit_code == 0, r.output
    data = yaml.safe_load(r.stdout)["data"]
    assert data["train"] == str((tmp_path / "data" / "train.csv").resolve())
    # ... while a --set path means a file of the current directory, as on any command line.
    r = cli("config", path, "--set", "data.train=train.csv", "--set", "data={train: x.csv, test: test.csv}")
    assert r.exit_code == 0, r.output
    data = yaml.safe_load(r.stdout)["data"]
    here = Path.cwd().resolve()
    assert data["train"] == str(here / "x.csv") and data["test"] == str(here / "test.csv")


@pytest.mark.parametrize(
    "key, given, fragment",
    [
        (
            "data.train",
            "in the file",
            "data.train in {config}, relative to the config file's folder {folder}",
        ),
        ("data.test", "with --set", "data.test given with --set, relative to the current directory {cwd}"),
    ],
)
def test_a_missing_data_file_names_the_base_it_was_relative_to(
    key, given, fragment, tiny_data, cli, tmp_path, monkeypatch
):
    cfg = tiny_config(tiny_data)
    if given == "in the file":
        cfg["data"]["train"] = "nope.csv"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tiny_data["dir"])
    r = cli("check", path, *(["--set", f"{key}=nope.csv"] if given == "with --set" else []))
    line = error_line(r)
    assert "nope.csv" in line and "file not found" in line
    assert fragment.format(config=path, folder=tmp_path.resolve(), cwd=Path.cwd().resolve()) in line


def _interrupted_run(tiny_data, tmp_path):
    """A fit run stopped by Ctrl-C after its second epoch of five."""
    from ottotrain.config import validate_tree
    from ottotrain.log import Log
    from ottotrain.workflows.fit import fit

    def stop_after_two(row):
        if row.epoch == 2:
            raise KeyboardInterrupt

    cfg = validate_tree(tiny_config(tiny_data, epochs=5))
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, run_dir=tmp_path / "run", log=Log(0), on_epoch=stop_after_two)
    return tmp_path / "run"


def test_predict_names_what_the_user_gave_and_warns_about_an_unfinished_run(
    tiny_data, cli, tmp_path, monkeypatch
):
    run = _interrupted_run(tiny_data, tmp_path)
    monkeypatch.chdir(tmp_path)
    line = error_line(cli("predict", run, "nope.csv"))
    assert line == f"Error: nope.csv: test file not found (relative to the current directory {Path.cwd()})"
    assert "config" not in line
    line = error_line(cli("predict", run, tiny_data["test"], "-o", "out.xlsx"))
    assert "out.xlsx: unknown output format .xlsx; name the file .csv, .csv.gz, .parquet, .feather or" in line
    assert not (tmp_path / "out.xlsx").exists()
    r = cli("predict", run, tiny_data["test"], "-o", "sub.parquet")
    assert r.exit_code == 0, r.output
    warnings = [x for x in r.stderr.splitlines() if x.startswith("Warning:")]
    hist = pd.read_csv(run / "history.csv")
    best_epoch = int(hist.loc[hist.val_loss.idxmin(), "epoch"])
    assert warnings == [
        f"Warning: run stopped at epoch 2 of 5 (interrupted); predicting with its best epoch {best_epoch}"
    ]
    assert len(pd.read_parquet(tmp_path / "sub.parquet")) == 200
