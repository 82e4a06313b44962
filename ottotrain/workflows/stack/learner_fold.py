"""One fold of a learner member (LightGBM, KNN vote) as an executor job.

The job trains on every fold but k (LightGBM early-stops on ``stack.inner_validation`` of
those rows, never on fold k), predicts fold k's rows (their out-of-fold probabilities) and
the test rows, and writes under ``out/members/<name>/``::

    models/fold<k>/        the saved learner (learners' own files, no pickle)
    folds/fold<k>.npz      its probabilities: oof_<output>, test_<output> for each output
    folds/fold<k>.json     its record, written last: the job's "done" marker

A KNN member with a list of k computes every k in one neighbour search; each k is an
output of its own (``<name>-k<k>``), a folder of its own beside the member's, with its
own saved learners (``members/<name>-k<k>/models/fold<k>/``: the reference rows, stored
compactly, and that k), so that each output predicts alone.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ottotrain import learners
from ottotrain.data import inner_split
from ottotrain.execute import Job
from ottotrain.io import atomic_path, write_json
from ottotrain.log import Log
from ottotrain.metrics import log_loss
from ottotrain.workflows.stack.state import MEMBERS, StackData

FOLDS_DIR = "folds"


@dataclass(frozen=True)
class LearnerFold:
    """One fold of one learner member, as plain data (it may run on a worker)."""

    name: str  # the member's folder under members/
    kind: str  # lightgbm | knn
    params: dict  # the member's settings (a KNN list of k included)
    outputs: tuple[str, ...]  # the member's output names: (name,) or (name-k2, name-k8, ...)
    fold: int  # 0-based: the fold it predicts
    seed: int
    inner_validation: float
    threads: int  # of the learner (LightGBM's, the neighbour search's)
    label: str = ""  # "[lgbm 2/5]" for log lines


@dataclass
class FoldRecord:
    """What one fold job came to (``folds/fold<k>.json``)."""

    fold: int  # 1-based
    n_train: int
    n_stop: int
    n_val: int
    log_loss: dict[str, float]  # per output, on fold k's rows
    train_seconds: float
    predict_seconds: float

    @classmethod
    def read(cls, path: Path) -> FoldRecord:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def fold_files(member_dir: Path, fold: int) -> tuple[Path, Path]:
    """(probabilities .npz, record .json) of fold ``fold`` (0-based) of a learner member."""
    return member_dir / FOLDS_DIR / f"fold{fold + 1}.npz", member_dir / FOLDS_DIR / f"fold{fold + 1}.json"


def learner_job(spec: LearnerFold) -> Job[FoldRecord]:
    """The job of one fold: its record file is its "done" marker."""
    last = f"{MEMBERS}/{spec.name}/{FOLDS_DIR}/fold{spec.fold + 1}.json"
    return Job(f"{spec.name}-fold{spec.fold + 1}", functools.partial(train_learner_fold, spec), last=last)


def train_learner_fold(spec: LearnerFold, data: StackData, out: Path, log: Log) -> FoldRecord:
    """The job's work: fit on the other folds, predict fold k and the test rows, save it all."""
    train, fold_of = data.folded.train, data.folded.fold_of
    n_classes = len(train.classes)
    tr, va = np.flatnonzero(fold_of != spec.fold), np.flatnonzero(fold_of == spec.fold)
    x, y = train.x, train.y
    log(f"{spec.label} {spec.name}: fold {spec.fold + 1}, training on {len(tr)} rows", 2)
    member_dir = out / MEMBERS / spec.name
    if spec.kind == "knn":
        stop = np.empty(0, dtype=np.int64)
        t0 = time.perf_counter()
        for name, k in zip(spec.outputs, _ks(spec)):  # each k predicts on its own later
            learner = _make(spec, {**spec.params, "k": k}, n_classes)
            learner.fit(x[tr], y[tr], None, None)  # keeps the reference rows
            learner.save(out / MEMBERS / name / "models" / f"fold{spec.fold + 1}")
        fit_seconds = time.perf_counter() - t0
        probas = _knn_votes(spec, x[tr], y[tr], x[va], data.test_x, n_classes)
    else:
        fit_rows, stop = inner_split(tr, y, spec.inner_validation, spec.seed)
        learner = _make(spec, spec.params, n_classes)
        t0 = time.perf_counter()
        learner.fit(x[fit_rows], y[fit_rows], x[stop], y[stop])
        fit_seconds = time.perf_counter() - t0
        oof = learner.predict_proba(x[va])
        test = learner.predict_proba(data.test_x) if data.test_x is not None else None
        probas = {spec.outputs[0]: (oof, test)}
        learner.save(member_dir / "models" / f"fold{spec.fold + 1}")
    predict_seconds = time.perf_counter() - t0 - fit_seconds
    record = FoldRecord(
        fold=spec.fold + 1,
        n_train=int(len(tr) - len(stop)),
        n_stop=int(len(stop)),
        n_val=int(len(va)),
        log_loss={name: round(log_loss(y[va], p[0]), 6) for name, p in probas.items()},
        train_seconds=round(fit_seconds, 3),
        predict_seconds=round(predict_seconds, 3),
    )
    npz, done = fold_files(member_dir, spec.fold)
    arrays = {f"oof_{n}": p[0] for n, p in probas.items()}
    arrays |= {f"test_{n}": p[1] for n, p in probas.items() if p[1] is not None}
    npz.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(npz) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    write_json(done, asdict(record))  # last: the fold is done
    return record


def _make(spec: LearnerFold, params: dict, n_classes: int):
    return learners.make(spec.kind, params, n_classes=n_classes, seed=spec.seed, threads=spec.threads)


def _ks(spec: LearnerFold) -> list[int]:
    k = spec.params["k"]
    return list(k) if isinstance(k, list) else [k]


def _knn_votes(spec: LearnerFold, x_ref, y_ref, x_val, x_test, n_classes) -> dict[str, tuple]:
    """Every k's votes for fold k's rows and the test rows, from one neighbour search."""
    query = x_val if x_test is None else np.concatenate([x_val, x_test])
    votes = learners.knn_votes(
        x_ref,
        y_ref,
        query,
        _ks(spec),
        spec.params["space"],
        spec.params["weights"],
        n_classes,
        threads=spec.threads,
    )
    n = len(x_val)
    return {
        name: (votes[k][:n], None if x_test is None else votes[k][n:])
        for name, k in zip(spec.outputs, _ks(spec))
    }


def read_fold(member_dir: Path, fold: int, output: str) -> tuple[np.ndarray, np.ndarray | None]:
    """One output's (OOF, test) probabilities of a finished fold."""
    npz, _ = fold_files(member_dir, fold)
    with np.load(npz, allow_pickle=False) as z:
        return z[f"oof_{output}"], (z[f"test_{output}"] if f"test_{output}" in z.files else None)
