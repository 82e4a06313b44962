"""Elementwise transforms shared by the preprocessing and the KNN distance space."""

from __future__ import annotations

import numpy as np


def signed_log1p(x):
    """log1p(x), mirrored for negative values; counts (all >= 0) skip the negative half."""
    if x.min(initial=0) >= 0:
        return np.log1p(x)
    return np.log1p(np.maximum(x, 0)) - np.log1p(np.maximum(-x, 0))
