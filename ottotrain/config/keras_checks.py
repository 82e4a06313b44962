"""The Keras layers of a config, checked by name and signature without importing Keras.

Checked against ``keras_spec.json``, a static table of Keras signatures made by
tools/gen_keras_spec.py from the Keras ottotrain is tested with, so that no Keras import
is needed to validate a config. (The optimizer and the loss are typed sections of the
schema made from the same table, ``config/optimizers_losses.py``.)

The table is only trusted for the Keras it was made from. When the installed Keras
(its package metadata: no import) is another version, layers are checked by name only:
a name the table lacks is still an error, with a did-you-mean, but arguments are left
to Keras, whose rejections the engine reports against the same key paths at build time.
"""

from __future__ import annotations

import functools
import json
from importlib import metadata
from pathlib import Path

from pydantic import ValidationError

from ottotrain.config.model_section import OWN_LAYERS, SYMBOLS
from ottotrain.config.validation import unknown
from ottotrain.errors import did_you_mean, fmt


@functools.lru_cache(maxsize=1)
def keras_spec() -> dict:
    """Return the static table of Keras signatures (see tools/gen_keras_spec.py)."""
    return json.loads((Path(__file__).parent / "keras_spec.json").read_text())


def installed_keras_version() -> str | None:
    """The installed Keras' version from its package metadata (Keras is not imported)."""
    try:
        return metadata.version("keras")
    except metadata.PackageNotFoundError:
        return None


def spec_is_current() -> bool:
    """Whether keras_spec.json was made from the installed Keras (then signatures are checked)."""
    return installed_keras_version() == keras_spec()["keras_version"]


def spec_note() -> str:
    """One sentence on where the table comes from (say, for a name this Keras lacks).

    Nothing warns about a version difference by itself: configs are still checked (by
    name), and Keras checks the rest when the model is built.
    """
    made = keras_spec()["keras_version"]
    have = installed_keras_version()
    if have == made:
        return f"keras_spec.json was made from this Keras ({made})"
    return f"keras_spec.json was made from Keras {made}, Keras {have or '(version unknown)'} is installed"


# --------------------------------------------------------------------------------------
# Layers and their initializers, regularizers and constraints: checked against keras_spec.json.


class PathError(Exception):
    def __init__(self, path, message):
        super().__init__(message)
        self.path, self.message = path, message


# The type a Keras default stands for: the values that fit it, and how a message names it.
_KINDS = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
    list: ((list,), "a list"),
}


def _type_ok(value, default) -> bool:
    if value is None or type(default) not in _KINDS:
        return True
    kinds = _KINDS[type(default)][0]
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def _type_name(default) -> str:
    return _KINDS[type(default)][1] if type(default) in _KINDS else "a value"


def _check_named(path, value, family, what):
    """Check an initializer/regularizer/constraint given by name or {name: ..., args}."""
    spec = keras_spec()
    table = spec[family]
    aliases = spec["aliases"][family]
    names = sorted(set(aliases) | {n for n in table if n[0].isupper()})
    if isinstance(value, str):
        if value not in table and value not in aliases:
            raise PathError(path, unknown(what, value, names, sorted(aliases)))
        return
    if isinstance(value, dict):
        if "name" not in value:
            raise PathError(path, f"a {what} mapping needs a 'name', e.g. {{name: l2, l2: 0.0001}}")
        name = value["name"]
        if not isinstance(name, str) or (name not in table and name not in aliases):
            raise PathError(f"{path}.name", unknown(what, name, names, sorted(aliases)))
        params = table.get(name) or table[aliases[name]]
        _check_args(path, {k: v for k, v in value.items() if k != "name"}, params, f"{what} '{name}'")
        return
    if isinstance(value, (int, float)) and family == "regularizers":
        raise PathError(path, f"give a regularizer as a name or mapping, e.g. {{name: l2, l2: {value}}}")
    raise PathError(path, f"must be a {what} name or {{name: ..., ...}}, got {fmt(value)}")


_NAMED_FAMILIES = (
    ("_initializer", "initializers", "initializer"),
    ("_regularizer", "regularizers", "regularizer"),
    ("_constraint", "constraints", "constraint"),
)


# Arguments whose Keras default is an integer but that take any number.
NUMERIC_ARGS = ("max_value", "fill_value", "adam_lr_ratio")


def _check_args(path, args, params, owner):
    if not isinstance(args, dict):
        raise PathError(path, f"arguments of {owner} must be a mapping, got {fmt(args)}")
    for key, value in args.items():
        if key not in params:
            raise PathError(
                f"{path}.{key}",
                f"{owner} has no argument '{key}'"
                f"{did_you_mean(key, params)}; its arguments: {', '.join(params)}",
            )
        p = params[key]
        if any(key.endswith(suf) or key == suf[1:] for suf, _, _ in _NAMED_FAMILIES):
            continue  # a name or {name: ..., args}: checked by _check_names
        if p.get("object") and not (isinstance(value, (str, dict)) or value is None):
            raise PathError(f"{path}.{key}", f"must be a name or mapping, got {fmt(value)}")
        default = p.get("default")
        if key in NUMERIC_ARGS and isinstance(default, int) and not isinstance(default, bool):
            default = float(default)  # Keras declares e.g. MaxNorm(max_value=2): any number works
        if not p.get("object") and not _type_ok(value, default) and value not in SYMBOLS:
            raise PathError(f"{path}.{key}", f"must be {_type_name(default)}, got {fmt(value)}")


