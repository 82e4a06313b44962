"""ottotrain: a YAML model spec in, a trained tf.keras model and a Kaggle submission out.

The package imports nothing heavy at top level: ``ottotrain --help`` and config
validation must not pay for TensorFlow.
"""

__version__ = "1.0.0"

# Run directories record this; ``predict`` refuses runs from another major format.
RUN_FORMAT = 1

from ottotrain.errors import (  # noqa: E402
    ConfigError,
    DataError,
    OttoTrainError,
    RunError,
    TrainingError,
)

__all__ = ["ConfigError", "DataError", "OttoTrainError", "RunError", "TrainingError", "__version__"]
