"""Loading a model written by ottotrain, and its class probabilities."""

from __future__ import annotations

import logging

import numpy as np

from ottotrain.engine import ensemble, layers, numeric_embeddings  # noqa: F401  (registers ottotrain's layers)
from ottotrain.engine.env import keras
from ottotrain.errors import RunError, first_line
from ottotrain.log import phase
from ottotrain.runs.artifacts import proba_rows
from ottotrain.runs.safety import check_model_file

# Predicting with many models in one process (cv, a cv run's ensemble) makes TensorFlow
# warn about retracing: every member is a new model, the warning is noise.
logging.getLogger("tensorflow").setLevel(logging.ERROR)


def load_model(path):
    """Load a ``.keras`` file written by ottotrain: checked first, then in Keras' safe mode."""
    check_model_file(path)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:
        msg = first_line(e)
        raise RunError(
            f"{path}: cannot be loaded safely ({msg[:300]}); the file is damaged "
            "or was not written by ottotrain"
        ) from None


class _Counted(keras.callbacks.Callback):
    """Counts predicted rows into a progress phase."""

    def __init__(self, phase, n, batch_size):
        super().__init__()
        self.phase, self.n, self.batch_size = phase, n, batch_size

    def on_predict_batch_end(self, batch, logs=None):
        self.phase.advance(min(self.batch_size, self.n - batch * self.batch_size))


def predict_proba(model, x, batch_size=8192) -> np.ndarray:
    """Class probabilities, rows summing to 1 (in float64)."""
    n = len(x[0]) if isinstance(x, (list, tuple)) else len(x)
    with phase("Predicting", total=n) as p:
        counted = _Counted(p, n, batch_size)
        return proba_rows(model.predict(x, batch_size=batch_size, verbose=0, callbacks=[counted]))


def ensemble_size(model) -> int | None:
    """k of a model with ``model.ensemble``, else None."""
    starts = [layer for layer in model.layers if isinstance(layer, ensemble.EnsembleStart)]
    return starts[0].k if starts else None


def member_probas(model, x, batch_size=8192) -> np.ndarray:
    """A TabM-style ensemble's members' class probabilities on the rows ``x`` (one matrix, as
    ``Preprocessor.transform`` gives it): (k, rows, classes), each row summing to 1."""
    means = [layer for layer in model.layers if isinstance(layer, ensemble.EnsembleMean)]
    (features,) = model.inputs
    members = keras.Model(features, means[-1].input)  # (k, b, C): before the mean
    parts = [
        keras.ops.convert_to_numpy(members(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    return np.stack([proba_rows(m) for m in np.concatenate(parts, axis=1)])
