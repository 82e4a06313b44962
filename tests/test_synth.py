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

    x, y = make_arrays(12000, seed=3)
    xs = StandardScaler().fit_transform(x.astype(float))
    tr, va = slice(0, 10000), slice(10000, None)
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
