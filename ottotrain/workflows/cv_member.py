"""One member of a cv run as a job: ``member_job(run, fold, seed) -> Job[MemberRecord]``.

The member ``fold<k>-seed<s>`` trains on every fold but k, with fold k as its validation
data, through ``engine.member.train_member`` exactly as ``fit`` trains its one. Its job
writes its files under ``out/models`` (``out``: the run directory in this process, or a
worker's temporary folder whose files come back), its record (the "done" marker) last, and
resumes from ``out/work/<member>/`` when a run was stopped in the middle of it.

With ``cv.inner_validation`` (a share), the member's training rows are split once more
(``data.inner_split``, seeded by the member's own seed, so the seeds of one fold hold out
different rows): it fits its preprocessing and its weights on the rest, early-stops (and
keeps its best epoch, and schedules its learning rate) on the held-out "stop" rows, and
only then is its kept model scored on fold k: that fold chose nothing.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ottotrain import engine
from ottotrain.config import Config, member_config
from ottotrain.data import TrainData, inner_split
from ottotrain.errors import DataError
from ottotrain.execute import Job
from ottotrain.io import write_text
from ottotrain.log import Log
from ottotrain.runs import MODELS, WORK
from ottotrain.runs.artifacts import write_history, write_member_oof
from ottotrain.runs.state import MemberRecord
from ottotrain.workflows.common import check_same_data, class_weights, member_arrays


def member_name(fold: int, seed_index: int) -> str:
    """``fold1-seed1`` for fold 0, seed 0 (names are 1-based)."""
    return f"fold{fold + 1}-seed{seed_index + 1}"


def member_seed(base_seed: int, fold: int, seed_index: int) -> int:
    """The training seed of one member (init, dropout, shuffling): distinct per member."""
    return int((base_seed + 1000 * seed_index + fold) % (2**31 - 1))


def members(folds: int, seeds: int) -> list[tuple[int, int]]:
    """(fold, seed index) in training order: seed-major, so a partial run covers all folds."""
    return [(f, s) for s in range(seeds) for f in range(folds)]


@dataclass
class FoldMember:
    """One member of a cv run, as plain data: what trains it, here or on a worker."""

    cfg: Config  # its config: the variant applied, its own seed
    name: str  # fold1-seed1
    fold: int  # 0-based: the fold it validates on
    label: str = ""  # its place in the plan for log lines: "[3/10]"


@dataclass
class FoldedData:
    """What every member of a run trains from: the table and the fold of each row."""

    train: TrainData
    fold_of: np.ndarray  # the fold (0-based) of every training row


def fold_member(cfg: Config, fold: int, seed_index: int, label: str = "") -> FoldMember:
    """The member of fold ``fold``, seed ``seed_index`` of a run of ``cfg``."""
    seed = member_seed(cfg.seed, fold, seed_index)
    member_cfg = member_config(cfg, seed_index).model_copy(update={"seed": seed})
    return FoldMember(member_cfg, member_name(fold, seed_index), fold, label)


def member_job(member: FoldMember) -> Job[MemberRecord]:
    """The job that trains ``member``: its record file is its "done" marker."""
    return Job(member.name, functools.partial(train_fold_member, member), last=f"{MODELS}/{member.name}.json")


def train_fold_member(member: FoldMember, data: FoldedData, out: Path, log: Log) -> MemberRecord:
    """The job's work: train (or resume) ``member`` in ``out/work/<name>``; its files in ``out/models``."""
    rows = member_rows(member, data)
    stop = (
        f", early-stopping on {len(rows.stop)} of them (cv.inner_validation {member.cfg.cv.inner_validation})"
        if rows.stop is not None
        else ""
    )
    scored = "scored on" if rows.stop is not None else "validating on"
    log(
        f"{member.label} {member.name}: training on {len(rows.train)} rows{stop}, "
        f"{scored} fold {member.fold + 1} ({len(rows.scored)} rows)",
        1,
    )
    tensorboard = out / "tensorboard" / member.name if member.cfg.train.tensorboard else None
    work = out / WORK / member.name
    record = train_member_files(member, data, work, out, log, tensorboard)
    shutil.rmtree(work, ignore_errors=True)  # the resume point: not a run-directory file
    return record


