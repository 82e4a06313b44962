"""What ottotrain.engine.keras_compat relies on in Keras and TensorFlow, one test per function.

Each test checks behaviour, not just that a name exists: it fails when a Keras or TensorFlow
release changes the private attribute or function a helper reaches for, so the break shows
up here, named, rather than as a silently non-deterministic, non-XLA or mute training run.
"""

import contextlib
import io

import numpy as np
import pytest


@pytest.fixture
def compat():
    from ottotrain.engine import keras_compat

    return keras_compat


@pytest.fixture
def determinism():
    """Restore TensorFlow's op determinism (a process-wide switch) after the test."""
    from tensorflow.python.framework import config as tf_config

    before = tf_config.is_op_determinism_enabled()
    yield tf_config
    if before:
        tf_config.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()


def _unseeded_random_op_runs(tf) -> bool:
    """Whether a random op without any seed runs (deterministic ops refuse it)."""
    with tf.Graph().as_default():  # a fresh graph: no global seed, whatever the process set
        try:
            tf.random.uniform([1])
        except RuntimeError as e:
            assert "determinism" in str(e)
            return False
    return True


def test_set_op_determinism_switches_tensorflow_both_ways(compat, determinism):
    from ottotrain.engine.env import tf

    compat.set_op_determinism(True)
    assert determinism.is_op_determinism_enabled()
    assert not _unseeded_random_op_runs(tf)  # what determinism does, seen from outside
    compat.set_op_determinism(False)  # the private way back (tensorflow.python)
    assert not determinism.is_op_determinism_enabled()
    assert _unseeded_random_op_runs(tf)
    compat.set_op_determinism(False)  # already off: no error
    compat.set_op_determinism(True)
    assert determinism.is_op_determinism_enabled()


def _model(keras, *layers):
    return keras.Sequential([keras.Input((4,)), *layers, keras.layers.Dense(3, activation="softmax")])


def test_force_jit_compile_turns_xla_on_where_keras_refused(compat, determinism):
    from ottotrain.engine.env import keras, tf

    class HostOp(keras.layers.Layer):
        """A layer XLA cannot compile (a Python function): it shows whether XLA is on."""

        def call(self, x):
            y = tf.numpy_function(lambda a: a, [x], tf.float32)
            y.set_shape(x.shape)
            return x + 0.0 * y

    x = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    y = keras.utils.to_categorical(np.arange(8) % 3, 3)
    compat.set_op_determinism(True)  # Keras refuses XLA then (and on CPU-only machines)
    models = []
    for force in (False, True):
        model = _model(keras, HostOp())
        with pytest.warns(UserWarning, match="jit_compile"):
            model.compile(optimizer="sgd", loss="categorical_crossentropy", jit_compile=True)
        assert model.jit_compile is False  # Keras said no
        if force:
            assert compat.force_jit_compile(model) is True
            assert model.jit_compile is True
        models.append(model)
    models[0].fit(x, y, epochs=1, verbose=0, shuffle=False)  # not compiled: the host op runs
    with pytest.raises(tf.errors.InvalidArgumentError, match="unsupported operations"):
        models[1].fit(x, y, epochs=1, verbose=0, shuffle=False)  # XLA really compiles the step
    # Already on: nothing to force. A layer that says it cannot be compiled: not forced.
    on = _model(keras)
    on.compile(optimizer="sgd", loss="categorical_crossentropy", jit_compile=False)
    assert compat.force_jit_compile(on) is True and compat.force_jit_compile(on) is True
    no_jit = _model(keras, keras.layers.Identity())
    no_jit.layers[0].supports_jit = False
    no_jit.compile(optimizer="sgd", loss="categorical_crossentropy", jit_compile=False)
    assert compat.force_jit_compile(no_jit) is False and no_jit.jit_compile is False


def test_dynamic_progbar_redraws_in_place_on_a_redirected_stream(compat, monkeypatch):
    import sys

    from ottotrain.engine.env import keras

    def first_update(bar):
        out = io.StringIO()  # not a terminal
        with contextlib.redirect_stdout(out):
            bar.update(1, values=[("loss", 0.5)])
        return out.getvalue()

    # Where Keras picks a static display by itself (stdout no terminal, no notebook, no POSIX:
    # Keras 3.15 redraws on any POSIX system), build a plain bar and ours.
    with monkeypatch.context() as m:
        for module in ("posix", "ipykernel"):
            m.delitem(sys.modules, module, raising=False)
        m.delenv("PYCHARM_HOSTED", raising=False)
        m.setattr(sys, "stdout", io.StringIO())
        plain = keras.utils.Progbar(10, stateful_metrics=["loss"])
        bar = compat.dynamic_progbar(10, ["loss", "accuracy"])
    assert "\r" not in first_update(plain)  # Keras' own choice there: one line per update
    assert isinstance(bar, keras.utils.Progbar) and bar.stateful_metrics == {"loss", "accuracy"}
    assert bar._dynamic_display is True
    text = first_update(bar)  # the switch is what makes it redraw (a renamed one would not)
    assert "\r" in text and "1/10" in text and "loss: 0.5" in text and "\n" not in text


def test_seed_generators_finds_each_random_layers_generator(compat):
    from ottotrain.engine.env import keras

    L = keras.layers
    for layer in (L.Dropout(0.5), L.GaussianNoise(0.1), L.GaussianDropout(0.1), L.AlphaDropout(0.1)):
        gens = compat.seed_generators(layer)
        assert len(gens) == 1, type(layer).__name__
        # What checkpoints.seed_state relies on: a state variable that fixes the next draws.
        g = gens[0]
        saved = np.asarray(g.state.numpy()).copy()
        first = keras.ops.convert_to_numpy(g.next())
        assert not np.array_equal(np.asarray(g.state.numpy()), saved)
        g.state.assign(saved)
        assert np.array_equal(keras.ops.convert_to_numpy(g.next()), first)
    for layer in (L.Dense(3), L.BatchNormalization(), L.PReLU()):
        assert compat.seed_generators(layer) == [], type(layer).__name__


def test_layers_of_lists_nested_layers_depth_first(compat):
    from ottotrain.engine.env import keras

    inner = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(4, name="inner_dense"),
            keras.layers.Dropout(0.1, name="inner_dropout"),
        ],
        name="block",
    )
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4, name="first"), inner, keras.layers.Dense(3, name="last")]
    )
    assert [layer.name for layer in compat.layers_of(model)] == [
        "first",
        "block",
        "inner_dense",
        "inner_dropout",
        "last",
    ]
    # So a nested model's dropout is found too (checkpoints.seed_state walks this list).
    found = [layer.name for layer in compat.layers_of(model) if compat.seed_generators(layer)]
    assert found == ["inner_dropout"]
