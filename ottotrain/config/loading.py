"""Loading a config: safe YAML, ``--set`` overrides, cv variants, readable errors.

``load_config(path, overrides)`` reads YAML with ``yaml.safe_load`` semantics (no
Python objects are ever built), applies ``--set key=value`` overrides, validates
the whole tree with pydantic, then checks the Keras parts (``keras_checks``). Every
error is a ``ConfigError`` whose message names the file, the YAML line where known,
the dotted key path, what was received and what is allowed.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from ottotrain.config.keras_checks import PathError, check_keras_parts, keras_spec
from ottotrain.config.schema import VARIANT_FIXED, Config, SyntheticConfig
from ottotrain.config.validation import SECRET_VALUE
from ottotrain.errors import ConfigError, did_you_mean, fmt
from ottotrain.io import cache_dir

# --------------------------------------------------------------------------------------
# Loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent overwrite hides typos)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml_text(text: str, source: str):
    """Parse YAML safely; syntax errors become a ConfigError with the line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        what = e.problem or str(e)
        if "could not determine a constructor" in str(e) or "python/" in str(e):
            what = (
                f"YAML tag not allowed ({what.strip()}); configs are plain data, "
                "tags such as !!python/object are refused and never executed"
            )
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
            raise ConfigError(
                f"{where}: '{key}' is not a key path like train.epochs or model.layers[0].Dense.units"
            )
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
    return ConfigError(
        f"{where}: {parent} is {yaml.safe_dump(node).splitlines()[0]!s}, not a mapping, "
        f"so it has no key '{parts[i]}'; set {parent} as a whole instead, e.g. "
        f"--set '{parent}={{{parts[i]}: ...}}'"
    )


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
    """Return ``tree`` (its ``cv`` section without the variants) with one cv variant's
    overrides applied. The rest of ``cv`` stays: a member reads ``cv.inner_validation``."""
    cv = tree.get("cv")
    tree = {k: v for k, v in tree.items() if k != "cv"}
    if isinstance(cv, dict):
        tree["cv"] = {k: v for k, v in cv.items() if k != "variants"}
    for key, value in variant.items():
        fixed = next(
            (f for f in VARIANT_FIXED if key == f or key.startswith(f + ".") or key.startswith(f + "[")), None
        )
        if fixed:
            raise ConfigError(
                f"{where}.{key}: a variant cannot change '{fixed}' (all members share "
                "the rows, folds and run name; seeds are set per member); vary "
                "data.transform, data.tfidf, model.* or train.* instead"
            )
        tree = set_path(tree, _key_parts(key, f"{where}.{key}"), value, f"{where}.{key}")
    return tree


def variant_index(cfg: "Config", k: int) -> int | None:
    """Which ``cv.variants`` entry model ``k`` of each cv fold trains (None without variants)."""
    return k % len(cfg.cv.variants) if cfg.cv.variants else None


def member_config(cfg: "Config", k: int) -> "Config":
    """The config that model ``k`` of each cv fold trains: ``cfg`` with variant ``k mod len``."""
    i = variant_index(cfg, k)
    if i is None:
        return cfg
    tree = apply_variant(config_to_dict(cfg), cfg.cv.variants[i], f"cv.variants[{i}]")
    # validated at load already; paths are absolute
    return Config.model_validate(tree).with_source(f"{cfg.source} (cv.variants[{i}])")


def get_path(tree, key: str):
    """The value at a ``--set``-style key path of a config tree, or None where there is none."""
    node = tree
    for part in _key_parts(key, key):
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def trial_config(cfg: "Config", params: dict) -> "Config":
    """The config a tune trial trains: ``cfg`` without its ``tune`` section, ``params`` applied."""
    tree = {k: v for k, v in config_to_dict(cfg).items() if k != "tune"}
    for key, value in params.items():
        tree = set_path(tree, _key_parts(key, f"tune.space.{key}"), value, f"tune.space.{key}")
    return Config.model_validate(tree).with_source(f"{cfg.source} (tune trial)")


def _models_in(annotation) -> list:
    """The pydantic models an annotation admits (Optional[X], Union[A, B], Annotated[...])."""
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, BaseModel) else []
    if get_origin(annotation) is Annotated:
        return _models_in(get_args(annotation)[0])
    return [m for a in get_args(annotation) for m in _models_in(a)]


def _unannotated(annotation):
    """``Optional[dict[...]]`` -> ``dict[...]``: the one non-None type of an annotation."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if get_origin(annotation) in (Union, UnionType) and len(args) == 1 else annotation


def _tag(model) -> str | None:
    """A union member's discriminator value (its ``name: Literal[...]``), if it has one."""
    field = model.model_fields.get("name")
    args = getattr(field.annotation, "__args__", ()) if field is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _walk(loc):
    """Follow a pydantic error location through the schema.

    Returns (the user's key path without pydantic's union-branch markers, the model at
    the end of the path: a model class, a list of them for a union, or None).
    """
    out, model, dict_key = [], Config, False
    for part in loc:
        if isinstance(part, int):
            out.append(part)
            continue
        if dict_key:  # a key of a mapping of sections (tune.space): the user's own name
            out.append(part)
            dict_key = False
            continue
        if model is None:
            if part not in (
                "str",
                "dict[str,any]",
                "dict[str,float]",
                "literal['balanced']",
                "int",
                "bool",
            ):  # pydantic's union-branch markers
                out.append(part)
            continue
        if isinstance(model, list):  # a discriminated union: this part is the member's tag
            model = next((m for m in model if _tag(m) == part), None)
            continue
        out.append(part)
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        members = _models_in(field.annotation) if field is not None else []
        model = members[0] if len(members) == 1 else (members or None)
        dict_key = field is not None and get_origin(_unannotated(field.annotation)) is dict
    path = ""
    for part in out:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path, model


