"""The config: one typed schema, validated completely before TensorFlow is imported.

``load_config(path, overrides)`` reads YAML with ``yaml.safe_load`` semantics (no
Python objects are ever built), applies ``--set key=value`` overrides, validates
the whole tree with pydantic, then checks the Keras parts (layer names and
arguments, optimizer, loss, regularizers...) against ``keras_spec.json``, a
static table of the installed Keras' signatures. Every error is a ``ConfigError``
whose message names the file, the YAML line where known, the dotted key path,
what was received and what is allowed.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator, PrivateAttr

from ottotrain.errors import ConfigError, did_you_mean

# Symbolic sizes a layer argument may use; they come from the data, never a constant.
SYMBOLS = ("n_classes", "n_features")
TRANSFORMS = ("none", "log1p", "sqrt", "anscombe", "power", "quantile")
SCALINGS = ("none", "standard", "minmax", "robust")
SCHEDULES = ("reduce_on_plateau", "cosine", "exponential", "linear_warmup")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class SyntheticConfig(_Strict):
    rows: int = Field(20000, ge=10, le=50_000_000, description="Training rows to generate.")
    test_rows: int = Field(5000, ge=0, le=50_000_000, description="Test rows (0: no test file).")
    seed: int = Field(0, ge=0)


class KnnConfig(_Strict):
    """Nearest-neighbour features (ottotrain/knn.py)."""

    k: list[int] = Field([1, 2, 4, 8, 16], min_length=1, max_length=16, description=(
        "Neighbour counts: for each class and each k, the log mean distance to the row's k "
        "nearest training rows of that class (distances between signed-log1p rows)."))

    @field_validator("k")
    @classmethod
    def _k(cls, v):
        if any(k < 1 or k > 1024 for k in v) or sorted(set(v)) != v:
            raise ValueError("must be increasing integers from 1 to 1024, e.g. [1, 2, 4, 8, 16]")
        return v


class DataConfig(_Strict):
    """Where the CSVs are and how features are preprocessed."""

    train: Optional[str] = Field(None, description="Training CSV (.csv or .csv.gz); relative to "
                                 "the config file. Required unless data.synthetic is set.")
    synthetic: Optional[SyntheticConfig] = Field(
        None, description="Use built-in synthetic Otto-shaped data instead of CSV files "
        "(generated once into the cache folder).")
    test: Optional[str] = Field(None, description="Test CSV; with it, fit also writes submission.csv.")
    id_column: str = Field("id", description="Column holding the row id (copied to the submission).")
    target_column: str = Field("target", description="Column holding the class label.")
    feature_columns: Optional[list[str]] = Field(
        None, description="Columns used as features; default: every column but id and target.")
    transform: Literal[TRANSFORMS] = Field(
        "none", description="Elementwise transform before scaling: none, log1p, sqrt, "
        "anscombe (sqrt(x+3/8)), power (|x|^power), quantile (rank-gauss).")
    power: float = Field(0.5, gt=0, description="Exponent for transform: power.")
    tfidf: bool = Field(False, description="Append TF-IDF features computed from the counts.")
    knn: Optional[KnnConfig] = Field(
        None, description="Append nearest-neighbour distances to each class (true or {} for the "
        "default k); a training row's leave itself out. Costs a brute-force pass over the "
        "training rows.")
    scaling: Literal[SCALINGS] = Field("standard", description="Scaling fitted on training rows.")
    validation_split: float = Field(0.15, gt=0, lt=1, description="Fraction held out for validation.")
    stratify: bool = Field(True, description="Stratify the validation split by class.")

    @field_validator("knn", mode="before")
    @classmethod
    def _knn_flag(cls, v):  # knn: true / false as shorthands for {} / off
        return {} if v is True else None if v is False else v

    @model_validator(mode="after")
    def _source(self):
        if self.train is None and self.synthetic is None:
            raise ValueError("data needs 'train' (a CSV path) or 'synthetic' (built-in data)")
        if self.synthetic is not None and (self.train is not None or self.test is not None):
            raise ValueError("give either data.train/data.test or data.synthetic, not both")
        return self


class EarlyStoppingConfig(_Strict):
    monitor: str = Field("val_loss", description="Metric watched, e.g. val_loss or val_accuracy.")
    patience: int = Field(4, ge=0, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best_weights: bool = Field(
        True, description="Keep the best epoch's model (by train.checkpoint.monitor) in model.keras "
        "and score it; false keeps the last trained epoch's weights instead.")


class CheckpointConfig(_Strict):
    monitor: str = Field("val_loss", description="Metric that picks the best model kept in model.keras.")
    mode: Literal["auto", "min", "max"] = "auto"


class TrainConfig(_Strict):
    """How the model is compiled and fitted."""

    optimizer: Union[str, dict[str, Any]] = Field(
        "sgd", description="Optimizer name or {name: ..., learning_rate: ..., ...}.")
    loss: Union[str, dict[str, Any]] = Field(
        "categorical_crossentropy", description="Loss name or {name: ..., label_smoothing: ...}.")
    epochs: int = Field(20, ge=1, le=100000)
    batch_size: int = Field(32, ge=1, le=1_000_000)
    early_stopping: Optional[EarlyStoppingConfig] = Field(None, description="Stop when monitor stalls.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    lr_schedule: Optional[dict[str, Any]] = Field(
        None, description="reduce_on_plateau, cosine, exponential or linear_warmup, with its settings.")
    class_weight: Union[Literal["balanced"], dict[str, float], None] = Field(
        None, description="'balanced' or {class name: weight}.")
    gradient_clip_norm: Optional[float] = Field(None, gt=0, description="Clip each gradient's norm.")
    steps_per_execution: Union[int, Literal["auto"]] = Field(
        "auto", description="Batches per compiled call; 'auto' picks for speed (same results).")
    jit_compile: Union[bool, Literal["auto"]] = Field("auto", description="XLA-compile the train step.")
    deterministic: bool = Field(True, description="Same seed, same result (TF deterministic ops).")
    shuffle: bool = True
    tensorboard: bool = Field(False, description="Write a TensorBoard log to <run>/tensorboard.")
    train_accuracy: bool = Field(
        False, description="Also log the training batches' running accuracy per epoch (history "
        "column 'accuracy'); on automatically when a monitor is 'accuracy'. Off by default: on "
        "small models it costs about a quarter of each epoch. val_accuracy is always logged.")

    @field_validator("steps_per_execution")
    @classmethod
    def _spe(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("must be an integer >= 1 or 'auto'")
        return v


class ModelConfig(_Strict):
    layers: list[Any] = Field(description="Keras layers in order, each {ClassName: {arg: value}}.")


class CvConfig(_Strict):
    """Settings of 'ottotrain cv' (its --folds and --seeds options win over them)."""

    folds: int = Field(5, ge=2, le=1000, description="Stratified folds K.")
    seeds: Optional[int] = Field(
        None, ge=1, le=1000, description="Models per fold, each with its own seed (bagging); "
        "default: one per variant, else 1.")
    variants: list[dict[str, Any]] = Field(
        default_factory=list, description="A varied bag: model k of every fold (k = 0, 1, ...) "
        "trains with variants[k mod len] applied, each a mapping of overrides like --set, "
        "e.g. {data.tfidf: true, train.batch_size: 512}.")


# What a cv variant may not change: the rows and folds every member shares, its own seed.
_VARIANT_FIXED = ("name", "seed", "cv", "data.train", "data.test", "data.synthetic",
                  "data.id_column", "data.target_column")


class Config(_Strict):
    """The whole config file."""

    _source: str = PrivateAttr("<config>")  # the file it came from, for error messages

    name: Optional[str] = Field(None, description="Names the run directory (default: the file name).")
    seed: int = Field(42, ge=0, le=2**31 - 1)
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    cv: CvConfig = Field(default_factory=CvConfig, description="Cross-validation ('ottotrain cv').")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", v):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-' (it names a directory)")
        return v


# --------------------------------------------------------------------------------------
# Loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent overwrite hides typos)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@functools.lru_cache(maxsize=1)
def keras_spec() -> dict:
    """Return the static table of Keras signatures (see tools/gen_keras_spec.py)."""
    return json.loads((Path(__file__).parent / "keras_spec.json").read_text())


def parse_yaml_text(text: str, source: str):
    """Parse YAML safely; syntax errors become a ConfigError with the line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        what = e.problem or str(e)
        if "could not determine a constructor" in str(e) or "python/" in str(e):
            what = (f"YAML tag not allowed ({what.strip()}); configs are plain data, "
                    "tags such as !!python/object are refused and never executed")
        raise ConfigError(f"{where}: invalid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None


def _line_index(text: str):
    """Map dotted key paths to 1-based YAML line numbers, for error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    index = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = f"{path}.{k.value}" if path else str(k.value)
                index[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                p = f"{path}[{i}]"
                index[p] = v.start_mark.line + 1
                walk(v, p)

    walk(root, "")
    return index


def _key_parts(key: str, where: str) -> list:
    """``model.layers[0].Dense.units`` -> ['model', 'layers', 0, 'Dense', 'units']."""
    parts = []
    for piece in key.split("."):
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)", piece)
        if not m:
            raise ConfigError(f"{where}: '{key}' is not a key path like train.epochs "
                              "or model.layers[0].Dense.units")
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return parts


def parse_override(item: str):
    """Split ``a.b[2].c=value`` into a key path and a YAML-parsed value."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set train.epochs=5")
    key, _, raw = item.partition("=")
    key = key.strip()
    parts = _key_parts(key, f"--set {item}")
    value = parse_yaml_text(raw, f"--set {key}") if raw.strip() else None
    return key, parts, value


