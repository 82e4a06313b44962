"""Nearest-neighbour features (ottotrain/knn.py) and their place in preprocessing and runs."""

import numpy as np
import pytest
import yaml
from conftest import error_line, run_cli, tiny_config

from ottotrain.config import DataConfig
from ottotrain.errors import DataError, RunError
from ottotrain.features import Preprocessor, knn

KS = [1, 2, 3]


def _naive(q, ref, yref, ks, n_classes, skip=None):
    """The definition, one row and one class at a time."""
    out = []
    for i, row in enumerate(knn.space(q)):
        feats = []
        for c in range(n_classes):
            rows = [j for j in np.flatnonzero(yref == c) if skip is None or j != skip[i]]
            d = np.sort(np.sqrt(((knn.space(ref[rows]) - row) ** 2).sum(axis=1)))
            feats += [np.log(d[: min(k, len(d))].mean() + knn.EPS) for k in ks]
        out.append(feats)
    return np.array(out)


@pytest.fixture
def counts():
    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, size=(60, 7)).astype(np.float32)
    y = np.r_[np.zeros(30, int), np.ones(27, int), np.full(3, 2)]  # class 2: fewer rows than k
    return x, rng.permutation(y)


def test_features_match_the_definition(counts):
    x, y = counts
    ref, order = knn.Reference.fit(x, y, 3)
    new = np.random.default_rng(1).poisson(1.0, size=(9, 7)).astype(np.float32)
    np.testing.assert_allclose(knn.features(ref, new, KS), _naive(new, x, y, KS, 3), rtol=1e-5, atol=1e-6)


def test_training_rows_leave_themselves_out(counts):
    x, y = counts
    ref, order = knn.Reference.fit(x, y, 3)
    self_rows = np.empty_like(order)
    self_rows[order] = np.arange(len(order))
    got = knn.features(ref, x, KS, self_rows)
    np.testing.assert_allclose(got, _naive(x, x, y, KS, 3, skip=np.arange(len(x))), rtol=1e-5, atol=1e-6)
    # without leaving out, each row is its own nearest neighbour: distance 0
    assert (knn.features(ref, x, [1])[np.arange(len(x)), y] == np.float32(np.log(knn.EPS))).all()


