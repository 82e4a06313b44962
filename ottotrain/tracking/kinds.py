"""What each kind of run logs once it has finished, read from its run directory.

fit: the config as params, every epoch as stepped metrics, the scores, the files and the
model. cv: the same on a parent run (OOF scores; the bag as the model), each member a child
run. tune: the study a parent run, each trial a child (its state a tag; pruned trials end
KILLED). stack: a parent run with the top's scores and weights, each level-1 member and
level-2 learner a child (its level a tag).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ottotrain.io import read_json
from ottotrain.tracking import model
from ottotrain.tracking.client import Tracker
from ottotrain.tracking.content import (
    RunContent,
    config_params,
    final_metrics,
    history_steps,
    run_files,
)

# Lists logged as child runs (or not at all) rather than as metrics named by their positions.
_LISTS = ("members", "leaderboard", "best_params", "left_out", "top_ablations")
# Each kind's files as artifacts of its (parent) run, besides its plots.
FIT_FILES = ("config.yaml", "metrics.json", "history.csv", "summary.txt", "submission.csv")
CV_FILES = ("config.yaml", "metrics.json", "cv.json", "submission.csv")
TUNE_FILES = ("config.yaml", "metrics.json", "trials.csv", "best.yaml")
STACK_FILES = ("config.yaml", "metrics.json", "leaderboard.csv", "top.json", "submission.csv")
_TRIAL_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "fail": "FAILED"}


def log_run(kind: str, tracker: Tracker, run_dir: Path, run_id: str | None) -> None:
    if run_id is None:
        return
    {"fit": _fit, "cv": _cv, "tune": _tune, "stack": _stack}[kind](tracker, run_dir, run_id)


def _parent(tracker: Tracker, run_dir: Path, run_id: str, files: tuple[str, ...]) -> None:
    """The config, the scores and the files of a run."""
    # A continued (resumed) run has its params: only new keys are logged (MLflow refuses a changed value).
    existing = tracker.call("reading the run", "get_run", run_id) if tracker.continued else None
    done = existing.data.params if existing is not None else {}
    params = {k: v for k, v in config_params(run_dir).items() if k not in done}
    metrics = final_metrics(run_dir / "metrics.json", skip=_LISTS)
    steps = history_steps(run_dir / "history.csv")
    tracker.record(run_id, RunContent(params, metrics, steps, files=run_files(run_dir, files)))


def _fit(tracker: Tracker, run_dir: Path, run_id: str) -> None:
    _parent(tracker, run_dir, run_id, FIT_FILES)
    if tracker.settings.log_model:
        model.log_model(tracker, run_id, run_dir)


def _children(tracker: Tracker, parent: str, children: dict[str, tuple[RunContent, str]]) -> None:
    """One child run per entry (name: its content and how it ended). A resumed run logs the new
    ones, and the new scores of those trained again (a stack's changed learner)."""
    logged = tracker.existing_children(parent)
    for name, (content, status) in children.items():
        if name not in logged:
            child = tracker.new_run(name, content.tags, parent=parent)
            tracker.record(child, RunContent(content.params, content.metrics, content.steps))
            tracker.end(child, status)
            continue
        run = logged[name]
        changed = {k: v for k, v in content.metrics.items() if run.data.metrics.get(k) != v}
        if changed:
            tracker.record(run.info.run_id, RunContent(metrics=changed))


def _cv(tracker: Tracker, run_dir: Path, run_id: str) -> None:
    _parent(tracker, run_dir, run_id, CV_FILES)
    children = {}
    for row in read_json(run_dir / "metrics.json").get("members", []):
        name = row["name"]
        params = {k: str(row[k]) for k in ("fold", "seed_index", "variant", "seed") if k in row}
        metrics = {k: float(v) for k, v in row.items() if isinstance(v, int | float) and k not in params}
        steps = history_steps(run_dir / "models" / f"{name}.history.csv")
        children[name] = (RunContent(params, metrics, steps, {"ottotrain.kind": "cv-member"}), "FINISHED")
    _children(tracker, run_id, children)
    if tracker.settings.log_model:
        model.log_model(tracker, run_id, run_dir)


def _tune(tracker: Tracker, run_dir: Path, run_id: str) -> None:
    _parent(tracker, run_dir, run_id, TUNE_FILES)
    with open(run_dir / "trials.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    fixed = ("number", "state", "value", "seconds", "host", "run_dir")
    children = {}
    for row in rows:
        if row["state"] not in _TRIAL_STATUS:  # still running elsewhere: its own study logs it
            continue
        trial_dir = run_dir / row["run_dir"] if row["run_dir"] else None
        metrics = {"value": float(row["value"])} if row["value"] else {}
        steps = []
        if trial_dir is not None:
            metrics |= final_metrics(trial_dir / "metrics.json", skip=_LISTS)
            steps = history_steps(trial_dir / "history.csv")
        tags = {"ottotrain.kind": "tune-trial", "ottotrain.trial_state": row["state"]}
        params = {k: v for k, v in row.items() if k not in fixed}
        status = _TRIAL_STATUS[row["state"]]
        children[f"trial-{row['number']}"] = (RunContent(params, metrics, steps, tags), status)
    _children(tracker, run_id, children)


def _stack(tracker: Tracker, run_dir: Path, run_id: str) -> None:
    _parent(tracker, run_dir, run_id, STACK_FILES)
    weights = read_json(run_dir / "top.json")["weights"]
    tracker.record(run_id, RunContent(metrics={f"weights.{k}": float(v) for k, v in weights.items()}))
    with open(run_dir / "leaderboard.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    children = {}
    for row in rows:
        level = int(row["level"])
        if level > 2:  # the top: the parent run's own scores
            continue
        metrics = {k: float(v) for k, v in row.items() if k not in ("model", "level")}
        tags = {"ottotrain.kind": "stack-model", "ottotrain.level": str(level)}
        children[row["model"]] = (RunContent({"level": str(level)}, metrics, [], tags), "FINISHED")
    _children(tracker, run_id, children)
