"""``ottotrain runs``: list run directories with their scores, and compare two runs' configs.

Reads only the small files a run leaves (``status.json``, ``metrics.json``,
``history.csv``, ``state/trainer.json``, ``config.yaml``), never the model, so it is
instant and needs no TensorFlow. Any kind of run shows: ``fit`` runs score with
``val_log_loss``, ``cv`` runs (``"kind": "cv"`` in status.json) with ``oof_log_loss``.
A run that is still training has no metrics.json yet; its best epoch so far is
read from the resume state.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import re
from pathlib import Path

from ottotrain import runs, tracking
from ottotrain.config import parse_yaml_text
from ottotrain.config.diff import diff_configs
from ottotrain.errors import RunError
from ottotrain.io import read_json

# Whichever exists first is the run's score: a fit's validation, a cv's out-of-fold score.
SCORE_KEYS = ("val_log_loss", "oof_log_loss", "best_val_log_loss", "best_fold_log_loss", "log_loss")
ACCURACY_KEYS = ("val_accuracy", "oof_accuracy", "accuracy")
SORTS = ("date", "score")
_STAMP = re.compile(r"(\d{8}-\d{6})")


def _read_json(path):
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _history(run_dir: Path) -> list[dict]:
    """Per-epoch rows: the resume state of a live run, else history.csv."""
    state = _read_json(run_dir / "state" / "trainer.json")
    if isinstance(state, dict) and isinstance(state.get("history"), list):
        return state["history"]
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                rows.append({k: _num(v) for k, v in row.items()})
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    return rows


def _num(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _started(run_dir: Path, info: dict) -> _dt.datetime | None:
    if info.get("started"):
        try:
            return _dt.datetime.fromisoformat(info["started"])
        except (TypeError, ValueError):
            pass
    m = _STAMP.search(run_dir.name)  # new_run_dir names runs <name>-YYYYmmdd-HHMMSS
    if m:
        try:
            return _dt.datetime.strptime(m.group(1), "%Y%m%d-%H%M%S")
        except ValueError:
            pass
    for name in ("config.yaml", runs.STATUS):
        p = run_dir / name
        if p.exists():
            return _dt.datetime.fromtimestamp(p.stat().st_mtime)
    return None


def _first(d: dict, keys):
    for k in keys:
        if isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool):
            return k, float(d[k])
    return None, None


def run_info(run_dir) -> dict:
    """Summarise one run directory (never raises for a damaged run: its status says so)."""
    run_dir = Path(run_dir)
    try:
        info = runs.read_status(run_dir)
    except RunError:
        info = {"status": "damaged"}
    status = info.get("status", "damaged")
    # A run whose process died without a word (kill -9, power cut) still says "running".
    if runs.died_while_running(info):
        status = runs.INTERRUPTED
    metrics = _read_json(run_dir / "metrics.json")
    metrics = metrics if isinstance(metrics, dict) else {}
    score_key, score = _first(metrics, SCORE_KEYS)
    _, acc = _first(metrics, ACCURACY_KEYS)
    history = _history(run_dir)
    epochs = metrics.get("epochs_run", len(history) or None)
    best_epoch = metrics.get("best_epoch")
    timings = metrics.get("timings") if isinstance(metrics.get("timings"), dict) else {}
    seconds = next(
        (v for k, v in timings.items() if k.startswith("total_seconds")), metrics.get("total_seconds")
    )
    if score is None and history:
        # Unfinished: the best validation epoch so far (val_loss, the validation log loss).
        scored = [r for r in history if _num(r.get("val_loss")) is not None]
        if scored:
            best = min(scored, key=lambda r: r["val_loss"])
            score_key, score, acc = "val_loss", float(best["val_loss"]), _num(best.get("val_accuracy"))
            best_epoch = int(best["epoch"]) if best.get("epoch") is not None else None
    if seconds is None and history:
        seconds = sum(_num(r.get("seconds")) or 0.0 for r in history)
    started = _started(run_dir, info)
    return {
        "name": run_dir.name,
        "run_dir": str(run_dir),
        "kind": info.get("kind", "fit"),
        "smoke": bool(info.get("smoke") or metrics.get("smoke")),
        "date": started.isoformat(timespec="seconds") if started else None,
        "status": status,
        "epochs": int(epochs) if isinstance(epochs, (int, float)) else None,
        "best_epoch": best_epoch,
        "log_loss": round(score, 6) if score is not None else None,
        "log_loss_key": score_key,
        "accuracy": round(acc, 6) if acc is not None else None,
        "seconds": round(float(seconds), 3) if isinstance(seconds, (int, float)) else None,
    }


def list_runs(root="runs", sort="date", track: str | None = None, experiment: str | None = None) -> list:
    """Summaries of the run directories directly under ``root`` (or of ``root`` itself), or of
    the MLflow experiment ``experiment`` at the tracking URI ``track`` (its top-level runs).

    Args:
        root: the folder runs are created in (``fit --runs-root``), or one run.
        sort: ``date`` (oldest first, the newest next to your prompt) or
            ``score`` (best log loss first, unscored runs last).

    Raises:
        RunError: ``root`` does not exist or is not a folder; the experiment cannot be listed.
    """
    if sort not in SORTS:
        raise RunError(f"unknown sort '{sort}'; use one of {', '.join(SORTS)}")
    if (track is None) != (experiment is None):
        raise RunError("--track and --experiment go together: the tracking URI and the experiment to list")
    if track is not None:
        return tracking.list_experiment(track, experiment, sort)
    root = Path(root)
    if not root.is_dir():
        raise RunError(
            f"{root}: no such folder; runs are created under 'runs' by default "
            "(see 'ottotrain fit --runs-root'), pass that folder"
        )
    if (root / runs.STATUS).exists():
        dirs = [root]
    else:
        dirs = [p for p in root.iterdir() if p.is_dir() and (p / runs.STATUS).exists()]
    out = [run_info(d) for d in dirs]
    if sort == "score":
        out.sort(key=lambda r: (r["log_loss"] is None, r["log_loss"] or 0.0, r["name"]))
    else:
        out.sort(key=lambda r: (r["date"] or "", r["name"]))
    return out


def _duration(s) -> str:
    if s is None:
        return "-"
    s = float(s)
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def format_runs(rows: list[dict]) -> str:
    """The run list as a fixed-width table."""
    head = ("name", "kind", "date", "status", "epochs", "log loss", "accuracy", "duration")
    table = []
    for r in rows:
        loss = "-" if r["log_loss"] is None else f"{r['log_loss']:.4f}"
        if r["log_loss_key"] == "val_loss":
            # Unfinished: the best epoch's val_loss so far, ottotrain's own validation log loss
            # (callbacks.Validation), not yet the kept model's final score from metrics.json.
            loss += "*"
        table.append(
            (
                r["name"],
                r["kind"] + (" smoke" if r["smoke"] else ""),
                r["date"].replace("T", " ")[:16] if r["date"] else "-",
                r["status"],
                "-" if r["epochs"] is None else str(r["epochs"]),
                loss,
                "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}",
                _duration(r["seconds"]),
            )
        )
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(head)]
    right = {4, 5, 6, 7}

    def fmt(cells):
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    lines = [fmt(head)] + [fmt(t) for t in table]
    if any(r["log_loss_key"] == "val_loss" for r in rows):
        lines.append("* unfinished: the validation log loss of the best epoch so far")
    return "\n".join(lines)


def resolve_run(name, root="runs") -> Path:
    """A run directory given as a path, or as a name under ``root``."""
    p = Path(name)
    if not p.is_dir() and (Path(root) / name).is_dir():
        p = Path(root) / name
    if not p.is_dir():
        raise RunError(f"{name}: no such run directory (looked in . and {root})")
    return p


def diff_runs(a, b, root="runs") -> dict:
    """How two runs' configs (and scores) differ.

    Returns:
        ``{"a": run_info, "b": run_info, "changes": ["key: old -> new", ...]}``.

    Raises:
        RunError: a run is missing or has no readable config.yaml.
    """
    trees = []
    dirs = [resolve_run(a, root), resolve_run(b, root)]
    for d in dirs:
        path = d / "config.yaml"
        if not path.exists():
            raise RunError(f"{d}: no config.yaml; not a run directory made by 'ottotrain fit'")
        try:
            trees.append(parse_yaml_text(path.read_text(encoding="utf-8"), str(path)))
        except (OSError, UnicodeDecodeError) as e:
            raise RunError(f"{path}: cannot read it ({e})") from None
    return {"a": run_info(dirs[0]), "b": run_info(dirs[1]), "changes": diff_configs(*trees)}


def format_diff(d: dict) -> str:
    """The diff as text: both runs' scores, then one line per changed config key."""
    lines = []
    for tag in ("a", "b"):
        r = d[tag]
        score = "-" if r["log_loss"] is None else f"{r['log_loss']:.4f}"
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        lines.append(f"{tag}: {r['run_dir']}  ({r['status']}, log loss {score}, accuracy {acc})")
    if d["changes"]:
        lines.append(f"config changes a -> b ({len(d['changes'])}):")
        lines += [f"  {c}" for c in d["changes"]]
    else:
        lines.append("the configs are identical")
    return "\n".join(lines)


def unfinished_note(run_dir) -> str | None:
    """A line for a fit run that did not finish (interrupted, failed, killed): where it
    stopped and which epoch predicts; None for a finished run."""
    info = run_info(run_dir)
    if info["kind"] != "fit" or info["status"] == runs.FINISHED:
        return None
    planned = None
    try:
        cfg = parse_yaml_text((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"), "config.yaml")
    except (OSError, UnicodeDecodeError, ValueError):
        cfg = None
    if isinstance(cfg, dict) and isinstance(cfg.get("train"), dict):
        planned = cfg["train"].get("epochs")
    of = f" of {planned}" if isinstance(planned, int) else ""
    return (
        f"run stopped at epoch {info['epochs'] or 0}{of} ({info['status']}); "
        f"predicting with its best epoch {info['best_epoch']}"
    )
