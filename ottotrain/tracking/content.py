"""What a run directory gives MLflow: params, stepped and final metrics, tags, artifacts.

Pure Python, read from the files the run wrote (config.yaml, history.csv, metrics.json),
so that what MLflow shows is what the run directory holds, and nothing is computed twice.
"""

from __future__ import annotations

import csv
import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ottotrain import __version__
from ottotrain.config import Config
from ottotrain.config.diff import flatten, yaml_value
from ottotrain.data import data_paths
from ottotrain.io import read_json
from ottotrain.tracking.settings import redact

PARAM_CHARS = 6000  # MLflow's limit on a param's value
HISTORY_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")


@dataclass(frozen=True)
class Step:
    """One value of a stepped metric (an epoch's)."""

    key: str
    value: float
    step: int


@dataclass
class RunContent:
    """Everything one MLflow run gets."""

    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # final values (step 0)
    steps: list[Step] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def config_params(run_dir: Path) -> dict[str, str]:
    """The run's resolved config (its config.yaml) as dotted keys, as ``runs --diff`` names them."""
    tree = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    return {mlflow_key(key): yaml_value(value)[:PARAM_CHARS] for key, value in flatten(tree)}


def mlflow_key(key: str) -> str:
    """A dotted config key as MLflow allows it (no brackets): ``model.layers[0].Dense.units``
    becomes ``model.layers.0.Dense.units``."""
    return key.replace("[", ".").replace("]", "")


def history_steps(path: Path, prefix: str = "") -> list[Step]:
    """Every epoch of a history.csv as stepped metrics (step = epoch)."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        for key in HISTORY_METRICS:
            value = _number(row.get(key))
            if value is not None:
                out.append(Step(prefix + key, value, int(row["epoch"])))
    return out


def final_metrics(path: Path, skip=()) -> dict[str, float]:
    """metrics.json's numbers (nested ones as dotted keys; flags, text and the keys ``skip`` left
    out); one named like an epoch's metric gets ``final_`` (``val_accuracy`` is both: the
    history's steps stay alone in theirs)."""
    if not path.exists():
        return {}
    out = {}
    tree = {k: v for k, v in read_json(path).items() if k not in skip}
    for key, value in flatten(tree):
        number = _number(value) if not isinstance(value, bool) else None
        if number is not None:
            key = mlflow_key(key)
            out[f"final_{key}" if key in HISTORY_METRICS else key] = number
    return out


def run_tags(cfg: Config, run_dir: Path, kind: str, argv: list[str] | None = None) -> dict[str, str]:
    """Who made the run and from what: the version, the command (``argv``, this process's by
    default), the config's and data's hashes."""
    argv = sys.argv if argv is None else argv
    tags = {
        "ottotrain.version": __version__,
        "ottotrain.kind": kind,
        "ottotrain.command": redact(" ".join(["ottotrain", *argv[1:]]))[:5000],
        "ottotrain.run_dir": str(run_dir.absolute()),
        "ottotrain.config_sha256": file_sha256(run_dir / "config.yaml"),
    }
    if cfg.data.synthetic is None:  # a synthetic table is made from the config: its hash says it all
        for role, path in zip(("train", "test"), data_paths(cfg.data)):
            if path is not None and path.is_file():
                tags[f"ottotrain.data.{role}"] = str(path)
                tags[f"ottotrain.data.{role}.bytes"] = str(path.stat().st_size)
                tags[f"ottotrain.data.{role}.sha256"] = file_sha256(path)
    return tags | dict(cfg.tracking.tags if cfg.tracking else {})


def run_files(run_dir: Path, names) -> list[Path]:
    """The run's artifacts that exist: its files by name, and its plots."""
    return [run_dir / n for n in names if (run_dir / n).is_file()] + sorted(run_dir.glob("*.png"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None