def _loc_to_path(loc) -> str:
    return _walk(loc)[0]


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
        example = {
            "data": "data: {train: data/otto/train.csv.gz}",
            "model": "model: {layers: [{Dense: {units: n_classes}}, {Activation: softmax}]}",
            "model.layers": "layers: [{Dense: {units: n_classes}}, {Activation: softmax}]",
        }
        hint = f"; add it, e.g. {example[path]}" if path in example else ""
        return path, f"is required but missing{hint}"
    if typ in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<", "less_than_equal": "<="}[typ]
        bound = next(iter(ctx.values()))
        kind = "an integer" if isinstance(bound, int) and not isinstance(got, float) else "a number"
        return path, f"must be {kind} {op} {bound}, got {fmt(got)}"
    if typ in ("union_tag_invalid", "union_tag_not_found"):
        members = _walk(loc)[1]
        tags = [_tag(m) for m in members] if isinstance(members, list) else []
        tag = ctx.get("tag")
        hint = did_you_mean(tag, tags) if isinstance(tag, str) else ""
        what = f"unknown name {fmt(tag)}{hint}" if typ == "union_tag_invalid" else "needs a name"
        return f"{path}.name", f"{what}; one of {', '.join(tags)}"
    if typ == "literal_error":
        expected = ctx.get("expected", "")
        hint = did_you_mean(got, re.findall(r"'([^']*)'", expected)) if isinstance(got, str) else ""
        return path, f"must be one of {expected}, got {fmt(got)}{hint}"
    if typ.startswith("int_"):
        return path, f"must be an integer, got {fmt(got)}"
    if typ.startswith("float_"):
        return path, f"must be a number, got {fmt(got)}"
    if typ.startswith("bool_"):
        return path, f"must be true or false, got {fmt(got)}"
    if typ.startswith("string_"):
        return path, f"must be a string, got {fmt(got)}"
    if typ == "too_short":
        return path, f"needs at least {ctx.get('min_length')} item(s), got {fmt(got)}"
    if typ == "too_long":
        return path, f"takes at most {ctx.get('max_length')} item(s), got {fmt(got)}"
    if typ.startswith("list_"):
        return path, f"must be a list, got {fmt(got)}"
    if typ in ("model_type", "model_attributes_type", "dict_type"):
        return path, f"must be a mapping of keys to values, got {fmt(got)}"
    msg = err["msg"].removeprefix("Value error, ")
    # A required section left out (nothing was given), or a check of a whole section (the
    # message says what is wrong; repeating the section would bury it).
    if got is None and typ == "unknown_name" or isinstance(got, dict) or typ == SECRET_VALUE:
        return path, msg
    return path, f"{msg}, got {fmt(got)}"


def _fields_at(loc) -> list[str]:
    model = _walk(loc)[1]
    return [f.alias or n for n, f in model.model_fields.items()] if isinstance(model, type) else []


def validate_tree(
    tree, source: str = "<config>", text: str | None = None, overridden: tuple[str, ...] = ()
) -> Config:
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
        fail(
            "",
            "the config is empty; it needs at least data.train and model.layers "
            "(run 'ottotrain init' for a starter config)",
        )
    if not isinstance(tree, dict):
        fail(
            "",
            f"the top level must be a mapping of keys (name, seed, data, model, train), "
            f"got {type(tree).__name__}",
        )
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as e:
        errors = e.errors()
        # Report the most useful error first: unknown keys, then missing, then others.
        errors.sort(key=lambda er: (er["type"] != "extra_forbidden", er["type"] != "missing"))
        path, message = _pydantic_message(errors[0], _fields_at)
        fail(path, f"{path}: {message}" if path else message)
    for where, part in _keras_parts(cfg):
        try:
            check_keras_parts(part)
        except PathError as e:
            path = f"{where}{e.path}"
            fail(path, f"{path}: {e.message}")
    _check_variants(tree, cfg, fail)
    _check_tune_space(tree, cfg, fail)
    return cfg


def _check_variants(tree, cfg: Config, fail) -> None:
    """Every cv variant's config must be valid too."""
    for i, variant in enumerate(cfg.cv.variants):
        where = f"cv.variants[{i}]"
        try:
            validate_tree(apply_variant(tree, variant, where), "")
        except ConfigError as e:
            msg = str(e).removeprefix(": ")
            fail(where, msg if msg.startswith(where) else f"{where}: {msg}")


