"""The one member trainer: one model, one slice of data, one seed, one work directory.

``fit`` is a run of one member, ``cv`` is folds x seeds members, and every future caller
(a tune trial, a remote worker) trains through ``train_member`` too. It is resumable:
given a work directory that holds a resume point (``state/``), it continues from the
last completed epoch and ends where an uninterrupted run would have.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ottotrain.config import Config
from ottotrain.engine import build, checkpoints, inference
from ottotrain.engine.callbacks import EpochTensorBoard
from ottotrain.engine.loop import train_loop
from ottotrain.features.arrays import Arrays
from ottotrain.log import Log
from ottotrain.metrics import log_loss
from ottotrain.runs.state import EpochRow, TrainState


@dataclass
class MemberJob:
    """One member to train: what ``train_member`` needs, all of it plain data.

    Attributes:
        cfg: the member's config (its ``seed`` seeds initialisation, dropout and shuffling).
        arrays: its preprocessed training and validation rows.
        work_dir: holds ``state/`` (the resume point) and, once an epoch completed,
            ``model.keras`` (the kept model).
        class_weight: Keras class weights, or None.
        tensorboard_dir: write a TensorBoard log there (epochs numbered across resumes).
        name: what the log calls the member (default: its work directory).
        on_epoch: called with each completed epoch's ``EpochRow`` once its resume point is
            saved; it may raise ``errors.Stopped`` to end training there (tune's pruning).
        score_x, score_y: other rows (preprocessed) and their labels for the kept model to
            predict and be scored on, apart from the validation rows that chose it (a cv
            member that early-stops on rows of its own training folds is scored on its fold).
    """

    cfg: Config
    arrays: Arrays
    work_dir: Path
    class_weight: dict | None = None
    tensorboard_dir: Path | None = None
    name: str | None = None
    on_epoch: Callable[[EpochRow], None] | None = None
    score_x: np.ndarray | None = None
    score_y: np.ndarray | None = None


@dataclass
class Scored:
    """The kept model's probabilities on some rows, and what they score."""

    proba: np.ndarray
    log_loss: float
    accuracy: float


def _scored(model, x, y) -> Scored:
    p = inference.predict_proba(model, x)
    return Scored(p, log_loss(y, p), float((p.argmax(1) == y).mean()))


@dataclass
class MemberResult:
    """A trained member: its loop state, where its best model is, what it scored."""

    state: TrainState
    model_path: Path  # work_dir/model.keras
    val_proba: np.ndarray
    val_log_loss: float
    val_accuracy: float
    wall_seconds: float  # training in this session (a resumed member: only what was left)
    scored: Scored | None = None  # on the job's score_x rows, when it has them


def train_member(job: MemberJob, log: Log) -> MemberResult:
    """Train (or resume) one member in ``job.work_dir``; score its kept model on the validation
    rows (and on ``job.score_x``, when given).

    Raises:
        TrainingError: the loss became NaN or infinite (the best model so far is kept).
        KeyboardInterrupt: Ctrl-C or SIGTERM (the last completed epoch is kept).
    """
    cfg, arrays = job.cfg, job.arrays
    build.setup(cfg.seed, cfg.train.deterministic)
    model = build.build_model(
        cfg, arrays.x_train.shape[1], arrays.n_classes, compile=False, inputs=arrays.inputs
    )
    build.compile_model(model, cfg, len(arrays.y_train))
    state = checkpoints.load_resume_state(job.work_dir, model)
    if state is not None:
        log(f"Resuming {job.name or job.work_dir} after epoch {state.epoch}", 1)
    callbacks = []
    if job.tensorboard_dir is not None:
        callbacks.append(EpochTensorBoard(job.tensorboard_dir, state.epoch if state else 0))
    t0 = time.perf_counter()
    try:
        state = train_loop(model, job, log, state, callbacks)
    finally:
        for c in callbacks:
            c.close()
    wall = time.perf_counter() - t0
    best = inference.load_model(job.work_dir / "model.keras")
    val = _scored(best, arrays.x_val, arrays.y_val)
    scored = None if job.score_x is None else _scored(best, job.score_x, job.score_y)
    return MemberResult(
        state, job.work_dir / "model.keras", val.proba, val.log_loss, val.accuracy, wall, scored
    )
