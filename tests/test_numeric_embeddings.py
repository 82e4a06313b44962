"""Numeric-feature embeddings (PLE and PLR) and the quantile bins they use."""

import json

import numpy as np
import pytest


def _reference_ple(x, edges):
    """PLE by the paper's definition, one feature and one bin at a time; (N, n, T) with 0 padding."""
    t_max = max(len(e) - 1 for e in edges)
    out = np.zeros((x.shape[0], len(edges), t_max), dtype=np.float64)
    for j, e in enumerate(edges):
        t_j = len(e) - 1
        for t in range(t_j):
            z = (x[:, j].astype(np.float64) - e[t]) / (e[t + 1] - e[t])
            if t > 0:
                z = np.maximum(z, 0.0)
            if t < t_j - 1:
                z = np.minimum(z, 1.0)
            out[:, j, t] = z
    return out


# quantile_edges / pad_edges


def test_quantile_edges_are_increasing_floats_and_json_serializable():
    from ottotrain.features.bins import quantile_edges

    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    edges = quantile_edges(x, 8)
    assert len(edges) == 3
    for e, col in zip(edges, x.T):
        assert len(e) == 9
        assert all(type(v) is float for v in e)
        assert np.all(np.diff(e) > 0)
        assert e[0] == pytest.approx(col.min()) and e[-1] == pytest.approx(col.max())
    assert json.loads(json.dumps(edges)) == edges


def test_quantile_edges_merge_repeated_quantiles_and_handle_a_constant_column():
    from ottotrain.features.bins import quantile_edges

    x = np.stack([np.tile([0.0, 1.0, 2.0], 20), np.full(60, 3.5), np.arange(60.0)], axis=1)
    few, constant, many = quantile_edges(x, 10)
    assert few == [0.0, 1.0, 2.0]  # 3 distinct values: 2 bins, not 10
    assert constant == [3.5, 4.5]  # one bin
    assert len(many) == 11


def test_quantile_edges_are_fitted_only_on_the_rows_given():
    from ottotrain.features.bins import quantile_edges

    x = np.random.default_rng(1).normal(size=(100, 2))
    train, other = quantile_edges(x[:50], 4), quantile_edges(x[50:], 4)
    assert train != other
    assert train == quantile_edges(x[:50], 4)
    assert train[0][0] == pytest.approx(x[:50, 0].min()) and train[0][-1] == pytest.approx(x[:50, 0].max())


@pytest.mark.parametrize(
    "x, bins, match",
    [
        (np.zeros((5, 2)), 0, "bins >= 1"),
        (np.zeros(5), 3, "2-D"),
        (np.array([[0.0], [np.nan]]), 3, "finite"),
    ],
)
def test_quantile_edges_reject_bad_input(x, bins, match):
    from ottotrain.features.bins import quantile_edges

    with pytest.raises(ValueError, match=match):
        quantile_edges(x, bins)


def test_pad_edges_packs_ragged_edges_with_a_mask():
    from ottotrain.features.bins import pad_edges

    packed, mask = pad_edges([[0.0, 1.0, 2.0, 3.0], [-1.0, 1.0]])
    assert packed.shape == (2, 4) and mask.shape == (2, 3)
    assert packed.dtype == mask.dtype == np.float32
    np.testing.assert_array_equal(packed[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(packed[1, :2], [-1, 1])
    assert np.all(np.diff(packed, axis=1) > 0)  # padded bins have a width: no division by 0
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])


# PiecewiseLinearEmbedding


