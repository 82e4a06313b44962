"""The engine: the only package that imports TensorFlow and Keras.

Importing ``ottotrain.engine`` is free; each submodule imports TensorFlow at its top and
is imported on first use, as in ``engine.member.train_member(...)``. This is the one lazy
boundary in ottotrain: every other module imports what it needs at its top, and none of
them imports an engine submodule directly, so commands that need no model (``--help``,
``runs``, ``config``, a config error) never pay for TensorFlow.
"""

import importlib

_SUBMODULES = (
    "build",
    "callbacks",
    "checkpoints",
    "ensemble",
    "env",
    "export",
    "export_stack",
    "inference",
    "keras_compat",
    "layers",
    "lite",
    "loop",
    "member",
    "numeric_embeddings",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBMODULES])
