"""The experiment loop (issue #6): init, check, config, schema, runs, evaluate, plot,
and the output conventions of fit (progress on stderr, one line per epoch off a terminal)."""

import importlib.util
import json
import os
import struct
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, python_cmd, run_cli, tiny_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def epoch_lines(text):
    return [line for line in text.splitlines() if line.startswith("Epoch ")]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """One finished 3-epoch run, made through the CLI, shared by the tests below."""
    d = tmp_path_factory.mktemp("loop")
    cfg = d / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_data, epochs=3)))
    root = d / "runs"
    result = run_cli("fit", cfg, "--runs-root", root)
    assert result.exit_code == 0, result.output
    run_dir = next(root.iterdir())
    return {"config": cfg, "root": root, "run": run_dir, "result": result, "data": tiny_data}


# --------------------------------------------------------------------------------------
# init, config, schema


def test_init_writes_the_tutorial_config_that_validates(tmp_path, monkeypatch, cli):
    from ottotrain.config import load_config

    monkeypatch.chdir(tmp_path)
    r = cli("init")
    assert r.exit_code == 0, r.output
    path = tmp_path / "ottotrain.yaml"
    assert r.stdout.strip() == "ottotrain.yaml" and path.exists()
    assert "ottotrain check" in r.stderr  # the next step, on stderr
    cfg = load_config(path)  # the data files need not exist to validate
    assert cfg.model.layers == [
        {"Dense": {"units": 100}},
        {"Dense": {"units": "n_classes"}},
        {"Activation": "softmax"},
    ]
    assert cfg.train.optimizer.given() == {"name": "sgd", "learning_rate": 0.01}
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.data.validation_split) == (128, 20, 0.15)
    assert (cfg.train.early_stopping.monitor, cfg.train.early_stopping.patience) == ("val_loss", 4)
    assert cfg.train.checkpoint.monitor == "val_loss"
    assert cfg.data.train == str(tmp_path / "data" / "otto" / "train.csv.gz")
    assert cfg.data.test == str(tmp_path / "data" / "otto" / "test.csv.gz")
    text = path.read_text()
    assert "ottotrain check ottotrain.yaml" in text and "#" in text.splitlines()[0]


def test_init_never_overwrites(tmp_path, cli):
    path = tmp_path / "mine.yaml"
    path.write_text("precious: true\n")
    r = cli("init", path)
    assert r.exit_code == 1
    assert "already exists" in r.stderr and str(path) in r.stderr
    assert path.read_text() == "precious: true\n"
    r = cli("init", tmp_path / "no" / "such" / "dir.yaml")
    assert r.exit_code == 1 and "does not exist" in r.stderr


def test_init_points_the_data_at_data_otto_of_the_current_folder(tmp_path, monkeypatch, cli):
    """Where the README puts Kaggle's files, wherever the config goes (issue 15)."""
    from ottotrain.config import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    r = cli("init", "configs/first.yaml")
    assert r.exit_code == 0, r.output
    text = (tmp_path / "configs" / "first.yaml").read_text()
    assert "  train: ../data/otto/train.csv.gz\n" in text and "  test: ../data/otto/test.csv.gz " in text
    cfg = load_config(tmp_path / "configs" / "first.yaml")
    assert cfg.data.train == str(tmp_path / "data" / "otto" / "train.csv.gz")
    assert cfg.data.test == str(tmp_path / "data" / "otto" / "test.csv.gz")
    hint = r.stderr.strip()
    assert hint.startswith("Next: put Kaggle's train.csv.gz and test.csv.gz in ./data/otto/ ")
    assert "configs/first.yaml reads ../data/otto/" in hint
    assert hint.endswith("ottotrain check configs/first.yaml")
    r = cli("init", "-q", "here.yaml")
    assert "  train: data/otto/train.csv.gz\n" in (tmp_path / "here.yaml").read_text() and r.stderr == ""


