"""The ensemble layers (TabM, BatchEnsemble): row order, equivalences, init, saving, fitting."""

import json
import re
import zipfile

import numpy as np
import pytest

K, F, C = 4, 5, 3


def _keras():
    from ottotrain.engine.env import keras

    return keras


def _model(fold=False):
    from ottotrain.engine.ensemble import EnsembleDense, EnsembleMean, EnsembleScale, EnsembleStart

    keras = _keras()
    return keras.Sequential(
        [
            keras.Input((F,)),
            EnsembleStart(K),
            EnsembleScale(K),
            EnsembleDense(16, K, first=True, activation="relu", fold=fold, kernel_regularizer="l2"),
            keras.layers.Dropout(0.1),
            keras.layers.LayerNormalization(),
            keras.layers.Dense(8, activation="relu"),
            EnsembleDense(C, K, kind="packed", kernel_constraint="max_norm"),
            keras.layers.Activation("softmax"),
            EnsembleMean(),
        ]
    )


def _member_major(x, k):
    """Each batch as the pipeline delivers it: k copies of the rows, member after member."""
    return np.repeat(x[None], k, axis=0).reshape(-1, *x.shape[1:])


def test_shapes_in_training_and_inference():
    from ottotrain.engine.ensemble import EnsembleMean, EnsembleStart

    x = np.zeros((8, F), "float32")
    start, mean = EnsembleStart(K), EnsembleMean()
    assert tuple(start(x, training=True).shape) == (K, 2, F)
    assert tuple(start(x).shape) == (K, 8, F)
    assert tuple(start(x, training=False).shape) == (K, 8, F)
    h = np.zeros((K, 2, C), "float32")
    assert tuple(mean(h, training=True).shape) == (K * 2, C)
    assert tuple(mean(h).shape) == (2, C)
    assert start.compute_output_shape((None, F)) == (K, None, F)
    assert mean.compute_output_shape((K, None, C)) == (None, C)


def test_start_is_member_major_and_mean_undoes_it():
    from ottotrain.engine.ensemble import EnsembleMean, EnsembleStart

    x = np.arange(12 * F, dtype="float32").reshape(12, F)
    start, mean = EnsembleStart(K), EnsembleMean()
    split = np.asarray(start(x, training=True))
    for m in range(K):
        np.testing.assert_array_equal(split[m], x[3 * m : 3 * (m + 1)])
    np.testing.assert_array_equal(np.asarray(mean(start(x, training=True), training=True)), x)
    # Inference: every member sees every row, and the mean of equal members is the rows.
    shared = np.asarray(start(x))
    for m in range(K):
        np.testing.assert_array_equal(shared[m], x)
    np.testing.assert_allclose(np.asarray(mean(start(x))), x)


def test_the_model_is_2d_outside_and_keras_layers_work_inside():
    keras = _keras()
    model = _model()
    assert model.output_shape == (None, C)
    x = np.random.default_rng(0).random((12, F), dtype="float32")
    assert model.predict(x, verbose=0).shape == (12, C)
    assert tuple(model(x, training=True).shape) == (12, C)
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    # A plain Dense on (k, b, in) is the same kernel for every member.
    dense = keras.layers.Dense(2)
    h = np.random.default_rng(1).random((K, 3, F), dtype="float32")
    y = np.asarray(dense(h))
    w, b = (np.asarray(v) for v in dense.weights)
    np.testing.assert_allclose(y, h @ w + b, rtol=1e-5, atol=1e-6)


def test_wrong_input_rank_or_member_count_is_refused():
    from ottotrain.engine.ensemble import EnsembleDense

    keras = _keras()
    with pytest.raises(ValueError, match="EnsembleStart"):
        keras.Sequential([keras.Input((F,)), EnsembleDense(3, K)])
    with pytest.raises(ValueError, match="k=4"):
        EnsembleDense(3, K).build((2, None, F))
    with pytest.raises(ValueError, match="kind"):
        EnsembleDense(3, K, kind="mixed")


