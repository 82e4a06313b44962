"""Turning a validated config into a compiled ``keras.Sequential`` model.

Keras errors raised while building are reported against the key path of the part
Keras refused (a layer, one of its initializers, the optimizer, the loss), as config
errors; so is a name this Keras does not have (the config is checked against a static
table, keras_spec.json, which may come from another Keras version).
"""

from __future__ import annotations

import warnings

import numpy as np

from ottotrain.config import SYMBOLS, check_layer, keras_spec, needs_train_accuracy, normalize_named
from ottotrain.config.keras_checks import spec_is_current, spec_note
from ottotrain.config.schema import OWN_LAYERS
from ottotrain.engine import keras_compat
from ottotrain.engine.ensemble import EnsembleDense, EnsembleMean, EnsembleScale, EnsembleStart
from ottotrain.engine.env import keras
from ottotrain.engine.layers import CategoryEmbedding
from ottotrain.engine.numeric_embeddings import PeriodicEmbedding, PiecewiseLinearEmbedding
from ottotrain.errors import ConfigError, did_you_mean, first_line


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


def _lacks(where: str, what: str, name: str, known=()) -> ConfigError:
    """The error for a name the installed Keras does not have (though the config passed)."""
    if spec_is_current():
        fix = f"use another {what}, and remake the table: python tools/gen_keras_spec.py"
    else:
        fix = f"use another {what}, or install Keras {keras_spec()['keras_version']}"
    hint = "" if name in known else did_you_mean(name, known)
    return ConfigError(
        f"{where}: this Keras ({keras.__version__}) has no {what} '{name}'{hint}; {spec_note()}: {fix}"
    )


def _keras_class(module, name: str):
    """``module.name`` if it is a class, else None (never an AttributeError)."""
    obj = getattr(module, name, None) if isinstance(name, str) else None
    return obj if isinstance(obj, type) else None


def _named_object(family, value, where: str = "<config>"):
    """An initializer/regularizer/constraint from a name or {name: ..., args}."""
    module = getattr(keras, family)
    what = family[:-1]
    spec = keras_spec()
    known = sorted(set(spec["aliases"][family]) | {n for n in spec[family] if n[0].isupper()})
    if isinstance(value, str):
        try:
            return module.get(value)
        except ValueError:  # "Could not interpret initializer identifier"
            raise _lacks(where, what, value, known) from None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        # Only possible when the table is not this Keras' (then arguments go unchecked).
        raise ConfigError(f"{where}: must be a {what} name or {{name: ..., its arguments}}, got {value!r}")
    name, kwargs = normalize_named(value)
    cls_name = name if name in spec[family] and name[0].isupper() else spec["aliases"][family].get(name, name)
    cls = _keras_class(module, cls_name)
    if cls is None:
        raise _lacks(f"{where}.name", what, cls_name, known)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: Keras rejected this {what}: {first_line(e)}") from None


def layer_kwargs(args: dict, sizes: dict, where: str = "<config>") -> dict:
    """A layer's keyword arguments: sizes resolved, initializers etc. made (``where``: its path)."""
    out = {}
    for key, value in args.items():
        value = _resolve_symbols(value, sizes)
        for suffix, family in (
            ("_initializer", "initializers"),
            ("_regularizer", "regularizers"),
            ("_constraint", "constraints"),
        ):
            if (key.endswith(suffix) or key == suffix[1:]) and value is not None:
                value = _named_object(family, value, f"{where}.{key}")
        if isinstance(value, list) and key in ("target_shape", "dims", "shared_axes", "noise_shape"):
            value = tuple(value)
        out[key] = value
    return out


def build_model(cfg, n_features: int, n_classes: int, compile: bool = True, inputs=None):
    """Build (and compile) the Sequential model a config describes.

    Args:
        cfg: a validated ``Config``.
        n_features: input width, from the data.
        n_classes: number of classes, from the data.
        compile: also compile with the config's optimizer and loss.
        inputs: the data's ``InputBlock`` when its last columns are category indices: the
            model then opens with their embeddings (the config's layers are the body).

    Returns:
        A ``keras.Sequential``.

    Raises:
        ConfigError: Keras rejects a layer or lacks it, or the output does not fit the classes.
    """
    sizes = {"n_classes": n_classes, "n_features": n_features}
    model = keras.Sequential(name=cfg.name or "ottotrain")
    model.add(keras.Input(shape=(n_features,), name="features"))
    if inputs is not None and inputs.sizes:
        model.add(
            CategoryEmbedding(inputs.passthrough, inputs.sizes, inputs.dims, inputs.names, name="categories")
        )
    layers = _layers(cfg, sizes, inputs)
    if cfg.model.ensemble is not None and cfg.model.ensemble.k > 1:  # one member: the plain model
        layers = _ensemble(layers, cfg.model.ensemble)
    for path, layer in layers:
        try:
            model.add(layer)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{cfg.source}: {path}: Keras rejected this layer: {first_line(e)}") from None
    out = model.output_shape
    if tuple(out) != (None, n_classes):
        raise ConfigError(
            f"{cfg.source}: model.layers: the model's output shape is {tuple(out)}, but the data has "
            f"{n_classes} classes; end with {{Dense: {{units: n_classes}}}} and {{Activation: softmax}}"
        )
    if compile:
        compile_model(model, cfg)
    return model


