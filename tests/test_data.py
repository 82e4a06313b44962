"""Data loading and preprocessing.

Bad data through the CLI: one line naming the file, the column and line, what is wrong and
how to fix it; exit code 1; no traceback; and no run directory, since every data check
happens in ``prepare``, before the run directory is created. Then the parsed-CSV cache, and
the input transforms and scalings against their formulas."""

import gzip
import json
import re

import numpy as np
import pandas as pd
import pytest

from ottotrain.errors import DataError
from tests.conftest import error_line as _error_line
from tests.conftest import tiny_config

HEADER = "id,f1,f2,target\n"
GOOD_ROWS = "".join(f"{i},{i % 3},{i % 5},{'AB'[i % 2]}\n" for i in range(1, 41))
GOOD_ROWS_TARGET_FIRST = "".join(f"{i},{'AB'[i % 2]},{i % 3},{i % 5}\n" for i in range(1, 41))
# Eight sparse count features (mostly 0), then the class column.
WIDE_HEADER = "id," + ",".join(f"f{j}" for j in range(1, 9)) + ",class\n"
WIDE_ROWS = "".join(
    f"{i}," + ",".join(str(int(i % (j + 3) == 0)) for j in range(8)) + f",{'ABC'[i % 3]}\n"
    for i in range(1, 61)
)


def _fit(cli, write_config, tiny_data, tmp_path, train=None, test=None, **data):
    """Run fit on a tiny config whose data section points at the given files."""
    cfg = tiny_config(tiny_data)
    cfg["data"] = {"train": str(train or tiny_data["train"]), **data}
    if test is not None:
        cfg["data"]["test"] = str(test)
    runs = tmp_path / "runs"
    result = cli("fit", write_config(cfg), "--runs-root", runs)
    return result, runs