def test_batch_dense_with_unit_adapters_is_one_shared_dense():
    from ottotrain.engine.ensemble import EnsembleDense

    keras = _keras()
    x = np.random.default_rng(0).random((K, 6, F), dtype="float32")
    layer = EnsembleDense(7, K, activation="tanh")
    layer.build(x.shape)
    np.testing.assert_array_equal(np.asarray(layer.r), 1.0)
    np.testing.assert_array_equal(np.asarray(layer.s), 1.0)
    bias = np.random.default_rng(1).random(7, dtype="float32")
    layer.bias.assign(np.tile(bias, (K, 1)))
    dense = keras.layers.Dense(7, activation="tanh")
    dense.build((None, F))
    dense.set_weights([np.asarray(layer.kernel), bias])
    want = np.stack([np.asarray(dense(x[m])) for m in range(K)])
    np.testing.assert_allclose(np.asarray(layer(x)), want, rtol=1e-5, atol=1e-6)


def test_packed_dense_is_k_independent_dense_layers():
    from ottotrain.engine.ensemble import EnsembleDense

    keras = _keras()
    rng = np.random.default_rng(0)
    x = rng.random((K, 6, F), dtype="float32")
    layer = EnsembleDense(C, K, kind="packed", activation="relu")
    layer.build(x.shape)
    dense = [keras.layers.Dense(C, activation="relu") for _ in range(K)]
    for d in dense:
        d.build((None, F))
    kernels = rng.normal(size=(K, F, C)).astype("float32")
    biases = rng.normal(size=(K, C)).astype("float32")
    layer.set_weights([kernels, biases])
    for m, d in enumerate(dense):
        d.set_weights([kernels[m], biases[m]])
    want = np.stack([np.asarray(d(x[m])) for m, d in enumerate(dense)])
    np.testing.assert_allclose(np.asarray(layer(x)), want, rtol=1e-5, atol=1e-6)


def test_packed_kernels_are_initialized_with_each_members_fans():
    from ottotrain.engine.ensemble import EnsembleDense

    _keras().utils.set_random_seed(0)
    layer = EnsembleDense(4, 8, kind="packed")
    layer.build((8, None, 60))
    w = np.asarray(layer.kernel)
    limit = np.sqrt(6 / (60 + 4))  # glorot_uniform of one (60, 4) Dense kernel, not of (480, 32)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit
    assert np.abs(w[0] - w[1]).max() > 0.1  # the members don't start equal


def test_fold_gives_the_same_output_as_two_elementwise_passes():
    from ottotrain.engine.ensemble import EnsembleDense

    rng = np.random.default_rng(0)
    x = rng.normal(size=(K, 9, F)).astype("float32")
    plain = EnsembleDense(6, K, activation="relu")
    folded = EnsembleDense(6, K, activation="relu", fold=True)
    plain.build(x.shape)
    folded.build(x.shape)
    weights = [rng.normal(size=np.shape(w)).astype("float32") for w in plain.get_weights()]
    plain.set_weights(weights)
    folded.set_weights(weights)
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(plain(x)), rtol=1e-5, atol=1e-5)


def test_random_signs_are_plus_or_minus_one_and_follow_the_seed():
    from ottotrain.engine.ensemble import EnsembleDense, EnsembleScale, RandomSign

    keras = _keras()

    def draw(seed):
        keras.utils.set_random_seed(seed)
        scale, dense = EnsembleScale(K), EnsembleDense(3, K, first=True)
        scale.build((K, None, 50))
        dense.build((K, None, 50))
        return np.asarray(scale.r), np.asarray(dense.r), np.asarray(dense.s)

    r, dense_r, dense_s = draw(7)
    for values in (r, dense_r):
        assert set(np.unique(values)) == {-1.0, 1.0}
    np.testing.assert_array_equal(dense_s, 1.0)
    again = draw(7)
    np.testing.assert_array_equal(again[0], r)
    np.testing.assert_array_equal(again[1], dense_r)
    assert not np.array_equal(draw(8)[0], r)
    assert not np.array_equal(r, dense_r)  # two layers, two draws
    seeded = [np.asarray(RandomSign(seed=3)((20,))) for _ in range(2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])


