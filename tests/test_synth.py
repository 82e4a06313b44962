"""Synthetic Otto-shaped data: schema, determinism, and learnable non-linear structure."""

import numpy as np
import pandas as pd

from ottotrain.data.synth import OTTO_CLASS_COUNTS, make_arrays, make_data


def test_schema_and_determinism(tmp_path):
    train, test = make_data(tmp_path / "a", rows=3000, seed=7, test_rows=500)
    again, _ = make_data(tmp_path / "b", rows=3000, seed=7, test_rows=500)
    assert train.read_bytes() == again.read_bytes()
    df = pd.read_csv(train)
    assert list(df.columns) == ["id"] + [f"feat_{i}" for i in range(1, 94)] + ["target"]
    feats = df.filter(like="feat_").to_numpy()
    assert feats.dtype.kind == "i" and feats.min() >= 0
    assert (feats == 0).mean() > 0.7  # mostly zeros, like Otto
    assert sorted(df.target.unique()) == [f"Class_{i}" for i in range(1, 10)]
    t = pd.read_csv(test)
    assert list(t.columns) == ["id"] + [f"feat_{i}" for i in range(1, 94)]
    assert len(t) == 500 and t.id.is_unique


def test_class_imbalance_follows_otto():
    _, y = make_arrays(50000, seed=1)
    got = np.bincount(y, minlength=9) / len(y)
    want = OTTO_CLASS_COUNTS / OTTO_CLASS_COUNTS.sum()
    assert np.abs(got - want).max() < 0.01


def test_other_shapes():
    x, y = make_arrays(1000, seed=0, n_classes=4, n_features=20)
    assert x.shape == (1000, 20) and set(np.unique(y)) == {0, 1, 2, 3}


