"""``ottotrain explain``: permutation importance by raw column, for fit, cv and stack runs."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import error_line, run_cli
from test_stack import KNN, stack_tree

from ottotrain.config import DataConfig
from ottotrain.data import load_labelled
from ottotrain.data.typed import ColumnTypes
from ottotrain.features import Preprocessor
from ottotrain.log import Log
from ottotrain.metrics import log_loss
from ottotrain.workflows.explain import explain, labelled_rows
from ottotrain.workflows.explain.groups import KNN_GROUP, NONZERO_GROUP, preprocessed_groups, raw_groups
from ottotrain.workflows.explain.measure import measure
from ottotrain.workflows.explain.scorers import MatrixScorer, RawScorer, permutation, stacked
from ottotrain.workflows.predictor import open_run
from ottotrain.workflows.stack.predict import open_stack

INFORMATIVE = {"a", "b", "cat"}  # the label is made of these; n1..n4 and m are noise


def make_table(path, rows, seed):
    """Four classes: (a + b > 0) + 2 * (cat is 'x'); m has gaps (so it gets a 'was missing' input)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"id": np.arange(rows)})
    for c in ("a", "n1", "b", "n2", "m", "n3", "n4"):
        df[c] = rng.normal(size=rows).round(4)
    df["cat"] = rng.choice(["x", "y", "z"], rows)
    df.loc[rng.random(rows) < 0.2, "m"] = np.nan
    label = (df["a"] + df["b"] > 0).astype(int) + 2 * (df["cat"] == "x")
    df["target"] = [f"k{v}" for v in label]
    df.to_csv(path, index=False)
    return path


def table_config(d, **data):
    return {
        "name": "known",
        "seed": 1,
        "data": {"train": str(d / "train.csv"), "test": str(d / "test.csv"), "transform": "none", **data},
        "model": {
            "layers": [
                {"Dense": {"units": 32, "activation": "relu"}},
                {"Dense": {"units": "n_classes"}},
                {"Activation": "softmax"},
            ]
        },
        "train": {"optimizer": {"name": "adam", "learning_rate": 0.02}, "epochs": 12, "batch_size": 64},
    }


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """The generated table (train, test, a labelled holdout) and a fit run on it."""
    d = tmp_path_factory.mktemp("known")
    make_table(d / "train.csv", 900, 0)
    make_table(d / "holdout.csv", 400, 1)
    pd.read_csv(d / "holdout.csv").drop(columns="target").to_csv(d / "test.csv", index=False)
    (d / "fit.yaml").write_text(yaml.safe_dump(table_config(d)))
    r = run_cli("fit", d / "fit.yaml", "--run-dir", d / "fit", "-q")
    assert r.exit_code == 0, r.output
    return d


def test_a_fit_run_ranks_the_label_columns_first_and_writes_its_files(known):
    r = run_cli("explain", known / "fit", known / "holdout.csv", "--repeats", 3, "-q")
    assert r.exit_code == 0, r.output
    out = known / "fit" / "explain"
    table = pd.read_csv(out / "importance.csv")
    assert set(table["group"][:3]) == INFORMATIVE, table[["group", "mean"]]
    assert list(table["rank"]) == list(range(1, 9)) and table["mean"].is_monotonic_decreasing
    assert (table["ci_low"][:3] > 0.05).all() and (table["ci_low"] <= table["mean"]).all()
    assert [c for c in table.columns if c.startswith("loss_")] == [f"loss_k{i}" for i in range(4)]
    cat = table.set_index("group").loc["cat"]
    assert cat["columns"] == "cat=other;cat=x;cat=y;cat=z"
    assert table.set_index("group").loc["m", "columns"] == "m;m:missing"
    # cat separates k2/k3 from k0/k1: every class loses when it is shuffled.
    assert (cat[[f"loss_k{i}" for i in range(4)]] > 0).all()
    info = json.loads((out / "importance.json").read_text())
    assert info["kind"] == "fit" and info["rows"] == 400 and info["repeats"] == 3
    assert (out / "importance.png").read_bytes()[:4] == b"\x89PNG"
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("log_loss=") and len(lines) == 2 + 8  # header, column names, 8 groups
    assert {line.split()[1] for line in lines[2:5]} == INFORMATIVE


