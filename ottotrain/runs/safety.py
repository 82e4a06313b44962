"""Refusing model files that are not plain Keras models written by ottotrain.

Nothing here imports Keras: a ``.keras`` file is a zip archive whose ``config.json`` is
inspected before Keras ever sees it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ottotrain.errors import RunError

# What a .keras file written by ottotrain holds (Keras' own zip layout).
MODEL_MEMBERS = ("metadata.json", "config.json", "model.weights.h5")
# ottotrain's own registered layers (engine/layers.py): the only classes from outside Keras.
OWN_LAYERS = {
    "ottotrain>CategoryEmbedding": "ottotrain.engine.layers",
    "ottotrain>PiecewiseLinearEmbedding": "ottotrain.engine.numeric_embeddings",
    "ottotrain>PeriodicEmbedding": "ottotrain.engine.numeric_embeddings",
    "ottotrain>EnsembleStart": "ottotrain.engine.ensemble",
    "ottotrain>EnsembleScale": "ottotrain.engine.ensemble",
    "ottotrain>EnsembleDense": "ottotrain.engine.ensemble",
    "ottotrain>EnsembleMean": "ottotrain.engine.ensemble",
}
# Class names that carry Python code (bytecode or a function looked up by name).
_CODE_CLASSES = ("Lambda", "__lambda__", "function", "__typespec__", "TFOpLambda")


def check_model_file(path):
    """Refuse a ``.keras`` file that is not a plain Keras model made of Keras' own classes.

    ``load_model(safe_mode=True)`` already refuses serialized lambdas; this check
    comes first and is stricter: the archive may only hold Keras' usual members,
    every ``module`` in its config must be a ``keras`` module (or name one of
    ottotrain's own registered layers, ``OWN_LAYERS``), and no class that
    carries code (Lambda, marshalled functions) may appear. Nothing is imported
    or executed while checking.
    """
    path = Path(path)
    hint = "the file is damaged or was not written by ottotrain; retrain the run"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            odd = [n for n in names if n not in MODEL_MEMBERS and not n.startswith("assets/")]
            if odd:
                raise RunError(
                    f"{path}: unexpected member(s) {', '.join(odd[:5])} in the model "
                    f"archive, refusing it; {hint}"
                )
            if "config.json" not in names:
                raise RunError(f"{path}: no config.json in the model archive; {hint}")
            if z.getinfo("config.json").file_size > 50_000_000:
                raise RunError(f"{path}: config.json is implausibly large; {hint}")
            config = json.loads(z.read("config.json").decode("utf-8"))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, RecursionError) as e:
        raise RunError(f"{path}: not a readable Keras model archive ({e}); {hint}") from None

    def walk(node, where):
        if isinstance(node, dict):
            module, cls = node.get("module"), node.get("class_name")
            reg = node.get("registered_name")
            at = f"{path}: config.json at {where[1:] or 'top level'}"
            own = isinstance(reg, str) and OWN_LAYERS.get(reg) == module and reg.endswith(f">{cls}")
            keras_module = isinstance(module, str) and (module == "keras" or module.startswith("keras."))
            if isinstance(module, str) and not keras_module and not own:
                raise RunError(
                    f"{at} refers to Python module {module!r} (class {cls!r}); "
                    "only Keras' own classes are loaded, refusing it"
                )
            if cls in _CODE_CLASSES:
                raise RunError(f"{at} holds a {cls} (Python code); refusing to load it")
            if not own and isinstance(reg, str) and ">" in reg:  # 'package>Name': a custom class
                raise RunError(
                    f"{at} needs the custom class {reg!r}; only Keras' own classes are loaded, refusing it"
                )
            for k, v in node.items():
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    try:
        walk(config, "")
    except RecursionError:
        raise RunError(f"{path}: config.json is nested implausibly deep; {hint}") from None