# (id, train file name, train file content (str or bytes), config data keys, message fragments)
BAD_TRAIN = [
    ("empty-file", "train.csv", "", {}, ["the file is empty"]),
    ("blank-lines-only", "train.csv", "\n\n\n", {}, ["the file is empty"]),
    ("header-only", "train.csv", HEADER, {}, ["has a header but no data rows"]),
    ("binary", "train.csv", b"\x00\x01\x02garbage\xff" * 20, {}, ["binary file, not a CSV"]),
    (
        "gzip-named-csv",
        "train.csv",
        gzip.compress((HEADER + GOOD_ROWS).encode()),
        {},
        ["binary file", "name it .csv.gz"],
    ),
    ("corrupt-gzip", "train.csv.gz", b"not gzip at all", {}, ["cannot read the file", "gzip"]),
    ("excel", "train.csv", b"PK\x03\x04" + b"\x14" * 40, {}, ["binary file", "export it as CSV"]),
    (
        "semicolons",
        "train.csv",
        HEADER.replace(",", ";") + GOOD_ROWS.replace(",", ";"),
        {},
        ["line 1", "separated by semicolons", "comma-separated"],
    ),
    (
        "tabs",
        "train.csv",
        HEADER.replace(",", "\t") + GOOD_ROWS.replace(",", "\t"),
        {},
        ["separated by tabs"],
    ),
    (
        "not-utf8",
        "train.csv",
        (HEADER + GOOD_ROWS + "41,1,2,\xe9t\xe9\n").encode("latin-1"),
        {},
        ["not UTF-8"],
    ),
    (
        "not-utf8-after-64k",
        "train.csv",
        (HEADER + GOOD_ROWS * 200 + "41,1,2,\xe9t\xe9\n").encode("latin-1"),
        {},
        ["not UTF-8", "save the CSV as UTF-8"],
    ),
    (
        "ragged-row",
        "train.csv",
        HEADER + GOOD_ROWS + "41,1,2,A,5\n",
        {},
        ["line 42 has 5 fields, the header has 4", "one value per column", "an extra comma"],
    ),
    # Short rows: pandas reads them with their last values missing, and they were reported
    # as a missing value in whichever column came last.
    (
        "short-row-no-label",
        "train.csv",
        HEADER + GOOD_ROWS + "41,1,2\n",
        {},
        ["line 42 has 3 fields, the header has 4", "fields are missing"],
    ),
    (
        "short-row-no-last-feature",
        "train.csv",
        "id,target,f1,f2\n" + GOOD_ROWS_TARGET_FIRST + "41,A,1\n",
        {},
        ["line 42 has 3 fields, the header has 4"],
    ),
    (
        "short-row-in-the-middle",
        "train.csv",
        HEADER + GOOD_ROWS[:200] + "99,1\n" + GOOD_ROWS[200:],
        {},
        [f"line {GOOD_ROWS[:200].count(chr(10)) + 2} has 2 fields, the header has 4"],
    ),
    (
        "missing-id-column",
        "train.csv",
        HEADER.replace("id,", "ident,") + GOOD_ROWS,
        {},
        [
            "no column 'id'",
            "data.id_column",
            "columns that look like ids",
            ": ident;",
            "set data.id_column to one of them",
        ],
    ),
    (
        "no-id-like-column",
        "train.csv",
        "f0,f1,f2,target\n" + "".join(f"{i % 2},{i % 3},{i % 5},{'AB'[i % 2]}\n" for i in range(1, 41)),
        {},
        ["no column 'id'", "no column has a different value on every row in the first 40 rows"],
    ),
    (
        "missing-target-column",
        "train.csv",
        HEADER.replace("target", "label") + GOOD_ROWS,
        {},
        [
            "no column 'target'",
            "data.target_column",
            "columns that could be the target: label;",
            "set data.target_column to one of them",
        ],
    ),
    # The target far down a wide header: named, though the header was cut after six names.
    (
        "target-column-past-the-sixth",
        "train.csv",
        WIDE_HEADER + WIDE_ROWS,
        {},
        ["no column 'target'", "columns that could be the target: class;"],
    ),
    # Whole-number labels: the evenly spread column first, not the sparse counts.
    (
        "numeric-target-column",
        "train.csv",
        WIDE_HEADER + WIDE_ROWS.replace(",A\n", ",0\n").replace(",B\n", ",1\n").replace(",C\n", ",2\n"),
        {},
        ["no column 'target'", "columns that could be the target: class, "],
    ),
    (
        "misspelt-target-column",
        "train.csv",
        HEADER + GOOD_ROWS,
        {"target_column": "traget"},
        ["no column 'traget'", "did you mean 'target'"],
    ),
    (
        "missing-feature-column",
        "train.csv",
        HEADER + GOOD_ROWS,
        {"feature_columns": ["f1", "f9"]},
        ["data.feature_columns", "f9"],
    ),
    ("no-feature-columns", "train.csv", "id,target\n1,A\n2,B\n", {}, ["no feature columns"]),
    (
        "duplicated-column",
        "train.csv",
        "id,f1,f1,target\n" + GOOD_ROWS,
        {},
        ["duplicated column name(s) f1", "must be unique"],
    ),
    ("unnamed-column", "train.csv", "id,f1,,target\n" + GOOD_ROWS, {}, ["header column 3 has no name"]),
    (
        "non-numeric-cell",
        "train.csv",
        HEADER + GOOD_ROWS + "41,abc,2,A\n",
        {},
        ["column 'f1'", "line 42", "non-numeric value 'abc'"],
    ),
    (
        "missing-value",
        "train.csv",
        HEADER + GOOD_ROWS + "41,,2,A\n",
        {"missing": "none"},
        ["column 'f1'", "line 42", "missing value", "fill or drop", "data.missing: auto"],
    ),
    (
        "nan-text",
        "train.csv",
        HEADER + GOOD_ROWS + "41,1,NaN,A\n",
        {"missing": "none"},
        ["column 'f2'", "line 42", "missing value"],
    ),
    (
        "infinite-value",
        "train.csv",
        HEADER + GOOD_ROWS + "41,inf,2,A\n",
        {},
        ["column 'f1'", "line 42", "infinite value"],
    ),
    (
        "too-large-for-float32",
        "train.csv",
        HEADER + GOOD_ROWS + "41,1e39,2,A\n",
        {},
        ["column 'f1'", "line 42", "too large for float32"],
    ),
    (
        "missing-label",
        "train.csv",
        HEADER + GOOD_ROWS + "41,1,2,\n",
        {},
        ["column 'target': 1 row(s) without a class label (line 42)", "fill them in or drop those rows"],
    ),
    (
        "missing-labels",
        "train.csv",
        HEADER + "".join(f"{i},1,2,\n" for i in range(41, 48)) + GOOD_ROWS,
        {},
        ["column 'target': 7 row(s) without a class label (line 2, line 3, line 4, line 5, line 6, ...)"],
    ),
    (
        "one-class",
        "train.csv",
        HEADER + GOOD_ROWS.replace(",B\n", ",A\n"),
        {},
        ["column 'target' has only one class ('A')", "at least two"],
    ),
    (
        "too-few-rows-for-split",
        "train.csv",
        HEADER + "1,1,2,A\n2,2,3,B\n",
        {"validation_split": 0.1},
        ["validation_split=0.1", "0 validation rows"],
    ),
]