def apply_override(tree: dict, item: str) -> dict:
    """Return a copy of ``tree`` with one ``--set`` override applied."""
    key, parts, value = parse_override(item)
    return set_path(tree, parts, value, f"--set {key}")


def _not_a_mapping(where, parts, i, node):
    """The error for a key path that runs into a scalar (e.g. data.knn.k over data.knn: true)."""
    parent = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts[:i]).lstrip(".")
    return ConfigError(f"{where}: {parent} is {yaml.safe_dump(node).splitlines()[0]!s}, not a mapping, "
                       f"so it has no key '{parts[i]}'; set {parent} as a whole instead, e.g. "
                       f"--set '{parent}={{{parts[i]}: ...}}'")


def set_path(tree: dict, parts: list, value, where: str) -> dict:
    """Return a copy of ``tree`` with the value at key path ``parts`` set to ``value``."""
    tree = copy.deepcopy(tree)
    node = tree
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"{where}: index [{part}] is out of range")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise _not_a_mapping(where, parts, i, node)
        if node.get(part) is None:
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"{where}: index [{last}] is out of range")
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise _not_a_mapping(where, parts, len(parts) - 1, node)
    return tree


def apply_variant(tree: dict, variant: dict, where: str) -> dict:
    """Return ``tree`` (without its ``cv`` section) with one cv variant's overrides applied."""
    tree = {k: v for k, v in tree.items() if k != "cv"}
    for key, value in variant.items():
        fixed = next((f for f in _VARIANT_FIXED if key == f or key.startswith(f + ".")
                      or key.startswith(f + "[")), None)
        if fixed:
            raise ConfigError(f"{where}.{key}: a variant cannot change '{fixed}' (all members share "
                              "the rows, folds and run name; seeds are set per member); vary "
                              "data.transform, data.tfidf, model.* or train.* instead")
        tree = set_path(tree, _key_parts(key, f"{where}.{key}"), value, f"{where}.{key}")
    return tree


