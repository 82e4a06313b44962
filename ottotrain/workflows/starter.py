"""``ottotrain init``: write a commented starter config from the packaged template."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ottotrain.errors import ConfigError

TEMPLATE = "init.yaml"
# Where the README's "Getting the real Otto data" puts Kaggle's files: data/otto/ of the
# folder the commands run in (the repository root), wherever the config itself goes.
DATA_DIR = "data/otto"


def data_dir(path="ottotrain.yaml") -> str:
    """``data/otto`` of the current folder, as the config at ``path`` must name it.

    A config's relative paths are relative to its own folder: ``../data/otto`` for
    ``configs/first.yaml``, ``data/otto`` for ``./ottotrain.yaml``; an absolute path
    where no relative one exists (another drive).
    """
    target = Path.cwd() / DATA_DIR
    try:
        return Path(os.path.relpath(target, Path(path).parent.resolve())).as_posix()
    except ValueError:
        return target.as_posix()


def starter_text(path="ottotrain.yaml") -> str:
    """The starter config's text: its own file name in the example commands, and data
    paths that point at ``data/otto/`` of the current folder."""
    text = resources.files("ottotrain.workflows").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    # str.format would trip over the YAML flow mappings' braces.
    return text.replace("{path}", str(path)).replace("{data}", data_dir(path))


def next_step(path) -> str:
    """What to do after ``ottotrain init PATH``: where the data files go, then check."""
    return (
        f"Next: put Kaggle's train.csv.gz and test.csv.gz in ./{DATA_DIR}/ ({path} reads "
        f"{data_dir(path)}/; the README's 'Getting the real Otto data' shows how), or edit "
        f"data: in the file; then run: ottotrain check {path}"
    )


def write_starter(path="ottotrain.yaml") -> Path:
    """Write the starter config to ``path``; never overwrite an existing file.

    Returns:
        The path written.

    Raises:
        ConfigError: the file exists, or its folder does not.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"{path}: is a directory; give a file name, e.g. 'ottotrain init {path / 'ottotrain.yaml'}'"
        )
    if not path.parent.exists():
        raise ConfigError(f"{path}: the folder {path.parent} does not exist; create it first")
    text = starter_text(path)
    try:
        # Mode "x" makes the existence check and the creation one step: no race, no overwrite.
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise ConfigError(
            f"{path}: already exists, not overwriting it; choose another name "
            f"('ottotrain init other.yaml') or delete the file first"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot write the config: {e.strerror}") from None
    return path
