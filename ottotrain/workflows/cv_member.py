"""One member of a cv run as a job: ``member_job(run, fold, seed) -> Job[MemberRecord]``.

The member ``fold<k>-seed<s>`` trains on every fold but k, with fold k as its validation
data, through ``engine.member.train_member`` exactly as ``fit`` trains its one. Its job
writes its files under ``out/models`` (``out``: the run directory in this process, or a
worker's temporary folder whose files come back), its record (the "done" marker) last, and
resumes from ``out/work/<member>/`` when a run was stopped in the middle of it.
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
from ottotrain.data import TrainData
from ottotrain.execute import Job
from ottotrain.io import write_text
from ottotrain.log import Log
from ottotrain.runs import MODELS, WORK
from ottotrain.runs.artifacts import write_history, write_member_oof
from ottotrain.runs.state import MemberRecord
from ottotrain.workflows.common import class_weights, member_arrays
from ottotrain.workflows.fit import check_same_data


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
    n_val = int((data.fold_of == member.fold).sum())
    log(
        f"{member.label} {member.name}: training on {len(data.fold_of) - n_val} rows, "
        f"validating on fold {member.fold + 1} ({n_val} rows)",
        1,
    )
    tensorboard = out / "tensorboard" / member.name if member.cfg.train.tensorboard else None
    work = out / WORK / member.name
    record = train_member_files(member, data, work, out, log, tensorboard)
    shutil.rmtree(work, ignore_errors=True)  # the resume point: not a run-directory file
    return record


def train_member_files(
    spec: FoldMember, data: FoldedData, work: Path, out: Path, log: Log, tensorboard_dir: Path | None = None
) -> MemberRecord:
    """Train (or resume) one member in ``work``; write its files into ``out/models``; return its record."""
    name, cfg, train, fold_of = spec.name, spec.cfg, data.train, data.fold_of
    tr, va = np.flatnonzero(fold_of != spec.fold), np.flatnonzero(fold_of == spec.fold)
    work.mkdir(parents=True, exist_ok=True)
    models = out / MODELS
    models.mkdir(parents=True, exist_ok=True)
    pre, arrays = member_arrays(cfg, train, tr, va)
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
    result = engine.member.train_member(job, log)
    state = result.state
    record = MemberRecord(
        name=name,
        seed=cfg.seed,
        val_log_loss=round(result.val_log_loss, 6),
        val_accuracy=round(result.val_accuracy, 6),
        best_epoch=state.best_epoch,
        kept_epoch=state.kept_epoch,
        epochs_run=len(state.history),
        stopped_by=state.stop,
        n_train=int(len(tr)),
        n_val=int(len(va)),
        train_seconds=round(sum(r.seconds for r in state.history), 3),
        wall_seconds_this_session=round(result.wall_seconds, 3),
    )
    # Order matters for resuming: model and preprocessing first, the record (the
    # "finished" marker) last.
    pre.save(models / f"{name}.preprocess.json")
    write_history(models / f"{name}.history.csv", state.history)
    write_member_oof(models / f"{name}.oof.npz", result.val_proba)
    os.replace(result.model_path, models / f"{name}.keras")
    record.save(models / f"{name}.json")
    return record
