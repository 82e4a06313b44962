"""MLflow tracking of fit, cv, tune and stack runs (docs/tracking.md).

``settings`` and ``session`` are pure Python: a workflow resolves whether its run is tracked
(``resolve``), starts the tracking process at once (``process``) and runs inside ``tracked``.
The modules that import MLflow (``client``, ``kinds``, ``model``, ``listing``, ``extra``)
are imported on first use, as the engine's are: a command without tracking never pays for
MLflow.
"""

import importlib

from ottotrain.tracking.session import process, tracked
from ottotrain.tracking.settings import RECORD_FILE, Record, Settings, resolve

_SUBMODULES = ("client", "content", "extra", "kinds", "listing", "model")
_LAZY = {"log_to_run": "extra", "list_experiment": "listing"}

__all__ = [
    "RECORD_FILE",
    "Record",
    "Settings",
    "list_experiment",
    "log_outputs",
    "log_to_run",
    "process",
    "resolve",
    "tracked",
]


def log_outputs(run_dir, files, metrics=None, artifact_path=None, log=None) -> bool:
    """``log_to_run`` where the run was tracked; otherwise nothing, not even MLflow's import
    (what ``evaluate`` and ``explain`` call after writing their files)."""
    if Record.of(run_dir) is None:
        return False
    return __getattr__("log_to_run")(run_dir, files, metrics, artifact_path, log)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
