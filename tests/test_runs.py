"""Run directories: unusable or untrusted ones are refused with one clear line (nothing
executed, nothing loaded); two runs started at once never share a directory."""

import base64
import json
import marshal
import shutil
import threading
import zipfile

import pytest
import yaml

from tests.conftest import error_line as _error_line
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    """A real finished run (2 epochs on tiny data), trained once for the module."""
    from ottotrain.config import validate_tree
    from ottotrain.log import Log
    from ottotrain.workflows.fit import fit

    d = tmp_path_factory.mktemp("finished")
    cfg = validate_tree(tiny_config(tiny_data))
    result = fit(cfg, run_dir=d / "run", log=Log(0))
    return result.run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    """A private copy of the finished run, free to damage."""
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


def _edit_status(run, **changes):
    p = run / "status.json"
    info = json.loads(p.read_text())
    info.update(changes)
    p.write_text(json.dumps(info))


def test_predict_refuses_what_is_not_a_finished_run(cli, run_copy, tiny_data, tmp_path):
    test = tiny_data["test"]
    line = _error_line(cli("predict", tmp_path / "nowhere", test))
    assert "nowhere" in line and "no such run directory" in line
    (tmp_path / "empty").mkdir()
    line = _error_line(cli("predict", tmp_path / "empty", test))
    assert "not an ottotrain run directory (no status.json)" in line and "ottotrain fit" in line
    _edit_status(run_copy, status="running")
    (run_copy / "model.keras").unlink()
    line = _error_line(cli("predict", run_copy, test))
    assert "the run is running and has no usable model yet" in line and "--resume" in line
    (run_copy / "status.json").write_text("{not json")
    line = _error_line(cli("predict", run_copy, test))
    assert "status.json: damaged" in line


def test_predict_refuses_a_run_with_missing_files(cli, run_copy, tiny_data):
    (run_copy / "preprocess.json").unlink()
    line = _error_line(cli("predict", run_copy, tiny_data["test"]))
    assert "incomplete run directory, missing preprocess.json" in line


@pytest.mark.parametrize(
    "changes,fragments",
    [
        (
            {"format": 99, "ottotrain": "9.0.0"},
            ["made by ottotrain 9.0.0 with run format 99", "reads format 1", "retrain it"],
        ),
        ({"format": None}, ["run format None"]),
    ],
)
def test_predict_refuses_an_incompatible_version(changes, fragments, cli, run_copy, tiny_data):
    _edit_status(run_copy, **changes)
    line = _error_line(cli("predict", run_copy, tiny_data["test"]))
    for frag in fragments:
        assert frag in line, line


def test_predict_refuses_a_foreign_preprocessing_format(cli, run_copy, tiny_data):
    p = run_copy / "preprocess.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), "format": 7}))
    assert "incompatible ottotrain version" in _error_line(cli("predict", run_copy, tiny_data["test"]))


