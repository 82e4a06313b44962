"""Nearest-neighbour features (ottotrain/knn.py) and their place in preprocessing and runs."""

import json

import numpy as np
import pytest
import yaml
from conftest import error_line, run_cli, tiny_config

from ottotrain.config import DataConfig
from ottotrain.errors import DataError, RunError
from ottotrain.features import Preprocessor, knn

KS = [1, 2, 3]


def _naive(q, ref, yref, ks, n_classes, skip=None, space="log1p"):
    """The definition, one row and one class at a time (tfidf: weights from ``ref``)."""
    idf = knn.inverse_document_frequency(ref)
    out = []
    for i, row in enumerate(knn.space(q, space, idf)):
        feats = []
        for c in range(n_classes):
            rows = [j for j in np.flatnonzero(yref == c) if skip is None or j != skip[i]]
            d = np.sort(np.sqrt(((knn.space(ref[rows], space, idf) - row) ** 2).sum(axis=1)))
            feats += [np.log(d[: min(k, len(d))].mean() + knn.EPS) for k in ks]
        out.append(feats)
    return np.array(out)


def _brute(q, ref, yref, ks, n_classes, leave_out=False):
    """The definition vectorised in float64: every distance, sorted per class."""
    d = np.sqrt(((q[:, None, :].astype(np.float64) - ref[None, :, :]) ** 2).sum(axis=2))
    if leave_out:
        np.fill_diagonal(d, np.inf)
    out = []
    for c in range(n_classes):
        dc = np.sort(d[:, yref == c], axis=1)[:, : max(ks)]
        have = np.isfinite(dc).sum(axis=1, keepdims=True)  # a class with fewer than k rows
        mean = np.cumsum(np.where(np.isfinite(dc), dc, 0), axis=1) / np.arange(1, dc.shape[1] + 1)
        out.append(np.log(np.take_along_axis(mean, np.minimum(ks, have) - 1, axis=1) + knn.EPS))
    return np.hstack(out)


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


@pytest.mark.parametrize("space", knn.SPACES)
@pytest.mark.parametrize("leave_out", [False, True])
def test_many_chunks_on_every_core_match_the_definition(space, leave_out, monkeypatch):
    """Several chunks (on a thread per core), duplicate rows, a class smaller than k, in each
    space: the float64 definition to float32 rounding."""
    monkeypatch.setattr(knn, "CHUNK", 64)
    rng = np.random.default_rng(2)
    x = rng.poisson(rng.gamma(0.3, 3, size=(1, 20)), size=(700, 20)).astype(np.float32)
    x[50:60] = x[40:50]  # duplicates: at distance 0
    y = rng.integers(0, 4, 700)
    y[:5] = 4  # class 4: 5 rows, fewer than k = 8
    ks = [1, 2, 8]
    ref, order = knn.Reference.fit(x, y, 5, space)
    q = x if leave_out else rng.poisson(1.0, size=(300, 20)).astype(np.float32)
    self_rows = None
    if leave_out:
        self_rows = np.empty_like(order)
        self_rows[order] = np.arange(len(order))
    got = knn.features(ref, q, ks, self_rows)
    rows = knn.space(x, space, knn.inverse_document_frequency(x))
    want = _brute(knn.space(q, space, ref.idf), rows, y, ks, 5, leave_out)
    assert got.shape == (len(q), 5 * len(ks)) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def test_concurrent_searches_leave_the_blas_threads_as_they_were(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(knn, "CHUNK", 16)
    monkeypatch.setattr(knn, "_cores", lambda: 2)  # the pooled path even on one core
    rng = np.random.default_rng(3)
    x, y = rng.poisson(1.0, size=(200, 8)).astype(np.float32), rng.integers(0, 3, 200)
    ref = knn.Reference.fit(x, y, 3)[0]
    before = [i["num_threads"] for i in knn._blas().info()]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: knn.features(ref, x + i, KS), range(8)))
    assert [i["num_threads"] for i in knn._blas().info()] == before
    np.testing.assert_allclose(got[3], _brute(knn.space(x + 3), knn.space(x), y, KS, 3), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("space", ["raw", "tfidf"])
def test_other_spaces_match_the_definition(space, counts):
    x, y = counts
    ref, order = knn.Reference.fit(x, y, 3, space)
    new = np.random.default_rng(1).poisson(1.0, size=(9, 7)).astype(np.float32)
    want = _naive(new, x, y, KS, 3, space=space)
    np.testing.assert_allclose(knn.features(ref, new, KS), want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(knn.features(knn.Reference.fit(x, y, 3)[0], new, KS), want)  # not log1p's


def test_tfidf_rows_have_length_one_and_zero_rows_stay_zero():
    x = np.array([[0, 0, 0], [1, 3, 3], [0, 5, 5]], dtype=np.float32)
    rows = knn.space(x, "tfidf", knn.inverse_document_frequency(x))
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), [0, 1, 1], atol=1e-6)
    np.testing.assert_allclose(rows[2], [0, 2**-0.5, 2**-0.5], atol=1e-6)  # equal idf: cosine


