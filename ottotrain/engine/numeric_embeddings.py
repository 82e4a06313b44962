"""Embeddings for numeric features, as layers that may open a Sequential model.

Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep Learning"
(also used by TabM): each numeric feature becomes a ``d_embedding``-vector before the MLP.
Two kinds, both following the paper's reference code (``rtdl_num_embeddings``):

- ``PiecewiseLinearEmbedding``: the piecewise-linear encoding (PLE) over quantile bins
  (``features.bins.quantile_edges``), then a linear map per feature and an activation;
- ``PeriodicEmbedding``: PLR, ``cos``/``sin`` of learned frequencies, then a linear map per
  feature (or one shared by all, ``lite``) and a ReLU.

Input: ``(N, F)``, the numbers standard-scaled. The first ``n`` columns are embedded, the
other ``F - n`` (one-hot or already embedded categorical columns, which must not be binned)
pass through unchanged. Output: ``(N, n * d + F - n)``: feature 0's ``d`` values, then
feature 1's, ..., then the passthrough columns as they came.

Each layer is registered, so a saved model loads with ``safe_mode=True``; the bin edges are
in the config and in the weights, so the ``.keras`` file alone rebuilds the model.
"""

from __future__ import annotations

import math

import numpy as np

from ottotrain.engine.env import keras
from ottotrain.features.bins import check_edges, pad_edges

ops = keras.ops

# erf(3 / sqrt(2)): the frequencies are drawn as sqrt(2) * sigma * erfinv(u) with u uniform
# in [-this, this], which is N(0, sigma) truncated at 3 sigma, as the paper's code draws them.
_ERF_3_SIGMA = math.erf(3 / math.sqrt(2))


