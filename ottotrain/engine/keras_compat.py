"""The few places ottotrain needs Keras or TensorFlow internals, each behind one function.

Everything else in the engine uses public APIs only. Each function here has a test
(tests/test_keras_compat.py) that fails when a Keras or TensorFlow release changes
what it relies on.
"""

from __future__ import annotations

from ottotrain.engine.env import keras, tf


def layers_of(model) -> list:
    """Every layer inside ``model``, depth first (nested models' layers included)."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(layers_of(layer))
    return out


def seed_generators(layer) -> list:
    """A layer's random-number generators (Dropout, GaussianNoise, ...), in attribute order.

    Public API: ``keras.random.SeedGenerator`` objects held as the layer's attributes.
    Keras does not save their state with the weights, so resuming needs them.
    """
    return [v for v in vars(layer).values() if isinstance(v, keras.random.SeedGenerator)]


def set_op_determinism(on: bool):
    """Deterministic TensorFlow ops on or off.

    Switching them on is public (``tf.config.experimental.enable_op_determinism``);
    switching them off again, for a later run in the same process (cv, tests) that says
    ``train.deterministic: false``, exists only in ``tensorflow.python``.
    """
    if on:
        tf.config.experimental.enable_op_determinism()
        return
    from tensorflow.python.framework import config as tf_config  # private: no public "off"

    if tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()


def force_jit_compile(model) -> bool:
    """Honour an explicit ``train.jit_compile: true`` that Keras turned off; True if it is on.

    Keras 3 refuses XLA under TF op determinism (it cannot vouch for every kernel on every
    device) and on CPU-only machines; on CPU XLA's results are run-to-run identical. The
    only switch is the private ``_jit_compile`` behind the read-only ``jit_compile``.
    """
    if model.jit_compile:
        return True
    if not all(getattr(layer, "supports_jit", True) for layer in layers_of(model)):
        return False
    model._jit_compile = True
    return model.jit_compile


def dynamic_progbar(target: int, stateful_metrics) -> "keras.utils.Progbar":
    """A ``keras.utils.Progbar`` that redraws in place even when stdout is redirected.

    Progbar decides once, when it is made, from ``sys.stdout.isatty()`` and the platform
    (Keras 3.15 redraws on any POSIX system, not elsewhere); ottotrain writes it to the
    terminal's stderr through a redirect, which it knows to be a terminal (``Log.tty``).
    The only switch is the private ``_dynamic_display``.
    """
    bar = keras.utils.Progbar(target, stateful_metrics=stateful_metrics)
    bar._dynamic_display = True
    return bar
