"""ottotrain: a YAML model spec in, a trained tf.keras model and a Kaggle submission out.

The Python API::

    from ottotrain import load_config, fit, cv
    cfg = load_config("configs/quickstart.yaml", ["train.epochs=2"])
    result = fit(cfg)              # a FitResult: result.val_log_loss, result.run_dir
    result = cv(cfg, folds=3)      # a CvResult: result.oof_log_loss, result.metrics()

``import ottotrain`` itself is light (the CLI's ``--help`` must not wait for pandas or
TensorFlow): ``load_config``, ``fit``, ``cv``, ``predict``, ``evaluate`` and ``explain`` are imported
on first use.
"""

import importlib

# The release (pyproject.toml reads it from here); cluster workers must run the same one.
__version__ = "2.0.0"

# Run directories record this; ``predict`` refuses runs from another major format.
RUN_FORMAT = 1

from ottotrain.errors import (  # noqa: E402
    ConfigError,
    DataError,
    OttoTrainError,
    RunError,
    TrainingError,
)

_API = {
    "load_config": ("ottotrain.config.loading", "load_config"),
    "fit": ("ottotrain.workflows.fit", "fit"),
    "cv": ("ottotrain.workflows.cv", "run_cv"),
    "predict": ("ottotrain.workflows.predict", "predict"),
    "evaluate": ("ottotrain.workflows.evaluate", "evaluate"),
    "explain": ("ottotrain.workflows.explain", "explain"),
}


def __getattr__(name):
    if name in _API:
        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ottotrain' has no attribute {name!r}")


__all__ = ["ConfigError", "DataError", "OttoTrainError", "RunError", "TrainingError", "__version__", *_API]