def test_mlp_beats_logistic_regression():
    """The structure is learnable but not linear: a small MLP clearly beats logreg."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    x, y = make_arrays(6000, seed=3)
    xs = StandardScaler().fit_transform(x.astype(float))
    tr, va = slice(0, 5000), slice(5000, None)
    lr = LogisticRegression(max_iter=300).fit(xs[tr], y[tr])
    mlp = MLPClassifier((64,), alpha=1e-3, max_iter=60, early_stopping=True, random_state=0).fit(
        xs[tr], y[tr]
    )
    l_lr = log_loss(y[va], lr.predict_proba(xs[va]))
    l_mlp = log_loss(y[va], mlp.predict_proba(xs[va]))
    assert l_mlp < 0.8 * l_lr, (l_mlp, l_lr)


def test_make_data_can_leave_cells_empty_without_changing_the_others(tmp_path):
    import pandas as pd

    from ottotrain.data.synth import make_data

    gappy = [pd.read_csv(p) for p in make_data(tmp_path / "m", rows=400, seed=3, test_rows=200, missing=0.2)]
    whole = [pd.read_csv(p) for p in make_data(tmp_path / "w", rows=400, seed=3, test_rows=200)]
    for a, b in zip(gappy, whole, strict=True):
        feats = [c for c in a if c.startswith("feat_")]
        assert 0.17 < a[feats].isna().to_numpy().mean() < 0.23
        assert ((a[feats] == b[feats]) | a[feats].isna()).all().all()
        assert a.drop(columns=feats).equals(b.drop(columns=feats))


CARDS = (3, 40, 300)


def _cat_frames(path, **kw):
    from ottotrain.data.synth import make_data

    kw = {"rows": 3000, "seed": 5, "test_rows": 2000, **kw}
    return [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in make_data(path, **kw)]


def test_categorical_columns_names_order_and_values(tmp_path):
    train, test = _cat_frames(tmp_path / "c", categorical=CARDS)
    feats = [f"feat_{i}" for i in range(1, 94)]
    cats = ["cat_1", "cat_2", "cat_3"]
    assert list(train.columns) == ["id", *feats, *cats, "target"]
    assert list(test.columns) == ["id", *feats, *cats]
    for j, k in enumerate(CARDS, start=1):
        seen = set(train[f"cat_{j}"])
        assert seen <= {f"c{j}_{v}" for v in range(k)}  # distinct values <= cardinality
        assert not train[f"cat_{j}"].isna().any()
    assert train.cat_1.nunique() == 3
    counts = train.cat_3.value_counts()
    assert counts.iloc[0] > 20 * counts.iloc[-1]  # skewed: frequent and rare values


def test_categorical_is_deterministic_and_leaves_the_rest_unchanged(tmp_path):
    from ottotrain.data.synth import make_data

    a = make_data(tmp_path / "a", rows=800, seed=4, test_rows=300, categorical=(5, 60))
    b = make_data(tmp_path / "b", rows=800, seed=4, test_rows=300, categorical=(5, 60))
    for p, q in zip(a, b, strict=True):
        assert p.read_bytes() == q.read_bytes()
    plain = make_data(tmp_path / "p", rows=800, seed=4, test_rows=300)
    wider = make_data(tmp_path / "w", rows=800, seed=4, test_rows=300, categorical=(5, 60, 7))
    for p, q, r in zip(a, plain, wider, strict=True):
        with_cats, without, more = pd.read_csv(p), pd.read_csv(q), pd.read_csv(r)
        assert with_cats.drop(columns=["cat_1", "cat_2"]).equals(without)  # numeric values unchanged
        # Adding a column changes neither the others nor the existing categorical ones.
        assert more.drop(columns=["cat_3"]).equals(with_cats)


def test_categorical_test_cells_include_unseen_values(tmp_path):
    train, test = _cat_frames(tmp_path / "u", categorical=CARDS)
    for j in range(1, len(CARDS) + 1):
        col = test[f"cat_{j}"]
        unseen = ~col.isin(set(train[f"cat_{j}"]))
        new = col.str.startswith(f"c{j}_new")
        assert 0.005 < new.mean() < 0.05
        assert (unseen >= new).all()  # "new" values are never in train
        assert not col.isna().any()


def test_missing_applies_to_categorical_cells(tmp_path):
    gappy = _cat_frames(tmp_path / "m", categorical=CARDS, missing=0.2)
    whole = _cat_frames(tmp_path / "w", categorical=CARDS)
    cats = ["cat_1", "cat_2", "cat_3"]
    for a, b in zip(gappy, whole, strict=True):
        assert 0.17 < a[cats].isna().to_numpy().mean() < 0.23
        assert ((a[cats] == b[cats]) | a[cats].isna()).all().all()
        feats = [c for c in a if c.startswith("feat_")]
        assert 0.17 < a[feats].isna().to_numpy().mean() < 0.23
        # Categorical gaps come from their own stream: not the same rows as feat_1's.
        assert not a.cat_1.isna().equals(a.feat_1.isna())


def test_categories_are_informative_about_the_class(tmp_path):
    from scipy.stats import chi2_contingency

    train, _ = _cat_frames(tmp_path / "i", categorical=CARDS)
    prior = train.target.value_counts(normalize=True)
    for col in ["cat_1", "cat_2", "cat_3"]:
        table = pd.crosstab(train[col], train.target)
        assert chi2_contingency(table).pvalue < 1e-6, col
    # The class mix given a frequent value clearly differs from the overall one.
    by_value = pd.crosstab(train.cat_2, train.target, normalize="index")
    frequent = train.cat_2.value_counts().index[:5]
    assert (by_value.loc[frequent] - prior).abs().to_numpy().max() > 0.15


def test_make_data_rejects_bad_cardinalities(tmp_path):
    import pytest

    from ottotrain.data.synth import make_data

    for bad in [(1,), (3, 0), (2.5,)]:
        with pytest.raises(ValueError, match="cardinalities"):
            make_data(tmp_path / "x", rows=20, categorical=bad)


def test_cli_categorical_option(tmp_path):
    from click.testing import CliRunner

    from ottotrain.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["make-data", str(tmp_path / "d"), "--rows", "50", "--categorical", "3,12"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "d" / "train.csv")
    assert list(df.columns[-3:]) == ["cat_1", "cat_2", "target"]
    for bad in ["3,1", "a", "3,,4", "", "2.5"]:
        r = runner.invoke(main, ["make-data", str(tmp_path / "e"), "--categorical", bad])
        assert r.exit_code == 2, (bad, r.output)
        assert "Invalid value for '--categorical'" in r.output and ">= 2" in r.output
    assert not (tmp_path / "e").exists()