def test_config_prints_every_default_and_overrides(tiny_config_path, tmp_path, cli):
    from ottotrain.config import load_config

    r = cli("config", tiny_config_path, "--set", "train.epochs=7")
    assert r.exit_code == 0, r.output
    tree = yaml.safe_load(r.stdout)
    assert tree["train"]["epochs"] == 7
    # Defaults the file never mentioned are filled in.
    assert tree["train"]["shuffle"] is True and tree["data"]["scaling"] == "standard"
    assert tree["train"]["checkpoint"] == {"monitor": "val_loss", "mode": "auto"}
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(r.stdout)
    assert load_config(resolved).train.epochs == 7  # the output is a valid config


def test_config_reports_bad_override(tiny_config_path, cli):
    r = cli("config", tiny_config_path, "--set", "train.epochs=-1")
    assert r.exit_code == 1 and "train.epochs" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_schema_is_json_schema(cli):
    r = cli("schema")
    assert r.exit_code == 0
    schema = json.loads(r.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"data", "model", "train"} <= set(schema["properties"])


def test_light_commands_do_not_import_tensorflow(tmp_path, tiny_config_path):
    code = f"""
import sys
from click.testing import CliRunner
from ottotrain.cli import main
runner = CliRunner()
for args in (["--help"], ["schema"], ["init", {str(tmp_path / "new.yaml")!r}],
             ["config", {str(tiny_config_path)!r}], ["runs", {str(tmp_path)!r}]):
    r = runner.invoke(main, args)
    assert r.exit_code == 0, (args, r.output)
print("tensorflow" in sys.modules, "keras" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------------------
# check


def test_check_reports_what_fit_would_do(tiny_config_path, cli):
    r = cli("check", tiny_config_path)
    assert r.exit_code == 0, r.output
    out = r.stdout
    for needle in (
        "600 rows",
        "93 features",
        "9 classes",
        "Class balance",
        "Class_1",
        "510 train / 90 validation",
        "200 rows",
        "Total params",
        "1,657 parameters",
        "up to 2 epochs",
        "OK: ready",
    ):
        assert needle in out, needle

    r = cli("check", tiny_config_path, "--json", "--set", "data.validation_split=0.2")
    res = json.loads(r.stdout)
    assert sum(c["rows"] for c in res["classes"]) == 600
    assert sum(c["validation_rows"] for c in res["classes"]) == res["split"]["validation_rows"] == 120
    assert res["test"]["rows"] == 200
    assert res["model"]["parameters"] == 93 * 16 + 16 + 16 * 9 + 9
    assert res["warnings"] == []

    r = cli("check", "-q", tiny_config_path)
    assert r.exit_code == 0 and len(r.stdout.strip().splitlines()) == 1 and r.stdout.startswith("OK:")


def test_check_warns_when_outputs_are_not_probabilities(tiny_config_path, cli):
    r = cli("check", tiny_config_path, "--set", "model.layers[2]={Dropout: 0.1}")
    assert r.exit_code == 0, r.output
    assert "not probabilities" in r.stdout and "softmax" in r.stdout


def test_check_finds_data_problems(tiny_data, tmp_path, write_config, cli):
    import pandas as pd

    test = pd.read_csv(tiny_data["test"]).drop(columns=["feat_5"])
    bad_test = tmp_path / "test_missing.csv"
    test.to_csv(bad_test, index=False)
    path = write_config(
        {**tiny_config(tiny_data), "data": {"train": str(tiny_data["train"]), "test": str(bad_test)}}
    )
    r = cli("check", path)
    assert r.exit_code == 1
    assert str(bad_test) in r.stderr and "feat_5" in r.stderr

    train = pd.read_csv(tiny_data["train"])
    train["feat_2"] = train["feat_2"].astype(object)
    train.loc[3, "feat_2"] = "abc"
    bad_train = tmp_path / "train_text.csv"
    train.to_csv(bad_train, index=False)
    path = write_config({**tiny_config(tiny_data), "data": {"train": str(bad_train)}})
    r = cli("check", path)
    assert r.exit_code == 1 and "feat_2" in r.stderr and "line 5" in r.stderr
    assert "fit will train and score but write no submission" not in r.stdout  # failed before

    r = cli("check", tiny_config_path_for(write_config, tiny_data, class_weight={"Nope": 2.0}))
    assert r.exit_code == 1 and "Nope" in r.stderr


def tiny_config_path_for(write_config, tiny_data, **train):
    return write_config(tiny_config(tiny_data, **train), name="variant.yaml")


def test_check_suggests_the_fit_command_with_its_overrides(tiny_config_path, tiny_data, tmp_path, cli):
    """The command check prints runs as printed: its --set options kept, shell-quoted."""
    import shlex

    sets = [
        f"data.train={tiny_data['train']}",
        "model.layers[0].Dense.units=8",
        "train.optimizer={name: adam, learning_rate: 0.01}",
    ]
    r = cli("check", tiny_config_path, *[a for s in sets for a in ("--set", s)])
    assert r.exit_code == 0, r.output
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("OK: ready for: ottotrain fit ")
    command = last.removeprefix("OK: ready for: ")
    assert "'model.layers[0].Dense.units=8'" in command
    assert "'train.optimizer={name: adam, learning_rate: 0.01}'" in command
    assert shlex.split(command) == [
        "ottotrain",
        "fit",
        str(tiny_config_path),
        *[a for s in sets for a in ("--set", s)],
    ]
    assert (
        cli("check", tiny_config_path)
        .stdout.strip()
        .endswith(f"OK: ready for: ottotrain fit {shlex.quote(str(tiny_config_path))}")
    )


@pytest.mark.parametrize(
    "sets, inputs",
    [
        (["data.tfidf=true"], "(186 inputs: 93 numeric, 93 TF-IDF)"),
        (["data.knn={k: [1, 2]}"], "(111 inputs: 93 numeric, 18 KNN)"),
        (["data.tfidf=true", "data.knn={k: [4]}"], "(195 inputs: 93 numeric, 93 TF-IDF, 9 KNN)"),
    ],
    ids=["tfidf", "knn", "both"],
)
def test_check_says_where_extra_model_inputs_come_from(tiny_config_path, cli, sets, inputs):
    r = cli("check", tiny_config_path, *[a for s in sets for a in ("--set", s)])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.stdout.splitlines() if x.startswith("Train data"))
    assert line.endswith(f"93 features, 9 classes {inputs}"), line


# --------------------------------------------------------------------------------------
# fit's output conventions


def test_fit_progress_is_one_plain_line_per_epoch_off_a_terminal(trained):
    r = trained["result"]
    assert len(epoch_lines(r.stderr)) == 3
    assert "\r" not in r.stderr
    # Results on stdout, progress on stderr.
    assert not epoch_lines(r.stdout) and r.stdout.startswith("val_log_loss=")
    assert r.stdout.strip().splitlines()[-1] == str(trained["run"])


def test_fit_quiet_prints_no_progress(tiny_config_path, tmp_path, cli):
    r = cli("fit", tiny_config_path, "--runs-root", tmp_path / "runs", "-q", "--set", "train.epochs=1")
    assert r.exit_code == 0, r.output
    assert r.stderr == "" and r.stdout.startswith("val_log_loss=")


def test_fit_shows_a_progress_bar_on_a_terminal(tiny_data, tmp_path):
    import io

    from ottotrain.config import validate_tree
    from ottotrain.log import Log
    from ottotrain.workflows.fit import fit

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    cfg = validate_tree(tiny_config(tiny_data, epochs=1))
    fit(cfg, runs_root=tmp_path / "runs", log=Log(1, term))
    text = term.getvalue()
    assert [line for line in text.splitlines() if line.startswith("Epoch ")] == ["Epoch 1/1"]
    assert "\r" in text and "8/8" in text  # Keras' bar: 510 rows / 64 = 8 steps, redrawn in place


@pytest.mark.slow
def test_fit_in_a_subprocess_is_quiet_and_plain(trained, tmp_path):
    """No TensorFlow start-up noise on stderr, one line per epoch, nothing else odd."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "OTTOTRAIN_TF_LOGS")}
    out = subprocess.run(
        [*python_cmd(), "fit", str(trained["config"]), "--runs-root", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    err = out.stderr
    lowered = err.lower()
    for noise in ("onednn", "cuda", "cuinit", "absl", "cpu_feature_guard", "tensorflow binary"):
        assert noise not in lowered, err
    assert len(epoch_lines(err)) == 3 and "\r" not in err
    assert out.stdout.startswith("val_log_loss=")


# Figures whose 4-decimal text changes when they are first rounded to 6 decimals, as
# metrics.json stores them: 0.70285009 reads 0.7029, its round(x, 6) = 0.70285 reads 0.7028.
TWICE_ROUNDED = (0.7028500922928276, 0.9975499920920794)


def test_fit_logs_the_figures_it_prints(tiny_config_path, tmp_path, monkeypatch, cli):
    """The final log line (stderr) and the result (stdout) show the same scores."""
    import dataclasses

    from ottotrain.engine import member

    train = member.train_member
    monkeypatch.setattr(
        member,
        "train_member",
        lambda *a, **k: dataclasses.replace(
            train(*a, **k), val_log_loss=TWICE_ROUNDED[0], val_accuracy=TWICE_ROUNDED[1]
        ),
    )
    r = cli("fit", tiny_config_path, "--runs-root", tmp_path / "runs", "--set", "train.epochs=1")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("val_log_loss=0.7028 val_accuracy=0.9976 ")
    assert r.stderr.strip().splitlines()[-1].endswith("validation log loss 0.7028, accuracy 0.9976")


def test_cv_logs_the_figures_it_prints(tiny_config_path, tmp_path, monkeypatch, cli):
    import ottotrain.workflows.cv_result as cv  # where cv scores its members

    monkeypatch.setattr(cv, "log_loss", lambda y, p: TWICE_ROUNDED[0])
    r = cli("cv", tiny_config_path, "--folds", 2, "--run-dir", tmp_path / "run", "--set", "train.epochs=1")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("oof_log_loss=0.7028 ") and "fold_log_loss=0.7028±0.0000" in r.stdout
    assert r.stderr.strip().splitlines()[-1].startswith("OOF log loss 0.7028 (folds 0.7028 ± 0.0000)")


# A process that has imported TensorFlow (through ottotrain's stderr filter), with a child
# process holding a copy of fd 2, as a library's helper process would. It writes a
# TensorFlow native log line, a line of its own and a progress-bar redraw, and exits.
EXIT_AFTER_TENSORFLOW = """
import atexit, gc, os, subprocess, sys, time
atexit.register(lambda: print("frozen", gc.get_freeze_count() > 0, flush=True))  # runs last
import ottotrain.engine.env
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(4)"], stdout=subprocess.DEVNULL)
os.write(2, b"I0000 00:00:1796160978.105208   25390 port.cc:153] oneDNN custom operations are on.\\n")
os.write(2, b"kept line\\n")
os.write(2, b"\\r 3/8 [===>....]")
print(time.time(), flush=True)
"""


def test_a_process_that_imported_tensorflow_exits_at_once():
    """No wait for the stderr pipe's EOF (which the child's copy of fd 2 holds off: the join's
    2 s timeout), and no last garbage collections over TensorFlow's objects (1 s on 2 cores)."""
    import time

    env = {k: v for k, v in os.environ.items() if k != "OTTOTRAIN_TF_LOGS"}
    proc = subprocess.Popen(
        [sys.executable, "-c", EXIT_AFTER_TENSORFLOW],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    last_statement = float(proc.stdout.readline())
    out, err = proc.communicate(timeout=120)
    exited = time.time() - last_statement
    assert proc.returncode == 0, err
    assert err == b"kept line\n\r 3/8 [===>....]"  # TensorFlow's line dropped, the rest as written
    assert exited < 1.5, f"exited {exited:.2f} s after its last statement"
    assert out.decode().split() == ["frozen", "True"]


def test_an_existing_run_dir_is_refused_before_the_heavy_imports(tiny_config_path, tmp_path):
    """No TensorFlow, nor pandas, scikit-learn, matplotlib (2 s of imports) to say it exists."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_text("precious")
    code = f"""
import sys, time
from click.testing import CliRunner
from ottotrain.cli import main
for cmd in ("fit", "cv"):
    t = time.perf_counter()
    r = CliRunner().invoke(main, [cmd, {str(tiny_config_path)!r}, "--run-dir", {str(run)!r}])
    assert r.exit_code == 1 and "already exists and is not empty" in r.output, r.output
print(sorted(m for m in ("tensorflow", "keras", "pandas", "sklearn", "matplotlib") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]"]
    assert (run / "model.keras").read_text() == "precious"


# --------------------------------------------------------------------------------------
# TensorBoard


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_writes_event_files(tiny_data, write_config, tmp_path, cli):
    path = write_config(tiny_config(tiny_data, epochs=2, tensorboard=True))
    r = cli("fit", path, "--run-dir", tmp_path / "run", "-q")
    assert r.exit_code == 0, r.output
    for sub in ("train", "validation"):
        events = list((tmp_path / "run" / "tensorboard" / sub).glob("events.out.tfevents.*"))
        assert events and all(e.stat().st_size > 0 for e in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "validation"), size_guidance={"tensors": 0})
    ea.Reload()
    # One point per epoch, at steps 0 and 1: each epoch is its own model.fit call.
    assert [e.step for e in ea.Tensors("epoch_loss")] == [0, 1]


# Runs in a process where the tensorboard package cannot be found, installed or not: the
# path finder is replaced by one that is blind to it, so both 'import tensorboard' and
# importlib.util.find_spec behave as if it were not installed.
HIDE_TENSORBOARD = """
import importlib.machinery, importlib.util, json, sys
PathFinder = importlib.machinery.PathFinder

class HideTensorboard:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in ("tensorboard", "tensorboard_data_server"):
            return None
        return PathFinder.find_spec(name, path, target)

    invalidate_caches = staticmethod(PathFinder.invalidate_caches)
    find_distributions = staticmethod(PathFinder.find_distributions)

sys.meta_path[:] = [HideTensorboard if f is PathFinder else f for f in sys.meta_path]
assert importlib.util.find_spec("tensorboard") is None
try:
    import tensorboard  # noqa
    raise SystemExit("tensorboard is still importable")
except ModuleNotFoundError:
    pass
from click.testing import CliRunner
from ottotrain.cli import main
out = {}
for name, args in json.loads(sys.argv[1]).items():
    r = CliRunner().invoke(main, args)
    out[name] = [r.exit_code, r.stderr]
print(json.dumps(out))
"""


def test_tensorboard_missing_is_a_clear_error_before_the_run(tiny_data, write_config, tmp_path):
    path = str(write_config(tiny_config(tiny_data, tensorboard=True)))
    runs, cv_run = tmp_path / "runs", tmp_path / "cv-run"
    cases = {
        "fit": ["fit", path, "--runs-root", str(runs)],
        "cv": ["cv", path, "--folds", "2", "--run-dir", str(cv_run)],
        "check": ["check", path],
    }
    out = subprocess.run(
        [sys.executable, "-c", HIDE_TENSORBOARD, json.dumps(cases)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for name, (code, stderr) in json.loads(out.stdout.splitlines()[-1]).items():
        errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
        assert code == 1 and "Traceback" not in stderr and len(errors) == 1, (name, stderr)
        assert (
            errors[0].startswith(f"Error: {path}: train.tensorboard: true needs the tensorboard package")
            and "pip install tensorboard" in errors[0]
        ), (name, stderr)
    assert not runs.exists() or not any(runs.iterdir())  # refused before any run directory
    assert not cv_run.exists()


# --------------------------------------------------------------------------------------
# plots of a real run


def test_fit_writes_plots(trained, cli):
    run = trained["run"]
    assert png_size(run / "curves.png") == (1200, 400)
    assert png_size(run / "confusion.png") == (700, 600)
    (run / "curves.png").unlink()
    r = cli("plot", run)
    assert r.exit_code == 0 and png_size(run / "curves.png") == (1200, 400)
    r = cli("plot", trained["root"])  # a folder with nothing to plot
    assert r.exit_code == 1 and "nothing to plot" in r.stderr


# --------------------------------------------------------------------------------------
# runs


def _fake_run(root, name, status, metrics=None, history=None, state_history=None, **extra):
    from ottotrain import RUN_FORMAT

    d = root / name
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"status": status, "format": RUN_FORMAT, **extra}))
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": 1, "train": {"epochs": 3}}))
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    if history is not None:
        (d / "history.csv").write_text(
            "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n"
            + "".join(f"{i + 1},1,0.5,{v},{a},0.01,2.0\n" for i, (v, a) in enumerate(history))
        )
    if state_history is not None:
        (d / "state").mkdir()
        (d / "state" / "trainer.json").write_text(
            json.dumps(
                {
                    "history": [
                        {"epoch": i + 1, "val_loss": v, "val_accuracy": a, "seconds": 1.5}
                        for i, (v, a) in enumerate(state_history)
                    ]
                }
            )
        )
    return d


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "runs"
    _fake_run(
        root,
        "mlp-20260101-090000",
        "finished",
        metrics={
            "val_log_loss": 0.61,
            "val_accuracy": 0.77,
            "epochs_run": 12,
            "best_epoch": 9,
            "timings": {"total_seconds": 125.0},
        },
    )
    _fake_run(
        root,
        "otto-cv-20260102-090000",
        "finished",
        kind="cv",
        metrics={
            "kind": "cv",
            "oof_log_loss": 0.48,
            "oof_accuracy": 0.81,
            "timings": {"total_seconds_this_session": 4000.0},
        },
    )
    _fake_run(
        root,
        "wide-20260103-090000",
        "running",
        host="elsewhere",
        pid=1,
        state_history=[(0.9, 0.6), (0.7, 0.7), (0.8, 0.69)],
    )
    _fake_run(root, "nan-20260104-090000", "failed", reason="nan", history=[(1.2, 0.4)])
    _fake_run(root, "stop-20260105-090000", "interrupted", history=[(1.0, 0.5), (0.95, 0.55)])
    (root / "notes").mkdir()  # not a run: ignored
    (root / "broken").mkdir()
    (root / "broken" / "status.json").write_text("{not json")
    return root


def test_runs_lists_every_kind_of_run(runs_root, cli):
    r = cli("runs", runs_root)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "kind", "date", "status"]
    body = {line.split()[0]: line for line in lines[1:] if line and not line.startswith("*")}
    assert set(body) == {
        "mlp-20260101-090000",
        "otto-cv-20260102-090000",
        "wide-20260103-090000",
        "nan-20260104-090000",
        "stop-20260105-090000",
        "broken",
    }
    assert "0.6100" in body["mlp-20260101-090000"] and "2m05s" in body["mlp-20260101-090000"]
    assert " cv " in body["otto-cv-20260102-090000"] and "0.4800" in body["otto-cv-20260102-090000"]
    assert "1h06m" in body["otto-cv-20260102-090000"]
    assert "running" in body["wide-20260103-090000"] and "0.7000*" in body["wide-20260103-090000"]
    assert "failed" in body["nan-20260104-090000"]
    assert "interrupted" in body["stop-20260105-090000"] and "0.9500*" in body["stop-20260105-090000"]
    assert "damaged" in body["broken"]
    assert lines[-1] == "* unfinished: the validation log loss of the best epoch so far"
    # By date: oldest first.
    assert [line.split()[0] for line in lines[1:6]][:5] == [
        "mlp-20260101-090000",
        "otto-cv-20260102-090000",
        "wide-20260103-090000",
        "nan-20260104-090000",
        "stop-20260105-090000",
    ]


def test_runs_json_and_sort_by_score(runs_root, cli):
    r = cli("runs", runs_root, "--sort", "score", "--json")
    rows = json.loads(r.stdout)
    assert [x["name"] for x in rows][:3] == [
        "otto-cv-20260102-090000",
        "mlp-20260101-090000",
        "wide-20260103-090000",
    ]
    assert rows[-1]["log_loss"] is None  # unscored runs last
    cv = rows[0]
    assert (cv["kind"], cv["log_loss_key"], cv["accuracy"]) == ("cv", "oof_log_loss", 0.81)
    wide = rows[2]
    assert (wide["epochs"], wide["best_epoch"], wide["seconds"]) == (3, 2, 4.5)


def test_runs_marks_a_dead_running_run_interrupted(tmp_path, cli):
    import platform

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer exists
    _fake_run(tmp_path, "dead-20260101-000000", "running", host=platform.node(), pid=proc.pid)
    rows = json.loads(cli("runs", tmp_path, "--json").stdout)
    assert rows[0]["status"] == "interrupted"


def test_runs_on_a_real_run_and_errors(trained, tmp_path, cli):
    rows = json.loads(cli("runs", trained["root"], "--json").stdout)
    assert len(rows) == 1
    row = rows[0]
    metrics = json.loads((trained["run"] / "metrics.json").read_text())
    assert (row["status"], row["kind"], row["epochs"]) == ("finished", "fit", 3)
    assert row["log_loss"] == metrics["val_log_loss"] and row["accuracy"] == metrics["val_accuracy"]
    r = cli("runs", tmp_path / "nowhere")
    assert r.exit_code == 1 and "nowhere" in r.stderr and "--runs-root" in r.stderr
    r = cli("runs", tmp_path)
    assert r.exit_code == 0 and "no runs" in r.stderr


def test_runs_diff(trained, tmp_path, cli):
    root = trained["root"]
    a = trained["run"]
    b = tmp_path / "runs" / "b"
    r = cli(
        "fit",
        trained["config"],
        "--run-dir",
        b,
        "-q",
        "--set",
        "train.epochs=1",
        "--set",
        "model.layers[0].Dense.units=8",
    )
    assert r.exit_code == 0, r.output
    r = cli("runs", root, "--diff", a.name, b)  # a name under DIR, and a path
    assert r.exit_code == 0, r.output
    assert "train.epochs: 3 -> 1" in r.stdout
    assert "model.layers[0].Dense.units: 16 -> 8" in r.stdout
    d = json.loads(cli("runs", root, "--diff", a, a, "--json").stdout)
    assert d["changes"] == []
    assert "identical" in cli("runs", root, "--diff", a, a).stdout
    r = cli("runs", root, "--diff", a, tmp_path / "missing")
    assert r.exit_code == 1 and "missing" in r.stderr


def test_runs_diff_shows_yaml_values(tmp_path, cli):
    """null, flow mappings and (unset), as a config file would have them, not Python reprs."""
    a = _fake_run(tmp_path, "a", "finished")
    b = _fake_run(tmp_path, "b", "finished")
    (a / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {"train": None, "synthetic": {"rows": 20000, "test_rows": 5000}, "transform": "none"},
                "train": {"lr_schedule": None, "optimizer": "adam"},
            }
        )
    )
    (b / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {
                    "train": "/data/otto/train.csv.gz",
                    "synthetic": None,
                    "transform": "log1p",
                    "tfidf": True,
                },
                "train": {"lr_schedule": {"name": "cosine"}, "optimizer": "adam"},
            }
        )
    )
    r = cli("runs", tmp_path, "--diff", "a", "b")
    assert r.exit_code == 0, r.output
    changes = [line.strip() for line in r.stdout.splitlines()[3:]]
    assert sorted(changes) == [
        "data.synthetic: {rows: 20000, test_rows: 5000} -> null",
        "data.tfidf: (unset) -> true",
        "data.train: null -> /data/otto/train.csv.gz",
        "data.transform: none -> log1p",
        "train.lr_schedule: null -> {name: cosine}",
    ]


