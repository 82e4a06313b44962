"""``ottotrain export`` and ``serve`` on a stack run: one SavedModel of the whole stack.

One tiny stack (typed columns with missing cells, two Keras members, a logistic and a net at
level 2 that join raw columns, the greedy top) is trained once; copies of it with other top
weights put every model into the graph, or a LightGBM member in or out of the top's use.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import error_line, run_cli, subprocess_env
from tests.export_runs import DENSE, TRAIN, request_rows
from tests.test_export import LOADER
from tests.test_serve import Served, _check_predictions
from tests.test_stack import LGBM, stack_tree, write

LEVEL2 = [
    {"name": "lr", "logistic": {"C": 0.5}, "features": ["feat_1", "feat_4"]},
    {"name": "l2net", "features": ["feat_2"], "net": {"model": {"layers": DENSE}, "train": TRAIN}},
]
TOP = {"method": "greedy", "rounds": 10}


def _tree(data, members, level2):
    """test_stack's tiny stack config, on 2 folds (every Keras model trains once less)."""
    return stack_tree(data, members, level2=level2, top=TOP) | {"cv": {"folds": 2}}


def _with_weights(run, to, weights):
    """A copy of the stack run ``run`` whose top weights the models as ``weights`` says."""
    shutil.copytree(run, to)
    top = json.loads((to / "top.json").read_text())
    top["weights"] = {n: weights.get(n, 0.0) for n in top["weights"]}
    (to / "top.json").write_text(json.dumps(top))
    return to


def _grow(d, data, members, run):
    """``run`` copied and resumed with a LightGBM member added (only it trains) and the logistic
    level 2 alone."""
    grown = d / "grown"
    shutil.copytree(run, grown)
    config = write(d / "grown.yaml", _tree(data, [*members, LGBM], LEVEL2[:1]))
    r = run_cli("stack", config, "--resume", grown, "-q")
    assert r.exit_code == 0, r.output
    return grown


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """{case: (run, export or None, predict's submission or None)}, and the test file: the stack as
    trained, with every model weighted, and grown by a LightGBM member the top does not use or
    uses (through the logistic level 2)."""
    from ottotrain.data.synth import make_data

    d = tmp_path_factory.mktemp("stack-export")
    train, test = make_data(
        d / "data", rows=300, seed=5, test_rows=40, n_classes=3, n_features=6, missing=0.05, categorical=(4,)
    )
    data = {"train": str(train), "test": str(test)}
    write(d / "net.yaml", {"data": data, "model": {"layers": DENSE}, "train": TRAIN})
    members = [
        {"name": "a", "config": "net.yaml"},
        {"name": "b", "config": "net.yaml", "set": {"data.transform": "sqrt", "data.scaling": "minmax"}},
    ]
    config = write(d / "stack.yaml", _tree(data, members, LEVEL2))
    r = run_cli("stack", config, "--run-dir", d / "run", "-q")
    assert r.exit_code == 0, r.output
    grown = _grow(d, data, members, d / "run")
    runs = {
        "every": _with_weights(d / "run", d / "every", {"a": 0.1, "b": 0.2, "lr": 0.3, "l2net": 0.4}),
        "lgbm-unused": _with_weights(grown, d / "unused", {"a": 0.5, "b": 0.5}),
        "lgbm-used": _with_weights(grown, d / "used", {"a": 0.5, "lr": 0.5}),
    }
    cases = {"trained": (d / "run", None, None)}
    for name, run in runs.items():
        if name == "lgbm-used":
            cases[name] = (run, None, None)
            continue
        r = run_cli("export", run, d / "exports" / name, "-q")
        assert r.exit_code == 0, r.output
        sub = d / f"{name}.csv"
        assert run_cli("predict", run, test, "-o", sub, "-q").exit_code == 0
        cases[name] = (run, d / "exports" / name, sub)
    return cases, test


