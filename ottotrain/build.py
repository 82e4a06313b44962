"""Turning a validated config into a compiled ``keras.Sequential`` model.

This is the first module that imports TensorFlow; nothing reaches it before the
config is valid. Keras errors raised while building are reported against the
layer's key path, as config errors.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

from ottotrain.config import SYMBOLS, check_layer, keras_spec, needs_train_accuracy, normalize_named
from ottotrain.errors import ConfigError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up log noise


# TensorFlow's C++ start-up chatter ("oneDNN custom operations are on", "Could not find
# cuda drivers", "failed call to cuInit") ignores TF_CPP_MIN_LOG_LEVEL in recent releases
# and goes straight to file descriptor 2. We filter those lines out of fd 2.
_NATIVE_LOG = re.compile(rb"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\]|WARNING: All log messages before absl)")


def _filter_native_stderr():
    """Route fd 2 through a thread that drops TensorFlow's native log lines."""
    if os.environ.get("OTTOTRAIN_TF_LOGS") or getattr(_filter_native_stderr, "done", False):
        return
    _filter_native_stderr.done = True
    try:
        sys.stderr.flush()
        real = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
    except OSError:  # no usable fd 2 (embedded, closed): leave it alone
        return

    def pump():
        with os.fdopen(r, "rb", buffering=0) as src:
            buf = b""
            while True:
                chunk = src.read(65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                out = b"".join(line + b"\n" for line in lines if not _NATIVE_LOG.match(line))
                if buf and not _NATIVE_LOG.match(buf) and (b"\r" in buf or b"\x1b" in buf):
                    out, buf = out + buf, b""  # progress-bar updates have no newline
                if out:
                    os.write(real, out)
            if buf and not _NATIVE_LOG.match(buf):
                os.write(real, buf)

    thread = threading.Thread(target=pump, name="ottotrain-stderr", daemon=True)
    thread.start()

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 2)  # closes the pipe's write end: the pump sees EOF and drains
        thread.join(timeout=2)

    atexit.register(restore)


def import_keras():
    """Import Keras quietly (TensorFlow backend) and return the module."""
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    _filter_native_stderr()
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    import keras

    return keras


def _resolve_symbols(value, sizes):
    if isinstance(value, str) and value in SYMBOLS:
        return sizes[value]
    if isinstance(value, list):
        return [_resolve_symbols(v, sizes) for v in value]
    return value


def _named_object(keras, family, value):
    """An initializer/regularizer/constraint from a name or {name: ..., args}."""
    module = getattr(keras, family)
    if isinstance(value, str):
        return module.get(value)
    name, kwargs = normalize_named(value)
    spec = keras_spec()
    cls_name = name if name in spec[family] and name[0].isupper() else spec["aliases"][family].get(name, name)
    return getattr(module, cls_name)(**kwargs)


def layer_kwargs(keras, args: dict, sizes: dict) -> dict:
    out = {}
    for key, value in args.items():
        value = _resolve_symbols(value, sizes)
        for suffix, family in (("_initializer", "initializers"), ("_regularizer", "regularizers"),
                               ("_constraint", "constraints")):
            if (key.endswith(suffix) or key == suffix[1:]) and value is not None:
                value = _named_object(keras, family, value)
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
    keras = import_keras()
    sizes = {"n_classes": n_classes, "n_features": n_features}
    model = keras.Sequential(name=cfg.name or "ottotrain")
    model.add(keras.Input(shape=(n_features,), name="features"))
    for i, item in enumerate(cfg.model.layers):
        name, args = check_layer(i, item)
        path = f"model.layers[{i}].{name}"
        try:
            layer = getattr(keras.layers, name)(**layer_kwargs(keras, args, sizes))
            model.add(layer)
        except (ValueError, TypeError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{cfg._source}: {path}: Keras rejected this layer: {msg}") from None
    out = model.output_shape
    if tuple(out) != (None, n_classes):
        raise ConfigError(
            f"{cfg._source}: model.layers: the model's output shape is {tuple(out)}, but the data has {n_classes} "
            "classes; end with {Dense: {units: n_classes}} and {Activation: softmax}")
    if compile:
        compile_model(model, cfg)
    return model


def make_optimizer(keras, cfg):
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
        raise ConfigError(f"{cfg._source}: train.optimizer: Keras rejected the optimizer: {e}") from None


def make_loss(keras, cfg):
    name, kwargs = normalize_named(cfg.train.loss)
    if not kwargs:
        return name
    losses = keras_spec()["losses"]
    cls = name if name in losses else next(
        c for c in losses if c.lower() == name.replace("_", "").lower())
    try:
        return getattr(keras.losses, cls)(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{cfg._source}: train.loss: Keras rejected the loss: {e}") from None


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
    (see ``train.validation_callback``), so no Keras metric is compiled unless the
    training batches' accuracy is wanted: a metric adds ops to every train step, which
    on small models costs about a quarter of the epoch (bench/RESULTS.md).
    """
    import warnings

    keras = import_keras()
    jit = cfg.train.jit_compile
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Model doesn't support `jit_compile=True`")
        model.compile(
            optimizer=optimizer or make_optimizer(keras, cfg),
            loss=make_loss(keras, cfg),
            metrics=["accuracy"] if needs_train_accuracy(cfg) else [],
            steps_per_execution=steps_per_execution(cfg, n_train) if n_train else 1,
            jit_compile=jit if jit != "auto" else "auto",
        )
    # 'auto' is off here: Keras 3 turns XLA off on CPU-only machines and whenever TF op
    # determinism is on (train.deterministic, the default). An explicit `jit_compile: true`
    # is honoured even so: Keras refuses it under op determinism only because it cannot
    # vouch for every XLA kernel on every device; on CPU XLA's results are run-to-run
    # identical (bench/run.py checks it), though not bit-identical to the non-XLA kernels,
    # and compiling costs seconds, so it is opt-in (see README, "Benchmarks").
    if jit is True and not model.jit_compile and hasattr(model, "_jit_compile") and all(
            getattr(layer, "supports_jit", True) for layer in model._flatten_layers()):
        model._jit_compile = True
    return model


def summary_text(model) -> str:
    """The Keras summary as a string (no rich markup, fixed width)."""
    lines = []
    model.summary(print_fn=lambda s, **kw: lines.append(s), line_length=80)
    return "\n".join(lines)