@pytest.mark.parametrize(
    "name,content,data,fragments", [c[1:] for c in BAD_TRAIN], ids=[c[0] for c in BAD_TRAIN]
)
def test_bad_train_file_is_one_clear_line(
    name, content, data, fragments, cli, write_config, tiny_data, tmp_path
):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    result, runs = _fit(cli, write_config, tiny_data, tmp_path, train=path, **data)
    line = _error_line(result)
    assert str(path) in line
    for frag in fragments:
        assert frag in line, line
    assert not runs.exists()  # nothing created for a run that could not start


def test_missing_and_unreadable_files(cli, write_config, tiny_data, tmp_path):
    result, runs = _fit(cli, write_config, tiny_data, tmp_path, train=tmp_path / "nope.csv")
    line = _error_line(result)
    assert "nope.csv" in line and "train file not found" in line and "data.train" in line
    (tmp_path / "folder.csv").mkdir()
    result, _ = _fit(cli, write_config, tiny_data, tmp_path, train=tmp_path / "folder.csv")
    assert "is a directory" in _error_line(result)
    result, _ = _fit(cli, write_config, tiny_data, tmp_path, test=tmp_path / "nope-test.csv")
    line = _error_line(result)
    assert "nope-test.csv" in line and "test file not found" in line and "data.test" in line
    assert not runs.exists()


def _test_variant(tiny_data, tmp_path, edit):
    df = pd.read_csv(tiny_data["test"])
    df = edit(df)
    path = tmp_path / "test-variant.csv"
    df.to_csv(path, index=False)
    return path


BAD_TEST = [
    (
        "duplicated-id",
        lambda d: d.assign(id=[1] * 2 + list(d["id"][2:])),
        ["column 'id'", "line 3", "duplicated id 1", "unique id"],
    ),
    (
        "missing-columns",
        lambda d: d.drop(columns=["feat_5", "feat_7"]),
        ["columns differ from the training data", "missing 2 feature column(s) seen at fit: feat_5, feat_7"],
    ),
    (
        "extra-column",
        lambda d: d.assign(extra=1),
        ["columns differ from the training data", "unexpected column(s): extra"],
    ),
    (
        "renamed-column",
        lambda d: d.rename(columns={"feat_9": "feat_09"}),
        ["missing 1 feature column(s) seen at fit: feat_9", "unexpected column(s): feat_09"],
    ),
    (
        "has-target-column",
        lambda d: d.assign(target="Class_1"),
        ["has a target column 'target'", "is this the training file?"],
    ),
    ("no-id-column", lambda d: d.drop(columns=["id"]), ["no id column 'id'"]),
    (
        "non-numeric",
        lambda d: d.assign(feat_3=["x"] + list(d["feat_3"][1:])),
        ["column 'feat_3'", "line 2", "non-numeric value 'x'"],
    ),
]


