"""Whether a run is tracked in MLflow, where, and what its run directory remembers of it.

Pure Python (no MLflow import): a command without tracking pays nothing for it. The URI
comes from ``--track``, else ``MLFLOW_TRACKING_URI``, else the config's ``tracking.uri``;
a user and password in it (``https://me:pw@host``) go to MLflow's own variables
(``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) for this process, never to a log or a file.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from ottotrain.config import Config
from ottotrain.errors import ConfigError, RunError
from ottotrain.io import read_json, write_json

ENV_URI = "MLFLOW_TRACKING_URI"
ENV_USER, ENV_PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
RECORD_FILE = "mlflow.json"  # in the run directory: the MLflow run it is recorded as
DEFAULT_EXPERIMENT = "ottotrain"
_USERINFO = re.compile(r"(?<=://)[^/@\s]*:[^/@\s]*@")


@dataclass(frozen=True)
class Settings:
    """Where and how a run is tracked (the URI without credentials)."""

    uri: str
    experiment: str
    tags: dict[str, str] = field(default_factory=dict)
    log_model: bool = True
    # ``workflows.export.export(run_dir, out, packed_only=True)``, handed in by the workflows that
    # log a model (fit, cv): tracking sits below the workflows and does not import them.
    export_model: Callable[..., object] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Record:
    """``mlflow.json``: the MLflow run a run directory is recorded as."""

    tracking_uri: str
    experiment_id: str
    run_id: str

    def save(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / RECORD_FILE, vars(self))

    @classmethod
    def of(cls, run_dir) -> Record | None:
        """The run directory's record, or None when it was not tracked."""
        path = Path(run_dir) / RECORD_FILE
        if not path.exists():
            return None
        try:
            d = read_json(path)
            return cls(str(d["tracking_uri"]), str(d["experiment_id"]), str(d["run_id"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunError(f"{path}: cannot be read ({e}); delete it to track this run afresh") from None


def redact(text: str) -> str:
    """``text`` with every URI's ``user:password@`` replaced by ``***@``."""
    return _USERINFO.sub("***@", text)


def without_credentials(uri: str) -> str:
    """The URI as it may be shown and written; its user and password, if any, go to MLflow's
    environment variables (where they were not set already)."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    os.environ.setdefault(ENV_USER, unquote(parts.username or ""))
    if parts.password is not None:
        os.environ.setdefault(ENV_PASSWORD, unquote(parts.password))
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=netloc))


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite database (MLflow's default,
    ``./mlruns``, is wherever the command happens to run); elsewhere the store's own."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///").split("?")[0])
    return (database.absolute().parent / "mlartifacts").as_uri()


def allow_file_store(uri: str) -> None:
    """MLflow 3 refuses a folder as its store unless told (it prefers SQLite): asked for one, use it."""
    if "://" not in uri or uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def resolve(
    cfg: Config, track: str | bool | None, name: str, resume=None, export_model=None
) -> Settings | None:
    """The tracking of a run, or None when it is off.

    Args:
        track: a URI (``--track``); None: the environment's or the config's, if any; False: off
            (a tune trial's or a stack member's runs: their parent records them).
        name: the default experiment (the config's name).
        resume: the run directory being resumed: it stays tracked where it was.
        export_model: how to export the run for its MLflow model (``Settings.export_model``);
            None: no model is logged.
    """
    if track is False:
        return None
    section = cfg.tracking
    uri = track if isinstance(track, str) else os.environ.get(ENV_URI) or (section and section.uri)
    record = Record.of(resume) if resume is not None else None
    if not uri and record is not None:
        uri = record.tracking_uri
    if not uri:
        return None
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            f"tracking at {redact(uri)} needs MLflow's client: pip install 'ottotrain[track]' "
            "(mlflow-skinny), or leave --track, MLFLOW_TRACKING_URI and tracking.uri out"
        )
    return Settings(
        uri=without_credentials(uri),
        experiment=(section and section.experiment) or name or DEFAULT_EXPERIMENT,
        tags=dict(section.tags) if section else {},
        log_model=section.log_model if section else True,
        export_model=export_model,
    )