def test_blocks_of_the_preprocessed_rows_give_what_permuting_the_raw_column_gives(known):
    """Without TF-IDF, KNN or the non-zero count, every derived input is a function of its raw
    column: permuting the group's block is permuting the raw column (same permutation)."""
    predictor = open_run(known / "fit")
    df = pd.read_csv(known / "holdout.csv")[:120]
    df.to_csv(known / "part.csv", index=False)
    x, y = load_labelled(known / "part.csv", predictor.state)
    blocks = MatrixScorer(predictor.members, x)
    raw = RawScorer(predictor.predict_proba, x, raw_groups(list(predictor.state.features)))
    assert [g.name for g in blocks.groups] == [g.name for g in raw.groups]
    a, b = measure(blocks, y, 4, 2, seed=3), measure(raw, y, 4, 2, seed=3)
    np.testing.assert_allclose(a.increase, b.increase, atol=1e-6)
    np.testing.assert_allclose(a.class_increase, b.class_increase, atol=1e-6)
    assert np.abs(a.increase).max() > 0.01


def test_the_same_seed_gives_the_same_importances_and_out_writes_elsewhere(known, tmp_path):
    one = explain(known / "fit", known / "holdout.csv", repeats=2, rows=200, seed=5, out=tmp_path / "e")
    two = explain(known / "fit", known / "holdout.csv", repeats=2, rows=200, seed=5, out=tmp_path / "e")
    assert one.rows == 200 and [g.repeats for g in one.groups] == [g.repeats for g in two.groups]
    assert {p.parent for p in one.files} == {tmp_path / "e"}


def _preprocessor():
    """A fitted Preprocessor with every kind of derived input: TF-IDF, the non-zero count, KNN,
    a 'was missing' indicator (f1) and a one-hot categorical column (c)."""
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, (60, 4)).astype(np.float32)
    x[:, 3] = rng.integers(0, 3, 60)  # c's codes
    x[rng.random(60) < 0.2, 1] = np.nan
    y = rng.integers(0, 3, 60)
    cfg = DataConfig(
        train="t.csv",
        transform="log1p",
        tfidf=True,
        nonzero_count=True,
        knn={"k": [2, 4]},
        categorical={"min_count": 1},
    )
    types = ColumnTypes(["f0", "f1", "f2"], {"c": ["p", "q", "r"]}, {}, {})
    return Preprocessor.fit(x, cfg, ["f0", "f1", "f2", "c"], ["a", "b", "d"], y, types), x


def test_a_group_is_its_columns_derived_inputs_permuted_with_one_permutation():
    pre, x = _preprocessor()
    groups = preprocessed_groups(pre)
    assert [g.name for g in groups] == ["f0", "f1", "f2", "c", NONZERO_GROUP, KNN_GROUP]
    by = {g.name: g for g in groups}
    assert by["f1"].inputs == ["f1", "f1:tfidf", "f1:missing"] and by["f0"].inputs == ["f0", "f0:tfidf"]
    assert by["c"].inputs == ["c=other", "c=p", "c=q", "c=r"]
    assert len(by[KNN_GROUP].inputs) == 3 * 2 and by[NONZERO_GROUP].inputs == [NONZERO_GROUP]
    assert sorted(np.concatenate([g.columns for g in groups])) == list(range(pre.n_outputs))
    z = pre.transform(x)
    stale = np.concatenate([by[KNN_GROUP].columns, by[NONZERO_GROUP].columns, np.arange(3, 6)])  # row-wide
    for j, g in enumerate(groups[:4]):
        perm = permutation(0, 0, j, len(x))
        got = stacked(z, [(j, perm)], lambda i: groups[i].columns)
        rest = np.setdiff1d(np.arange(z.shape[1]), g.columns)
        np.testing.assert_array_equal(got[:, g.columns], z[perm][:, g.columns])  # one permutation
        np.testing.assert_array_equal(got[:, rest], z[:, rest])  # the other groups untouched
        # Permuting the raw column instead: the same values in every input that is a function of
        # that column alone; the row-wide inputs (TF-IDF, count, KNN) are not recomputed here.
        xp = x.copy()
        xp[:, j] = x[perm, j]
        alone = np.setdiff1d(np.arange(z.shape[1]), stale)
        np.testing.assert_allclose(got[:, alone], pre.transform(xp)[:, alone], rtol=1e-6)


