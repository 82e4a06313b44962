"""The MLflow model of a run: its SavedModel export behind a pyfunc (MLflow's models from code).

MLflow copies this file into the logged model, so that loading it needs MLflow,
TensorFlow, numpy and pandas only: not ottotrain. Input: a DataFrame of the run's raw
feature columns (CSV headers; numbers, NaN missing; text for categorical columns);
output: one probability column per class.
"""

import json
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

SAVED_MODEL = "saved_model"  # the artifact's name
SCHEMA = Path("assets.extra") / "ottotrain.json"  # ottotrain.serving.schema.SCHEMA_FILE

# MLflow asks for type hints on predict when the class is made (in every run's output); the
# model has a signature instead (its columns by name), which type hints would not give.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method", category=UserWarning)


class RunModel(mlflow.pyfunc.PythonModel):
    """The run's probabilities from its SavedModel's packed signature."""

    def load_context(self, context):
        import tensorflow as tf  # noqa: PLC0415 (only when MLflow loads the model)

        path = Path(context.artifacts[SAVED_MODEL])
        schema = json.loads((path / SCHEMA).read_text(encoding="utf-8"))
        self.classes = schema["classes"]
        self.numeric = [c["name"] for c in schema["columns"] if c["kind"] == "numeric"]
        self.text = [c["name"] for c in schema["columns"] if c["kind"] != "numeric"]
        self.tf = tf
        self.module = tf.saved_model.load(str(path))
        self.fn = self.module.signatures["packed"]

    def predict(self, context, model_input, params=None):
        df = pd.DataFrame(model_input)
        numbers = df[self.numeric].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
        feeds = {"numbers": self.tf.constant(numbers)}
        if self.text:
            text = df[self.text].astype(object).where(df[self.text].notna(), "").astype(str)
            feeds["strings"] = self.tf.constant(text.to_numpy(), self.tf.string)
        proba = self.fn(**feeds)["probabilities"].numpy().astype(np.float64)
        return pd.DataFrame(proba, columns=self.classes, index=df.index)


mlflow.models.set_model(RunModel())