def test_ple_encoding_matches_the_papers_definition():
    from ottotrain.engine.numeric_embeddings import PiecewiseLinearEmbedding

    edges = [[-1.0, 0.0, 0.5, 2.0], [0.0, 1.0, 3.0], [2.0, 4.0]]  # 3 bins, 2 bins (padded), 1 bin
    # Below the first edge, on edges, inside bins, above the last edge.
    col = np.array([-3.0, -1.0, -0.25, 0.0, 0.3, 0.5, 1.7, 2.0, 5.0])
    x = np.stack([col, col + 1.0, col + 2.0, np.ones_like(col)], axis=1).astype(np.float32)
    layer = PiecewiseLinearEmbedding(edges, 2)
    layer.build(x.shape)
    got = np.asarray(layer.encode(x))
    want = _reference_ple(x, edges)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert (got[:, 1, 2] == 0).all()  # feature 1's missing third bin
    assert got[0, 0, 0] < 0 and got[-1, 0, 2] > 1  # the outer bins are not clipped outward
    np.testing.assert_allclose(got[:, 2, 0], (x[:, 2] - 2.0) / 2.0, rtol=1e-6)  # 1 bin: no clip at all
    assert (got[:, 2, 1:] == 0).all()


def test_output_shape_and_passthrough_columns():
    from ottotrain.engine.numeric_embeddings import PeriodicEmbedding, PiecewiseLinearEmbedding
    from ottotrain.features.bins import quantile_edges

    x = np.random.default_rng(2).normal(size=(7, 5)).astype(np.float32)
    n, d = 3, 4
    layers = [
        PiecewiseLinearEmbedding(quantile_edges(x[:, :n], 4), d),
        PeriodicEmbedding(6, d, 0.5, columns=n),
        PeriodicEmbedding(6, d, 0.5, columns=n, lite=True),
    ]
    for layer in layers:
        y = np.asarray(layer(x))
        assert y.shape == (7, n * d + 5 - n) == layer.compute_output_shape((7, 5))
        assert layer.compute_output_shape((None, 5)) == (None, n * d + 5 - n)
        np.testing.assert_array_equal(y[:, n * d :], x[:, n:])


def test_all_columns_embedded_by_default():
    from ottotrain.engine.numeric_embeddings import PeriodicEmbedding, PiecewiseLinearEmbedding

    x = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    assert np.asarray(PeriodicEmbedding(2, 5, 1.0)(x)).shape == (4, 15)
    assert np.asarray(PiecewiseLinearEmbedding([[-1.0, 0.0, 1.0]] * 3, 5)(x)).shape == (4, 15)


def test_embeddings_are_feature_major():
    """Feature j's d values are columns j*d .. j*d + d - 1: changing feature 1 changes only those."""
    from ottotrain.engine.numeric_embeddings import PiecewiseLinearEmbedding

    layer = PiecewiseLinearEmbedding([[-1.0, 0.0, 1.0]] * 3, 4, activation=None)
    x = np.zeros((1, 3), np.float32)
    x2 = x.copy()
    x2[0, 1] = 0.7
    changed = np.flatnonzero(np.asarray(layer(x2))[0] != np.asarray(layer(x))[0])
    assert set(changed) <= {4, 5, 6, 7} and len(changed) > 0


# PeriodicEmbedding


def test_periodic_weights_lite_param_count_and_sigma_scale():
    from ottotrain.engine.env import keras
    from ottotrain.engine.numeric_embeddings import PeriodicEmbedding

    keras.utils.set_random_seed(0)
    n, k, d = 40, 50, 3
    full = PeriodicEmbedding(k, d, 0.3)
    full.build((None, n))
    assert full.count_params() == n * k + n * 2 * k * d + n * d
    lite = PeriodicEmbedding(k, d, 0.3, lite=True)
    lite.build((None, n))
    assert lite.count_params() == n * k + 2 * k * d + d
    c = np.asarray(lite.frequency)
    assert c.shape == (n, k)
    assert 0.27 < c.std() < 0.33 and abs(c.mean()) < 0.03
    assert np.abs(c).max() <= 3 * 0.3 + 1e-6  # truncated at 3 sigma


