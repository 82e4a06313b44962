"""Run directories: creating them safely, recording status, opening them for predict.

A run directory is self-contained (see README, "The run directory"). It is created
only once a run can start (config valid, data read, model built), with an atomic
``mkdir`` so that two runs started at the same moment never share one.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

from ottotrain import RUN_FORMAT, __version__
from ottotrain.errors import RunError
from ottotrain.io import read_json, write_json

STATUS = "status.json"
FINISHED, RUNNING, INTERRUPTED, FAILED = "finished", "running", "interrupted", "failed"
# Files a finished run must have for predict.
REQUIRED = ("config.yaml", "preprocess.json", "model.keras", STATUS)
# Extensions we never write: their presence means the directory was tampered with.
UNSAFE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".npy", ".npz", ".pt", ".pth", ".dill")


def new_run_dir(base, name: str) -> Path:
    """Create ``base/<name>-<timestamp>`` (adding -2, -3, ... on collision) and return it."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1, 10000):
        path = base / (f"{name}-{stamp}" + (f"-{i}" if i > 1 else ""))
        try:
            path.mkdir()  # atomic: exactly one of two racing processes gets each name
            return path
        except FileExistsError:
            continue
    raise RunError(f"{base}: could not create a new run directory")


def claim_run_dir(path) -> Path:
    """Create the exact directory ``path`` (from --run-dir); refuse an existing run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        if path.is_dir() and not any(path.iterdir()):
            return path
        raise RunError(f"{path}: already exists and is not empty; runs are never overwritten "
                       "(choose another --run-dir, or resume it with --resume)") from None
    return path


def write_status(run_dir, status: str, **extra):
    info = {"status": status, "format": RUN_FORMAT, "ottotrain": __version__,
            "updated": _dt.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(), "pid": os.getpid()}
    info.update(extra)
    write_json(Path(run_dir) / STATUS, info)


def read_status(run_dir) -> dict:
    path = Path(run_dir) / STATUS
    try:
        info = read_json(path)
    except FileNotFoundError:
        raise RunError(f"{run_dir}: not an ottotrain run directory (no {STATUS}); "
                       "pass a directory made by 'ottotrain fit'") from None
    except ValueError as e:
        raise RunError(f"{path}: damaged ({e})") from None
    if not isinstance(info, dict) or "status" not in info:
        raise RunError(f"{path}: damaged (no status)")
    return info


def check_format(run_dir, info: dict):
    fmt = info.get("format")
    if fmt != RUN_FORMAT:
        raise RunError(f"{run_dir}: made by ottotrain {info.get('ottotrain', '?')} with run format "
                       f"{fmt}; this ottotrain ({__version__}) reads format {RUN_FORMAT}; "
                       "retrain it, or use that version")


def check_safe(run_dir):
    """Refuse a run directory holding files ottotrain never writes (pickles and the like)."""
    for p in Path(run_dir).rglob("*"):
        if p.is_file():
            if p.suffix.lower() in UNSAFE_SUFFIXES:
                raise RunError(f"{p}: unexpected file type '{p.suffix}' in a run directory; "
                               "ottotrain never writes pickles, refusing to load it")
            if p.suffix == ".json" or p.name in ("config.yaml", "history.csv"):
                with open(p, "rb") as f:
                    if f.read(1) == b"\x80":  # pickle protocol 2+ magic byte
                        raise RunError(f"{p}: contains pickled data; refusing to load it")


def open_finished_run(run_dir) -> dict:
    """Check that ``run_dir`` is a finished, compatible, untampered run; return its status."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    info = read_status(run_dir)
    check_format(run_dir, info)
    if info["status"] not in (FINISHED, INTERRUPTED) or not (run_dir / "model.keras").exists():
        raise RunError(f"{run_dir}: the run is {info['status']} and has no usable model yet; "
                       "wait for it to finish, or resume it with 'ottotrain fit --resume'")
    missing = [f for f in REQUIRED if not (run_dir / f).exists()]
    if missing:
        raise RunError(f"{run_dir}: incomplete run directory, missing {', '.join(missing)}")
    check_safe(run_dir)
    return info
