"""Typed columns: detection and declaration (data/typed.py), vocabularies (features/categories.py),
and a table with categories through fit, predict, cv, check and summary."""

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from ottotrain.config import load_config
from ottotrain.data import load_test, load_train
from ottotrain.data.synth import make_data
from ottotrain.errors import DataError, RunError
from ottotrain.features import Preprocessor
from ottotrain.features.categories import fit_category, indices
from ottotrain.runs.safety import check_model_file
from tests.conftest import ROOT, error_line, tiny_config

N = 40


def _table(**cols) -> pd.DataFrame:
    base = {"id": range(1, N + 1), "f1": [i % 7 for i in range(N)]}
    return pd.DataFrame({**base, **cols, "target": ["AB"[i % 2] for i in range(N)]})


def _data_cfg(tmp_path, train, **data):
    p = tmp_path / "c.yaml"
    cfg = tiny_config({"train": train, "test": train})
    cfg["data"] = {"train": str(train), **data}
    import yaml

    p.write_text(yaml.safe_dump(cfg))
    return load_config(p).data


def _load(tmp_path, df, **data):
    path = tmp_path / "train.csv"
    df.to_csv(path, index=False)
    return load_train(_data_cfg(tmp_path, path, **data))


COLOR = ["red", "green", "blue", ""] * (N // 4)

# (id, extra columns, data keys, {column: type}, na_tokens)
DETECTED = [
    ("text", {"c": COLOR}, {}, {"c": "categorical"}, {}),
    ("booleans", {"c": [True, False] * (N // 2)}, {}, {"c": "categorical"}, {}),
    ("few-integers-stay-numeric", {"c": [1, 2, 3, 4] * (N // 4)}, {}, {"c": "numeric"}, {}),
    (
        "declared-categorical",
        {"c": [1, 2, 3, 4] * (N // 4)},
        {"columns": {"c": "categorical"}},
        {"c": "categorical"},
        {},
    ),
    ("punctuation-is-missing", {"c": ["1.5", "?", "2", "3"] * (N // 4)}, {}, {"c": "numeric"}, {"c": ["?"]}),
    (
        "na-values",
        {"c": ["1.5", "missing", "2", "3"] * (N // 4)},
        {"na_values": ["missing"]},
        {"c": "numeric"},
        {},
    ),
    ("declared-drop", {"c": COLOR}, {"columns": {"c": "drop"}}, {"c": "dropped"}, {}),
    ("near-unique-text-dropped", {"c": [f"name {i}" for i in range(N)]}, {}, {"c": "dropped"}, {}),
]


@pytest.mark.parametrize("cols,data,want,tokens", [c[1:] for c in DETECTED], ids=[c[0] for c in DETECTED])
def test_column_types_are_detected_or_declared(tmp_path, cols, data, want, tokens):
    train = _load(tmp_path, _table(**cols), **data)
    ((col, kind),) = want.items()
    types = train.types
    got = "dropped" if col in types.dropped else "categorical" if col in types.categorical else "numeric"
    assert got == kind and types.na_tokens == tokens
    assert (col in train.features) == (kind != "dropped")
    if kind == "categorical" and col in train.features:
        j = train.features.index(col)
        values = types.categorical[col]
        assert values == sorted(values) and "" not in values  # an empty cell is missing
        codes = train.x[:, j]
        assert np.isnan(codes).sum() == sum(v in ("", None) for v in cols[col])
    if tokens:
        assert np.isnan(train.x[:, train.features.index(col)]).sum() == N // 4
    if col in types.dropped and "columns" not in data:
        assert any(f"column '{col}' dropped" in n for n in train.notes)


# (id, extra columns or edit, data keys, message fragments)
BAD = [
    (
        "word-in-numbers",
        {"c": ["1", "2", "3", "4"] * (N // 4 - 1) + ["1", "2", "abc", "4"]},
        {},
        ["column 'c', line 40", "non-numeric value 'abc' in a column of numbers", "{c: categorical}"],
    ),
    (
        "unknown-declared",
        {"color": COLOR},
        {"columns": {"colour": "categorical"}},
        ["data.columns", "'colour'", "did you mean 'color'"],
    ),
    ("all-dropped", {}, {"columns": {"f1": "drop"}}, ["every feature column is dropped"]),
]


@pytest.mark.parametrize("cols,data,fragments", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_typed_input_is_one_clear_error(tmp_path, cols, data, fragments):
    with pytest.raises(DataError) as e:
        _load(tmp_path, _table(**cols), **data)
    for frag in fragments:
        assert frag in str(e.value), str(e.value)


def test_declaring_the_id_column_is_a_config_error(cli, write_config, tiny_data):
    cfg = tiny_config(tiny_data)
    cfg["data"]["columns"] = {"id": "categorical"}
    line = error_line(cli("check", write_config(cfg)))
    assert "data.columns: 'id' is data.id_column" in line


def test_test_file_is_read_as_fit_read_the_training_file(tmp_path):
    train = _load(tmp_path, _table(c=COLOR, n=["1", "?", "2", "3"] * (N // 4), b=[True, False] * (N // 2)))
    test = tmp_path / "test.csv"
    pd.DataFrame(
        {
            "id": [1, 2, 3],
            "f1": [1, 2, 3],
            "c": ["red", "purple", None],
            "n": ["?", "5", None],
            "b": [True] * 3,
        }
    ).to_csv(test, index=False)
    ids, x = load_test(test, "id", "target", train.features, allow_missing=True, types=train.types)
    c, n = train.features.index("c"), train.features.index("n")
    assert (x[:, train.features.index("b")] >= 0).all()  # the cells' text, as at fit: True, not true
    assert x[0, c] == train.types.categorical["c"].index("red")
    assert x[1, c] == -1 and np.isnan(x[2, c])  # unseen value; missing
    assert np.isnan(x[0, n]) and x[1, n] == 5 and np.isnan(x[2, n])
    pd.DataFrame({"id": [1], "f1": [1], "c": ["red"], "n": ["five"], "b": [True]}).to_csv(test, index=False)
    with pytest.raises(
        DataError, match=r"column 'n', line 2: non-numeric value 'five'; this column was numbers"
    ):
        load_test(test, "id", "target", train.features, allow_missing=True, types=train.types)


def test_parquet_types_come_from_its_schema(tmp_path):
    df = _table(c=COLOR, b=[True, False] * (N // 2), n=np.arange(N) / 3)
    df["c"] = df["c"].replace("", None)
    df.to_parquet(tmp_path / "train.parquet")
    train = load_train(_data_cfg(tmp_path, tmp_path / "train.parquet"))
    assert set(train.types.categorical) == {"c", "b"} and train.types.categorical["b"] == ["false", "true"]
    assert "n" in train.types.numeric


class _Cat:
    one_hot_max, min_count, embedding_dim, embedding_max = 4, 2, None, 100


def test_vocabulary_pools_rare_and_unseen_values_and_keeps_missing():
    values = ["a", "b", "c"]
    codes = np.array([0, 0, 1, 2, 2, np.nan, np.nan, 0], dtype=np.float32)  # 'b' once: rare
    s = fit_category("c", values, codes, _Cat)
    assert s.index == [1, 0, 2] and s.missing == 3 and s.size == 4 and s.encoding == "one_hot"
    got = indices(s, np.array([0, 1, 2, -1, np.nan], dtype=np.float32))
    assert got.tolist() == [1, 0, 2, 0, 3]
    many = fit_category("c", [str(i) for i in range(50)], np.repeat(np.arange(50.0), 2), _Cat)
    assert many.encoding == "embedding" and many.size == 51 and many.dim == round(1.6 * 51**0.56)


def test_preprocessing_round_trips_through_json(tmp_path):
    train = _load(tmp_path, _table(c=COLOR, n=["1", "?", "2", "3"] * (N // 4)))
    cfg = _data_cfg(tmp_path, tmp_path / "train.csv")
    pre = Preprocessor.fit(train.x, cfg, train.features, train.classes, train.y, train.types)
    again = Preprocessor.from_json(pre.to_json())
    np.testing.assert_array_equal(pre.transform(train.x), again.transform(train.x))
    assert again.state.column_types() == train.types
    # f1, n, its 'was missing' column; then c one-hot: other, blue, green, red, missing
    assert pre.n_outputs == 3 + 5 and not pre.input_block().sizes


@pytest.fixture(scope="module")
def cat_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cat")
    train, test = make_data(
        d, rows=600, test_rows=200, seed=3, n_features=8, categorical=(3, 40), missing=0.05
    )
    return {"train": train, "test": test, "dir": d}


def test_a_table_with_categories_fits_predicts_and_summarises(cat_data, cli, write_config, tmp_path):
    cfg = tiny_config(cat_data, epochs=1)
    runs = tmp_path / "runs"
    r = cli("fit", write_config(cfg), "--runs-root", runs)
    assert r.exit_code == 0, r.output
    assert "never seen at fit in column(s): cat_1" in r.stderr  # make-data puts unseen values in test
    (run,) = runs.iterdir()
    state = json.loads((run / "preprocess.json").read_text())
    assert [(c["column"], c["encoding"]) for c in state["categorical"]] == [
        ("cat_1", "one_hot"),
        ("cat_2", "embedding"),
    ]
    out = tmp_path / "sub.parquet"
    r = cli("predict", run, cat_data["test"], "-o", out)
    assert r.exit_code == 0 and "count as the 'other' category" in r.stderr, r.output
    got, want = pd.read_parquet(out), pd.read_csv(run / "submission.csv")
    assert len(got) == 200
    np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(float), atol=1e-6)
    assert "CategoryEmbedding" in cli("summary", run).stdout
    assert cli("evaluate", run, cat_data["train"]).exit_code == 0


def test_mlp_yaml_on_a_table_without_numbers_leaves_its_numeric_embedding_out(cli, tmp_path):
    """configs/mlp.yaml opens with a PiecewiseLinearEmbedding: a table of categories only
    still fits and predicts, with one line saying the embedding is left out."""
    df = pd.DataFrame(
        {"c": COLOR, "d": [f"v{i % 3}" for i in range(N)], "t": ["AB"[i % 2] for i in range(N)]}
    )
    df.to_csv(tmp_path / "train.csv", index=False)
    df.drop(columns="t").to_csv(tmp_path / "test.csv", index=False)
    sets = [f"data.train={tmp_path / 'train.csv'}", f"data.test={tmp_path / 'test.csv'}"]
    sets += ["data.id_column=null", "data.target_column=t", "train.epochs=1"]
    args = [a for s in sets for a in ("--set", s)]
    r = cli("fit", ROOT / "configs" / "mlp.yaml", *args, "--run-dir", tmp_path / "run")
    assert r.exit_code == 0, r.output
    assert "no numeric column to embed; model.layers[0] (PiecewiseLinearEmbedding) is left out" in r.stderr
    assert "PiecewiseLinearEmbedding" not in (tmp_path / "run" / "summary.txt").read_text()
    assert len(pd.read_csv(tmp_path / "run" / "submission.csv")) == N


def test_check_prints_every_column_and_the_input_block(cat_data, cli, write_config):
    r = cli("check", write_config(tiny_config(cat_data)))
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line.startswith("  cat_")}
    assert rows["cat_1"][0] == "categorical" and int(rows["cat_1"][1]) == 3
    assert "cat_1 one-hot (" in r.stdout and "cat_2 embedding (" in r.stdout


def test_cv_with_categories_predicts_from_every_member(cat_data, cli, write_config, tmp_path):
    cfg = tiny_config({**cat_data, "test": cat_data["test"]}, epochs=1)
    cfg["data"]["test"] = str(cat_data["test"])
    r = cli("cv", write_config(cfg), "--folds", 2, "--runs-root", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    (run,) = (tmp_path / "runs").iterdir()
    out = tmp_path / "sub.csv"
    assert cli("predict", run, cat_data["test"], "-o", out).exit_code == 0
    np.testing.assert_allclose(
        pd.read_csv(out).to_numpy(float), pd.read_csv(run / "submission.csv").to_numpy(float), atol=1e-6
    )


def test_only_ottotrains_own_layers_load_from_outside_keras(tmp_path):
    def archive(node):
        path = tmp_path / "m.keras"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", json.dumps({"config": {"layers": [node]}}))
        return path

    own = {"module": "ottotrain.engine.layers", "class_name": "CategoryEmbedding"}
    check_model_file(archive({**own, "registered_name": "ottotrain>CategoryEmbedding"}))
    for bad in (
        {**own, "registered_name": "ottotrain>Other"},
        {**own, "class_name": "Other", "registered_name": "ottotrain>CategoryEmbedding"},
        {**own, "module": "evil", "registered_name": "ottotrain>CategoryEmbedding"},
    ):
        with pytest.raises(RunError, match="refusing"):
            check_model_file(archive(bad))


def test_a_row_number_column_without_data_id_column_is_warned_about(tmp_path):
    train = _load(tmp_path, _table(c=COLOR), id_column=None)
    assert "id" in train.features  # still a feature: the warning says how to drop it
    (note,) = [n for n in train.notes if "looks like a row id" in n]
    assert "column 'id'" in note and "data.columns: {id: drop}" in note
    assert not any("looks like a row id" in n for n in _load(tmp_path, _table(c=COLOR)).notes)