def _positive_int(value, what: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{layer} needs {what} >= 1 (an integer), got {value!r}")
    return int(value)


def _fan_in_uniform(fan_in: int):
    """uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)): rtdl's init of its per-feature linear maps (and torch's
    nn.Linear default), kept so the paper's hyperparameters carry over."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


class _NumericEmbedding(keras.layers.Layer):
    """What both embeddings share: the column split, the checks, the flatten and the passthrough."""

    def __init__(self, d_embedding, columns=None, activation="relu", **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.d_embedding = _positive_int(d_embedding, "d_embedding", name)
        self.columns = None if columns is None else _positive_int(columns, "columns", name)
        self.activation = keras.activations.get(activation)

    def _embedded_columns(self, features):
        """``n``, the number of embedded columns, for an input of ``features`` columns (None: unknown)."""
        return self.columns if self.columns is not None else features

    def _check_input(self, input_shape):
        name = type(self).__name__
        if len(input_shape) != 2:
            raise ValueError(f"{name} expects a 2-D input (rows, features), got shape {tuple(input_shape)}")
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                f"{name} needs the number of input columns known when built, got shape {input_shape}"
            )
        n = self._embedded_columns(features)
        if not 1 <= n <= features:
            raise ValueError(
                f"{name} embeds columns={n}: it needs between 1 and {features} (the input's columns)"
            )
        return n, features

    def _finish(self, x, embedded, n):
        """Activation, flatten feature-major to ``(N, n * d)``, then the passthrough columns."""
        embedded = self.activation(embedded)
        flat = ops.reshape(embedded, (-1, n * self.d_embedding))
        if x.shape[-1] == n:
            return flat
        return ops.concatenate([flat, ops.cast(x[:, n:], flat.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        features = input_shape[-1]
        n = self._embedded_columns(features)
        if features is None or n is None:
            return (input_shape[0], None)
        return (input_shape[0], n * self.d_embedding + features - n)

    def get_config(self):
        return {
            **super().get_config(),
            "d_embedding": self.d_embedding,
            "columns": self.columns,
            "activation": keras.activations.serialize(self.activation),
        }


@keras.saving.register_keras_serializable(package="ottotrain")
class PiecewiseLinearEmbedding(_NumericEmbedding):
    """Piecewise-linear encoding (PLE) of the first ``n = len(edges)`` columns, then linear + activation.

    ``edges``: per feature, its bin edges ``e_0 < ... < e_T`` (ragged: features may have
    different numbers of bins), as ``features.bins.quantile_edges`` returns them. Component
    ``t`` (1..T) of feature j's encoding is ``clip((x - e_{t-1}) / (e_t - e_{t-1}), 0, 1)``, but
    the first component is not clipped below and the last not above (a single bin: not
    clipped at all), so values outside the fitted range keep a slope. A feature's missing bins
    (fewer than the most, ``T``) are 0. Each feature then has its own linear map ``T -> d``
    (weights ``(n, T, d)``, bias ``(n, d)``, both uniform in ``±1/sqrt(T)`` like rtdl's
    ``_NLinear``, the paper's PLE "version A"), then ``activation`` (default ReLU; None: linear).

    ``columns`` defaults to ``len(edges)`` and, when given, must equal it; the input's other
    columns pass through. The edges are the config's (JSON floats) and non-trainable weights.
    """

    def __init__(self, edges, d_embedding, columns=None, activation="relu", **kwargs):
        super().__init__(d_embedding, columns=columns, activation=activation, **kwargs)
        if isinstance(edges, np.ndarray):
            edges = edges.tolist()
        arrays = check_edges(edges)  # raises ValueError on bad edges
        self.edges = [[float(v) for v in e] for e in edges]
        if self.columns is not None and self.columns != len(arrays):
            raise ValueError(
                f"PiecewiseLinearEmbedding has bin edges for {len(arrays)} features, "
                f"got columns={self.columns}: columns must equal len(edges) (or be left out)"
            )
        self.bins = max(len(e) - 1 for e in arrays)

    def _embedded_columns(self, features):
        return len(self.edges)

    def build(self, input_shape):
        n, _ = self._check_input(input_shape)
        packed, mask = pad_edges(self.edges)
        # float32 whatever the dtype policy (autocast=False): rounding the edges to float16 could
        # merge neighbouring ones into a bin of width 0.
        self.bin_edges = self._constant(packed, "bin_edges")
        self.bin_mask = self._constant(mask, "bin_mask")
        self.kernel = self.add_weight(
            shape=(n, self.bins, self.d_embedding), initializer=_fan_in_uniform(self.bins), name="kernel"
        )
        self.bias = self.add_weight(
            shape=(n, self.d_embedding), initializer=_fan_in_uniform(self.bins), name="bias"
        )

    def _constant(self, value, name):
        """A fixed float32 array kept among the weights, so the model file holds it."""
        return self.add_weight(
            shape=value.shape, initializer=value, trainable=False, autocast=False, dtype="float32", name=name
        )

    def encode(self, x):
        """The PLE of the first ``n`` columns of ``x``: ``(N, n, T)`` float32, 0 in missing bins."""
        n = len(self.edges)
        real = self.bin_mask > 0  # (n, T)
        left = self.bin_edges[:, :-1]
        # The padded bins' width is set to 1: a width of 0 there would make NaN gradients through
        # the where() below, even though their value is replaced by 0.
        width = ops.where(real, self.bin_edges[:, 1:] - left, 1.0)
        z = (ops.cast(x[:, :n], "float32")[:, :, None] - left) / width
        first = ops.arange(self.bins) == 0  # (T,): no lower clip
        # Each feature's last real bin (no upper clip): real here, and not real in the next one.
        after = ops.concatenate([real[:, 1:], ops.zeros((n, 1), dtype="bool")], axis=1)
        last = ops.logical_and(real, ops.logical_not(after))
        z = ops.where(first, z, ops.maximum(z, 0.0))
        z = ops.where(last, z, ops.minimum(z, 1.0))
        return ops.where(real, z, 0.0)

    def call(self, x):
        n = len(self.edges)
        z = ops.cast(self.encode(x), self.compute_dtype)
        embedded = ops.einsum("bnt,ntd->bnd", z, self.kernel) + self.bias
        return self._finish(x, embedded, n)

    def get_config(self):
        return {**super().get_config(), "edges": self.edges}


def _truncated_normal_3_sigma(sigma: float):
    """N(0, sigma) truncated at ±3 sigma (Keras' TruncatedNormal cuts at 2), by inverse CDF."""
    uniform = keras.initializers.RandomUniform(-_ERF_3_SIGMA, _ERF_3_SIGMA)

    def initializer(shape, dtype=None):
        u = uniform(shape, dtype="float32")
        return ops.cast(math.sqrt(2.0) * sigma * ops.erfinv(u), dtype or "float32")

    return initializer


@keras.saving.register_keras_serializable(package="ottotrain")
class PeriodicEmbedding(_NumericEmbedding):
    """PLR embeddings of the first ``n`` columns (``columns``, default all): periodic, linear, ReLU.

    Feature j's trainable frequencies ``c_j`` (``frequencies`` of them, drawn from N(0, sigma)
    truncated at 3 sigma, as the paper's code does) give ``v = 2 pi c_j x`` and
    ``[cos(v), sin(v)]`` (``2 * frequencies`` values); a linear map per feature ``(n, 2k, d)``
    with bias ``(n, d)`` (``lite=True``: one map ``(2k, d)``, bias ``(d,)``, shared by all
    features, the paper's "PLR(lite)"), both uniform in ``±1/sqrt(2k)`` like rtdl, then
    ``activation`` (default ReLU; None: linear). ``sigma`` is the most important
    hyperparameter (the paper tunes it in [0.01, 100]; rtdl's default is 0.01, with 48
    frequencies and d_embedding 24).
    """

    def __init__(
        self, frequencies, d_embedding, sigma, columns=None, activation="relu", lite=False, **kwargs
    ):
        super().__init__(d_embedding, columns=columns, activation=activation, **kwargs)
        self.frequencies = _positive_int(frequencies, "frequencies", "PeriodicEmbedding")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating, np.integer)):
            raise ValueError(f"PeriodicEmbedding needs sigma > 0 (a number), got {sigma!r}")
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"PeriodicEmbedding needs a finite sigma > 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.lite = bool(lite)

    def build(self, input_shape):
        n, _ = self._check_input(input_shape)
        k2, d = 2 * self.frequencies, self.d_embedding
        self.frequency = self.add_weight(
            shape=(n, self.frequencies), initializer=_truncated_normal_3_sigma(self.sigma), name="frequency"
        )
        kernel_shape, bias_shape = ((k2, d), (d,)) if self.lite else ((n, k2, d), (n, d))
        self.kernel = self.add_weight(shape=kernel_shape, initializer=_fan_in_uniform(k2), name="kernel")
        self.bias = self.add_weight(shape=bias_shape, initializer=_fan_in_uniform(k2), name="bias")

    def call(self, x):
        n = self.frequency.shape[0]
        v = (2 * math.pi) * x[:, :n, None] * self.frequency  # (N, n, k)
        periodic = ops.concatenate([ops.cos(v), ops.sin(v)], axis=-1)  # (N, n, 2k)
        equation = "bnk,kd->bnd" if self.lite else "bnk,nkd->bnd"
        embedded = ops.einsum(equation, periodic, self.kernel) + self.bias
        return self._finish(x, embedded, n)

    def get_config(self):
        return {
            **super().get_config(),
            "frequencies": self.frequencies,
            "sigma": self.sigma,
            "lite": self.lite,
        }