def variant_index(cfg: "Config", k: int) -> Optional[int]:
    """Which ``cv.variants`` entry model ``k`` of each cv fold trains (None without variants)."""
    return k % len(cfg.cv.variants) if cfg.cv.variants else None


def member_config(cfg: "Config", k: int) -> "Config":
    """The config that model ``k`` of each cv fold trains: ``cfg`` with variant ``k mod len``."""
    i = variant_index(cfg, k)
    if i is None:
        return cfg
    tree = apply_variant(config_to_dict(cfg), cfg.cv.variants[i], f"cv.variants[{i}]")
    out = Config.model_validate(tree)  # validated at load already; paths are absolute
    out._source = f"{cfg._source} (cv.variants[{i}])"
    return out


def _fmt(v) -> str:
    s = repr(v) if not isinstance(v, str) else f"'{v}'"
    return s if len(s) <= 60 else s[:57] + "..."


def _loc_to_path(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "dict[str,any]", "dict[str,float]", "literal['balanced']", "int", "bool"):
            continue  # pydantic's union-branch markers
        else:
            out += f".{part}" if out else str(part)
    return out


def _pydantic_message(err: dict, model_fields) -> tuple[str, str]:
    """Turn one pydantic error into (dotted path, human message)."""
    loc = err["loc"]
    path = _loc_to_path(loc)
    typ = err["type"]
    got = err.get("input")
    ctx = err.get("ctx", {})
    if typ == "extra_forbidden":
        parent = _loc_to_path(loc[:-1])
        allowed = model_fields(loc[:-1])
        hint = did_you_mean(loc[-1], allowed)
        where = f" in {parent}" if parent else ""
        return path, (f"unknown key '{loc[-1]}'{where}{hint}; allowed keys: {', '.join(allowed)}")
    if typ == "missing":
        example = {"data": "data: {train: data/otto/train.csv.gz}",
                   "model": "model: {layers: [{Dense: {units: n_classes}}, {Activation: softmax}]}",
                   "model.layers": "layers: [{Dense: {units: n_classes}}, {Activation: softmax}]"}
        hint = f"; add it, e.g. {example[path]}" if path in example else ""
        return path, f"is required but missing{hint}"
    if typ in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<",
              "less_than_equal": "<="}[typ]
        bound = next(iter(ctx.values()))
        kind = "an integer" if isinstance(bound, int) and not isinstance(got, float) else "a number"
        return path, f"must be {kind} {op} {bound}, got {_fmt(got)}"
    if typ == "literal_error":
        expected = ctx.get("expected", "")
        hint = did_you_mean(got, re.findall(r"'([^']*)'", expected)) if isinstance(got, str) else ""
        return path, f"must be one of {expected}, got {_fmt(got)}{hint}"
    if typ.startswith("int_"):
        return path, f"must be an integer, got {_fmt(got)}"
    if typ.startswith("float_"):
        return path, f"must be a number, got {_fmt(got)}"
    if typ.startswith("bool_"):
        return path, f"must be true or false, got {_fmt(got)}"
    if typ.startswith("string_"):
        return path, f"must be a string, got {_fmt(got)}"
    if typ.startswith("list_"):
        return path, f"must be a list, got {_fmt(got)}"
    if typ in ("model_type", "model_attributes_type", "dict_type"):
        return path, f"must be a mapping of keys to values, got {_fmt(got)}"
    msg = err["msg"].removeprefix("Value error, ")
    return path, f"{msg}, got {_fmt(got)}"


