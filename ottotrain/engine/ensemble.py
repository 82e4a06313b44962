"""Parameter-efficient ensembles (BatchEnsemble, TabM) as layers of a Sequential model.

The model's input stays (N, F) and its output (N, C). Between ``EnsembleStart`` and
``EnsembleMean`` the tensors are (k, b, features), member axis first. Keras' own Dense,
Dropout, LayerNormalization and Activation work on them as they are (a plain Dense there is
shared by all members: TabM-mini's body).

Row order in training: a batch of N = k * b rows is member-major, rows [m*b:(m+1)*b] are
member m's. ``EnsembleStart`` splits it that way and ``EnsembleMean`` joins the members'
outputs back in the same order, so each member's rows meet their own labels and the Keras
loss is the mean of the member losses. The last partial batch of ``fit`` must also hold a
multiple of k rows. In inference every member sees all N rows and the output is the mean
over members.
"""

from __future__ import annotations

from ottotrain.engine.env import keras

ops = keras.ops

KINDS = ("batch", "packed")
# Keys of keras.layers.Dense's config that EnsembleDense takes as they are.
_DENSE_KEYS = (
    "units",
    "activation",
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "bias_constraint",
    "name",
    "trainable",
    "dtype",
)


@keras.saving.register_keras_serializable(package="ottotrain")
class RandomSign(keras.initializers.Initializer):
    """Values -1 or +1 with equal probability (TabM's first adapter).

    Seeded like Keras' random initializers: an unseeded one draws its seed from Python's
    ``random`` when made, so ``keras.utils.set_random_seed`` makes it deterministic.
    """

    def __init__(self, seed=None):
        self.seed = seed
        self._uniform = keras.initializers.RandomUniform(-1.0, 1.0, seed=seed)

    def __call__(self, shape, dtype=None):
        u = self._uniform(shape, dtype=dtype)
        return ops.where(u < 0, -ops.ones_like(u), ops.ones_like(u))

    def get_config(self):
        return {"seed": keras.saving.serialize_keras_object(self.seed)}


def _member_initializer(init):
    """``init`` for a (k, in, out) kernel as if each member were a Dense of its own.

    Keras computes the fans of a rank-3 shape as those of a convolution (in * k, out * k);
    a variance-scaling initializer (glorot, he, lecun) is told the real axes instead. Other
    initializers draw independently of the shape, except Orthogonal, which makes the stacked
    (k * in, out) matrix orthogonal rather than each member's.
    """
    vs = keras.initializers.VarianceScaling
    if isinstance(init, vs) and init.input_axes is None and init.output_axes is None:
        return vs(
            scale=init.scale,
            mode=init.mode,
            distribution=init.distribution,
            seed=init.seed,
            input_axes=[1],
            output_axes=[2],
        )
    return init


class _MemberConstraint(keras.constraints.Constraint):
    """A Dense kernel's constraint applied to each member's (in, out) slice.

    Norm constraints reduce over an axis of the 2-D kernel, which on the stacked (k, in, out)
    kernel would be the member axis.
    """

    def __init__(self, base):
        self.base = base

    def __call__(self, w):
        return ops.stack([self.base(w[m]) for m in range(w.shape[0])])


class _MemberRegularizer(keras.regularizers.Regularizer):
    """The sum of a Dense kernel's penalty over the members' (in, out) slices.

    The same as on the whole tensor for L1/L2; OrthogonalRegularizer needs 2-D kernels.
    """

    def __init__(self, base):
        self.base = base

    def __call__(self, w):
        return ops.sum(ops.stack([self.base(w[m]) for m in range(w.shape[0])]))


@keras.saving.register_keras_serializable(package="ottotrain")
class EnsembleStart(keras.layers.Layer):
    """(N, F) -> (k, b, F): where the ensemble starts.

    Training: the batch is k member-major blocks of b = N // k rows, one per member.
    Inference: every member gets all N rows, (k, N, F).
    """

    def __init__(self, k: int, **kwargs):
        super().__init__(**kwargs)
        self.k = int(k)
        if self.k < 1:
            raise ValueError(f"EnsembleStart needs k >= 1, got {k}")

    def call(self, x, training=None):
        shape = ops.shape(x)
        if training:
            return ops.reshape(x, (self.k, -1, *shape[1:]))
        return ops.broadcast_to(ops.expand_dims(x, 0), (self.k, *shape))

    def compute_output_shape(self, input_shape):
        # The member batch is N // k in training and N in inference: unknown without the mode.
        return (self.k, None, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "k": self.k}