def test_the_stack_export_alone_predicts_what_predict_writes(stacks, tmp_path):
    cases, test = stacks
    exported = {n: c for n, c in cases.items() if c[1] is not None}
    jobs = [[str(e), str(test)] for _, e, _ in exported.values()]
    r = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(jobs)],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    for name, (_, export, sub) in exported.items():
        want = pd.read_csv(sub)
        assert got[str(export)]["classes"] == list(want.columns[1:]), name
        p = np.array(got[str(export)]["p"])
        np.testing.assert_allclose(p, want.iloc[:, 1:].to_numpy(), atol=1e-5, err_msg=name)


def test_the_export_holds_what_the_top_uses_and_nothing_else(stacks):
    from ottotrain.serving.schema import ModelSchema

    cases, _ = stacks
    every = ModelSchema.read(cases["every"][1])
    assert every.kind == "stack"
    weights = [(m.name, m.weight) for m in every.members]
    assert weights == [("a", 0.1), ("b", 0.2), ("lr", 0.3), ("l2net", 0.4)]
    assert [c.kind for c in every.columns][-1] == "categorical" and "id" in every.ignored
    unused = ModelSchema.read(cases["lgbm-unused"][1])
    assert [(m.name, m.weight) for m in unused.members] == [("a", 0.5), ("b", 0.5)]


@pytest.mark.parametrize("target", ["run", "export"])
def test_serve_answers_what_predict_writes(stacks, target):
    cases, test = stacks
    run, export, sub = cases["every"]
    s = Served(run if target == "run" else export, "stack")
    try:
        rows = request_rows(test, s.schema)
        r = s.client.post("/v1/models/stack:predict", json={"instances": rows})
        assert r.status_code == 200, r.text
        _check_predictions(r.json(), pd.read_csv(sub))
    finally:
        s.stop()


REFUSED = (
    "member 'lgbm' is a LightGBM model, not a TensorFlow graph, and the top uses it (read by level 2 "
    "'lr'); {command} {verb} a stack whose used members are all Keras nets; 'ottotrain predict {run} TEST' "
    "predicts with the stack"
)


def test_a_stack_whose_top_uses_lightgbm_is_refused_in_one_line(stacks, tmp_path):
    run = stacks[0]["lgbm-used"][0]
    line = error_line(run_cli("export", run, tmp_path / "out"))
    assert line == f"Error: {run}: " + REFUSED.format(command="export", verb="writes", run=run)
    assert not (tmp_path / "out").exists()
    r = run_cli("serve", run, "--port", "0", "--workers", "2")
    assert error_line(r) == f"Error: {run}: " + REFUSED.format(command="serve", verb="serves", run=run)
    assert "Serving" not in r.output


def test_a_stack_export_refuses_no_knn_members(stacks, tmp_path):
    run = stacks[0]["trained"][0]
    line = error_line(run_cli("export", run, tmp_path / "out", "--no-knn-members"))
    assert line == (
        f"Error: {run}: --no-knn-members: a stack's members are exported whole, as the stack predicts "
        "with them; leave the option out"
    )
    assert not (tmp_path / "out").exists()


def _damage(run, change):
    if change == "ghost":
        top = json.loads((run / "top.json").read_text())
        (run / "top.json").write_text(json.dumps(top | {"weights": top["weights"] | {"ghost": 1.0}}))
    elif change == "no-level2":
        (run / "level2" / "lr" / "level2.json").unlink()
    else:
        shutil.rmtree(run / "members" / "b")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("ghost", "{run}: the top uses ghost, which the run does not hold"),
        ("no-level2", "{run}/level2/lr/level2.json: missing; the stack's level 2 did not finish"),
        ("no-member", "{run}/members/b: missing; the stack's member 'b' is not in the run"),
    ],
)
def test_a_damaged_stack_is_refused_in_one_line(stacks, tmp_path, change, message):
    run = _with_weights(stacks[0]["trained"][0], tmp_path / "run", {"b": 0.5, "lr": 0.5})
    _damage(run, change)
    assert error_line(run_cli("export", run, tmp_path / "out")) == "Error: " + message.format(run=run)
    assert not (tmp_path / "out").exists()
