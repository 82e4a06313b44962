"""Features: elementwise transforms, TF-IDF, nearest-neighbour distances, the Preprocessor."""

from ottotrain.features.preprocess import Preprocessor
from ottotrain.features.transforms import signed_log1p

__all__ = ["Preprocessor", "signed_log1p"]