@pytest.mark.parametrize("edit,fragments", [c[1:] for c in BAD_TEST], ids=[c[0] for c in BAD_TEST])
def test_bad_test_file_is_one_clear_line(edit, fragments, cli, write_config, tiny_data, tmp_path):
    path = _test_variant(tiny_data, tmp_path, edit)
    result, runs = _fit(cli, write_config, tiny_data, tmp_path, test=path)
    line = _error_line(result)
    assert str(path) in line
    for frag in fragments:
        assert frag in line, line
    assert not runs.exists()


def test_test_columns_in_another_order_are_fine(tiny_data, tmp_path):
    from ottotrain.data import load_test

    cols = pd.read_csv(tiny_data["train"], nrows=1).columns
    feats = [c for c in cols if c not in ("id", "target")]
    path = _test_variant(tiny_data, tmp_path, lambda d: d[["id"] + feats[::-1]])
    ids, x = load_test(path, "id", "target", feats)
    ref = pd.read_csv(tiny_data["test"])
    assert (x == ref[feats].to_numpy(dtype="float32")).all() and list(ids) == list(ref["id"])


def test_unstratified_split_is_sklearns_train_test_split():
    """The tutorial's split: train_test_split(test_size=0.15, random_state=42)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from ottotrain.data import train_val_split

    y = np.random.default_rng(0).integers(0, 9, size=1000)
    tr, va = train_val_split(y, 0.15, 42, stratify=False)
    s_tr, s_va = train_test_split(np.arange(1000), test_size=150, random_state=42)
    assert np.array_equal(va, np.sort(s_va)) and np.array_equal(tr, np.sort(s_tr))


def test_stratified_split_keeps_class_shares():
    import numpy as np

    from ottotrain.data import train_val_split

    y = np.repeat(np.arange(5), [500, 300, 100, 60, 40])
    tr, va = train_val_split(y, 0.2, 1)
    assert len(va) == 200 and len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 1000
    assert np.bincount(y[va]).tolist() == [100, 60, 20, 12, 8]
    assert np.array_equal(train_val_split(y, 0.2, 1)[1], va)  # deterministic
    assert not np.array_equal(train_val_split(y, 0.2, 2)[1], va)


def _read_cached(path):
    """Read a generated train file by the fast path; (x, other columns, its cache entry)."""
    from ottotrain.data import csv as D

    feats = [c for c in D.read_header(path) if c.startswith("feat_")]
    x, rest = D.read_columns(path, "train", feats, ("id", "target"))
    return x, rest, D.csv_cache_path(path, ["id", "target", *feats])


def test_parsed_csv_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    import os

    import pandas as pd

    from ottotrain.data import csv as D
    from ottotrain.data.synth import make_data

    monkeypatch.setattr("ottotrain.data.cache.CSV_CACHE_MIN_BYTES", 0)
    train, _ = make_data(tmp_path / "d", rows=200, seed=0, test_rows=0)
    x, rest, cache = _read_cached(train)
    assert cache is not None and cache.exists()
    monkeypatch.setattr("pyarrow.csv.read_csv", lambda *a, **k: 1 / 0)  # a hit must not parse
    x2, rest2, _ = _read_cached(train)
    np.testing.assert_array_equal(x, x2)
    pd.testing.assert_frame_equal(rest, rest2)
    monkeypatch.undo()
    monkeypatch.setattr("ottotrain.data.cache.CSV_CACHE_MIN_BYTES", 0)
    # A changed file (new size/mtime) is parsed again, never served stale.
    text = train.read_text().splitlines()
    train.write_text("\n".join(text[:50]) + "\n")
    os.utime(train, ns=(1, 1))
    assert len(_read_cached(train)[0]) == 49
    monkeypatch.setenv("OTTOTRAIN_CSV_CACHE", "0")
    assert D.csv_cache_path(train) is None


def test_parsed_csv_cache_keeps_under_its_size_budget(tmp_path, monkeypatch):
    import os

    from ottotrain.data.synth import make_data

    monkeypatch.setattr("ottotrain.data.cache.CSV_CACHE_MIN_BYTES", 0)
    monkeypatch.setenv("OTTOTRAIN_CACHE", str(tmp_path / "cache"))
    files = [make_data(tmp_path / f"d{i}", rows=300, seed=i, test_rows=0)[0] for i in range(3)]
    size = _read_cached(files[0])[2].stat().st_size
    # Room for two entries: reading a third drops the least recently used one.
    monkeypatch.setenv("OTTOTRAIN_CSV_CACHE_MAX_MB", str(2.5 * size / (1 << 20)))
    entries = [_read_cached(f)[2] for f in files[:2]]
    os.utime(entries[0], (1, 1))  # files[0] used longest ago ...
    os.utime(entries[1], (2, 2))
    _read_cached(files[0])  # ... until read again (a hit marks it used)
    entries.append(_read_cached(files[2])[2])
    assert [e.exists() for e in entries] == [True, False, True]
    # A table bigger than the whole budget is not cached at all.
    monkeypatch.setenv("OTTOTRAIN_CSV_CACHE_MAX_MB", str(0.5 * size / (1 << 20)))
    entries[1].unlink(missing_ok=True)
    _read_cached(files[1])
    assert not entries[1].exists()


def test_fast_reader_gives_what_the_careful_reader_gives(tmp_path, monkeypatch):
    """The float32 fast path and the pandas path agree on values, ids, labels and row order."""
    from ottotrain.data import csv as D
    from ottotrain.data.synth import make_data

    train, test = make_data(tmp_path / "d", rows=3000, seed=3, test_rows=500)
    feats = [c for c in D.read_header(train) if c.startswith("feat_")]
    for path, others in ((train, ("id", "target")), (test, ("id",))):
        fast = D._read_fast(path, feats, others)
        assert fast is not None
        df = D.read_table(path)
        careful = D.check_features(df, path, feats)
        assert fast[0].dtype == np.float32 and fast[0].flags.c_contiguous
        np.testing.assert_array_equal(fast[0], careful)
        assert fast[1].astype(str).equals(df[list(others)].astype(str))


@pytest.mark.parametrize("cell", ["NA", "", "inf", "abc", "1e39", "True"])
def test_fast_reader_leaves_doubtful_files_to_the_careful_path(tmp_path, cell):
    """Whatever the fast path cannot vouch for gets the careful path's message (or value)."""
    from ottotrain.data import csv as D

    p = tmp_path / "t.csv"
    p.write_text(f"id,feat_1,feat_2,target\n1,0,3,Class_1\n2,{cell},4,Class_2\n3,1,2,Class_1\n")
    assert D._read_fast(p, ["feat_1", "feat_2"], ("id", "target")) is None
    try:
        want = D.check_features(D.read_table(p), p, ["feat_1", "feat_2"])
    except DataError as e:
        with pytest.raises(DataError, match=re.escape(str(e))):
            D.read_columns(p, "train", ["feat_1", "feat_2"], ("id", "target"))
    else:  # what pandas reads as a number (True -> 1) is read the same way
        np.testing.assert_array_equal(D.read_columns(p, "train", ["feat_1", "feat_2"], ("id",))[0], want)


