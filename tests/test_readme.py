"""The README stays true: every config key is documented, every command is shown."""

import re

from tests.conftest import ROOT


def _keys(model, prefix=""):
    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        out.append(key)
        for arg in getattr(field.annotation, "__args__", (field.annotation,)):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and prefix.count(".") < 1:
                if key in ("data", "model", "train"):
                    out.extend(_keys(arg, key + "."))
    return out


def test_every_config_key_is_in_the_reference():
    from ottotrain.config import Config

    readme = (ROOT / "README.md").read_text()
    ref = readme[readme.index("### Reference"):]
    missing = [k for k in _keys(Config) if f"`{k}`" not in ref and k not in ("data", "model", "train")]
    assert not missing, f"README config reference lacks: {missing}"


def test_every_command_is_documented():
    from ottotrain.cli import main

    readme = (ROOT / "README.md").read_text()
    for name in main.commands:
        assert re.search(rf"ottotrain {name}\b", readme), f"README has no example of '{name}'"
