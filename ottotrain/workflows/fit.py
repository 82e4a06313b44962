"""``ottotrain fit``: one member trained on a holdout split, into a run directory.

data -> split -> preprocessing -> (model checked) -> run directory -> ``train_member``
-> scores, history, predictions, submission. Everything that can fail on user input
happens before the run directory exists.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ottotrain import engine, runs, tracking
from ottotrain.config import Config
from ottotrain.data import TrainData, id_name, train_val_split
from ottotrain.errors import DataError
from ottotrain.features import Preprocessor
from ottotrain.features.arrays import Arrays
from ottotrain.io import write_json, write_text
from ottotrain.log import Log
from ottotrain.runs.artifacts import versions, write_history, write_predictions, write_submission
from ottotrain.runs.lifecycle import running
from ottotrain.runs.state import TrainState
from ottotrain.workflows import plots
from ottotrain.workflows.average import Member, average
from ottotrain.workflows.common import (
    ReadsAsDict,
    begin,
    check_same_data,
    class_weights,
    create_run_dir,
    data_notes,
    load_data,
    member_arrays,
)
from ottotrain.workflows.export import export


@dataclass(frozen=True)
class FitResult(ReadsAsDict):
    """What a fit scored (``metrics.json``, in this order) and where it is."""

    val_log_loss: float
    val_accuracy: float
    best_epoch: int | None
    kept_epoch: int | None
    epochs_run: int
    stopped_by: str | None
    monitor: str
    n_train: int
    n_val: int
    n_features: int
    n_classes: int
    smoke: bool
    seconds_per_epoch: float
    timings: dict[str, float]
    versions: dict[str, str]
    run_dir: Path

    def metrics(self) -> dict:
        """The ``metrics.json`` content."""
        return {k: v for k, v in vars(self).items() if k != "run_dir"}


class Prepared(NamedTuple):
    """A fit's data, checked, split and preprocessed."""

    train: TrainData  # the table (its features dropped once preprocessed: see arrays)
    pre: Preprocessor  # fitted on the training rows
    arrays: Arrays  # the member's preprocessed training and validation rows
    x_test: tuple | None  # (test ids, preprocessed test features), or None without data.test
    va: np.ndarray  # the validation rows' indices in the table
    notes: list[str] | tuple = ()  # warning lines about the data (see common.data_notes)


@dataclass
class _Run:
    """A fit in progress: what its last steps need to know."""

    cfg: Config
    run_dir: Path
    smoke: bool
    log: Log
    started: float  # time.time() when fit was called
    timings: dict = field(default_factory=dict)


def prepare(cfg: Config, smoke=False, test=True, loaded=None) -> Prepared:
    """Load and check the data named by the config; split and preprocess it (and, unless
    ``test`` is false, its test rows). ``loaded``: ``load_data``'s result, if already read."""
    train, test = load_data(cfg, smoke, test) if loaded is None else loaded
    notes = data_notes(cfg, train, test)
    try:
        tr, va = train_val_split(train.y, cfg.data.validation_split, cfg.seed, cfg.data.stratify)
    except DataError as e:
        raise DataError(f"{train.path}: {e}") from None
    pre, arrays = member_arrays(cfg, train, tr, va)
    train.x = None  # its scaled row copies in ``arrays`` are all that is used from here on
    x_test = (test[0], pre.transform(test[1], overwrite=True)) if test is not None else None
    return Prepared(train, pre, arrays, x_test, va, notes)


def fit(
    cfg: Config,
    run_dir=None,
    runs_root="runs",
    smoke=False,
    resume=None,
    log: Log | None = None,
    config_name="run",
    on_epoch=None,
    prepared: Prepared | None = None,
    track: str | bool | None = None,
) -> FitResult:
    """Train a config and fill a run directory; return its scores.

    Args:
        cfg: a validated ``Config`` (see ``load_config``).
        run_dir: exact directory to create (must not hold a run); default
            ``<runs_root>/<name>-<timestamp>``.
        smoke: a quick end-to-end check: a sample of the rows, one epoch.
        resume: a run directory to continue from its last completed epoch.
        log: progress output (stderr by default).
        on_epoch: see ``engine.member.MemberJob`` (tune reports epochs and prunes through it).
        prepared: ``prepare(cfg)``'s result, when the caller already has it (tune's trials
            share one; without test rows, no submission is written).
        track: MLflow tracking (``tracking.resolve``): a URI, None for the config's or
            MLFLOW_TRACKING_URI's (if any), False for none.
    """
    log = log or Log(1)
    t_start = time.time()
    cfg, resume_dir, smoke = begin(cfg, "fit", run_dir, resume, smoke)
    settings = tracking.resolve(cfg, track, cfg.name or config_name, resume_dir, export_model=export)
    with tracking.process(settings, log) as side:
        t0 = time.perf_counter()
        data = prepare(cfg, smoke) if prepared is None else prepared
        timings = {"data_seconds": round(time.perf_counter() - t0, 3)}
        _log_data(log, data, smoke)
        train, arrays = data.train, data.arrays
        weights = class_weights(cfg, arrays.y_train, train.classes)
        # Keras' own checks of the layers, optimizer and loss, before the run directory exists.
        with log.phase("Building the model"):
            summary = engine.build.check_model(
                cfg, data.pre.n_outputs, len(train.classes), len(arrays.y_train), data.pre.input_block()
            )
        status = runs.RunStatus(smoke=smoke)
        if resume_dir is not None:
            run_dir = resume_dir
            check_same_data(run_dir / "preprocess.json", data.pre)
        else:

            def write(d):
                data.pre.save(d / "preprocess.json")
                write_text(d / "summary.txt", summary + "\n")

            run_dir = create_run_dir(cfg, run_dir, runs_root, cfg.name or config_name, status, write)
        log(f"Run directory: {run_dir}", 1)
        with (
            running(run_dir, log, status, lambda: _interrupted(run_dir), lambda: _record(run_dir)),
            tracking.tracked(side, cfg, run_dir, "fit", log),
        ):
            t1 = time.perf_counter()
            tensorboard = run_dir / "tensorboard" if cfg.train.tensorboard else None
            job = engine.member.MemberJob(
                cfg, arrays, run_dir, weights, tensorboard_dir=tensorboard, on_epoch=on_epoch
            )
            member = engine.member.train_member(job, log)
            timings["train_seconds"] = round(time.perf_counter() - t1, 3)
            return _finish(_Run(cfg, run_dir, smoke, log, t_start, timings), member, data)