def test_from_dense_config_takes_the_dense_arguments():
    from ottotrain.engine.ensemble import EnsembleDense

    keras = _keras()
    dense = keras.layers.Dense(
        5,
        activation="relu",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(0.01),
        activity_regularizer="l1",
        kernel_constraint="non_neg",
        name="hidden",
    )
    layer = EnsembleDense.from_dense_config(dense.get_config(), K, kind="packed", first=True)
    assert (layer.units, layer.k, layer.kind, layer.use_bias, layer.name) == (5, K, "packed", False, "hidden")
    assert layer.activation is keras.activations.relu
    assert isinstance(layer.kernel_initializer, keras.initializers.HeNormal)
    assert isinstance(layer.kernel_regularizer, keras.regularizers.L2)
    assert isinstance(layer.activity_regularizer, keras.regularizers.L1)
    assert isinstance(layer.kernel_constraint, keras.constraints.NonNeg)
    layer.build((K, None, F))
    assert layer.bias is None and len(layer.losses) == 1  # the kernel's penalty
    layer(np.ones((K, 2, F), "float32"))
    assert len(layer.losses) == 2  # and the activity's
    lora = {**dense.get_config(), "lora_rank": 2}
    with pytest.raises(ValueError, match="LoRA"):
        EnsembleDense.from_dense_config(lora, K)


def test_a_packed_kernel_constraint_applies_to_each_member():
    from ottotrain.engine.ensemble import EnsembleDense

    keras = _keras()
    layer = EnsembleDense(3, K, kind="packed", kernel_constraint=keras.constraints.UnitNorm())
    layer.build((K, None, F))
    w = np.random.default_rng(0).normal(size=(K, F, 3)).astype("float32")
    # UnitNorm(axis=0) of a Dense kernel: each output unit's column over the inputs.
    np.testing.assert_allclose(np.linalg.norm(np.asarray(layer.kernel.constraint(w)), axis=1), 1.0, rtol=1e-5)


def test_configs_round_trip_and_a_saved_model_predicts_the_same(tmp_path):
    from ottotrain.engine import ensemble

    keras = _keras()
    layers = [
        ensemble.EnsembleStart(K),
        ensemble.EnsembleScale(K),
        ensemble.EnsembleScale(K, initializer=ensemble.RandomSign(seed=1)),
        ensemble.EnsembleDense(4, K, first=True, fold=True, activation="gelu", bias_regularizer="l1"),
        ensemble.EnsembleDense(4, K, kind="packed", kernel_initializer="lecun_normal"),
        ensemble.EnsembleMean(),
    ]
    for layer in layers:
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config

    model = _model(fold=True)
    x = np.random.default_rng(0).random((10, F), dtype="float32")
    want = model.predict(x, verbose=0)
    path = tmp_path / "ensemble.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))
    names = set(re.findall(r"'registered_name': '(ottotrain>\w+)'", str(config)))
    assert names == {f"ottotrain>Ensemble{n}" for n in ("Start", "Scale", "Dense", "Mean")}
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), want)
    assert [type(a) for a in loaded.layers] == [type(b) for b in model.layers]


def test_fit_on_member_major_batches_lowers_the_loss():
    keras = _keras()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, F)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0)
    # Each batch of 32 rows: the same 8 rows for each of the 4 members.
    x_rep = np.concatenate([_member_major(x[i : i + 8], K) for i in range(0, 64, 8)])
    y_rep = np.concatenate([_member_major(y[i : i + 8], K) for i in range(0, 64, 8)])
    model = _model()
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    fit = dict(batch_size=32, epochs=2, shuffle=False, verbose=0)
    history = model.fit(x_rep, y_rep, validation_data=(x, y), **fit)
    loss = history.history["loss"]
    assert np.all(np.isfinite(loss)) and np.isfinite(history.history["val_loss"]).all()
    assert loss[1] < loss[0]


def test_summary_counts_the_shared_kernel_once():
    from ottotrain.engine.ensemble import EnsembleDense, EnsembleMean, EnsembleStart

    keras = _keras()
    model = keras.Sequential(
        [
            keras.Input((F,)),
            EnsembleStart(K),
            EnsembleDense(16, K, first=True, activation="relu"),
            EnsembleDense(C, K, kind="packed"),
            EnsembleMean(),
        ]
    )
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    text = "\n".join(lines)
    batch = F * 16 + K * F + K * 16 + K * 16  # shared kernel, r, s, per-member bias
    packed = K * 16 * C + K * C
    for name in ("EnsembleStart", "EnsembleDense", "EnsembleMean"):
        assert name in text
    assert f"{batch:,}" in text and f"{packed:,}" in text
    assert model.count_params() == batch + packed
    assert "(None, 3)" in text