def _layers(cfg, sizes, inputs) -> list[tuple[str, object]]:
    """The config's layers, made: (key path, layer) each."""
    out = []
    for i, item in enumerate(cfg.model.layers):
        name, args = check_layer(i, item)
        path = f"model.layers[{i}].{name}"
        if name in OWN_LAYERS:
            layer = _embedding(cfg, path, name, args, sizes, inputs)
            if layer is not None:
                out.append((path, layer))
            continue
        cls = _keras_class(keras.layers, name)
        if cls is None or not issubclass(cls, keras.layers.Layer):
            raise _lacks(f"{cfg.source}: {path}", "layer", name)
        kwargs = layer_kwargs(args, sizes, f"{cfg.source}: {path}")
        try:
            out.append((path, cls(**kwargs)))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{cfg.source}: {path}: Keras rejected this layer: {first_line(e)}") from None
    return out


def _embedding(cfg, path: str, name: str, args: dict, sizes, inputs):
    """A numeric embedding that opens the layer list: it embeds the numeric block only, and
    is left out (None) for a table without numeric columns (``data_notes`` says so)."""
    columns = inputs.numeric if inputs is not None else sizes["n_features"]
    if columns == 0:
        return None
    if name == "PeriodicEmbedding":
        return PeriodicEmbedding(
            args["frequencies"],
            args["d_embedding"],
            args["sigma"],
            columns=columns,
            activation=args["activation"],
            lite=args["lite"],
        )
    if inputs is None or not inputs.edges:
        raise ValueError("PiecewiseLinearEmbedding needs the quantile bins fitted on the training rows")
    return PiecewiseLinearEmbedding(
        inputs.edges, args["d_embedding"], columns=columns, activation=args["activation"]
    )


def _ensemble(layers, ens) -> list[tuple[str, object]]:
    """The layer list as k members (``model.ensemble``): see ``engine.ensemble``.

    Numeric embeddings stay before the members (one per row, shared). ``batch``: every
    Dense becomes a shared-kernel EnsembleDense with per-member scales and biases, the
    first one's input scales at random signs (TabM); ``mini``: one per-member scale at the
    input, the Dense layers shared as they are; ``packed``: every Dense k independent
    ones. The last Dense is always k heads (packed). Dropout, normalisation and activations
    act on each member's rows. The members' probabilities are averaged at the end.
    """
    k = ens.k
    lead = 1 if layers and isinstance(layers[0][1], (PiecewiseLinearEmbedding, PeriodicEmbedding)) else 0
    dense = [j for j, (_, layer) in enumerate(layers) if type(layer) is keras.layers.Dense]
    out = [*layers[:lead], ("model.ensemble", EnsembleStart(k))]
    if ens.kind == "mini":
        out.append(("model.ensemble", EnsembleScale(k)))
    first = True
    for j, (path, layer) in enumerate(layers[lead:], lead):
        if j not in dense or (ens.kind == "mini" and j != dense[-1]):
            out.append((path, layer))
            continue
        kind = "packed" if ens.kind == "packed" or j == dense[-1] else "batch"
        out.append(
            (
                path,
                EnsembleDense.from_dense_config(layer.get_config(), k, kind, first=first and kind == "batch"),
            )
        )
        first = False
    return [*out, ("model.ensemble", EnsembleMean())]


def make_optimizer(cfg):
    """The config's optimizer, given exactly the arguments the config sets (Keras' defaults
    for the others; the schema's floats are floats, which Keras wants for e.g. learning_rate)."""
    kwargs = cfg.train.optimizer.arguments()
    if cfg.train.gradient_clip_norm is not None:
        kwargs.setdefault("clipnorm", cfg.train.gradient_clip_norm)
    return _make(cfg.train.optimizer, kwargs, keras.optimizers, "optimizer", f"{cfg.source}: train.optimizer")


def make_loss(cfg):
    """The config's loss: its name for Keras to resolve, or its class given the config's arguments."""
    loss = cfg.train.loss
    kwargs = loss.arguments()
    if not kwargs:
        if not callable(getattr(keras.losses, loss.name, None)):
            raise _lacks(f"{cfg.source}: train.loss", "loss", loss.name)
        return loss.name
    return _make(loss, kwargs, keras.losses, "loss", f"{cfg.source}: train.loss")


def _make(part, kwargs: dict, module, what: str, where: str):
    """The Keras object of a typed optimizer or loss section, given ``kwargs``."""
    cls = _keras_class(module, part.keras_class)
    if cls is None:
        raise _lacks(f"{where}.name", what, part.keras_class)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: Keras rejected the {what}: {first_line(e)}") from None


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


def check_model(cfg, n_features: int, n_classes: int, n_train: int, inputs=None) -> str:
    """Build and compile the model once, so Keras checks every part; return its summary.

    Raises:
        ConfigError: Keras rejects a layer, the optimizer or the loss.
    """
    model = build_model(cfg, n_features, n_classes, compile=False, inputs=inputs)
    compile_model(model, cfg, n_train)
    return summary_text(model)


def summary_text(model) -> str:
    """The Keras summary as a string (no rich markup, fixed width), and an ensemble's members."""
    lines = []
    model.summary(print_fn=lambda s, **kw: lines.append(s), line_length=80)
    return "\n".join(lines + ensemble_lines(model))


def ensemble_lines(model) -> list[str]:
    """For a model of k members: its shared parameters and each member's own."""
    start = [layer for layer in model.layers if isinstance(layer, EnsembleStart)]
    if not start:
        return []
    k, shared, own = start[0].k, 0, 0
    for layer in model.layers:
        for w in layer.weights:
            n = int(np.prod(w.shape))
            mine = isinstance(layer, EnsembleScale) or (
                isinstance(layer, EnsembleDense) and (layer.kind == "packed" or w is not layer.kernel)
            )
            own, shared = (own + n, shared) if mine else (own, shared + n)
    return [f" Ensemble: {k} members; {shared:,} shared parameters, {own // k:,} of each member's own"]