def _check_tune_space(tree, cfg: Config, fail) -> None:
    """Every value a trial can take must make a valid config."""
    if cfg.tune is None:
        return
    base = {k: v for k, v in tree.items() if k != "tune"}
    for key, search in cfg.tune.space.items():
        where = f"tune.space.{key}"
        if key.split(".")[0].split("[")[0] in ("tune", "name", "data", "tracking"):
            fail(
                where,
                f"{where}: a trial cannot change '{key.split('.')[0]}' (all trials share the "
                "data and the study's name); search model.*, train.* or seed",
            )
        for value in search.values_to_check():
            try:
                validate_tree(set_path(base, _key_parts(key, where), value, where), "")
            except ConfigError as e:
                msg = str(e).removeprefix(": ").removeprefix(f"{where}: ")
                fail(where, f"{where}: the value {fmt(value)} makes the config invalid: {msg}")


def _keras_parts(cfg: Config) -> list[tuple[str, object]]:
    """(key path prefix, an object with .model) for every layer list of a config: its model,
    or each level-2 net of its stack."""
    if cfg.model is not None:
        return [("", cfg)]
    return [
        (f"stack.level2[{i}].net.", spec.net)
        for i, spec in enumerate(cfg.stack.level2 if cfg.stack else [])
        if spec.net is not None
    ]


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
        raise ConfigError(
            f"{path}: config file not found; check the path (or create one with 'ottotrain init')"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; a config is UTF-8 YAML") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config: {e.strerror}") from None
    tree = parse_yaml_text(text, str(path))
    # The file's paths are relative to its folder; then the --set ones, still relative
    # after that, to the current directory, as on any command line.
    tree = _resolve_tree_paths(tree, path.parent, f"in {path}", "the config file's folder")
    data = tree.get("data") if isinstance(tree, dict) else None
    from_file = dict(data) if isinstance(data, dict) else {}
    stack = tree.get("stack") if isinstance(tree, dict) else None
    from_file["stack_members"] = stack.get("members") if isinstance(stack, dict) else None
    keys = []
    for item in overrides:
        if not isinstance(tree, dict):
            break
        tree = apply_override(tree, item)
        keys.append(parse_override(item)[0])
    tree = _resolve_tree_paths(tree, Path.cwd(), "given with --set", "the current directory", from_file)
    cfg = validate_tree(tree, str(path), text, tuple(keys))
    return cfg.with_source(str(path))


# Where each resolved data path came from, for the error when its file is missing.
_ORIGINS: dict[str, str] = {}


def _resolve_tree_paths(tree, base: Path, given: str, what: str, unchanged=None):
    """``tree`` with its relative data.train and data.test (and its stack members' config
    and run) made absolute against ``base`` (``what`` says what that is); values as in
    ``unchanged`` are left alone."""
    tree = _resolve_member_paths(tree, base, unchanged)
    data = tree.get("data") if isinstance(tree, dict) else None
    if not isinstance(data, dict):
        return tree
    data = dict(data)
    for key in ("train", "test"):
        value = data.get(key)
        if not isinstance(value, str) or not value or (unchanged or {}).get(key) == value:
            continue
        p = Path(value).expanduser()
        data[key] = str(p if p.is_absolute() else (base / p).resolve())
        relative = "" if p.is_absolute() else f", relative to {what} {base.resolve()}"
        _ORIGINS[data[key]] = f"data.{key} {given}{relative}"
    return {**tree, "data": data}


def _resolve_member_paths(tree, base: Path, unchanged=None):
    """``tree`` with each ``stack.members[i].config`` and ``.run`` made absolute against ``base``;
    a path as it was in ``unchanged`` (the file's tree, already resolved) is left alone."""
    stack = tree.get("stack") if isinstance(tree, dict) else None
    members = stack.get("members") if isinstance(stack, dict) else None
    if not isinstance(members, list):
        return tree
    was = (unchanged or {}).get("stack_members") or []
    out = []
    for i, member in enumerate(members):
        if isinstance(member, dict):
            member = dict(member)
            before = was[i] if i < len(was) and isinstance(was[i], dict) else {}
            for key in ("config", "run"):
                value = member.get(key)
                if isinstance(value, str) and value and before.get(key) != value:
                    p = Path(value).expanduser()
                    member[key] = str(p if p.is_absolute() else (base / p).resolve())
        out.append(member)
    return {**tree, "stack": {**stack, "members": out}}


def path_origin(path) -> str | None:
    """How a config's data path was given and resolved, e.g. 'data.train given with --set,
    relative to the current directory /home/me'; None for a path not from a config."""
    return _ORIGINS.get(str(path))


def synthetic_paths(syn: SyntheticConfig) -> tuple[Path, Path | None]:
    """Where built-in synthetic data with these settings lives (generated on first use)."""
    d = cache_dir(f"synthetic-r{syn.rows}-t{syn.test_rows}-s{syn.seed}")
    return d / "train.csv", (d / "test.csv" if syn.test_rows else None)


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
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "propertyNames": {"enum": layer_names},
            },
        ]
    }
    return schema
