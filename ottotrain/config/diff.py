"""How two config trees differ, as 'key: old -> new' lines with YAML values."""

from __future__ import annotations

import yaml


def yaml_value(v) -> str:
    """A value as it would be written in a config file (flow style, one line)."""
    if v is None:
        return "null"
    text = yaml.safe_dump(v, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix(" ...").strip()


def _key(path: str, k, index=False) -> str:
    """A child's dotted key: ``a.b`` below a mapping, ``a[0]`` below a list (``index``)."""
    if index:
        return f"{path}[{k}]"
    return f"{path}.{k}" if path else str(k)


def flatten(tree, path="") -> list[tuple[str, object]]:
    """(dotted key, value) of every leaf of a config tree, named as ``config_changes`` names
    them (an empty mapping or list is a leaf)."""
    if isinstance(tree, dict) and tree:
        return [kv for k, v in tree.items() for kv in flatten(v, _key(path, k))]
    if isinstance(tree, list) and tree:
        return [kv for i, v in enumerate(tree) for kv in flatten(v, _key(path, i, index=True))]
    return [(path, tree)]


def config_changes(a, b, path="") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every leaf where two config trees differ.

    A key present on one side only has the marker ``UNSET`` on the other.
    """
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            p = _key(path, k)
            if k not in a:
                out.append((p, UNSET, b[k]))
            elif k not in b:
                out.append((p, a[k], UNSET))
            else:
                out.extend(config_changes(a[k], b[k], p))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(config_changes(x, y, _key(path, i, index=True)))
    elif a != b:
        out.append((path, a, b))
    return out


class _Unset:
    def __repr__(self):
        return "(unset)"


UNSET = _Unset()


def format_change(key, old, new) -> str:
    show = lambda v: "(unset)" if v is UNSET else yaml_value(v)  # noqa: E731
    return f"{key}: {show(old)} -> {show(new)}"


def diff_configs(a, b) -> list[str]:
    """The differences between two config trees as 'key: old -> new' lines."""
    return [format_change(*c) for c in config_changes(a, b)]