def _counts(rows, seed):
    rng = np.random.default_rng(seed)
    return rng.poisson(rng.uniform(0.1, 3, 6), size=(rows, 6)).astype(np.float32)


@pytest.mark.parametrize(
    "transform, expect",
    [
        ("none", lambda x: x),
        ("log1p", np.log1p),
        ("sqrt", np.sqrt),
        ("anscombe", lambda x: np.sqrt(x + 0.375)),
        ("power", lambda x: x**0.5),
    ],
)
@pytest.mark.parametrize("scaling", ["none", "standard", "minmax", "robust"])
def test_preprocessing_is_fitted_on_the_rows_given_and_applied_to_others(transform, expect, scaling):
    from ottotrain.config import DataConfig
    from ottotrain.features import Preprocessor

    fit_rows, other = _counts(400, 0), _counts(50, 1)
    cfg = DataConfig(train="t.csv", transform=transform, scaling=scaling)
    pre = Preprocessor.fit(fit_rows, cfg, [f"f{i}" for i in range(6)], ["a", "b"])
    z = expect(fit_rows.astype(np.float64))  # the transform, fitted statistics from these rows
    center, scale = {
        "none": (0, 1),
        "standard": (z.mean(0), np.where(z.std(0) > 0, z.std(0), 1)),
        "minmax": (z.min(0), np.where(np.ptp(z, 0) > 0, np.ptp(z, 0), 1)),
        "robust": (
            np.median(z, 0),
            np.where(
                np.subtract(*np.percentile(z, [75, 25], 0)) > 0,
                np.subtract(*np.percentile(z, [75, 25], 0)),
                1,
            ),
        ),
    }[scaling]
    before = other.copy()
    got = pre.transform(other)
    np.testing.assert_array_equal(other, before)  # the input is never modified
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, (expect(other.astype(np.float64)) - center) / scale, rtol=1e-5, atol=1e-5)
    # Scaling a copy in place (what training does with its own row copies): same values.
    np.testing.assert_array_equal(pre.transform(other.copy(), overwrite=True), got)
    # Saved and loaded: the same numbers.
    again = Preprocessor.from_json(pre.to_json())
    np.testing.assert_array_equal(again.transform(other), got)


