"""The static Keras signature table must match the installed Keras."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_keras_spec_is_current():
    from importlib.metadata import version

    from ottotrain.config import keras_spec

    if version("keras") != keras_spec()["keras_version"]:
        pytest.skip(f"keras_spec.json was made with Keras {keras_spec()['keras_version']}, "
                    f"Keras {version('keras')} is installed: run python tools/gen_keras_spec.py")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_keras_spec.py"), "--check"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, ("ottotrain/keras_spec.json is out of date with the installed Keras; "
                               "run: python tools/gen_keras_spec.py")


def test_spec_has_the_documented_layers():
    from ottotrain.config import keras_spec

    layers = keras_spec()["layers"]
    for name in ("Dense", "Dropout", "BatchNormalization", "PReLU", "LeakyReLU", "ELU",
                 "GaussianNoise", "ActivityRegularization", "Reshape", "Permute", "Flatten",
                 "Activation", "LayerNormalization", "AlphaDropout", "GaussianDropout"):
        assert name in layers, name
    assert "Lambda" not in layers
    dense = layers["Dense"]
    for arg in ("units", "activation", "use_bias", "kernel_initializer", "bias_initializer",
                "kernel_regularizer", "bias_regularizer", "activity_regularizer",
                "kernel_constraint", "bias_constraint"):
        assert arg in dense, arg
