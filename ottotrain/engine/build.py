"""Turning a validated config into a compiled ``keras.Sequential`` model.

Keras errors raised while building are reported against the layer's key path, as
config errors.
"""

from __future__ import annotations

import warnings

from ottotrain.config import SYMBOLS, check_layer, keras_spec, needs_train_accuracy, normalize_named
from ottotrain.engine import keras_compat
from ottotrain.engine.env import keras
from ottotrain.errors import ConfigError


def setup(seed: int, deterministic: bool):
    """Forget earlier models, seed everything, pick deterministic ops or not; returns keras.

    Every member starts from the same global state, so a model's weights depend only on
    its config and seed, never on what the process built before it.
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    keras_compat.set_op_determinism(deterministic)
    return keras


def _resolve_symbols(value, sizes):
    if isinstance(value, str) and value in SYMBOLS:
        return sizes[value]
    if isinstance(value, list):
        return [_resolve_symbols(v, sizes) for v in value]
    return value


def _named_object(family, value):
    """An initializer/regularizer/constraint from a name or {name: ..., args}."""
    module = getattr(keras, family)
    if isinstance(value, str):
        return module.get(value)
    name, kwargs = normalize_named(value)
    spec = keras_spec()
    cls_name = name if name in spec[family] and name[0].isupper() else spec["aliases"][family].get(name, name)
    return getattr(module, cls_name)(**kwargs)


def layer_kwargs(args: dict, sizes: dict) -> dict:
    out = {}
    for key, value in args.items():
        value = _resolve_symbols(value, sizes)
        for suffix, family in (("_initializer", "initializers"), ("_regularizer", "regularizers"),
                               ("_constraint", "constraints")):
            if (key.endswith(suffix) or key == suffix[1:]) and value is not None:
                value = _named_object(family, value)
        if isinstance(value, list) and key in ("target_shape", "dims", "shared_axes", "noise_shape"):
            value = tuple(value)
        out[key] = value
    return out


def build_model(cfg, n_features: int, n_classes: int, compile: bool = True):
    """Build (and compile) the Sequential model a config describes.

    Args:
        cfg: a validated ``Config``.
        n_features: input width, from the data.
        n_classes: number of classes, from the data.
        compile: also compile with the config's optimizer and loss.

    Returns:
        A ``keras.Sequential``.

    Raises:
        ConfigError: Keras rejects a layer or the output does not fit the classes.
    """
    sizes = {"n_classes": n_classes, "n_features": n_features}
    model = keras.Sequential(name=cfg.name or "ottotrain")
    model.add(keras.Input(shape=(n_features,), name="features"))
    for i, item in enumerate(cfg.model.layers):
        name, args = check_layer(i, item)
        path = f"model.layers[{i}].{name}"
        try:
            layer = getattr(keras.layers, name)(**layer_kwargs(args, sizes))
            model.add(layer)
        except (ValueError, TypeError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{cfg.source}: {path}: Keras rejected this layer: {msg}") from None
    out = model.output_shape
    if tuple(out) != (None, n_classes):
        raise ConfigError(
            f"{cfg.source}: model.layers: the model's output shape is {tuple(out)}, but the data has {n_classes} "
            "classes; end with {Dense: {units: n_classes}} and {Activation: softmax}")
    if compile:
        compile_model(model, cfg)
    return model


def make_optimizer(cfg):
    name, kwargs = normalize_named(cfg.train.optimizer)
    cls = keras_spec()["aliases"]["optimizers"][name.lower()]
    kwargs = dict(kwargs)
    # YAML reads `learning_rate: 1` as an int, which Keras refuses ("should be float").
    for key in ("learning_rate", "weight_decay", "momentum", "epsilon", "clipnorm", "clipvalue"):
        if isinstance(kwargs.get(key), int) and not isinstance(kwargs[key], bool):
            kwargs[key] = float(kwargs[key])
    if cfg.train.gradient_clip_norm is not None:
        kwargs.setdefault("clipnorm", cfg.train.gradient_clip_norm)
    try:
        return getattr(keras.optimizers, cls)(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{cfg.source}: train.optimizer: Keras rejected the optimizer: {e}") from None


def make_loss(cfg):
    name, kwargs = normalize_named(cfg.train.loss)
    if not kwargs:
        return name
    losses = keras_spec()["losses"]
    cls = name if name in losses else next(
        c for c in losses if c.lower() == name.replace("_", "").lower())
    try:
        return getattr(keras.losses, cls)(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{cfg.source}: train.loss: Keras rejected the loss: {e}") from None


def steps_per_execution(cfg, n_train: int) -> int:
    """Batches run per compiled call.

    Running many batches inside one ``tf.function`` call removes Python and
    dispatch overhead per step, which dominates small models; results are
    unchanged (same batches, same order). 'auto' runs a whole epoch's worth of
    steps per call, capped so that progress still updates.
    """
    spe = cfg.train.steps_per_execution
    if spe != "auto":
        return int(spe)
    steps = max(1, -(-n_train // cfg.train.batch_size))
    return int(max(1, min(steps, 256)))


def compile_model(model, cfg, n_train: int = 0, optimizer=None):
    """Compile with the config's optimizer, loss and speed settings.

    Validation loss and accuracy are computed by the training loop from one forward pass
    (see ``callbacks.validation``), so no Keras metric is compiled unless the
    training batches' accuracy is wanted: a metric adds ops to every train step, which
    on small models costs about a quarter of the epoch (bench/RESULTS.md).
    """
    jit = cfg.train.jit_compile
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Model doesn't support `jit_compile=True`")
        model.compile(
            optimizer=optimizer or make_optimizer(cfg),
            loss=make_loss(cfg),
            metrics=["accuracy"] if needs_train_accuracy(cfg) else [],
            steps_per_execution=steps_per_execution(cfg, n_train) if n_train else 1,
            jit_compile=jit if jit != "auto" else "auto",
        )
    # 'auto' is off here: Keras 3 turns XLA off on CPU-only machines and whenever TF op
    # determinism is on (train.deterministic, the default). An explicit `jit_compile: true`
    # is honoured even so (see keras_compat.force_jit_compile): not bit-identical to the
    # non-XLA kernels, and compiling costs seconds, so it is opt-in (README, "Benchmarks").
    if jit is True:
        keras_compat.force_jit_compile(model)
    return model


def check_model(cfg, n_features: int, n_classes: int, n_train: int) -> str:
    """Build and compile the model once, so Keras checks every part; return its summary.

    Raises:
        ConfigError: Keras rejects a layer, the optimizer or the loss.
    """
    model = build_model(cfg, n_features, n_classes, compile=False)
    compile_model(model, cfg, n_train)
    return summary_text(model)


def summary_text(model) -> str:
    """The Keras summary as a string (no rich markup, fixed width)."""
    lines = []
    model.summary(print_fn=lambda s, **kw: lines.append(s), line_length=80)
    return "\n".join(lines)