def test_quantile_and_tfidf_features():
    from ottotrain.config import DataConfig
    from ottotrain.features import Preprocessor

    x = _counts(2000, 2)
    cfg = DataConfig(train="t.csv", transform="quantile", tfidf=True, scaling="none")
    pre = Preprocessor.fit(x, cfg, [f"f{i}" for i in range(6)], ["a", "b"])
    z = pre.transform(x)
    assert z.shape == (2000, 12) and pre.n_outputs == 12
    # Rank-gauss: monotone in each count, centred near 0 on the rows it was fitted on.
    for j in range(6):
        order = np.argsort(x[:, j], kind="stable")
        assert (np.diff(z[order, j]) >= -1e-6).all()
    assert abs(float(z[:, :6].mean())) < 0.2
    # TF-IDF: each row's share of its counts times log((1 + n) / (1 + rows with the count)) + 1.
    idf = np.log((1 + len(x)) / (1 + (x > 0).sum(0))) + 1
    tf = x / np.maximum(x.sum(1, keepdims=True), 1)
    np.testing.assert_allclose(z[:, 6:], tf * idf, rtol=1e-5, atol=1e-6)


def test_runs_saved_before_the_anscombe_fix_keep_their_formula():
    import json

    from ottotrain.config import DataConfig
    from ottotrain.features import Preprocessor

    x = _counts(100, 3)
    cfg = DataConfig(train="t.csv", transform="anscombe", scaling="none")
    pre = Preprocessor.fit(x, cfg, [f"f{i}" for i in range(6)], ["a", "b"])
    np.testing.assert_allclose(pre.transform(x), np.sqrt(x + 0.375), rtol=1e-6)
    old = Preprocessor.from_json(json.dumps({**pre.state.to_dict(), "format": 1}))  # an older run's file
    np.testing.assert_allclose(old.transform(x), np.where(x > 0, np.sqrt(x + 0.375), 0), rtol=1e-6)