@pytest.mark.parametrize("space", knn.SPACES)
def test_reference_files_keep_their_space(space, counts, tmp_path):
    x, y = counts
    ref = knn.Reference.fit(x, y, 3, space)[0]
    ref.save(tmp_path / "r.npz")
    again = knn.Reference.load(tmp_path / "r.npz")
    assert (again.space, again.digest) == (space, ref.digest)
    np.testing.assert_array_equal(again.queries(x), ref.queries(x))
    with np.load(tmp_path / "r.npz") as f:  # a log1p file is the format earlier versions read
        assert sorted(f.files) == (
            ["counts", "rows"]
            if space == "log1p"
            else sorted(["counts", "rows", "space", *(["idf"] if space == "tfidf" else [])])
        )
    if space == "log1p":  # and its name (the digest) is the one earlier versions gave it
        assert ref.digest == knn._digest(ref.rows, ref.counts)


def test_the_same_rows_are_searched_once(counts):
    x, y = counts
    ref = knn.Reference.fit(x, y, 3)[0]
    before = knn.STATS.searches
    first = knn.features(ref, x[:7] + 0.5, KS)
    again = knn.features(knn.Reference.fit(x, y, 3)[0], x[:7] + 0.5, KS)  # another member's fit
    assert again is first and knn.STATS.searches == before + 1
    knn.features(ref, x[:7] + 0.5, [1, 2])  # other settings: searched
    knn.features(knn.Reference.fit(x, y, 3, "raw")[0], x[:7] + 0.5, KS)  # another space: searched
    assert knn.STATS.searches == before + 3


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


@pytest.mark.parametrize("space", knn.SPACES)
def test_nonzero_count_and_space_through_the_preprocessor(space, counts, tmp_path):
    x, y = counts
    x[3, :] = 0
    cfg = DataConfig(train="t.csv", scaling="none", nonzero_count=True, knn={"k": KS, "space": space})
    pre = Preprocessor.fit(x, cfg, [f"f{i}" for i in range(7)], ["a", "b", "c"], y)
    assert pre.n_outputs == 7 + 1 + 3 * len(KS)
    assert "1 non-zero count" in pre.describe_inputs()
    z = pre.transform(x, fitted_rows=True)
    np.testing.assert_array_equal(z[:, 7], (x != 0).sum(axis=1))  # counted before the transform
    assert z[3, 7] == 0
    ref = knn.Reference.fit(x, y, 3, space)[0]
    np.testing.assert_array_equal(pre.transform(x[:5] + 1)[:, 8:], knn.features(ref, x[:5] + 1, KS))
    pre.save(tmp_path / "preprocess.json")
    saved = json.loads((tmp_path / "preprocess.json").read_text())
    assert saved["format"] == 5 and saved["nonzero_count"] is True
    assert saved["knn"].get("space") == (None if space == "log1p" else space)
    again = Preprocessor.from_json((tmp_path / "preprocess.json").read_text(), tmp_path / "preprocess.json")
    np.testing.assert_array_equal(again.transform(x[:5] + 1), pre.transform(x[:5] + 1))


def test_the_defaults_write_the_state_as_before(counts, tmp_path):
    """No nonzero_count and the log1p space: the JSON has neither key, and format 3."""
    x, y = counts
    pre = Preprocessor.fit(x, _data_cfg(), [f"f{i}" for i in range(7)], ["a", "b", "c"], y)
    saved = json.loads(pre.to_json())
    assert saved["format"] == 3 and "nonzero_count" not in saved
    assert sorted(saved["knn"]) == ["k", "reference"]


def test_a_reference_of_another_space_is_damage(counts, tmp_path):
    x, y = counts
    cfg = DataConfig(train="t.csv", knn={"k": KS, "space": "tfidf"})
    pre = Preprocessor.fit(x, cfg, [f"f{i}" for i in range(7)], ["a", "b", "c"], y)
    pre.save(tmp_path / "preprocess.json")
    state = json.loads((tmp_path / "preprocess.json").read_text())
    state["knn"]["space"] = "raw"
    loaded = Preprocessor.from_json(json.dumps(state), tmp_path / "preprocess.json")
    with pytest.raises(RunError, match="contents do not match its name"):
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

    before = knn.STATS.searches
    r = run_cli("cv", path, "--folds", 2, "--seeds", 2, "--run-dir", tmp_path / "cv", "-q")
    assert r.exit_code == 0, r.output
    # each fold's training, held-out and test rows searched once for both of its members
    assert knn.STATS.searches - before == 2 * 3
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


BAD_VALUES = [
    ("data.knn.space=cosine", ["data.knn.space", "must be one of 'raw', 'log1p' or 'tfidf'", "got 'cosine'"]),
    ("data.knn={space: TFIDF}", ["data.knn.space", "got 'TFIDF'", "did you mean 'tfidf'"]),
    ("data.knn.space=[raw]", ["data.knn.space", "got ['raw']"]),
    ("data.nonzero_count=maybe", ["data.nonzero_count", "must be true or false", "got 'maybe'"]),
    ("data.nonzero_count=3", ["data.nonzero_count", "must be true or false", "got 3"]),
    ("data.knn={k: [4, 2], space: raw}", ["data.knn.k", "increasing integers"]),
]


@pytest.mark.parametrize("setting,fragments", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_knn_settings_are_one_line(setting, fragments, tiny_data, tmp_path):
    cfg = tiny_config(tiny_data)
    cfg["data"]["knn"] = {"k": [1, 2]}
    path = tmp_path / "knn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    line = error_line(run_cli("fit", path, "--set", setting, "--run-dir", tmp_path / "run"))
    assert str(path) in line and f"--set {setting.split('=')[0]}" in line
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "run").exists()
