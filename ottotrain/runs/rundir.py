"""Run directories: creating them safely, recording their status, refusing foreign files.

A run directory is self-contained (see docs/commands.md, "The run directory"). It is created
only once a run can start (config valid, data read, model built), with an atomic
``mkdir`` so that two runs started at the same moment never share one.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ottotrain import RUN_FORMAT, __version__
from ottotrain.errors import RunError
from ottotrain.io import read_json, write_json

STATUS = "status.json"
STATE_DIR = "state"  # a training member's resume point (fit: the run's; cv: work/<member>/state)
# A cv run's files (see workflows/cv.py).
CV_KIND = "cv"
CV_FILE, FOLDS_FILE, OOF_FILE, ENSEMBLE_FILE = "cv.json", "folds.csv", "oof.csv", "ensemble.json"
MODELS, WORK = "models", "work"
FINISHED, RUNNING, INTERRUPTED, FAILED = "finished", "running", "interrupted", "failed"
# Files a finished run must have for predict.
REQUIRED = ("config.yaml", "preprocess.json", "model.keras", STATUS)
# io.atomic_path's temporary files: ".<name>.<random>.tmp<suffix>".
TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9]+)?")
# Extensions we never write: their presence means the directory was tampered with.
UNSAFE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".npy", ".npz", ".pt", ".pth", ".dill")


def new_run_dir(base, name: str) -> Path:
    """Create ``base/<name>-<timestamp>`` (adding -2, -3, ... on collision) and return it."""
    base = Path(base)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunError(f"{base}: exists and is not a directory; choose another --runs-root") from None
    except OSError as e:
        raise RunError(
            f"{base}: cannot create the runs folder ({e.strerror}); choose another --runs-root"
        ) from None
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1, 10000):
        path = base / (f"{name}-{stamp}" + (f"-{i}" if i > 1 else ""))
        try:
            path.mkdir()  # atomic: exactly one of two racing processes gets each name
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise RunError(
                f"{path}: cannot create the run directory ({e.strerror}); choose another --runs-root"
            ) from None
    raise RunError(f"{base}: could not create a new run directory")


def check_run_dir_free(path):
    """Refuse an exact --run-dir that already holds something, before any slow work starts."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunError(
            f"{path}: already exists and is not empty; runs are never overwritten "
            "(choose another --run-dir, or resume it with --resume)"
        )


def claim_run_dir(path) -> Path:
    """Create the exact directory ``path`` (from --run-dir); refuse an existing run."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir()
    except (NotADirectoryError, PermissionError) as e:
        raise RunError(
            f"{path}: cannot create the run directory ({e.strerror}); choose another --run-dir"
        ) from None
    except FileExistsError:
        if path.is_dir() and not any(path.iterdir()):
            return path
        raise RunError(
            f"{path}: already exists and is not empty; runs are never overwritten "
            "(choose another --run-dir, or resume it with --resume)"
        ) from None
    return path


@dataclass(frozen=True)
class RunStatus:
    """What status.json says of a run besides its state: kept whatever happens to the run.

    A field left None is not written (a fit run has no ``kind``, a study no ``smoke``).
    """

    kind: str | None = None  # "cv", "tune"; None: a fit run
    folds: int | None = None
    seeds: int | None = None
    smoke: bool | None = None
    member_threads: int | None = None
    reason: str | None = None  # why a failed run failed: "nan" or "error"
    message: str | None = None

    def failed(self, reason: str, message: str) -> RunStatus:
        return replace(self, reason=reason, message=message[:500])

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def write_status(run_dir, status: str, run: RunStatus = RunStatus()):
    info = {
        "status": status,
        "format": RUN_FORMAT,
        "ottotrain": __version__,
        "updated": _dt.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "pid": os.getpid(),
    }
    write_json(Path(run_dir) / STATUS, info | run.to_json())


def read_status(run_dir) -> dict:
    if not Path(run_dir).is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    path = Path(run_dir) / STATUS
    try:
        info = read_json(path)
    except FileNotFoundError:
        raise RunError(
            f"{run_dir}: not an ottotrain run directory (no {STATUS}); "
            "pass a directory made by 'ottotrain fit'"
        ) from None
    except ValueError as e:
        raise RunError(f"{path}: damaged ({e})") from None
    if not isinstance(info, dict) or "status" not in info:
        raise RunError(f"{path}: damaged (no status)")
    return info


def check_format(run_dir, info: dict):
    fmt = info.get("format")
    if fmt != RUN_FORMAT:
        raise RunError(
            f"{run_dir}: made by ottotrain {info.get('ottotrain', '?')} with run format "
            f"{fmt}; this ottotrain ({__version__}) reads format {RUN_FORMAT}; "
            "retrain it, or use that version"
        )


def process_alive(pid) -> bool:
    """Whether ``pid`` is a live ottotrain process on this machine (best effort)."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.exists():  # Linux: make sure the pid was not reused by another program
        try:
            return b"ottotrain" in cmdline.read_bytes()
        except OSError:
            return False
    return True


