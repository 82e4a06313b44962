"""Regenerate ``ottotrain/keras_spec.json`` from the installed Keras.

The config is validated before TensorFlow is imported (importing it costs
seconds), so the names and signatures of Keras' layers, optimizers, losses,
activations, initializers, regularizers and constraints are kept in a static
table. ``tests/test_keras_spec.py`` fails when the table is out of date with the
installed Keras; run ``python tools/gen_keras_spec.py`` to refresh it.
"""

import inspect
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
OUT = Path(__file__).resolve().parent.parent / "ottotrain" / "config" / "keras_spec.json"

# Layers that need Python objects (other layers, functions) or shapes we manage.
SKIP_LAYERS = {
    "Layer", "InputLayer", "Input", "InputSpec", "Lambda", "Wrapper", "Bidirectional",
    "TimeDistributed", "RNN", "StackedRNNCells", "TorchModuleWrapper", "JaxLayer",
    "FlaxLayer", "TFSMLayer", "Pipeline",
}
BASE_LAYER_KWARGS = ["name", "dtype", "trainable"]


def _param_table(cls):
    """Map each keyword parameter of ``cls.__init__`` to its JSON-able default."""
    params = {}
    varkw = False
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind == p.VAR_POSITIONAL:
            continue
        if p.kind == p.VAR_KEYWORD:
            varkw = True
            continue
        d = p.default
        if d is inspect.Parameter.empty:
            params[p.name] = {"required": True}
        elif d is None or isinstance(d, (bool, int, float, str)):
            params[p.name] = {"default": d}
        elif isinstance(d, (tuple, list)) and all(isinstance(v, (int, float, str, type(None))) for v in d):
            params[p.name] = {"default": list(d)}
        else:
            params[p.name] = {"default": None, "object": True}
    return params, varkw


def _classes(module, base):
    out = {}
    for name in sorted(dir(module)):
        obj = getattr(module, name)
        if inspect.isclass(obj) and issubclass(obj, base) and obj is not base:
            out[name] = obj
    return out


def main():
    import keras

    spec = {"keras_version": keras.__version__, "layers": {}}
    for name, cls in _classes(keras.layers, keras.layers.Layer).items():
        if name in SKIP_LAYERS:
            continue
        params, varkw = _param_table(cls)
        if varkw:
            for k in BASE_LAYER_KWARGS:
                params.setdefault(k, {"default": None})
        spec["layers"][name] = params

    spec["optimizers"] = {}
    for name, cls in _classes(keras.optimizers, keras.optimizers.Optimizer).items():
        if name in {"LossScaleOptimizer"}:
            continue
        spec["optimizers"][name] = _param_table(cls)[0]

    def _named(module, base):
        table = {}
        for name, cls in _classes(module, base).items():
            table[name] = _param_table(cls)[0]
        return table

    spec["losses"] = _named(keras.losses, keras.losses.Loss)
    spec["initializers"] = _named(keras.initializers, keras.initializers.Initializer)
    spec["regularizers"] = _named(keras.regularizers, keras.regularizers.Regularizer)
    spec["constraints"] = _named(keras.constraints, keras.constraints.Constraint)
    spec["activations"] = sorted(
        n for n in dir(keras.activations)
        if not n.startswith("_") and callable(getattr(keras.activations, n))
        and n not in {"get", "serialize", "deserialize"}
    )
    # Lower-case aliases Keras accepts by name (e.g. "sgd", "l2", "glorot_uniform").
    spec["aliases"] = {
        "optimizers": {n.lower(): n for n in spec["optimizers"]},
        "losses": sorted(
            n for n in dir(keras.losses)
            if not n.startswith("_") and n[0].islower() and callable(getattr(keras.losses, n))
            and n not in {"get", "serialize", "deserialize"}
        ),
        "initializers": {
            n: type(keras.initializers.get(n)).__name__
            for n in dir(keras.initializers)
            if n[0].islower() and not n.startswith("_") and n not in {"get", "serialize", "deserialize"}
            and _gets(keras.initializers, n)
        },
        "regularizers": {
            n: type(keras.regularizers.get(n)).__name__
            for n in dir(keras.regularizers)
            if n[0].islower() and not n.startswith("_") and n not in {"get", "serialize", "deserialize"}
            and _gets(keras.regularizers, n)
        },
        "constraints": {
            n: type(keras.constraints.get(n)).__name__
            for n in dir(keras.constraints)
            if n[0].islower() and not n.startswith("_") and n not in {"get", "serialize", "deserialize"}
            and _gets(keras.constraints, n)
        },
    }
    return spec


def _gets(module, name):
    try:
        module.get(name)
        return True
    except Exception:
        return False


if __name__ == "__main__":
    spec = main()
    text = json.dumps(spec, indent=1, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(spec['layers'])} layers, Keras {spec['keras_version']})")