def test_predict_output_path_checks(cli, finished_run, tiny_data, tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "sub.csv"
    line = _error_line(cli("predict", finished_run, tiny_data["test"], "-o", out))
    assert str(out) in line and "does not exist" in line and "create it first" in line
    assert not (tmp_path / "no").exists()
    line = _error_line(cli("predict", finished_run, tiny_data["test"], "-o", finished_run / "model.keras"))
    assert "would overwrite the run's own model.keras" in line
    line = _error_line(cli("predict", finished_run, tiny_data["test"], "-o", tiny_data["test"]))
    assert "is the test file itself" in line
    r = cli("predict", finished_run, tiny_data["test"], "-o", tmp_path)  # click's own check
    assert r.exit_code == 2 and "is a directory" in r.stderr and "Traceback" not in r.output


def _tamper(model_path, edit):
    """Rewrite the model archive's config.json with ``edit`` (as an attacker would)."""
    with zipfile.ZipFile(model_path) as z:
        items = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(items["config.json"])
    edit(cfg, items)
    items["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(model_path, "w") as z:
        for name, data in items.items():
            z.writestr(name, data)


def _lambda_layer(marker):
    def evil(x):
        import os

        os.system(f"touch {marker}")
        return x

    code = base64.b64encode(marshal.dumps(evil.__code__)).decode()
    return {
        "module": "keras.layers",
        "class_name": "Lambda",
        "registered_name": None,
        "config": {
            "name": "evil",
            "trainable": True,
            "dtype": "float32",
            "arguments": {},
            "function": {
                "class_name": "__lambda__",
                "config": {"code": code, "defaults": None, "closure": None},
            },
            "output_shape": None,
        },
    }


def _os_system(marker):
    return {
        "module": "os",
        "class_name": "system",
        "registered_name": None,
        "config": {"command": f"touch {marker}"},
    }


TAMPERINGS = {
    "lambda-layer": (
        lambda c, i, m: c["config"]["layers"].insert(2, _lambda_layer(m)),
        ["holds a Lambda (Python code)"],
    ),
    "os-system-layer": (
        lambda c, i, m: c["config"]["layers"].insert(2, _os_system(m)),
        ["refers to Python module 'os'", "class 'system'"],
    ),
    "os-system-activation": (
        lambda c, i, m: c["config"]["layers"][1]["config"].update(activation=_os_system(m)),
        ["layers[1].config.activation", "module 'os'"],
    ),
    "builtins-eval": (
        lambda c, i, m: c["config"]["layers"][1]["config"].update(
            activation={
                "module": "builtins",
                "class_name": "function",
                "config": "eval",
                "registered_name": "function",
            }
        ),
        ["module 'builtins'"],
    ),
    "custom-registered-class": (
        lambda c, i, m: c["config"]["layers"][1].update(
            module="keras.layers", registered_name="evilpkg>Backdoor"
        ),
        ["custom class 'evilpkg>Backdoor'"],
    ),
    "extra-archive-member": (
        lambda c, i, m: i.update({"payload.pkl": b"\x80\x04."}),
        ["unexpected member(s) payload.pkl"],
    ),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_tampered_model_is_refused_and_nothing_runs(name, cli, run_copy, tiny_data, tmp_path):
    edit, fragments = TAMPERINGS[name]
    marker = tmp_path / "pwned"
    _tamper(run_copy / "model.keras", lambda c, i: edit(c, i, marker))
    for args in (("predict", run_copy, tiny_data["test"], "-o", tmp_path / "sub.csv"), ("summary", run_copy)):
        line = _error_line(cli(*args))
        assert "model.keras" in line and "refusing" in line, line
        for frag in fragments:
            assert frag in line, line
    assert not marker.exists()
    assert not (tmp_path / "sub.csv").exists()


def test_keras_safe_mode_alone_also_refuses_a_lambda(run_copy, tmp_path):
    """Defence in depth: even past our own check, Keras' safe mode refuses the lambda."""
    from ottotrain.engine.env import keras

    marker = tmp_path / "pwned"
    _tamper(run_copy / "model.keras", lambda c, i: c["config"]["layers"].insert(2, _lambda_layer(marker)))
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.load_model(run_copy / "model.keras", safe_mode=True)
    assert not marker.exists()


def test_damaged_model_file_is_refused(cli, run_copy, tiny_data):
    (run_copy / "model.keras").write_bytes(b"not a zip")
    assert "not a readable Keras model archive" in _error_line(cli("predict", run_copy, tiny_data["test"]))


@pytest.mark.parametrize(
    "name", ["weights.pkl", "state/extra.pickle", "model.joblib", "x.npy", "extra.npz", "state/other.npz"]
)
def test_run_dir_with_a_pickle_is_refused(name, cli, run_copy, tiny_data):
    p = run_copy / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(b"\x80\x04\x95")
    line = _error_line(cli("predict", run_copy, tiny_data["test"]))
    assert name.split("/")[-1] in line and "never writes pickles" in line


def test_json_holding_pickled_bytes_is_refused(cli, run_copy, tiny_data):
    (run_copy / "metrics.json").write_bytes(b"\x80\x04\x95\x00cos\nsystem\n")
    assert "contains pickled data" in _error_line(cli("predict", run_copy, tiny_data["test"]))


def test_resume_refuses_unusable_run_dirs(cli, finished_run, tmp_path):
    for command in ("fit", "cv"):
        line = _error_line(cli(command, "--resume", tmp_path / "nowhere"))
        assert "no such run directory" in line
    line = _error_line(cli("fit", "--resume", finished_run))
    assert "already finished" in line and "ottotrain fit" in line


def test_resume_refuses_a_pickle_and_a_foreign_format(cli, run_copy):
    _edit_status(run_copy, status="interrupted")
    (run_copy / "x.pkl").write_bytes(b"\x80\x04")
    assert "never writes pickles" in _error_line(cli("fit", "--resume", run_copy))
    (run_copy / "x.pkl").unlink()
    _edit_status(run_copy, format=2)
    assert "run format 2" in _error_line(cli("fit", "--resume", run_copy))


def test_runs_started_at_the_same_moment_get_separate_dirs(tmp_path):
    from ottotrain.runs import new_run_dir

    n = 16
    barrier = threading.Barrier(n)
    out = []

    def start():
        barrier.wait()
        out.append(new_run_dir(tmp_path / "runs", "same"))

    threads = [threading.Thread(target=start) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == n and len(set(out)) == n
    assert all(p.is_dir() and p.name.startswith("same-") for p in out)


def test_runs_root_that_is_a_file(cli, tiny_config_path, tmp_path):
    from ottotrain.errors import RunError
    from ottotrain.runs import new_run_dir

    (tmp_path / "runs").write_text("")
    r = cli("fit", tiny_config_path, "--runs-root", tmp_path / "runs")  # click's own check
    assert r.exit_code == 2 and "is a file" in r.stderr and "Traceback" not in r.output
    with pytest.raises(RunError, match="exists and is not a directory; choose another --runs-root"):
        new_run_dir(tmp_path / "runs" / "sub", "x")


def test_run_dir_that_holds_a_run_is_never_overwritten(cli, finished_run, tiny_config_path):
    before = (finished_run / "model.keras").read_bytes()
    line = _error_line(cli("fit", tiny_config_path, "--run-dir", finished_run))
    assert "already exists and is not empty" in line and "--resume" in line
    assert (finished_run / "model.keras").read_bytes() == before


def test_no_pickle_ever_written(finished_run):
    from ottotrain.runs import UNSAFE_SUFFIXES

    files = [p for p in finished_run.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in UNSAFE_SUFFIXES]
    assert yaml.safe_load((finished_run / "config.yaml").read_text())["name"] == "tiny"


COMMON_KEYS = ["status", "format", "ottotrain", "updated", "host", "pid"]


@pytest.mark.parametrize(
    "run, fields",
    [
        ("fit", {"smoke": False}),
        ("cv", {"kind": "cv", "folds": 3, "seeds": 2, "smoke": False, "member_threads": 2}),
        ("tune", {"kind": "tune"}),
        ("nan", {"smoke": True, "reason": "nan", "message": "x" * 500}),
    ],
)
def test_status_json_holds_the_typed_status_under_the_same_keys(run, fields, tmp_path):
    """status.json's keys (and their order) as the runs listing and --resume read them."""
    from ottotrain.runs import RunStatus, read_status, write_status

    status = {
        "fit": RunStatus(smoke=False),
        "cv": RunStatus(kind="cv", folds=3, seeds=2, smoke=False, member_threads=2),
        "tune": RunStatus(kind="tune"),
        "nan": RunStatus(smoke=True).failed("nan", "x" * 600),
    }[run]
    write_status(tmp_path, "failed", status)
    info = read_status(tmp_path)
    assert list(info) == COMMON_KEYS + list(fields)
    assert {k: info[k] for k in fields} == fields