def died_while_running(info: dict) -> bool:
    """Whether a run says 'running' on this host but its process is gone (kill -9, power cut)."""
    return (
        info.get("status") == RUNNING
        and info.get("host") == platform.node()
        and info.get("pid") is not None
        and not process_alive(info["pid"])
    )


def check_not_running(run_dir, info: dict):
    """Refuse a run that another live process is still training (status 'running')."""
    if (
        info.get("status") == RUNNING
        and info.get("host") == platform.node()
        and process_alive(info.get("pid"))
    ):
        raise RunError(
            f"{run_dir}: is still being trained by process {info['pid']}; stop it first "
            f"(Ctrl-C, or kill {info['pid']}), then resume"
        )


def remove_temp_files(run_dir):
    """Delete the temporary files that a killed process left behind (see ``io.atomic_path``).

    They can be anywhere a file is written atomically: the run's top level, its resume
    state, a cv member's work folder. Only names ``atomic_path`` makes are touched.
    """
    for p in Path(run_dir).rglob(".*.tmp*"):
        if p.is_file() and TEMP_NAME.fullmatch(p.name):
            p.unlink(missing_ok=True)


def _stack_arrays(p: Path) -> bool:
    """A stack's .npz files (read with pickles refused): a learner's arrays in
    ``models/fold<k>/``, a learner member's fold predictions ``folds/fold<k>.npz``."""
    return (
        re.fullmatch(r"fold\d+", p.parent.name) is not None
        and p.parent.parent.name == MODELS
        or p.parent.name == "folds"
        and re.fullmatch(r"fold\d+\.npz", p.name) is not None
    )


def check_safe(run_dir):
    """Refuse a run directory holding files ottotrain never writes (pickles and the like).

    Temporary files of an interrupted atomic write are not the run's files: resuming
    deletes them first (``remove_temp_files``), and nothing ever reads them.
    """
    for p in Path(run_dir).rglob("*"):
        if p.is_file() and not TEMP_NAME.fullmatch(p.name):
            # The resume checkpoints, the KNN reference rows and cv members' OOF predictions
            # are .npz files that np.load reads with pickles refused.
            if p.suffix.lower() in UNSAFE_SUFFIXES and not (
                p.parent.name == "state"
                and re.fullmatch(r"(epoch|best)-\d{5,}\.npz", p.name)
                or re.fullmatch(r"knn-[0-9a-f]{16}\.npz", p.name)
                or p.parent.name == "models"
                and re.fullmatch(r"fold\d+-seed\d+\.oof\.npz", p.name)
                or _stack_arrays(p)
            ):
                raise RunError(
                    f"{p}: unexpected file type '{p.suffix}' in a run directory; "
                    "ottotrain never writes pickles, refusing to load it"
                )
            if p.suffix == ".json" or p.name in ("config.yaml", "history.csv"):
                with open(p, "rb") as f:
                    if f.read(1) == b"\x80":  # pickle protocol 2+ magic byte
                        raise RunError(f"{p}: contains pickled data; refusing to load it")