@pytest.mark.parametrize("scaling", ["standard", "minmax"])
@pytest.mark.parametrize("transform", ["log1p", "quantile"])
def test_scaling_statistics_by_blocks_match_the_whole_matrix(monkeypatch, transform, scaling):
    """Big inputs are scaled from block-wise statistics: the same as numpy's on the whole matrix."""
    from ottotrain.config import DataConfig
    from ottotrain.features import Preprocessor

    x = _counts(5000, 7)
    dc = DataConfig(train="t.csv", transform=transform, scaling=scaling, tfidf=True)
    whole = Preprocessor.fit(x, dc, [f"f{j}" for j in range(6)], ["a", "b"])
    monkeypatch.setattr(Preprocessor, "BLOCK", 777)  # 7 blocks, the last one short
    blocks = Preprocessor.fit(x, dc, [f"f{j}" for j in range(6)], ["a", "b"])
    np.testing.assert_allclose(blocks.state.center, whole.state.center, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(blocks.state.scale, whole.state.scale, rtol=1e-12)
    z = whole.transform(x)
    if scaling == "standard":
        np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(z.std(0, dtype=np.float64), 1, rtol=1e-5)


def _write_table(df, path):
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_feather(path)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".feather"])
def test_parquet_and_feather_train_and_predict_as_their_csv_does(
    suffix, cli, write_config, tiny_data, tmp_path
):
    train = _write_table(pd.read_csv(tiny_data["train"]), tmp_path / f"train{suffix}")
    # Named .csv but Parquet or Arrow inside: the first bytes tell, not the name.
    test = _write_table(pd.read_csv(tiny_data["test"]), tmp_path / "test.csv")
    r, runs = _fit(cli, write_config, tiny_data, tmp_path, train=train, test=test)
    assert r.exit_code == 0, r.output
    r_csv, runs_csv = _fit(cli, write_config, tiny_data, tmp_path / "csv", test=tiny_data["test"])
    assert r_csv.exit_code == 0, r_csv.output
    (run,), (run_csv,) = runs.iterdir(), runs_csv.iterdir()
    assert (run / "submission.csv").read_text() == (run_csv / "submission.csv").read_text()
    out = tmp_path / f"out{suffix}"
    assert cli("predict", run, test, "-o", out).exit_code == 0
    got = pd.read_parquet(out) if suffix == ".parquet" else pd.read_feather(out)
    want = pd.read_csv(run / "submission.csv")
    assert list(got.columns) == list(want.columns)
    np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(float), atol=1e-6)


@pytest.mark.parametrize(
    "edit, role, message",
    [
        (
            lambda df: df.assign(feat_2=df["feat_2"].where(df.index != 4)),
            "train",
            "column 'feat_2', row 5: missing value",
        ),
        (
            lambda df: df.assign(feat_3=df["feat_3"].astype(str).where(df.index != 2, "n/a?")),
            "train",
            "column 'feat_3', row 3: non-numeric value 'n/a?'",
        ),
        (
            lambda df: df.assign(target=df["target"].where(df.index != 7)),
            "train",
            "column 'target': 1 row(s) without a class label (row 8)",
        ),
        (
            lambda df: df.assign(id=df["id"].where(df.index != 3, df["id"][0])),
            "test",
            "column 'id', row 4: duplicated id",
        ),
        (lambda df: df.rename(columns={"feat_1": ""}), "train", "header column 2 has no name"),
    ],
)
def test_bad_parquet_is_one_line_naming_the_row(edit, role, message, cli, write_config, tiny_data, tmp_path):
    df = edit(pd.read_csv(tiny_data[role]))
    bad = _write_table(df, tmp_path / f"{role}.parquet")
    files = {"train": bad} if role == "train" else {"test": bad}
    r, runs = _fit(cli, write_config, tiny_data, tmp_path, **files, missing="none")
    line = _error_line(r)
    assert str(bad) in line and message in line, line
    assert not runs.exists() or not any(runs.iterdir())


