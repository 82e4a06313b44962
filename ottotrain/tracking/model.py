"""A fit's or cv's model logged as an MLflow model: the run's SavedModel export (the same as
``ottotrain export``) behind the pyfunc of ``engine/mlflow_pyfunc.py``, with a signature of the
raw columns."""

from __future__ import annotations

import importlib.metadata
import tempfile
import warnings
from pathlib import Path

import mlflow.pyfunc
from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, Schema

from ottotrain.serving.schema import NUMERIC, ModelSchema
from ottotrain.tracking.client import Tracker

MODEL_PATH = "model"  # the artifact path: runs:/<run id>/model
# Read by MLflow (not imported here: it registers the pyfunc when imported).
MODEL_CODE = Path(__file__).parent.parent / "engine" / "mlflow_pyfunc.py"
SAVED_MODEL = "saved_model"  # mlflow_pyfunc.SAVED_MODEL
REQUIREMENTS = ("mlflow-skinny", "tensorflow", "numpy", "pandas")  # what mlflow_pyfunc.py imports


def signature(schema: ModelSchema) -> ModelSignature:
    """The raw columns in, by name, a probability per class out. A numeric column is ``Any``:
    MLflow refuses integers for a ``double`` column (it calls int64 to float64 unsafe), and
    a CSV's or JSON's counts arrive as integers; the model reads them as numbers (NaN missing)."""
    inputs = [ColSpec(AnyType() if c.kind == NUMERIC else "string", c.name) for c in schema.columns]
    return ModelSignature(Schema(inputs), Schema([ColSpec("double", c) for c in schema.classes]))


def _requirements() -> list[str]:
    return [f"{p}=={importlib.metadata.version(p)}" for p in REQUIREMENTS]


def warm_up() -> None:
    """Save a model once, with no artifacts, to a scratch folder and drop it: MLflow's first
    ``save_model`` in a process checks the requirements against every installed package's
    files (about 0.3 s of the 0.35 s it takes; later calls reuse what it learnt). Called by
    the start thread beside the training, so the run's own save after it costs no such time."""
    with tempfile.TemporaryDirectory(prefix="ottotrain-mlflow-") as tmp, warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(
            str(Path(tmp) / MODEL_PATH), python_model=str(MODEL_CODE), pip_requirements=_requirements()
        )


def log_model(tracker: Tracker, run_id: str | None, run_dir: Path) -> None:
    """Export the run, wrap it as a pyfunc and log it under ``MODEL_PATH`` (nothing once tracking failed)."""
    export = tracker.settings.export_model
    if run_id is None or tracker.failed is not None or export is None:
        return
    with tempfile.TemporaryDirectory(prefix="ottotrain-mlflow-") as tmp:
        saved, model = Path(tmp) / "saved_model", Path(tmp) / MODEL_PATH
        export(run_dir, saved, packed_only=True)
        mlflow.pyfunc.save_model(
            str(model),
            python_model=str(MODEL_CODE),
            artifacts={SAVED_MODEL: str(saved)},
            signature=signature(ModelSchema.read(saved)),
            pip_requirements=_requirements(),
        )
        tracker.call("logging the model", "log_artifacts", run_id, str(model), MODEL_PATH)