# --------------------------------------------------------------------------------------
# evaluate


def test_evaluate_scores_a_labelled_csv(trained, cli):
    import numpy as np
    import pandas as pd

    r = cli("evaluate", trained["run"], trained["data"]["train"], "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["rows"] == 600 and 0 < res["log_loss"] < 5 and 0 <= res["accuracy"] <= 1
    cm = np.array(res["confusion"]["matrix"])
    assert cm.shape == (9, 9) and cm.sum() == 600
    assert res["accuracy"] == pytest.approx(np.trace(cm) / 600, abs=1e-6)
    counts = pd.read_csv(trained["data"]["train"])["target"].value_counts()
    assert {c["class"]: c["support"] for c in res["per_class"]} == counts.to_dict()
    for c in res["per_class"]:
        assert 0 <= c["precision"] <= 1 and 0 <= c["recall"] <= 1
        assert c["log_loss"] > 0 and 0 <= c["ece"] <= 1
    assert 0 <= res["ece"] <= 1 and res["calibration"]["bins"] == 15
    # Written beside the run, named after the data file (train.csv here).
    folder = trained["run"] / "evaluate" / "train"
    assert sorted(res["files"]) == sorted(str(p) for p in folder.iterdir()) and len(res["files"]) == 5

    text = cli("evaluate", trained["run"], trained["data"]["train"]).stdout
    assert text.startswith("log_loss=") and "precision" in text and "Confusion matrix" in text
    assert " ece=" in text.splitlines()[0]
    brief = cli("evaluate", "-q", trained["run"], trained["data"]["train"])
    assert brief.stdout.strip() == text.splitlines()[0] and brief.stderr == ""


def test_evaluate_rejects_unusable_files(trained, tmp_path, cli):
    import pandas as pd

    df = pd.read_csv(trained["data"]["train"])
    run = trained["run"]

    no_target = tmp_path / "nolabels.csv"
    df.drop(columns=["target"]).to_csv(no_target, index=False)
    r = cli("evaluate", run, no_target)
    assert r.exit_code == 1 and "no target column 'target'" in r.stderr and "predict" in r.stderr

    cols = tmp_path / "cols.csv"
    df.drop(columns=["feat_1"]).assign(extra=1).to_csv(cols, index=False)
    r = cli("evaluate", run, cols)
    assert r.exit_code == 1 and "missing 1 feature column(s)" in r.stderr
    assert "feat_1" in r.stderr and "unexpected column(s): extra" in r.stderr

    unseen = tmp_path / "unseen.csv"
    df.assign(target=df["target"].where(df.index != 7, "Class_42")).to_csv(unseen, index=False)
    r = cli("evaluate", run, unseen)
    assert r.exit_code == 1 and "Class_42" in r.stderr and "never saw" in r.stderr

    r = cli("evaluate", run, tmp_path / "absent.csv")
    assert r.exit_code == 1 and "absent.csv" in r.stderr
    r = cli("evaluate", tmp_path, trained["data"]["train"])
    assert r.exit_code == 1 and "status.json" in r.stderr
