"""Run directories: creating them safely, recording status, opening them for predict.

A run directory is self-contained (see README, "The run directory"). It is created
only once a run can start (config valid, data read, model built), with an atomic
``mkdir`` so that two runs started at the same moment never share one.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
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
    try:
        base.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunError(f"{base}: exists and is not a directory; choose another --runs-root") from None
    except OSError as e:
        raise RunError(f"{base}: cannot create the runs folder ({e.strerror}); "
                       "choose another --runs-root") from None
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1, 10000):
        path = base / (f"{name}-{stamp}" + (f"-{i}" if i > 1 else ""))
        try:
            path.mkdir()  # atomic: exactly one of two racing processes gets each name
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise RunError(f"{path}: cannot create the run directory ({e.strerror}); "
                           "choose another --runs-root") from None
    raise RunError(f"{base}: could not create a new run directory")


def claim_run_dir(path) -> Path:
    """Create the exact directory ``path`` (from --run-dir); refuse an existing run."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir()
    except (NotADirectoryError, PermissionError) as e:
        raise RunError(f"{path}: cannot create the run directory ({e.strerror}); "
                       "choose another --run-dir") from None
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


def _process_alive(pid) -> bool:
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
    return (info.get("status") == RUNNING and info.get("host") == platform.node()
            and info.get("pid") is not None and not _process_alive(info["pid"]))


def check_not_running(run_dir, info: dict):
    """Refuse a run that another live process is still training (status 'running')."""
    if (info.get("status") == RUNNING and info.get("host") == platform.node()
            and _process_alive(info.get("pid"))):
        raise RunError(f"{run_dir}: is still being trained by process {info['pid']}; stop it first "
                       f"(Ctrl-C, or kill {info['pid']}), then resume")


def remove_temp_files(run_dir):
    """Delete the temporary files that a killed process left behind (see io.atomic_path)."""
    for folder in (Path(run_dir), Path(run_dir) / "state"):
        for p in folder.glob(".*.tmp*"):
            if p.is_file():
                p.unlink(missing_ok=True)


def check_safe(run_dir):
    """Refuse a run directory holding files ottotrain never writes (pickles and the like)."""
    for p in Path(run_dir).rglob("*"):
        if p.is_file():
            # The resume checkpoints and the KNN reference rows are .npz files that np.load
            # reads with pickles refused.
            if p.suffix.lower() in UNSAFE_SUFFIXES and not (
                    p.parent.name == "state" and re.fullmatch(r"(epoch|best)-\d{5,}\.npz", p.name)
                    or re.fullmatch(r"knn-[0-9a-f]{16}\.npz", p.name)):
                raise RunError(f"{p}: unexpected file type '{p.suffix}' in a run directory; "
                               "ottotrain never writes pickles, refusing to load it")
            if p.suffix == ".json" or p.name in ("config.yaml", "history.csv"):
                with open(p, "rb") as f:
                    if f.read(1) == b"\x80":  # pickle protocol 2+ magic byte
                        raise RunError(f"{p}: contains pickled data; refusing to load it")


# What a .keras file written by ottotrain holds (Keras' own zip layout).
MODEL_MEMBERS = ("metadata.json", "config.json", "model.weights.h5")
# Class names that carry Python code (bytecode or a function looked up by name).
_CODE_CLASSES = ("Lambda", "__lambda__", "function", "__typespec__", "TFOpLambda")


def check_model_file(path):
    """Refuse a ``.keras`` file that is not a plain Keras model made of Keras' own classes.

    ``load_model(safe_mode=True)`` already refuses serialized lambdas; this check
    comes first and is stricter: the archive may only hold Keras' usual members,
    every ``module`` in its config must be a ``keras`` module, and no class that
    carries code (Lambda, marshalled functions) may appear. Nothing is imported
    or executed while checking.
    """
    import json
    import zipfile

    path = Path(path)
    hint = "the file is damaged or was not written by ottotrain; retrain the run"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            odd = [n for n in names if n not in MODEL_MEMBERS and not n.startswith("assets/")]
            if odd:
                raise RunError(f"{path}: unexpected member(s) {', '.join(odd[:5])} in the model "
                               f"archive, refusing it; {hint}")
            if "config.json" not in names:
                raise RunError(f"{path}: no config.json in the model archive; {hint}")
            if z.getinfo("config.json").file_size > 50_000_000:
                raise RunError(f"{path}: config.json is implausibly large; {hint}")
            config = json.loads(z.read("config.json").decode("utf-8"))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, RecursionError) as e:
        raise RunError(f"{path}: not a readable Keras model archive ({e}); {hint}") from None

    def walk(node, where):
        if isinstance(node, dict):
            module, cls = node.get("module"), node.get("class_name")
            at = f"{path}: config.json at {where[1:] or 'top level'}"
            if isinstance(module, str) and not (module == "keras" or module.startswith("keras.")):
                raise RunError(f"{at} refers to Python module {module!r} (class {cls!r}); "
                               "only Keras' own classes are loaded, refusing it")
            if cls in _CODE_CLASSES:
                raise RunError(f"{at} holds a {cls} (Python code); refusing to load it")
            reg = node.get("registered_name")
            if isinstance(reg, str) and ">" in reg:  # 'package>Name': a custom registered class
                raise RunError(f"{at} needs the custom class {reg!r}; "
                               "only Keras' own classes are loaded, refusing it")
            for k, v in node.items():
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    try:
        walk(config, "")
    except RecursionError:
        raise RunError(f"{path}: config.json is nested implausibly deep; {hint}") from None


def load_model(path, compile=False):
    """Load a ``.keras`` file written by ottotrain: checked first, then in Keras' safe mode."""
    from ottotrain.build import import_keras

    check_model_file(path)
    keras = import_keras()
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(f"{path}: cannot be loaded safely ({msg[:300]}); the file is damaged "
                       "or was not written by ottotrain") from None


def open_finished_run(run_dir) -> dict:
    """Check that ``run_dir`` is a finished, compatible, untampered run; return its status."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    info = read_status(run_dir)
    check_format(run_dir, info)
    if info.get("kind") == "cv":
        raise RunError(f"{run_dir}: is a cv run, an ensemble of models under models/ with no single "
                       "model.keras; 'ottotrain predict' uses the whole ensemble")
    if info["status"] not in (FINISHED, INTERRUPTED) or not (run_dir / "model.keras").exists():
        raise RunError(f"{run_dir}: the run is {info['status']} and has no usable model yet; "
                       "wait for it to finish, or resume it with 'ottotrain fit --resume'")
    missing = [f for f in REQUIRED if not (run_dir / f).exists()]
    if missing:
        raise RunError(f"{run_dir}: incomplete run directory, missing {', '.join(missing)}")
    check_safe(run_dir)
    return info