def _log_data(log: Log, data: Prepared, smoke: bool) -> None:
    train, arrays, x_test = data.train, data.arrays, data.x_test
    log(
        f"Data: {len(train.y)} rows ({len(arrays.y_train)} train, {len(arrays.y_val)} validation), "
        f"{len(train.features)} features, {len(train.classes)} classes"
        + (f", {len(x_test[0])} test rows" if x_test else "")
        + (" [smoke]" if smoke else ""),
        1,
    )
    for note in data.notes:
        log(f"Warning: {note}", 1)


def _interrupted(run_dir: Path) -> str:
    kept = (
        "kept the best model and the history so far"
        if (run_dir / "model.keras").exists()
        else "no epoch had completed, nothing to keep yet"
    )
    return f"{kept} in {run_dir}; continue with: ottotrain fit --resume {run_dir}"


def _record(run_dir: Path) -> None:
    write_history(run_dir / "history.csv", TrainState.history_of(run_dir / runs.STATE_DIR / "trainer.json"))


def _finish(run: _Run, member, data: Prepared) -> FitResult:
    """Write history, metrics, predictions and the submission of the trained member."""
    cfg, run_dir, smoke, log, timings = run.cfg, run.run_dir, run.smoke, run.log, run.timings
    train, arrays, x_test, va = data.train, data.arrays, data.x_test, data.va
    state = member.state
    t0 = time.perf_counter()
    write_history(run_dir / "history.csv", state.history)
    if x_test is not None:
        best = Member("model", None, member.model_path)  # its test rows are transformed already
        p_test = average([best], x_test[1], engine.inference.predict_proba)[0]
        write_submission(
            run_dir / "submission.csv", x_test[0], p_test, train.classes, id_name(cfg.data.id_column)
        )
    # Validation predictions, for plots, blending and error analysis.
    write_predictions(
        run_dir / "val_predictions.csv",
        member.val_proba,
        train.classes,
        {id_name(cfg.data.id_column): train.ids[va], "target": [train.classes[i] for i in arrays.y_val]},
    )
    timings["predict_seconds"] = round(time.perf_counter() - t0, 3)
    timings["total_seconds"] = round(time.time() - run.started, 3)
    hist = state.history
    result = FitResult(
        val_log_loss=round(member.val_log_loss, 6),
        val_accuracy=round(member.val_accuracy, 6),
        best_epoch=state.best_epoch,
        kept_epoch=state.kept_epoch,
        epochs_run=len(hist),
        stopped_by=state.stop,
        monitor=cfg.train.checkpoint.monitor,
        n_train=int(len(arrays.y_train)),
        n_val=int(len(arrays.y_val)),
        n_features=len(train.features),
        n_classes=len(train.classes),
        smoke=smoke,
        seconds_per_epoch=round(sum(r.seconds for r in hist) / max(1, len(hist)), 4),
        timings=timings,
        versions=versions(),
        run_dir=run_dir,
    )
    write_json(run_dir / "metrics.json", result.metrics())
    with contextlib.suppress(Exception):  # a plot that cannot be drawn never fails a trained run
        plots.plot_run(run_dir)
    # Finished first, then drop the resume state: a crash in between leaves a finished
    # run with a stale state folder, never an unfinished run without its resume point.
    runs.write_status(run_dir, runs.FINISHED, runs.RunStatus(smoke=smoke))
    shutil.rmtree(run_dir / runs.STATE_DIR, ignore_errors=True)
    # The rounded figures the result carries, so that this line and the CLI's agree.
    log(
        f"Best epoch {result.best_epoch}/{result.epochs_run}: validation log loss "
        f"{result.val_log_loss:.4f}, accuracy {result.val_accuracy:.4f}",
        1,
    )
    return result
