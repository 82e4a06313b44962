"""Generate the config reference, docs/config.md, from the config schema.

Walks the pydantic model tree of ``ottotrain.config.Config`` and prints the sections (the top
level, ``data``, ``data.synthetic``, ``data.knn``, ``model``, ``train``,
``train.early_stopping``, ...) as rows of one Markdown table with the columns key, type,
default and description, each section opened by a row with its title. The
descriptions come from each field's ``Field(description=...)``, a section's introduction
from its class docstring. A field that holds a union of several sections (a discriminated
union such as ``train.lr_schedule``) gets one table per member, under the parent key.

    python tools/config_reference.py          # print the reference
    python tools/config_reference.py --write  # write docs/config.md (and README.md's copy)
    python tools/config_reference.py --check  # exit 1 when either is out of date

The output depends only on the schema: same schema, same text (tests/test_config.py compares
it with docs/config.md). A README.md that holds the reference between the markers below is
kept in step; one without them is left alone. After changing the schema, run ``--write``.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC = ROOT / "docs" / "config.md"
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"

if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------------------
# Types


def _is_model(tp) -> bool:
    from pydantic import BaseModel

    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _unwrap(tp):
    """Strip ``Annotated[...]`` (a discriminator or constraints) down to the type."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _models_in(tp) -> list:
    """The BaseModel classes a field's type can hold, in declaration order (no duplicates)."""
    tp = _unwrap(tp)
    if _is_model(tp):
        return [tp]
    out = []
    for arg in typing.get_args(tp):
        for m in _models_in(arg):
            if m not in out:
                out.append(m)
    return out