def _check_ranges(path, key, value):
    """Range rules Keras would only report late (or never); they hold for any Keras."""
    if value is None:
        return
    if key in ("units", "filters", "output_dim") and not (
        value in SYMBOLS or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
    ):
        raise PathError(path, f"must be an integer >= 1 or one of {', '.join(SYMBOLS)}, got {fmt(value)}")
    if key == "rate" and not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise PathError(path, f"must be a number in [0, 1), got {fmt(value)}")


def _check_names(path, key, value):
    """Activations, initializers, regularizers and constraints named in the table."""
    if value is None:
        return
    if key in ("activation", "recurrent_activation"):
        acts = keras_spec()["activations"]
        if not isinstance(value, str) or value not in acts:
            raise PathError(path, unknown("activation", value, acts))
    for suffix, family, what in _NAMED_FAMILIES:
        if key.endswith(suffix) or key == suffix[1:]:
            _check_named(path, value, family, what)


def check_layer(i: int, item) -> tuple[str, dict]:
    """Validate one ``model.layers`` entry; return (class name, arguments).

    The name must be one of the table's layers. Its arguments are checked against the
    table's signature only when the table was made from the installed Keras.
    """
    path = f"model.layers[{i}]"
    layers = keras_spec()["layers"]
    if isinstance(item, str):
        name, args = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        name, args = next(iter(item.items()))
    else:
        raise PathError(
            path,
            f"each layer is one mapping {{LayerName: {{argument: value}}}} or a bare name, got {fmt(item)}",
        )
    if isinstance(name, str) and name in OWN_LAYERS:
        return name, _own_layer(i, name, args)
    if name == "Lambda":
        raise PathError(
            path,
            "Lambda layers run arbitrary code and are not allowed in configs; "
            "use Activation, Rescaling or another built-in layer",
        )
    if not isinstance(name, str) or name not in layers:
        raise PathError(
            path, unknown("layer", name, sorted(layers), label="the layers that fit a row of features")
        )
    params = layers[name]
    required = [k for k, v in params.items() if v.get("required")]
    if args is None:
        args = {}
    if not isinstance(args, dict):
        # Shorthand for the single required argument: `Activation: relu`, `Dropout: 0.5`.
        if len(required) != 1:
            raise PathError(f"{path}.{name}", f"{name} takes a mapping of arguments, got {fmt(args)}")
        args = {required[0]: args}
    if not spec_is_current():  # another Keras: its own signature is checked at build time
        for key, value in args.items():
            _check_ranges(f"{path}.{name}.{key}", key, value)
        return name, args
    _check_args(f"{path}.{name}", args, params, name)
    for key, value in args.items():
        _check_ranges(f"{path}.{name}.{key}", key, value)
        _check_names(f"{path}.{name}.{key}", key, value)
    missing = [k for k in required if k not in args]
    if missing:
        raise PathError(f"{path}.{name}", f"{name} needs {', '.join(missing)}")
    return name, args


def _own_layer(i: int, name: str, args) -> dict:
    """An ottotrain layer's arguments, checked by its schema section (the defaults filled in)."""
    path = f"model.layers[{i}].{name}"
    if i != 0:
        raise PathError(
            path, f"{name} embeds the input columns, so it must open the layer list (be layers[0])"
        )
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise PathError(
            path, f"{name} takes a mapping of arguments, e.g. {{bins: 48, d_embedding: 16}}, got {fmt(args)}"
        )
    try:
        return OWN_LAYERS[name].model_validate(args).model_dump()
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        key = err["loc"][0] if err["loc"] else None
        hint = (
            did_you_mean(str(key), OWN_LAYERS[name].model_fields) if err["type"] == "extra_forbidden" else ""
        )
        raise PathError(f"{path}.{where}" if where else path, f"{err['msg']}{hint}") from None


def normalize_named(value: dict) -> tuple[str, dict]:
    """Split ``{name: l2, l2: 0.01}`` into its name and the other arguments."""
    value = dict(value)
    return value.pop("name", None), value


def check_keras_parts(cfg) -> None:
    """Check the layers of a validated ``Config`` (the optimizer and loss are typed sections)."""
    if not cfg.model.layers:
        raise PathError(
            "model.layers",
            "needs at least one layer, e.g. [{Dense: {units: n_classes}}, {Activation: softmax}]",
        )
    names = [check_layer(i, item)[0] for i, item in enumerate(cfg.model.layers)]
    ens = cfg.model.ensemble
    if ens is not None and "Dense" not in names:
        raise PathError(
            "model.ensemble",
            f"a {ens.kind} ensemble turns the layer list's Dense layers into k members, and this "
            "list has none; add {Dense: {units: n_classes}} or remove model.ensemble",
        )


def needs_train_accuracy(cfg) -> bool:
    """Whether training must compute Keras' running train accuracy (asked for or monitored)."""
    t = cfg.train
    monitors = [s.monitor for s in (t.early_stopping, t.checkpoint) if s is not None]
    if t.lr_schedule is not None:
        monitors.append(getattr(t.lr_schedule, "monitor", None))
    return t.train_accuracy or "accuracy" in monitors
