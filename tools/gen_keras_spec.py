"""Regenerate ``ottotrain/config/keras_spec.json`` from the installed Keras.

The config is validated before TensorFlow is imported (importing it costs
seconds), so the names and signatures of Keras' layers, optimizers, losses,
activations, initializers, regularizers and constraints are kept in a static
table. ``tests/test_keras_spec.py`` fails when the table is out of date with the
installed Keras; run ``python tools/gen_keras_spec.py`` to refresh it.

The layers are a curated list (``LAYERS``): the ones that make sense on the flat
``(batch, n_features)`` input ottotrain builds models on. Everything else Keras has
(convolutions, recurrent and attention layers, image and text preprocessing, wrappers
that take another layer, ``Lambda``) is left out, so a config cannot name it.

    python tools/gen_keras_spec.py          # rewrite the table
    python tools/gen_keras_spec.py --check  # exit 1 (and say what differs) when it is stale
"""

import inspect
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "ottotrain" / "config" / "keras_spec.json"
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

# The layers a config may use: those that make sense on a flat (batch, n_features) input.
# Left out on purpose: Normalization (needs adapt() or per-feature lists; ottotrain scales
# the data itself), wrappers such as SpectralNormalization (they take a layer object),
# Lambda (arbitrary code), and every layer that wants images, sequences, tokens or strings.
# Reshape, Permute and Flatten stay for the tests' reshaping round trips.
LAYERS = (
    # weights
    "Dense",
    # regularisation
    "Dropout",
    "AlphaDropout",
    "GaussianDropout",
    "GaussianNoise",
    "ActivityRegularization",
    # normalisation
    "BatchNormalization",
    "LayerNormalization",
    "UnitNormalization",
    "GroupNormalization",
    "RMSNormalization",
    # activations
    "Activation",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Softmax",
    # plumbing
    "Identity",
    "Rescaling",
    "Reshape",
    "Flatten",
    "Permute",
)
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


def _named(module, base) -> dict:
    """Each subclass of ``base`` in ``module`` -> its parameter table."""
    return {name: _param_table(cls)[0] for name, cls in _classes(module, base).items()}


def _functions(module, keep, lower=False) -> list[str]:
    """The public names of ``module`` that ``keep(name)`` accepts (``lower``: lower-case ones)."""
    return sorted(
        n
        for n in dir(module)
        if not n.startswith("_")
        and (not lower or n[0].islower())
        and n not in {"get", "serialize", "deserialize"}
        and keep(n)
    )


def _layers(keras) -> dict:
    """The curated layers' parameter tables (a layer taking **kwargs gets the base layer's)."""
    layers = keras.layers
    missing = [
        n
        for n in LAYERS
        if not (inspect.isclass(getattr(layers, n, None)) and issubclass(getattr(layers, n), layers.Layer))
    ]
    if missing:
        raise SystemExit(
            f"Keras {installed_version(keras)} has no layer {', '.join(missing)}: "
            "edit LAYERS in tools/gen_keras_spec.py"
        )
    out = {}
    for name in sorted(LAYERS):
        params, varkw = _param_table(getattr(layers, name))
        if varkw:
            for k in BASE_LAYER_KWARGS:
                params.setdefault(k, {"default": None})
        out[name] = params
    return out


def main():
    from ottotrain.engine.env import keras  # Keras on TensorFlow, its start-up chatter filtered

    spec = {"keras_version": installed_version(keras), "layers": _layers(keras)}
    optimizers = _named(keras.optimizers, keras.optimizers.Optimizer)
    spec["optimizers"] = {n: t for n, t in optimizers.items() if n != "LossScaleOptimizer"}
    # Lower-case aliases Keras accepts by name (e.g. "sgd", "l2", "glorot_uniform").
    spec["aliases"] = {
        "optimizers": {n.lower(): n for n in spec["optimizers"]},
        "losses": _functions(keras.losses, lambda n: callable(getattr(keras.losses, n)), lower=True),
    }
    for family, base in (
        ("losses", "Loss"),
        ("initializers", "Initializer"),
        ("regularizers", "Regularizer"),
        ("constraints", "Constraint"),
    ):
        module = getattr(keras, family)
        spec[family] = _named(module, getattr(module, base))
        if family != "losses":
            names = _functions(module, lambda n, m=module: _gets(m, n), lower=True)
            spec["aliases"][family] = {n: type(module.get(n)).__name__ for n in names}
    spec["activations"] = _functions(keras.activations, lambda n: callable(getattr(keras.activations, n)))
    return spec


def installed_version(keras) -> str:
    """The installed Keras' version as its package metadata says (what keras_checks compares)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras")
    except PackageNotFoundError:
        return keras.__version__


def _gets(module, name):
    try:
        module.get(name)
        return True
    except Exception:
        return False


def differences(old: dict, new: dict) -> list[str]:
    """What differs between two tables, one line per entry (for --check)."""
    out = []
    if old.get("keras_version") != new.get("keras_version"):
        out.append(f"keras_version: {old.get('keras_version')} -> {new.get('keras_version')}")
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if section == "keras_version" or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    what = "added" if key not in a else "removed" if key not in b else "changed"
                    out.append(f"{section}.{key}: {what}")
        else:
            out.append(f"{section}: changed")
    return out


if __name__ == "__main__":
    spec = main()
    text = json.dumps(spec, indent=1, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        old = OUT.read_text() if OUT.exists() else "{}"
        if old == text:
            sys.exit(0)
        diff = differences(json.loads(old), spec) or ["formatting"]
        print(
            f"{OUT} is out of date with the installed Keras {spec['keras_version']}: "
            + "; ".join(diff[:20])
            + ("; ..." if len(diff) > 20 else "")
            + "; run: python tools/gen_keras_spec.py",
            file=sys.stderr,
        )
        sys.exit(1)
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(spec['layers'])} layers, Keras {spec['keras_version']})")