@keras.saving.register_keras_serializable(package="ottotrain")
class EnsembleScale(keras.layers.Layer):
    """x * r[m] for member m: a per-member (k, F) multiplier, random signs by default.

    TabM-mini's only adapter, right after ``EnsembleStart``.
    """

    def __init__(self, k: int, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.k = int(k)
        self._default_initializer = initializer is None
        self.initializer = RandomSign() if initializer is None else keras.initializers.get(initializer)

    def build(self, input_shape):
        _check_members(self, input_shape)
        self.r = self.add_weight(shape=(self.k, input_shape[-1]), initializer=self.initializer, name="r")

    def call(self, x):
        return x * self.r[:, None, :]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        # The default stays None in the config: a saved model then names no initializer class of
        # ours, only the layers that runs.safety lets a model file hold.
        init = None if self._default_initializer else keras.initializers.serialize(self.initializer)
        return {**super().get_config(), "k": self.k, "initializer": init}


@keras.saving.register_keras_serializable(package="ottotrain")
class EnsembleDense(keras.layers.Layer):
    """A Dense layer for k members: (k, b, in) -> (k, b, units).

    ``kind="batch"`` (BatchEnsemble, TabM): one kernel W (in, units) shared by all members,
    per-member adapters r (k, in), s (k, units) and bias (k, units):
    ``y = ((x * r) @ W) * s + bias``. r starts as random signs when ``first`` (TabM's first
    layer), else ones; s starts as ones. ``fold=True`` computes the same with per-member
    kernels ``r[m, :, None] * W * s[m]`` and one batched matmul.

    ``kind="packed"``: k independent kernels (k, in, units) and biases (k, units), each
    initialized, regularized and constrained as a Dense of its own would be (the output
    heads, or a plain deep ensemble). ``first`` and ``fold`` don't apply.

    The other arguments are keras.layers.Dense's; the regularizers and constraints of a
    "batch" layer apply to the shared kernel and the per-member biases, not the adapters.
    """

    def __init__(
        self,
        units: int,
        k: int,
        kind: str = "batch",
        activation=None,
        use_bias: bool = True,
        first: bool = False,
        fold: bool = False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if kind not in KINDS:
            raise ValueError(f"EnsembleDense kind must be one of {KINDS}, got {kind!r}")
        self.units = int(units)
        self.k = int(k)
        self.kind = kind
        self.first = bool(first)
        self.fold = bool(fold)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    @classmethod
    def from_dense_config(
        cls, dense_config: dict, k: int, kind: str = "batch", first: bool = False, **kwargs
    ):
        """The EnsembleDense of a keras.layers.Dense's ``get_config()``; ``kwargs`` override."""
        if dense_config.get("lora_rank") or dense_config.get("quantization_config"):
            raise ValueError("EnsembleDense can't take a Dense with LoRA or quantization")
        config = {key: dense_config[key] for key in _DENSE_KEYS if key in dense_config}
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.get(config["dtype"])
        return cls(k=k, kind=kind, first=first, **{**config, **kwargs})

    def build(self, input_shape):
        _check_members(self, input_shape)
        n_in = input_shape[-1]
        if self.kind == "packed":
            self.kernel = self.add_weight(
                shape=(self.k, n_in, self.units),
                initializer=_member_initializer(self.kernel_initializer),
                regularizer=_MemberRegularizer(self.kernel_regularizer) if self.kernel_regularizer else None,
                constraint=_MemberConstraint(self.kernel_constraint) if self.kernel_constraint else None,
                name="kernel",
            )
        else:
            self.kernel = self.add_weight(
                shape=(n_in, self.units),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
                name="kernel",
            )
            self.r = self.add_weight(
                shape=(self.k, n_in), initializer=RandomSign() if self.first else "ones", name="r"
            )
            self.s = self.add_weight(shape=(self.k, self.units), initializer="ones", name="s")
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.k, self.units),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                name="bias",
            )

    def call(self, x):
        if self.kind == "packed":
            y = ops.matmul(x, self.kernel)
        elif self.fold:
            w = self.r[:, :, None] * self.kernel[None] * self.s[:, None, :]
            y = ops.matmul(x, w)
        else:
            # One (k * b, in) @ (in, units) product for all members.
            y = ops.matmul(x * self.r[:, None, :], self.kernel) * self.s[:, None, :]
        if self.bias is not None:
            y = y + self.bias[:, None, :]
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "k": self.k,
            "kind": self.kind,
            "first": self.first,
            "fold": self.fold,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        }


@keras.saving.register_keras_serializable(package="ottotrain")
class EnsembleMean(keras.layers.Layer):
    """(k, b, C) -> 2-D: where the ensemble ends.

    Training: the members' rows one after another, (k * b, C), in ``EnsembleStart``'s order.
    Inference: the mean over members, (b, C): after a softmax, the mean of the members'
    probabilities.
    """

    def call(self, x, training=None):
        if training:
            return ops.reshape(x, (-1, *ops.shape(x)[2:]))
        return ops.mean(x, axis=0)

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[2:])


def _check_members(layer, input_shape):
    if len(input_shape) != 3 or input_shape[0] not in (None, layer.k):
        raise ValueError(
            f"{type(layer).__name__} with k={layer.k} expects (k, batch, features) input, "
            f"got {tuple(input_shape)}: put it after EnsembleStart({layer.k})"
        )