def _fields_at(loc) -> list[str]:
    model = Config
    for part in loc:
        if isinstance(part, int) or model is None:
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return list(model.model_fields) if model else []


def validate_tree(tree, source: str = "<config>", text: str | None = None,
                  overridden: tuple[str, ...] = ()) -> Config:
    """Validate a parsed config tree completely; raise ConfigError on the first problem."""
    lines = _line_index(text) if text else {}

    def fail(path, message):
        for key in overridden:  # the culprit came from the command line, not the file
            if path == key or path.startswith(key + ".") or path.startswith(key + "["):
                raise ConfigError(f"{source} (--set {key}): {message}")
        line = lines.get(path)
        while line is None and path:  # fall back to the nearest enclosing key
            path_parent = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", path)
            if path_parent == path:
                break
            path = path_parent
            line = lines.get(path)
        where = f"{source}:{line}" if line else source
        raise ConfigError(f"{where}: {message}")

    if tree is None:
        fail("", "the config is empty; it needs at least data.train and model.layers "
             "(run 'ottotrain init' for a starter config)")
    if not isinstance(tree, dict):
        fail("", f"the top level must be a mapping of keys (name, seed, data, model, train), "
             f"got {type(tree).__name__}")
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as e:
        errors = e.errors()
        # Report the most useful error first: unknown keys, then missing, then others.
        errors.sort(key=lambda er: (er["type"] != "extra_forbidden", er["type"] != "missing"))
        path, message = _pydantic_message(errors[0], _fields_at)
        fail(path, f"{path}: {message}" if path else message)
    try:
        check_keras_parts(cfg)
    except _PathError as e:
        fail(e.path, f"{e.path}: {e.message}")
    for i, variant in enumerate(cfg.cv.variants):  # every member's config must be valid too
        where = f"cv.variants[{i}]"
        try:
            validate_tree(apply_variant(tree, variant, where), "")
        except ConfigError as e:
            msg = str(e).removeprefix(": ")
            fail(where, msg if msg.startswith(where) else f"{where}: {msg}")
    return cfg