def test_duplicate_rows_are_at_distance_zero_exactly():
    x = np.array([[3, 0, 50], [3, 0, 50], [0, 9, 1], [1, 9, 0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    ref, order = knn.Reference.fit(x, y, 2)
    self_rows = np.empty_like(order)
    self_rows[order] = np.arange(len(order))
    f = knn.features(ref, x, [1], self_rows)
    assert f[0, 0] == f[1, 0] == np.float32(np.log(knn.EPS))  # its twin, not a rounding error


def _data_cfg(**kw):
    return DataConfig(train="t.csv", transform="log1p", knn={"k": KS}, **kw)


def test_preprocessor_saves_the_reference_beside_its_json(counts, tmp_path):
    x, y = counts
    pre = Preprocessor.fit(x, _data_cfg(tfidf=True), [f"f{i}" for i in range(7)], ["a", "b", "c"], y)
    assert pre.n_outputs == 7 * 2 + 3 * len(KS)
    z_fit = pre.transform(x, fitted_rows=True)
    assert z_fit.shape == (60, pre.n_outputs)
    np.testing.assert_allclose(z_fit.mean(axis=0), 0, atol=1e-5)  # scaled on the left-out features
    new = x[:5] + 1
    z_new = pre.transform(new)
    pre.save(tmp_path / "preprocess.json")
    sidecars = list(tmp_path.glob("knn-*.npz"))
    assert [p.name for p in sidecars] == [pre.state.knn.reference]
    again = Preprocessor.from_json((tmp_path / "preprocess.json").read_text(), tmp_path / "preprocess.json")
    np.testing.assert_array_equal(again.transform(new), z_new)
    # a training row seen as a new row finds itself: the features differ
    assert not np.allclose(pre.transform(x[:5]), z_fit[:5])


@pytest.mark.parametrize(
    "damage,fragment",
    [
        ("missing", "cannot read the KNN reference rows"),
        ("swapped", "contents do not match its name"),
        ("path-name", "not a KNN reference file name"),
    ],
)
def test_damaged_reference_is_a_clear_error(damage, fragment, counts, tmp_path):
    x, y = counts
    pre = Preprocessor.fit(x, _data_cfg(), [f"f{i}" for i in range(7)], ["a", "b", "c"], y)
    pre.save(tmp_path / "preprocess.json")
    side = tmp_path / pre.state.knn.reference
    text = (tmp_path / "preprocess.json").read_text()
    if damage == "missing":
        side.unlink()
    elif damage == "swapped":
        knn.Reference(np.zeros((2, 7)), [1, 1, 0]).save(side)
    else:
        text = text.replace(side.name, "../../etc/x.npz")
    loaded = Preprocessor.from_json(text, tmp_path / "preprocess.json")
    with pytest.raises(RunError, match=fragment):
        loaded.transform(x[:2])


def test_a_class_with_one_training_row_is_refused(counts):
    x, y = counts
    y = np.where(y == 2, 0, y)
    y[0] = 2
    with pytest.raises(DataError, match=r"data.knn: class 'c' has 1 training row"):
        Preprocessor.fit(x, _data_cfg(), [f"f{i}" for i in range(7)], ["a", "b", "c"], y)


def test_fit_predict_and_cv_with_knn_through_the_cli(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data)
    cfg["data"]["knn"] = {"k": [1, 4]}
    path = tmp_path / "knn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = run_cli("fit", path, "--run-dir", tmp_path / "run", "-q")
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "run").glob("knn-*.npz"))) == 1
    pre = Preprocessor.from_json((tmp_path / "run" / "preprocess.json").read_text())
    r = run_cli("summary", path)  # the width without training: counts + 2 distances per class
    assert r.exit_code == 0 and f"{pre.n_outputs} inputs" in r.output, r.output
    assert pre.n_outputs == len(pre.state.features) + 2 * len(pre.state.classes)
    r = run_cli("check", path)
    assert r.exit_code == 0 and "KNN features (k = [1, 4])" in r.output, r.output
    r = run_cli("predict", tmp_path / "run", tiny_data["test"], "-o", tmp_path / "sub.csv")
    assert r.exit_code == 0, r.output
    a = np.loadtxt(tmp_path / "sub.csv", delimiter=",", skiprows=1)
    b = np.loadtxt(tmp_path / "run" / "submission.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(a, b, atol=2e-6)  # a reloaded run predicts what fit wrote

    r = run_cli("cv", path, "--folds", 2, "--seeds", 2, "--run-dir", tmp_path / "cv", "-q")
    assert r.exit_code == 0, r.output
    # one reference per fold, shared by that fold's members
    assert len(list((tmp_path / "cv" / "models").glob("knn-*.npz"))) == 2
    r = run_cli("predict", tmp_path / "cv", tiny_data["test"], "-o", tmp_path / "subcv.csv")
    assert r.exit_code == 0, r.output

    next((tmp_path / "run").glob("knn-*.npz")).unlink()
    line = error_line(run_cli("predict", tmp_path / "run", tiny_data["test"], "-o", tmp_path / "x.csv"))
    assert "cannot read the KNN reference rows" in line and "damaged" in line
    assert not (tmp_path / "x.csv").exists()


def test_knn_input_errors_are_one_line_naming_the_place(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data)
    cfg["data"]["knn"] = True
    path = tmp_path / "knn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # a key under the 'true' shorthand: say to set the whole mapping
    line = error_line(run_cli("fit", path, "--set", "data.knn.k=[2]"))
    assert "--set data.knn.k" in line and "data.knn is true, not a mapping" in line
    assert "--set 'data.knn={k: ...}'" in line
    # a class with a single training row: the file, the key and the fix
    rows = open(tiny_data["train"]).read().splitlines()
    col = rows[0].split(",").index("target")
    lone = [r for r in rows[1:] if r.split(",")[col] == "Class_1"][:1]
    small = tmp_path / "small.csv"
    small.write_text(
        "\n".join([rows[0], *[r for r in rows[1:] if r.split(",")[col] != "Class_1"], *lone]) + "\n"
    )
    line = error_line(run_cli("fit", path, "--set", f"data.train={small}", "--run-dir", tmp_path / "run"))
    assert str(small) in line and "data.knn: class 'Class_1' has 1 training row" in line
    assert "remove data.knn or add rows" in line
    assert not (tmp_path / "run").exists()
