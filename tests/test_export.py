"""ottotrain export: a SavedModel that TensorFlow alone loads and that predicts what predict writes.

The runs (tests/export_runs.py, trained once for this file and test_serve.py) cover a fit
run, typed columns, KNN features and a TabM-style ensemble in one run, a cv run, and the 1.0
cv run of tests/data (preprocess formats 2 and 3, members with and without KNN features).
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests import export_runs
from tests.conftest import error_line, run_cli, subprocess_env

# Loads every export with TensorFlow and nothing of ottotrain (a sys.meta_path blocker, proved
# to block first), feeds it the raw test rows read with the csv module, prints the probabilities.
LOADER = r"""
import csv, importlib.util, json, math, sys
assert importlib.util.find_spec("ottotrain") is not None  # importable here, were it not blocked
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "ottotrain" or name.startswith("ottotrain."):
            raise ModuleNotFoundError("blocked: " + name)
sys.meta_path.insert(0, Block())
try:
    import ottotrain
    sys.exit("the blocker did not block")
except ModuleNotFoundError:
    pass
import tensorflow as tf
out = {}
for export, test in json.loads(sys.argv[1]):
    schema = json.load(open(export + "/assets.extra/ottotrain.json"))
    fn = tf.saved_model.load(export).signatures["serving_default"]
    rows = list(csv.DictReader(open(test, newline="")))
    feed = {}
    for c in schema["columns"]:
        if c["kind"] == "categorical":
            feed[c["key"]] = tf.constant([r[c["name"]] for r in rows])
        else:
            feed[c["key"]] = tf.constant([float(r[c["name"]] or "nan") for r in rows], tf.float32)
    res = fn(**feed)
    packed = tf.saved_model.load(export).signatures["packed"]
    num = [feed[c["key"]] for c in schema["columns"] if c["kind"] != "categorical"]
    txt = [feed[c["key"]] for c in schema["columns"] if c["kind"] == "categorical"]
    kw = {"numbers": tf.stack(num, axis=1)} | ({"strings": tf.stack(txt, axis=1)} if txt else {})
    same = packed(**kw)["probabilities"].numpy() - res["probabilities"].numpy()
    assert abs(same).max() < 1e-6, abs(same).max()
    classes = [c.decode() for c in res["classes"].numpy()[0]]
    out[export] = {"classes": classes, "p": res["probabilities"].numpy().tolist()}
assert not any(m == "ottotrain" or m.startswith("ottotrain.") for m in sys.modules)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_runs.trained(tmp_path_factory)


def test_the_export_alone_predicts_what_predict_writes(exported, tmp_path):
    jobs = [[str(e), str(t)] for _, e, t, _ in exported.values()]
    env = subprocess_env(tmp_path)
    r = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(jobs)], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(got) == len(exported)
    for name, (_, export, _, sub) in exported.items():
        want = pd.read_csv(sub)
        res = got[str(export)]
        assert res["classes"] == list(want.columns[1:]), name
        np.testing.assert_allclose(np.array(res["p"]), want.iloc[:, 1:].to_numpy(), atol=1e-5, err_msg=name)


def test_the_blocker_blocks(tmp_path):
    """The loader's blocker on its own: with it, importing ottotrain fails (and the script says so)."""
    script = LOADER.split("import tensorflow")[0] + "print('blocked')"
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env(tmp_path)
    )
    assert r.returncode == 0 and r.stdout.strip() == "blocked", r.stderr
    broken = script.replace('raise ModuleNotFoundError("blocked: " + name)', "return None")
    r = subprocess.run(
        [sys.executable, "-c", broken], capture_output=True, text=True, env=subprocess_env(tmp_path)
    )
    assert "the blocker did not block" in r.stderr


def _raw_columns(export, test):
    """The test file's raw columns, as a user would feed them (numbers float32, NaN missing)."""
    from ottotrain.serving.schema import ModelSchema

    df = pd.read_csv(test, keep_default_na=False, dtype=str)
    schema = ModelSchema.read(export)
    return {
        c.key: df[c.name].to_numpy(dtype=object)
        if c.kind == "categorical"
        else pd.to_numeric(df[c.name].mask(df[c.name] == "")).to_numpy(np.float32)
        for c in schema.columns
    }


def _packed_predict(export, cols):
    """The export's packed function (what serve calls) on the raw columns: one float32 matrix in."""
    from ottotrain import engine
    from ottotrain.serving.schema import ModelSchema

    schema = ModelSchema.read(export)
    num = [c.key for c in schema.columns if c.kind != "categorical"]
    txt = [c.key for c in schema.columns if c.kind == "categorical"]
    numbers = np.stack([cols[k] for k in num], axis=1).astype(np.float32)
    strings = np.stack([cols[k] for k in txt], axis=1) if txt else None
    return engine.export.packed_function(export)(numbers, strings)


@pytest.mark.parametrize("name", ["typed-knn-tabm", "cv"])
def test_packed_only_keeps_the_packed_signature_and_its_predictions(exported, tmp_path, name):
    """MLflow's model: the packed signature alone (no per-column one, no float32 function)."""
    import tensorflow as tf

    from ottotrain.workflows.export import export as export_run

    run, export, test, _ = exported[name]
    out = tmp_path / "packed"
    export_run(run, out, packed_only=True)
    loaded = tf.saved_model.load(str(out))
    assert list(loaded.signatures) == ["packed"] and not hasattr(loaded, "serve_lite")
    cols = _raw_columns(export, test)
    np.testing.assert_allclose(_packed_predict(out, cols), _packed_predict(export, cols), atol=1e-6)