def load_config(path, overrides=()) -> Config:
    """Read, override and validate a config file.

    Args:
        path: the YAML file.
        overrides: ``KEY=VALUE`` strings, applied in order (values parsed as YAML).

    Returns:
        The validated ``Config``, with ``data`` paths resolved relative to the file.

    Raises:
        ConfigError: the file is missing, not YAML, or invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; check the path "
                          "(or create one with 'ottotrain init')") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; a config is UTF-8 YAML") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config: {e.strerror}") from None
    tree = parse_yaml_text(text, str(path))
    keys = []
    for item in overrides:
        if not isinstance(tree, dict):
            break
        tree = apply_override(tree, item)
        keys.append(parse_override(item)[0])
    cfg = validate_tree(tree, str(path), text, tuple(keys))
    cfg = resolve_paths(cfg, path.parent)
    cfg._source = str(path)
    return cfg


def synthetic_paths(syn: SyntheticConfig) -> tuple[Path, Optional[Path]]:
    """Where built-in synthetic data with these settings lives (generated on first use)."""
    from ottotrain.io import cache_dir

    d = cache_dir(f"synthetic-r{syn.rows}-t{syn.test_rows}-s{syn.seed}")
    return d / "train.csv", (d / "test.csv" if syn.test_rows else None)


def resolve_paths(cfg: Config, base: Path) -> Config:
    """Make data paths absolute, relative to ``base`` (the config's folder)."""
    data = cfg.data.model_copy()
    for key in ("train", "test"):
        value = getattr(data, key)
        if value:
            p = Path(value).expanduser()
            setattr(data, key, str(p if p.is_absolute() else (base / p).resolve()))
    return cfg.model_copy(update={"data": data})


def config_to_dict(cfg: Config) -> dict:
    """The fully resolved config as plain data (every default filled in)."""
    return cfg.model_dump(mode="json")


def dump_yaml(tree: dict) -> str:
    return yaml.safe_dump(tree, sort_keys=False, default_flow_style=None, width=100)


def json_schema() -> dict:
    """JSON Schema of the config file, for editors' YAML support."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ottotrain config"
    layer_names = sorted(keras_spec()["layers"])
    schema["$defs"]["ModelConfig"]["properties"]["layers"]["items"] = {
        "anyOf": [
            {"type": "string", "enum": layer_names},
            {"type": "object", "minProperties": 1, "maxProperties": 1,
             "propertyNames": {"enum": layer_names}},
        ]
    }
    return schema


# --------------------------------------------------------------------------------------
# Keras parts: layers, optimizer, loss, schedules. Checked against keras_spec.json.


class _PathError(Exception):
    def __init__(self, path, message):
        super().__init__(message)
        self.path, self.message = path, message


def _type_ok(value, default) -> bool:
    if value is None or default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, list)
    return True


def _type_name(default) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            list: "a list"}.get(type(default), "a value")


def _check_named(path, value, family, what):
    """Check an initializer/regularizer/constraint given by name or {name: ..., args}."""
    spec = keras_spec()
    table = spec[family]
    aliases = spec["aliases"][family]
    names = sorted(set(aliases) | {n for n in table if n[0].isupper()})
    if isinstance(value, str):
        if value not in table and value not in aliases:
            raise _PathError(path, f"unknown {what} '{value}'{did_you_mean(value, names)}; "
                             f"known: {', '.join(sorted(aliases))}")
        return
    if isinstance(value, dict):
        if "name" not in value:
            raise _PathError(path, f"a {what} mapping needs a 'name', e.g. {{name: l2, l2: 0.0001}}")
        name = value["name"]
        if not isinstance(name, str) or (name not in table and name not in aliases):
            raise _PathError(f"{path}.name", f"unknown {what} {_fmt(name)}"
                             f"{did_you_mean(name, names) if isinstance(name, str) else ''}; "
                             f"known: {', '.join(sorted(aliases))}")
        params = table.get(name) or table[aliases[name]]
        _check_args(path, {k: v for k, v in value.items() if k != "name"}, params, f"{what} '{name}'")
        return
    if isinstance(value, (int, float)) and family == "regularizers":
        raise _PathError(path, f"give a regularizer as a name or mapping, e.g. {{name: l2, l2: {value}}}")
    raise _PathError(path, f"must be a {what} name or {{name: ..., ...}}, got {_fmt(value)}")


_NAMED_FAMILIES = (("_initializer", "initializers", "initializer"),
                   ("_regularizer", "regularizers", "regularizer"),
                   ("_constraint", "constraints", "constraint"))


# Arguments whose Keras default is an integer but that take any number.
_NUMERIC_ARGS = ("max_value", "fill_value")


def _check_args(path, args, params, owner):
    if not isinstance(args, dict):
        raise _PathError(path, f"arguments of {owner} must be a mapping, got {_fmt(args)}")
    for key, value in args.items():
        if key not in params:
            raise _PathError(f"{path}.{key}", f"{owner} has no argument '{key}'"
                             f"{did_you_mean(key, params)}; its arguments: {', '.join(params)}")
        p = params[key]
        if any(key.endswith(suf) or key == suf[1:] for suf, _, _ in _NAMED_FAMILIES):
            continue  # a name or {name: ..., args}: checked by _check_value_rules
        if p.get("object") and not (isinstance(value, (str, dict)) or value is None):
            raise _PathError(f"{path}.{key}", f"must be a name or mapping, got {_fmt(value)}")
        default = p.get("default")
        if key in _NUMERIC_ARGS and isinstance(default, int) and not isinstance(default, bool):
            default = float(default)  # Keras declares e.g. MaxNorm(max_value=2): any number works
        if not p.get("object") and not _type_ok(value, default) and value not in SYMBOLS:
            raise _PathError(f"{path}.{key}",
                             f"must be {_type_name(default)}, got {_fmt(value)}")


def _check_value_rules(path, key, value):
    """Range rules Keras would only report late (or never)."""
    if value is None:
        return
    if key in ("units", "filters", "output_dim") and not (
            value in SYMBOLS or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)):
        raise _PathError(path, f"must be an integer >= 1 or one of {', '.join(SYMBOLS)}, got {_fmt(value)}")
    if key == "rate" and not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise _PathError(path, f"must be a number in [0, 1), got {_fmt(value)}")
    if key in ("activation", "recurrent_activation"):
        acts = keras_spec()["activations"]
        if not isinstance(value, str) or value not in acts:
            raise _PathError(path, f"unknown activation {_fmt(value)}"
                             f"{did_you_mean(value, acts) if isinstance(value, str) else ''}; "
                             f"known: {', '.join(acts)}")
    for suffix, family, what in _NAMED_FAMILIES:
        if key.endswith(suffix) or key == suffix[1:]:
            _check_named(path, value, family, what)


def check_layer(i: int, item) -> tuple[str, dict]:
    """Validate one ``model.layers`` entry; return (class name, arguments)."""
    path = f"model.layers[{i}]"
    layers = keras_spec()["layers"]
    if isinstance(item, str):
        name, args = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        name, args = next(iter(item.items()))
    else:
        raise _PathError(path, "each layer is one mapping {LayerName: {argument: value}} "
                         f"or a bare name, got {_fmt(item)}")
    if name == "Lambda":
        raise _PathError(path, "Lambda layers run arbitrary code and are not allowed in configs; "
                         "use Activation, Rescaling or another built-in layer")
    if not isinstance(name, str) or name not in layers:
        raise _PathError(path, f"unknown layer {_fmt(name)}{did_you_mean(name, layers)}; "
                         "any class of keras.layers is allowed, e.g. Dense, Dropout, "
                         "BatchNormalization, PReLU")
    params = layers[name]
    required = [k for k, v in params.items() if v.get("required")]
    if args is None:
        args = {}
    if not isinstance(args, dict):
        # Shorthand for the single required argument: `Activation: relu`, `Dropout: 0.5`.
        if len(required) != 1:
            raise _PathError(f"{path}.{name}", f"{name} takes a mapping of arguments, got {_fmt(args)}")
        args = {required[0]: args}
    _check_args(f"{path}.{name}", args, params, name)
    for key, value in args.items():
        _check_value_rules(f"{path}.{name}.{key}", key, value)
    missing = [k for k in required if k not in args]
    if missing:
        raise _PathError(f"{path}.{name}", f"{name} needs {', '.join(missing)}")
    return name, args


def normalize_named(value, default_key="name") -> tuple[str, dict]:
    """Split ``'sgd'`` or ``{name: sgd, ...}`` into (name, kwargs)."""
    if isinstance(value, str):
        return value, {}
    value = dict(value)
    return value.pop(default_key, None), value


def check_keras_parts(cfg: Config) -> None:
    spec = keras_spec()
    if not cfg.model.layers:
        raise _PathError("model.layers", "needs at least one layer, e.g. [{Dense: {units: n_classes}}, "
                         "{Activation: softmax}]")
    for i, item in enumerate(cfg.model.layers):
        check_layer(i, item)

    # Optimizer
    name, kwargs = normalize_named(cfg.train.optimizer)
    aliases = spec["aliases"]["optimizers"]
    path = "train.optimizer" + (".name" if isinstance(cfg.train.optimizer, dict) else "")
    if name is None:
        raise _PathError("train.optimizer", "needs a name, e.g. {name: sgd, learning_rate: 0.01}")
    cls = aliases.get(str(name).lower())
    if cls is None:
        raise _PathError(path, f"unknown optimizer {_fmt(name)}{did_you_mean(name, aliases)}; "
                         f"known: {', '.join(sorted(aliases))}")
    _check_args("train.optimizer", kwargs, spec["optimizers"][cls], f"optimizer {cls}")
    lr = kwargs.get("learning_rate")
    if lr is not None and not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and 0 < lr <= 10):
        raise _PathError("train.optimizer.learning_rate", f"must be a number in (0, 10], got {_fmt(lr)}")

    # Loss
    name, kwargs = normalize_named(cfg.train.loss)
    path = "train.loss" + (".name" if isinstance(cfg.train.loss, dict) else "")
    losses = spec["losses"]
    fn_names = spec["aliases"]["losses"]
    if name in losses:
        _check_args("train.loss", kwargs, losses[name], f"loss {name}")
    elif name in fn_names:
        camel = "".join(w.capitalize() for w in name.split("_"))
        camel_match = next((c for c in losses if c.lower() == camel.lower()), None)
        if kwargs:
            if camel_match is None:
                raise _PathError("train.loss", f"loss '{name}' takes no arguments")
            _check_args("train.loss", kwargs, losses[camel_match], f"loss {name}")
    else:
        raise _PathError(path, f"unknown loss {_fmt(name)}{did_you_mean(name, fn_names)}; "
                         "for classification use categorical_crossentropy")

    # Monitors
    metrics = ("loss", "val_loss", "accuracy", "val_accuracy")
    for key, section in (("early_stopping", cfg.train.early_stopping), ("checkpoint", cfg.train.checkpoint)):
        if section is not None and section.monitor not in metrics:
            raise _PathError(f"train.{key}.monitor", f"unknown metric '{section.monitor}'"
                             f"{did_you_mean(section.monitor, metrics)}; one of {', '.join(metrics)}")

    if cfg.train.lr_schedule is not None:
        check_schedule(cfg.train.lr_schedule)


def needs_train_accuracy(cfg) -> bool:
    """Whether training must compute Keras' running train accuracy (asked for or monitored)."""
    t = cfg.train
    monitors = [s.monitor for s in (t.early_stopping, t.checkpoint) if s is not None]
    if t.lr_schedule:
        monitors.append(t.lr_schedule.get("monitor"))
    return t.train_accuracy or "accuracy" in monitors


_SCHEDULE_ARGS = {
    "reduce_on_plateau": {"monitor": "val_loss", "factor": 0.5, "patience": 2, "min_lr": 0.0,
                          "min_delta": 0.0},
    "cosine": {"min_lr_ratio": 0.0, "warmup_epochs": 0},
    "exponential": {"decay_rate": 0.9},
    "linear_warmup": {"warmup_epochs": 1, "min_lr_ratio": 0.0},
}


def check_schedule(sched: dict) -> dict:
    """Validate ``train.lr_schedule``; return it with defaults filled in."""
    path = "train.lr_schedule"
    name = sched.get("name")
    if name not in _SCHEDULE_ARGS:
        raise _PathError(f"{path}.name", f"unknown schedule {_fmt(name)}"
                         f"{did_you_mean(name, SCHEDULES) if isinstance(name, str) else ''}; "
                         f"one of {', '.join(SCHEDULES)}")
    allowed = _SCHEDULE_ARGS[name]
    out = dict(allowed)
    for k, v in sched.items():
        if k == "name":
            continue
        if k not in allowed:
            raise _PathError(f"{path}.{k}", f"schedule {name} has no setting '{k}'"
                             f"{did_you_mean(k, allowed)}; its settings: {', '.join(allowed)}")
        d = allowed[k]
        if not _type_ok(v, d):
            raise _PathError(f"{path}.{k}", f"must be {_type_name(d)}, got {_fmt(v)}")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
            raise _PathError(f"{path}.{k}", f"must be >= 0, got {_fmt(v)}")
        out[k] = v
    if name == "reduce_on_plateau" and not 0 < out["factor"] < 1:
        raise _PathError(f"{path}.factor", f"must be in (0, 1), got {_fmt(out['factor'])}")
    if name == "exponential" and not 0 < out["decay_rate"] <= 1:
        raise _PathError(f"{path}.decay_rate", f"must be in (0, 1], got {_fmt(out['decay_rate'])}")
    if out.get("min_lr_ratio", 0) > 1:
        raise _PathError(f"{path}.min_lr_ratio", f"must be in [0, 1], got {_fmt(out['min_lr_ratio'])}")
    out["name"] = name
    return out