def _literal(value) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{'true' if value else 'false'}`"
    return f"`{value}`"


def _type_name(tp) -> str:
    """A short, readable name of a field's type, YAML-flavoured (null, mapping, list)."""
    tp = _unwrap(tp)
    if tp is type(None):
        return "null"
    if tp is typing.Any:
        return "any"
    if _is_model(tp):
        return "section"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " or ".join(_literal(a) for a in args)
    if _is_union(tp):
        members = [a for a in args if _unwrap(a) is not type(None)]
        sections = [a for a in members if _is_model(_unwrap(a))]
        others = [a for a in members if not _is_model(_unwrap(a))]
        names = []
        if len(sections) > 1:
            names.append(f"one of the {len(sections)} sections below")
        elif sections:
            names.append("section")
        names.extend(_type_name(a) for a in others)
        if len(members) < len(args):
            names.append("null")
        return " or ".join(names)
    if origin in (list, tuple, set, frozenset):
        inner = [a for a in args if a is not Ellipsis]
        return "list" + (f" of {_type_name(inner[0])}" if inner and inner[0] is not typing.Any else "")
    if origin is dict:
        if len(args) == 2 and args[1] is not typing.Any:
            return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
        return "mapping"
    if isinstance(tp, type):
        return {
            "str": "string",
            "int": "integer",
            "float": "number",
            "bool": "boolean",
        }.get(tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


def _number(v) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return repr(v)


def _bounds(field) -> str:
    """The field's numeric and length constraints, e.g. '≥ 1' or '1 to 16 items'."""
    lo = hi = None
    lo_op = hi_op = ""
    min_len = max_len = None
    for m in field.metadata:
        for attr, op in (("ge", "≥"), ("gt", ">")):
            if getattr(m, attr, None) is not None:
                lo, lo_op = getattr(m, attr), op
        for attr, op in (("le", "≤"), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                hi, hi_op = getattr(m, attr), op
        if getattr(m, "min_length", None) is not None:
            min_len = m.min_length
        if getattr(m, "max_length", None) is not None:
            max_len = m.max_length
    parts = []
    if lo is not None and hi is not None:
        parts.append(f"{_number(lo)} {'≤' if lo_op == '≥' else '<'} x {hi_op} {_number(hi)}")
    elif lo is not None:
        parts.append(f"{lo_op} {_number(lo)}")
    elif hi is not None:
        parts.append(f"{hi_op} {_number(hi)}")
    if min_len is not None or max_len is not None:
        parts.append(
            f"{min_len if min_len is not None else 0} to {max_len} items"
            if max_len is not None
            else f"at least {min_len} items"
        )
    return ", ".join(parts)


# --------------------------------------------------------------------------------------
# Defaults and text


def _yaml_value(value) -> str:
    import yaml

    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return text.removesuffix("\n...").strip()  # a scalar document ends with '...'


def _default(field) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
        if hasattr(value, "model_dump"):
            return "its defaults"
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return f"`{_yaml_value(value)}`"


def _cell(text: str) -> str:
    """Make text safe for one Markdown table cell: one line, pipes escaped (GFM wants that
    inside code spans too), ``<`` and ``>`` as entities outside code spans (not HTML tags)."""
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):  # the even parts are outside `code`
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


def _doc(cls) -> str:
    """A section's introduction: the class's own docstring (never an inherited one)."""
    doc = cls.__dict__.get("__doc__")
    return " ".join(inspect.cleandoc(doc).split()) if doc else ""


def _member_tag(cls) -> str:
    """How a union member is told apart: its ``Literal`` field with one value (``name: cosine``)."""
    for name, field in cls.model_fields.items():
        tp = _unwrap(field.annotation)
        if typing.get_origin(tp) is typing.Literal and len(typing.get_args(tp)) == 1:
            return f"`{name}: {typing.get_args(tp)[0]}`"
    return f"`{cls.__name__}`"


# --------------------------------------------------------------------------------------
# The walk


def _child_prefix(key: str, tp) -> str:
    """Where a nested section's keys go: ``a.b`` for a section, ``a.b[i]`` for a list of them."""
    tp = _unwrap(tp)
    for arg in typing.get_args(tp) if _is_union(tp) else (tp,):
        arg = _unwrap(arg)
        origin = typing.get_origin(arg)
        if origin in (list, tuple, set, frozenset) and _models_in(arg):
            return f"{key}[i]"
        if origin is dict and _models_in(arg):
            return f"{key}.<key>"
    return key


def sections(model, prefix: str = "", title: str | None = None, _seen: tuple = ()) -> list:
    """Pre-order list of (title, introduction, rows); rows are (key, type, default, description)."""
    rows, children = [], []
    for name, field in model.model_fields.items():
        name = field.alias or name  # as a config writes it (tune.space's int:, float:)
        key = f"{prefix}.{name}" if prefix else name
        type_name = _type_name(field.annotation)
        bounds = _bounds(field)
        rows.append(
            (
                f"`{key}`",
                type_name + (f", {bounds}" if bounds else ""),
                _default(field),
                field.description or "",
            )
        )
        members = [m for m in _models_in(field.annotation) if m not in _seen]
        child = _child_prefix(key, field.annotation)
        if len(members) > COMPACT_UNION:
            children.append(_compact_union(child, members))
            continue
        for m in members:
            sub = f"`{child}`" + (f" with {_member_tag(m)}" if len(members) > 1 else "")
            children.extend(sections(m, child, sub, _seen + (model,)))
    head = title or "Top level"
    return [(head, _doc(model), HEADER, rows)] + children


HEADER = ("key", "type", "default", "description")
COMPACT_UNION = 3  # a union of more sections than this gets one line per member


def _compact_union(key: str, members: list):
    """One table for a union of many sections (optimizers, losses): a line per member with
    its settings and defaults; the settings every member shares with the same default are
    listed once, in the introduction."""

    def settings(m):
        return {n: _default(f) for n, f in m.model_fields.items() if n != "name"}

    every = [settings(m) for m in members]
    shared = {n: d for n, d in every[0].items() if all(e.get(n) == d for e in every[1:])}
    intro = (
        f"Give `{key}` as a name, or as `{{name: ..., setting: value}}`; every one also takes "
        + ", ".join(f"`{n}` ({d})" for n, d in shared.items())
        + "."
        if shared
        else ""
    )
    rows, plain = [], []
    for m, own in zip(members, every):
        rest = ", ".join(f"`{n}` ({d})" for n, d in own.items() if n not in shared)
        if rest:
            rows.append((_member_tag(m).replace("`name: ", "`"), rest, _doc(m)))
        else:
            plain.append(m)
    if plain:  # those with nothing of their own: one row
        rows.append(
            (
                ", ".join(_member_tag(m).replace("`name: ", "`") for m in plain),
                "none",
                "; ".join(_doc(m).rstrip(".") for m in plain) + ".",
            )
        )
    return (f"`{key}`", intro, ("name", "settings (default)", "description"), rows)


def render() -> str:
    """The reference: the key tables run on as one table, a section's title and introduction
    in a row of their own; a section of another layout (the named optimizers, losses and
    schedules) keeps its own heading and table."""
    from ottotrain.config import Config

    out, keys_table = [], False
    for title, intro, header, rows in sections(Config):
        if header[0] == "key":
            if not keys_table:
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + " --- |" * len(header))
                keys_table = True
            out.append(f"| **{title}** | | | {_cell(intro) if intro else ''} |")
        else:
            out.append(f"#### {title}")
            if intro:
                out.append(_cell(intro))
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + " --- |" * len(header))
            keys_table = False
        out.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
        # No blank lines: in GFM a table may follow a paragraph, and a heading ends a table.
    return "\n".join(out).rstrip() + "\n"


def page() -> str:
    """docs/config.md: a title, how to read the tables, the reference."""
    return (
        "# Config reference\n\n"
        "Every key of a config file, its type, default and meaning. Generated from the schema "
        "(`ottotrain/config/`) by `python tools/config_reference.py --write`; do not edit by hand. "
        "`ottotrain config CONFIG` prints a config with every default filled in, `ottotrain schema` "
        "the JSON Schema editors use, and `--set key.path=value` takes any key below as written "
        "here.\n\n" + render()
    )


def readme_block(text: str) -> str:
    """The text between the markers of README.md (what render() must equal)."""
    if START not in text or END not in text:
        raise SystemExit(f"{README}: markers {START} / {END} not found")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def _readme_with_reference(text: str) -> str:
    before, rest = text.split(START, 1)
    return f"{before}{START}\n{render()}{END}{rest.split(END, 1)[1]}"


def write(path: Path = README) -> bool:
    """Replace the reference between the markers of ``path``; return whether the file changed."""
    text = path.read_text(encoding="utf-8")
    readme_block(text)  # the markers are there
    new = _readme_with_reference(text)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def outputs() -> dict:
    """Each generated file (docs/config.md; README.md where it holds the markers) -> its text."""
    out = {DOC: page()}
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    if START in text and END in text:
        out[README] = _readme_with_reference(text)
    return out


def stale() -> list:
    """The generated files whose text differs from what the schema makes now."""
    return [p for p, text in outputs().items() if not p.exists() or p.read_text(encoding="utf-8") != text]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="write docs/config.md (and README.md's copy)")
    ap.add_argument("--check", action="store_true", help="exit 1 when either is out of date")
    args = ap.parse_args(argv)
    if args.write:
        changed = stale()
        for path, text in outputs().items():
            if path in changed:
                path.write_text(text, encoding="utf-8")
        names = ", ".join(str(p.relative_to(ROOT)) for p in changed)
        print(f"updated: {names}" if changed else "already up to date", file=sys.stderr)
        return 0
    if args.check:
        changed = stale()
        for path in changed:
            print(
                f"{path.relative_to(ROOT)}: config reference out of date; "
                "run python tools/config_reference.py --write",
                file=sys.stderr,
            )
        return 1 if changed else 0
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
