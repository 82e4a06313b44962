"""The arrays one member trains on, as the model sees them (preprocessed, float32)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ottotrain.features.categories import InputBlock


@dataclass
class Arrays:
    """Preprocessed arrays for one member: its training and validation rows."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    n_classes: int
    inputs: InputBlock | None = None  # what x's columns are (embedding columns at the end, bins)
