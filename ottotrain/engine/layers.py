"""ottotrain's own Keras layers: registered, so a saved model loads with ``safe_mode=True``.

``runs.safety`` lets a model file name these classes (and Keras' own) and nothing else.
"""

from __future__ import annotations

from ottotrain.engine.env import keras

ops = keras.ops


@keras.saving.register_keras_serializable(package="ottotrain")
class CategoryEmbedding(keras.layers.Layer):
    """The input block of a table with many-valued categorical columns.

    The input's first ``passthrough`` columns (numbers, one-hot columns) pass as they are;
    each of the last ``len(sizes)`` columns holds a category index (as a float) that selects
    a row of its own learned table (``sizes[i]`` rows of width ``dims[i]``). Output: the
    passthrough columns, then the embeddings, side by side.
    """

    def __init__(self, passthrough: int, sizes, dims, names=None, **kwargs):
        super().__init__(**kwargs)
        self.passthrough = int(passthrough)
        self.sizes = [int(s) for s in sizes]
        self.dims = [int(d) for d in dims]
        self.names = list(names) if names is not None else [f"category_{i}" for i in range(len(sizes))]
        if len(self.sizes) != len(self.dims) or not self.sizes:
            raise ValueError(f"CategoryEmbedding needs one width per vocabulary, got {sizes} and {dims}")

    def build(self, input_shape):
        want = self.passthrough + len(self.sizes)
        if input_shape[-1] is not None and input_shape[-1] != want:
            raise ValueError(f"CategoryEmbedding expects {want} input columns, got {input_shape[-1]}")
        # Keras' Embedding initializer: uniform in [-0.05, 0.05].
        self.tables = [
            self.add_weight(shape=(s, d), initializer="uniform", name=f"embedding_{i}")
            for i, (s, d) in enumerate(zip(self.sizes, self.dims))
        ]

    def call(self, x):
        parts = [x[:, : self.passthrough]] if self.passthrough else []
        for i, table in enumerate(self.tables):
            ids = ops.cast(x[:, self.passthrough + i], "int32")
            parts.append(ops.take(table, ids, axis=0))
        return ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.passthrough + sum(self.dims))

    def get_config(self):
        return {
            **super().get_config(),
            "passthrough": self.passthrough,
            "sizes": self.sizes,
            "dims": self.dims,
            "names": self.names,
        }