@dataclass(frozen=True)
class MemberRows:
    """Which training rows a member fits on, early-stops on and is scored on (its fold)."""

    train: np.ndarray  # its training folds' rows
    fit: np.ndarray  # the rows its preprocessing and weights are fitted on
    stop: np.ndarray | None  # the rows it early-stops on: None when that is its fold
    scored: np.ndarray  # its fold's rows: its OOF predictions


def member_rows(spec: FoldMember, data: FoldedData) -> MemberRows:
    """The rows of ``spec``: with ``cv.inner_validation``, its stop rows out of its training folds."""
    tr = np.flatnonzero(data.fold_of != spec.fold)
    va = np.flatnonzero(data.fold_of == spec.fold)
    share = spec.cfg.cv.inner_validation
    if share is None:
        return MemberRows(tr, tr, None, va)
    try:
        fit, stop = inner_split(tr, data.train.y, share, spec.cfg.seed)
    except DataError:
        raise DataError(
            f"{data.train.path}: cv.inner_validation={share} leaves no early-stopping rows out of "
            f"{spec.name}'s {len(tr)} training rows; use more rows or a larger share"
        ) from None
    return MemberRows(tr, fit, stop, va)


def check_inner_validation(cfg: Config, data: FoldedData, folds: int) -> None:
    """Refuse a ``cv.inner_validation`` that leaves a member no stop rows, before anything trains."""
    if cfg.cv.inner_validation is not None:
        for fold in range(folds):
            member_rows(fold_member(cfg, fold, 0), data)


def train_member_files(
    spec: FoldMember, data: FoldedData, work: Path, out: Path, log: Log, tensorboard_dir: Path | None = None
) -> MemberRecord:
    """Train (or resume) one member in ``work``; write its files into ``out/models``; return its record."""
    name, cfg, train, rows = spec.name, spec.cfg, data.train, member_rows(spec, data)
    work.mkdir(parents=True, exist_ok=True)
    models = out / MODELS
    models.mkdir(parents=True, exist_ok=True)
    # Early stopping sees the stop rows as its validation data when there are any.
    pre, arrays = member_arrays(cfg, train, rows.fit, rows.scored if rows.stop is None else rows.stop)
    # The member's preprocessing, to refuse resuming it on other data (as fit does).
    if (work / "preprocess.json").exists():
        check_same_data(work / "preprocess.json", pre)
    else:
        write_text(work / "preprocess.json", pre.to_json())
    if not (work / "model.keras").exists() and (models / f"{name}.keras").exists():
        os.replace(models / f"{name}.keras", work / "model.keras")  # killed while moving it
    # A member killed after its last epoch has nothing left to train: train_loop returns
    # at once (and still applies early_stopping.restore_best_weights).
    weights = class_weights(cfg, arrays.y_train, train.classes)
    job = engine.member.MemberJob(cfg, arrays, work, weights, tensorboard_dir=tensorboard_dir, name=name)
    if rows.stop is not None:  # fancy indexing copied the rows: ours to scale in place
        job.score_x, job.score_y = pre.transform(train.x[rows.scored], overwrite=True), train.y[rows.scored]
    result = engine.member.train_member(job, log)
    state = result.state
    # The kept model on fold k: its OOF predictions and its record's scores.
    oof = result.scored or engine.member.Scored(result.val_proba, result.val_log_loss, result.val_accuracy)
    record = MemberRecord(
        name=name,
        seed=cfg.seed,
        val_log_loss=round(oof.log_loss, 6),
        val_accuracy=round(oof.accuracy, 6),
        best_epoch=state.best_epoch,
        kept_epoch=state.kept_epoch,
        epochs_run=len(state.history),
        stopped_by=state.stop,
        n_train=int(len(rows.fit)),
        n_val=int(len(rows.scored)),
        train_seconds=round(sum(r.seconds for r in state.history), 3),
        wall_seconds_this_session=round(result.wall_seconds, 3),
        n_stop=None if rows.stop is None else int(len(rows.stop)),
        stop_log_loss=None if rows.stop is None else round(result.val_log_loss, 6),
    )
    # Order matters for resuming: model and preprocessing first, the record (the
    # "finished" marker) last.
    pre.save(models / f"{name}.preprocess.json")
    write_history(models / f"{name}.history.csv", state.history)
    write_member_oof(models / f"{name}.oof.npz", oof.proba)
    os.replace(result.model_path, models / f"{name}.keras")
    record.save(models / f"{name}.json")
    return record
