"""The end of a cv run: the members averaged into OOF predictions, scores, a submission.

Every training row gets exactly one out-of-fold (OOF) prediction: the average of the
``seeds`` members that did not see it. The test predictions are the average of all members
(``workflows.average``, as ``predict`` averages the finished run).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ottotrain import engine, runs
from ottotrain.config import Config, variant_index
from ottotrain.data import id_name
from ottotrain.errors import RunError
from ottotrain.features import Preprocessor
from ottotrain.io import write_json
from ottotrain.log import Log
from ottotrain.metrics import log_loss
from ottotrain.runs import CV_KIND, ENSEMBLE_FILE, MODELS, OOF_FILE, WORK
from ottotrain.runs.artifacts import read_member_oof, versions, write_predictions, write_submission
from ottotrain.runs.state import MemberRecord
from ottotrain.workflows.average import Member, average
from ottotrain.workflows.common import ReadsAsDict
from ottotrain.workflows.cv_member import FoldedData, member_name


@dataclass
class CvRun:
    """A cv run in progress: its config, folds and what every member shares."""

    cfg: Config
    run_dir: Path
    data: FoldedData
    folds: int
    seeds: int
    threads: int  # TensorFlow intra-op threads of every member
    status: runs.RunStatus  # kept in status.json whatever happens
    log: Log
    started: float  # time.time() when run_cv was called
    timings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CvMember:
    """One member's line in metrics.json: where it sits in the run, and its record."""

    fold: int  # 1-based
    seed_index: int  # 1-based
    variant: int | None
    record: MemberRecord

    def row(self) -> dict:
        return {
            "fold": self.fold,
            "seed_index": self.seed_index,
            "variant": self.variant,
            **self.record.to_dict(),
        }


@dataclass(frozen=True)
class CvResult(ReadsAsDict):
    """What a cv run scored (``metrics.json``, in this order) and where it is."""

    oof_log_loss: float
    oof_accuracy: float
    fold_log_loss: list[float]
    fold_accuracy: list[float]
    fold_log_loss_mean: float
    fold_log_loss_std: float
    fold_accuracy_mean: float
    fold_accuracy_std: float
    member_log_loss_mean: float
    # Single-model scores: the OOF log loss of each seed's K models alone, without bagging
    # (with cv.variants, seed k is variant k mod len: each variant's own score).
    seed_oof_log_loss: list[float]
    folds: int
    seeds: int
    # The share of each member's training rows it early-stopped on (cv.inner_validation);
    # None: every member early-stopped on the fold that scores it.
    inner_validation: float | None
    n_models: int
    n_train: int
    n_features: int
    n_classes: int
    smoke: bool
    members: list[CvMember]
    timings: dict[str, float]
    versions: dict[str, str]
    run_dir: Path

    def metrics(self) -> dict:
        """The ``metrics.json`` content."""
        out = {"kind": CV_KIND}
        out.update(
            {k: v for k, v in vars(self).items() if k not in ("members", "timings", "versions", "run_dir")}
        )
        return out | {
            "members": [m.row() for m in self.members],
            "timings": self.timings,
            "versions": self.versions,
        }


def member_oof(run_dir: Path, name: str, pre: Preprocessor, x_val, n_classes: int) -> np.ndarray:
    """A member's OOF probabilities: as it saved them, or (a member finished by ottotrain 1.0
    or before its ``.oof.npz`` existed) predicted again from its model."""
    path = run_dir / MODELS / f"{name}.oof.npz"
    if path.exists():
        p = read_member_oof(path)
        if p.shape != (len(x_val), n_classes):
            raise RunError(
                f"{path}: holds probabilities of shape {p.shape}, expected ({len(x_val)}, {n_classes}) "
                "(its fold's rows x classes); folds.csv or models/ are damaged"
            )
        return p
    model = engine.inference.load_model(run_dir / MODELS / f"{name}.keras")
    p = engine.inference.predict_proba(model, pre.transform(x_val))
    engine.env.keras.backend.clear_session()
    return p


def _read_members(run: CvRun) -> tuple[list[Member], list[CvMember], np.ndarray]:
    """The members (fold-major), their records, and each seed's OOF probabilities alone."""
    train, fold_of, run_dir = run.data.train, run.data.fold_of, run.run_dir
    per_seed = np.zeros((run.seeds, len(train.y), len(train.classes)))
    members, rows = [], []
    for f in range(run.folds):
        va = np.flatnonzero(fold_of == f)
        for s in range(run.seeds):
            name = member_name(f, s)
            path = run_dir / MODELS / f"{name}.preprocess.json"
            pre = Preprocessor.from_json(path.read_text(), path)
            per_seed[s, va] = member_oof(run_dir, name, pre, train.x[va], len(train.classes))
            members.append(Member(name, pre, run_dir / MODELS / f"{name}.keras"))
            record = MemberRecord.load(run_dir / MODELS / f"{name}.json")
            rows.append(CvMember(f + 1, s + 1, variant_index(run.cfg, s), record))
    return members, rows, per_seed