def test_export_creates_missing_parent_folders(exported, tmp_path):
    run, export, test, _ = exported["cv"]
    out = tmp_path / "a" / "b" / "cv"
    r = run_cli("export", run, out)
    assert r.exit_code == 0, r.output
    assert (out / "saved_model.pb").is_file() and [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["cv"]


def test_export_says_its_size_on_stderr_and_quiet_says_only_the_folder(exported, tmp_path):
    run = exported["cv"][0]
    loud, quiet = run_cli("export", run, tmp_path / "loud"), run_cli("export", run, tmp_path / "quiet", "-q")
    assert loud.exit_code == 0 and quiet.exit_code == 0, loud.output + quiet.output
    assert loud.stdout.strip() == str(tmp_path / "loud") and "model(s)" in loud.stderr
    assert quiet.stdout.strip() == str(tmp_path / "quiet") and quiet.stderr == ""


def test_knn_features_over_several_chunks_of_rows(exported):
    """More rows than one distance chunk (512), and a single row: as the Predictor gives them."""
    from ottotrain.data import load_test
    from ottotrain.workflows.predictor import open_run

    run, export, test, _ = exported["typed-knn-tabm"]
    predictor = open_run(run)
    s = predictor.state
    _, x = load_test(
        test, s.id_column, s.target_column, s.features, allow_missing=True, types=s.column_types()
    )
    cols = _raw_columns(export, test)
    reps = 1100 // len(x) + 1
    got = _packed_predict(export, {k: np.concatenate([v] * reps) for k, v in cols.items()})
    np.testing.assert_allclose(got, np.tile(predictor.predict_proba(x), (reps, 1)), atol=1e-5)
    np.testing.assert_allclose(
        _packed_predict(export, {k: v[3:4] for k, v in cols.items()}),
        predictor.predict_proba(x[3:4]),
        atol=1e-5,
    )


def test_no_knn_members_leaves_them_out_and_averages_the_rest(exported, tmp_path):
    """(Into an empty folder that exists: used, no temporary folder left beside it.)"""
    from ottotrain.data import load_test
    from ottotrain.workflows.predictor import open_run

    run, _, test, _ = exported["1.0-cv"]
    out = tmp_path / "no-knn"
    out.mkdir()
    r = run_cli("export", run, out, "--no-knn-members")
    assert r.exit_code == 0, r.output
    assert [p.name for p in tmp_path.iterdir()] == ["no-knn"] and (out / "saved_model.pb").is_file()
    assert out.stat().st_mode & 0o777 != 0o700  # not mkdtemp's private mode
    assert "4 model(s)" not in r.stderr and "(0 with KNN features)" in r.stderr
    predictor = open_run(run)
    predictor.members = [m for m in predictor.members if m.pre.state.knn is None]
    assert 0 < len(predictor.members) < 4
    s = predictor.state
    _, x = load_test(test, s.id_column, s.target_column, s.features)
    got = _packed_predict(out, _raw_columns(out, test))
    np.testing.assert_allclose(got, predictor.predict_proba(x), atol=1e-5)
    schema = json.loads((out / "assets.extra" / "ottotrain.json").read_text())
    assert [m["knn"] for m in schema["members"]] == [False] * len(predictor.members)
    from ottotrain.workflows.export import folder_bytes

    assert folder_bytes(out) < folder_bytes(exported["1.0-cv"][1])


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("fit", ["--no-knn-members"], "--no-knn-members: a fit run has one model"),
        ("cv-plain", ["--no-knn-members"], "no member of this run uses data.knn; leave the option out"),
        ("exists", [], "already exists and is not an empty folder; give a new folder name"),
        ("parent-is-a-file", [], "is a file, not a folder; give another output folder"),
        ("not-a-run", [], "status.json"),
    ],
)
def test_export_errors_are_one_line_and_leave_nothing_behind(exported, tmp_path, case, args, message):
    run = {"fit": exported["typed-knn-tabm"][0], "cv-plain": exported["cv"][0]}.get(
        case, exported["typed-knn-tabm"][0]
    )
    out = tmp_path / "out"
    if case == "exists":
        out.mkdir()
        (out / "file").write_text("x")
    elif case == "parent-is-a-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    elif case == "not-a-run":
        run = tmp_path
    r = run_cli("export", run, out, *args)
    assert message in error_line(r)
    left = {"exists": ["out"], "parent-is-a-file": ["file"]}.get(case, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == left


@pytest.mark.parametrize(
    "columns, keys",
    [
        (["feat_1", "cat_2"], ["feat_1", "cat_2"]),
        (["sepal length (cm)", "x.y", "a/b"], ["sepal_length__cm_", "x_y", "a_b"]),
        (["1st", "_x"], ["f_1st", "f__x"]),
        (["Age", "age", "a-ge", "a_ge"], ["Age", "age_2", "a_ge", "a_ge_2"]),
    ],
)
def test_signature_keys(columns, keys):
    from ottotrain.serving.schema import signature_keys

    assert list(signature_keys(columns).values()) == keys


def test_odd_column_names_are_valid_signature_keys(tmp_path):
    """TensorFlow accepts the keys signature_keys makes (it refuses 'sepal length' itself)."""
    from ottotrain.engine.env import tf
    from ottotrain.serving.schema import signature_keys

    keys = list(signature_keys(["sepal length", "Sepal-Length", "1x", "ok"]).values())
    spec = {k: tf.TensorSpec([None], tf.float32, name=k) for k in keys}
    mod = tf.Module()
    mod.f = tf.function(lambda d: {"s": tf.add_n(list(d.values()))}, input_signature=[spec])
    tf.saved_model.save(mod, str(tmp_path / "m"), signatures={"serving_default": mod.f})
    sig = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"]
    assert sorted(sig.structured_input_signature[1]) == sorted(keys)