def test_a_cv_run_with_an_embedding_ranks_the_label_columns_first(known):
    cfg = table_config(known, categorical={"one_hot_max": 2})  # cat: an embedding index
    (known / "cv.yaml").write_text(yaml.safe_dump(cfg))
    r = run_cli("cv", known / "cv.yaml", "--folds", 2, "--run-dir", known / "cv", "-q")
    assert r.exit_code == 0, r.output
    result = explain(known / "cv", known / "holdout.csv", repeats=2)
    assert result.kind == "cv" and {g.group for g in result.groups[:3]} == INFORMATIVE
    assert next(g for g in result.groups if g.group == "cat").inputs == ["cat:embedding"]


def test_knn_features_are_one_group_and_a_tabm_run_scores_as_predict(known):
    cfg = table_config(known, knn={"k": [3]})
    cfg["model"]["ensemble"] = {"k": 2}  # TabM-style: explain scores the members' mean, as predict
    cfg["train"]["epochs"] = 2
    (known / "knn.yaml").write_text(yaml.safe_dump(cfg))
    r = run_cli("fit", known / "knn.yaml", "--run-dir", known / "knn", "-q")
    assert r.exit_code == 0, r.output
    result = explain(known / "knn", known / "holdout.csv", repeats=1, rows=50)
    names = [g.group for g in result.groups]
    assert len(names) == 9 and names.count(KNN_GROUP) == 1
    knn = next(g for g in result.groups if g.group == KNN_GROUP)
    assert knn.inputs == [f"knn:k{i}:k3" for i in range(4)] and np.isnan(knn.ci_low)
    predictor = open_run(known / "knn")
    x, y = labelled_rows(known / "holdout.csv", predictor.state, 50, 0, Log(0))
    assert result.base_log_loss == pytest.approx(log_loss(y, predictor.predict_proba(x)), abs=1e-6)


def test_a_stack_permutes_raw_columns_through_its_own_prediction_path(tiny_data, tmp_path):
    cfg = stack_tree(tiny_data, [KNN])
    (tmp_path / "stack.yaml").write_text(yaml.safe_dump(cfg))
    r = run_cli("stack", tmp_path / "stack.yaml", "--run-dir", tmp_path / "run", "-q")
    assert r.exit_code == 0, r.output
    result = explain(tmp_path / "run", tiny_data["train"], repeats=2, rows=80, seed=2)
    assert result.kind == "stack" and len(result.groups) == 93
    assert all(g.inputs == [g.group] for g in result.groups)
    # One group by hand: the stack's predict on the raw rows with that column permuted.
    top = result.groups[0]
    stack = open_stack(tmp_path / "run")
    x, y = labelled_rows(tiny_data["train"], stack.state, 80, 2, Log(0))
    j = list(stack.state.features).index(top.group)
    xp = x.copy()
    xp[:, j] = x[permutation(2, 1, j, len(x)), j]
    want = log_loss(y, stack.predict_proba(xp)) - log_loss(y, stack.predict_proba(x))
    assert top.repeats[1] == pytest.approx(want, abs=1e-9) and top.mean > 0


BAD = [
    ("no target", lambda df: df.drop(columns="target"), (), "no target column 'target'"),
    ("missing column", lambda df: df.drop(columns="n2"), (), "n2"),
    ("unexpected column", lambda df: df.assign(extra=1), (), "extra"),
    ("too few rows", lambda df: df[:4], (), "4 labelled row(s); explain needs at least 10"),
    ("repeats", lambda df: df, ("--repeats", 0), "--repeats 0: needs at least 1 permutation"),
    ("rows", lambda df: df, ("--rows", 3), "--rows 3: needs at least 10 rows"),
]


@pytest.mark.parametrize("change, args, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(known, tmp_path, change, args, message):
    change(pd.read_csv(known / "holdout.csv")).to_csv(tmp_path / "bad.csv", index=False)
    r = run_cli("explain", known / "fit", tmp_path / "bad.csv", *args, "-o", tmp_path / "out")
    assert message in error_line(r)
    assert not (tmp_path / "out").exists()