def test_a_cut_parquet_file_is_one_line(cli, write_config, tiny_data, tmp_path):
    whole = _write_table(pd.read_csv(tiny_data["train"]), tmp_path / "whole.parquet").read_bytes()
    cut = tmp_path / "train.parquet"
    cut.write_bytes(whole[: len(whole) // 2])
    line = _error_line(_fit(cli, write_config, tiny_data, tmp_path, train=cut)[0])
    assert "cannot read the Parquet file" in line and "write it again, or export the table as CSV" in line


def test_no_id_column_numbers_the_rows(cli, write_config, tiny_data, tmp_path):
    train = tmp_path / "train.csv"
    pd.read_csv(tiny_data["train"]).drop(columns="id").to_csv(train, index=False)
    test = _write_table(pd.read_csv(tiny_data["test"]).drop(columns="id"), tmp_path / "test.parquet")
    r, runs = _fit(cli, write_config, tiny_data, tmp_path, train=train, test=test, id_column=None)
    assert r.exit_code == 0, r.output
    (run,) = runs.iterdir()
    sub = pd.read_csv(run / "submission.csv")
    assert sub.columns[0] == "row" and sub["row"].tolist() == list(range(1, 201))
    assert pd.read_csv(run / "val_predictions.csv").columns[0] == "row"
    out = tmp_path / "again.csv"
    assert cli("predict", run, test, "-o", out).exit_code == 0
    assert out.read_text() == (run / "submission.csv").read_text()
    # A test file that has an id column after all: the columns differ from fit's.
    line = _error_line(cli("predict", run, tiny_data["test"]))
    assert "unexpected column(s): id" in line


@pytest.mark.parametrize("labels", [[0, 1, 2], [1, 2, 3], [0, 1]])
def test_integer_and_two_class_targets_keep_their_names(labels, cli, write_config, tiny_data, tmp_path):
    df = pd.read_csv(tiny_data["train"])
    df["target"] = [labels[i % len(labels)] for i in range(len(df))]
    train = tmp_path / "train.csv"
    df.to_csv(train, index=False)
    r, runs = _fit(cli, write_config, tiny_data, tmp_path, train=train, test=tiny_data["test"])
    assert r.exit_code == 0, r.output
    (run,) = runs.iterdir()
    assert list(pd.read_csv(run / "submission.csv").columns) == ["id", *map(str, labels)]


def test_missing_values_are_filled_with_training_medians_and_flagged(cli, write_config, tiny_data, tmp_path):
    rng = np.random.default_rng(0)
    df = pd.read_csv(tiny_data["train"])
    df.loc[rng.choice(len(df), 60, replace=False), "feat_3"] = np.nan
    train = tmp_path / "train.csv"
    df.to_csv(train, index=False)
    t = pd.read_csv(tiny_data["test"])
    t.loc[:4, "feat_3"] = np.nan  # had missing values at fit
    t.loc[:6, "feat_20"] = np.nan  # had none at fit
    test = tmp_path / "test.csv"
    t.to_csv(test, index=False)
    r, runs = _fit(cli, write_config, tiny_data, tmp_path, train=train, test=test)
    assert r.exit_code == 0, r.output
    warning = f"Warning: {test}: 7 missing value(s) in column(s) that had none at fit: feat_20 (7); filled"
    assert warning in r.stderr
    (run,) = runs.iterdir()
    state = json.loads((run / "preprocess.json").read_text())
    assert state["indicators"] == [2] and state["missing"] == "auto"
    out = tmp_path / "again.csv"
    again = cli("predict", run, test, "-o", out)
    assert again.exit_code == 0 and warning in again.stderr
    assert out.read_text() == (run / "submission.csv").read_text()


def test_filling_uses_the_training_rows_only_and_adds_was_missing_columns():
    from ottotrain.config import DataConfig
    from ottotrain.features import Preprocessor

    x = np.array([[1, np.nan], [3, 10], [np.nan, 20], [7, 30]], dtype=np.float32)
    pre = Preprocessor.fit(x, DataConfig(train="t.csv", scaling="none"), ["a", "b"], ["c0", "c1"])
    assert pre.state.medians == [3.0, 20.0] and pre.n_outputs == 4
    z = pre.transform(np.array([[np.nan, np.nan], [5, 6]], dtype=np.float32))
    np.testing.assert_array_equal(z, [[3, 20, 1, 1], [5, 6, 0, 0]])
    every = Preprocessor.fit(x[1:2], DataConfig(train="t.csv", missing="all"), ["a", "b"], ["c0", "c1"])
    assert every.state.indicators == [0, 1] and every.n_outputs == 4
    assert Preprocessor.fit(x[1:], DataConfig(train="t.csv"), ["a", "b"], ["c0", "c1"]).n_outputs == 3
