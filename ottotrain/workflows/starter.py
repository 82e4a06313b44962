"""``ottotrain init``: write a commented starter config from the packaged template."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ottotrain.errors import ConfigError

TEMPLATE = "init.yaml"


def starter_text(path="ottotrain.yaml") -> str:
    """The starter config's text, with its own file name in the example commands."""
    text = resources.files("ottotrain.workflows").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    # str.format would trip over the YAML flow mappings' braces.
    return text.replace("{path}", str(path))


def write_starter(path="ottotrain.yaml") -> Path:
    """Write the starter config to ``path``; never overwrite an existing file.

    Returns:
        The path written.

    Raises:
        ConfigError: the file exists, or its folder does not.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give a file name, e.g. "
                          f"'ottotrain init {path / 'ottotrain.yaml'}'")
    if not path.parent.exists():
        raise ConfigError(f"{path}: the folder {path.parent} does not exist; create it first")
    text = starter_text(path)
    try:
        # Mode "x" makes the existence check and the creation one step: no race, no overwrite.
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise ConfigError(f"{path}: already exists, not overwriting it; choose another name "
                          f"('ottotrain init other.yaml') or delete the file first") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot write the config: {e.strerror}") from None
    return path