# Both layers: checks, config, seeds, saving, training


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda L: L["ple"]([[0.0, 1.0]], 0), "d_embedding >= 1"),
        (lambda L: L["ple"]([[0.0]], 2), "at least 2 values"),
        (lambda L: L["ple"]([[0.0, 1.0, 1.0]], 2), "strictly increasing"),
        (lambda L: L["ple"]([], 2), "non-empty"),
        (lambda L: L["ple"]([[0.0, 1.0]], 2, columns=2), "columns must equal len"),
        (lambda L: L["plr"](0, 2, 1.0), "frequencies >= 1"),
        (lambda L: L["plr"](4, 2, 0.0), "sigma > 0"),
        (lambda L: L["plr"](4, 2, -1.0), "sigma > 0"),
        (lambda L: L["plr"](4, 2.5, 1.0), "d_embedding >= 1"),
        (lambda L: L["plr"](4, 2, 1.0, columns=0), "columns >= 1"),
    ],
)
def test_bad_arguments_raise_value_error(make, match):
    from ottotrain.engine.numeric_embeddings import PeriodicEmbedding, PiecewiseLinearEmbedding

    with pytest.raises(ValueError, match=match):
        make({"ple": PiecewiseLinearEmbedding, "plr": PeriodicEmbedding})


def test_too_many_columns_for_the_input_raise_at_build():
    from ottotrain.engine.numeric_embeddings import PeriodicEmbedding, PiecewiseLinearEmbedding

    with pytest.raises(ValueError, match="columns=4: it needs between 1 and 3"):
        PeriodicEmbedding(4, 2, 1.0, columns=4).build((None, 3))
    with pytest.raises(ValueError, match="columns=2: it needs between 1 and 1"):
        PiecewiseLinearEmbedding([[0.0, 1.0]] * 2, 2).build((None, 1))
    with pytest.raises(ValueError, match="2-D input"):
        PeriodicEmbedding(4, 2, 1.0).build((None, 3, 2))


def test_get_config_round_trip():
    from ottotrain.engine.numeric_embeddings import PeriodicEmbedding, PiecewiseLinearEmbedding

    for layer in (
        PiecewiseLinearEmbedding([[0.0, 0.1, 1.0], [2.0, 3.0]], 3, activation=None),
        PeriodicEmbedding(5, 3, 0.2, columns=2, activation="gelu", lite=True),
    ):
        config = layer.get_config()
        json.dumps(config)
        assert type(layer).from_config(config).get_config() == config
    assert PiecewiseLinearEmbedding([[0.0, 0.1, 1.0]], 3).get_config()["edges"] == [[0.0, 0.1, 1.0]]


def _model(first, features):
    from ottotrain.engine.env import keras

    return keras.Sequential(
        [keras.Input(shape=(features,)), first, keras.layers.Dense(3, activation="softmax")]
    )


def _layers(x, n):
    from ottotrain.engine.numeric_embeddings import PeriodicEmbedding, PiecewiseLinearEmbedding
    from ottotrain.features.bins import quantile_edges

    return {
        "ple": lambda: PiecewiseLinearEmbedding(quantile_edges(x[:, :n], 5), 4),
        "plr": lambda: PeriodicEmbedding(4, 4, 0.5, columns=n),
        "plr_lite": lambda: PeriodicEmbedding(4, 4, 0.5, columns=n, lite=True),
    }


@pytest.mark.parametrize("kind", ["ple", "plr", "plr_lite"])
def test_deterministic_under_set_random_seed(kind):
    from ottotrain.engine.env import keras

    x = np.random.default_rng(4).normal(size=(6, 4)).astype(np.float32)
    outs = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        outs.append(np.asarray(_layers(x, 3)[kind]()(x)))
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("kind", ["ple", "plr"])
def test_save_load_round_trip_and_fit(kind, tmp_path):
    from ottotrain.engine.env import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 5)).astype(np.float32)
    x[:, 1] = x[:, 1] > 0  # two values: one bin, so PLE pads this feature's other bins
    y = rng.integers(0, 3, size=32)
    model = _model(_layers(x, 3)[kind](), 5)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(np.asarray(w)).all() for w in model.weights)  # no NaN gradient from padding

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    if kind == "ple":  # the edges travel in the file as weights too
        np.testing.assert_array_equal(
            np.asarray(loaded.layers[0].bin_edges), np.asarray(model.layers[0].bin_edges)
        )