def _write_outputs(run: CvRun, oof: np.ndarray, members: list[Member], test) -> None:
    """oof.csv, submission.csv (all members averaged on the test rows) and ensemble.json."""
    cfg, train, run_dir = run.cfg, run.data.train, run.run_dir
    id_column = id_name(cfg.data.id_column)
    leading = {
        id_column: train.ids,
        "fold": run.data.fold_of + 1,
        cfg.data.target_column: [train.classes[i] for i in train.y],
    }
    write_predictions(run_dir / OOF_FILE, oof, train.classes, leading)
    if test is not None:
        p_test = average(members, test[1], engine.inference.predict_proba)[0]
        write_submission(run_dir / "submission.csv", test[0], p_test, train.classes, id_column)
    manifest = [
        {
            "name": m.name,
            "model": f"{MODELS}/{m.name}.keras",
            "preprocess": f"{MODELS}/{m.name}.preprocess.json",
        }
        | {"weight": 1.0}
        for m in members
    ]
    write_json(
        run_dir / ENSEMBLE_FILE,
        {"kind": CV_KIND, "combine": "mean", "members": manifest, "classes": list(train.classes)},
    )


def _scores(y: np.ndarray, oof: np.ndarray, fold_of: np.ndarray, folds: int) -> dict:
    loss = [log_loss(y[fold_of == f], oof[fold_of == f]) for f in range(folds)]
    acc = [float((oof[fold_of == f].argmax(1) == y[fold_of == f]).mean()) for f in range(folds)]
    return {
        "oof_log_loss": round(log_loss(y, oof), 6),
        "oof_accuracy": round(float((oof.argmax(1) == y).mean()), 6),
        "fold_log_loss": [round(v, 6) for v in loss],
        "fold_accuracy": [round(v, 6) for v in acc],
        "fold_log_loss_mean": round(float(np.mean(loss)), 6),
        "fold_log_loss_std": round(float(np.std(loss)), 6),
        "fold_accuracy_mean": round(float(np.mean(acc)), 6),
        "fold_accuracy_std": round(float(np.std(acc)), 6),
    }


def finish(run: CvRun, test) -> CvResult:
    """Average the members: OOF predictions, scores, test submission, ensemble manifest."""
    train, run_dir, t0 = run.data.train, run.run_dir, time.perf_counter()
    members, rows, per_seed = _read_members(run)
    count = np.zeros(len(train.y), dtype=np.int64)
    for f in range(run.folds):
        count[run.data.fold_of == f] += run.seeds
    if not (count == run.seeds).all():
        raise RunError(
            f"{run_dir}: a training row has {count.min()} out-of-fold predictions, "
            f"expected {run.seeds}; folds.csv or models/ are damaged"
        )
    oof = per_seed.sum(axis=0) / run.seeds
    _write_outputs(run, oof, members, test)
    run.timings["predict_seconds"] = round(time.perf_counter() - t0, 3)
    run.timings["member_train_seconds"] = round(sum(m.record.train_seconds for m in rows), 3)
    run.timings["total_seconds_this_session"] = round(time.time() - run.started, 3)
    result = CvResult(
        **_scores(train.y, oof, run.data.fold_of, run.folds),
        member_log_loss_mean=round(float(np.mean([m.record.val_log_loss for m in rows])), 6),
        seed_oof_log_loss=[round(log_loss(train.y, p), 6) for p in per_seed],
        folds=run.folds,
        seeds=run.seeds,
        inner_validation=run.cfg.cv.inner_validation,
        n_models=run.folds * run.seeds,
        n_train=int(len(train.y)),
        n_features=len(train.features),
        n_classes=len(train.classes),
        smoke=run.status.smoke,
        members=rows,
        timings=run.timings,
        versions=versions(),
        run_dir=run_dir,
    )
    write_json(run_dir / "metrics.json", result.metrics())
    shutil.rmtree(run_dir / WORK, ignore_errors=True)
    runs.write_status(run_dir, runs.FINISHED, run.status)
    # The rounded figures the result carries, so that this line and the CLI's agree.
    run.log(
        f"OOF log loss {result.oof_log_loss:.4f} (folds {result.fold_log_loss_mean:.4f} ± "
        f"{result.fold_log_loss_std:.4f}), accuracy {result.oof_accuracy:.4f}, {result.n_models} models",
        1,
    )
    return result
