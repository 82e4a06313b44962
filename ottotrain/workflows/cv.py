"""Cross-validation with bagging: ``ottotrain cv``.

One cv run trains ``folds x seeds`` members, each through ``engine.member.train_member``
exactly as ``fit`` trains its one. The training rows are split into K stratified folds
(deterministic for the config's ``seed``); the member ``fold<k>-seed<s>`` is trained on
every fold but k, with fold k as its validation data (early stopping, checkpoint choice,
learning-rate plateaus), and its preprocessing is fitted on its own training rows only.
So ``data.validation_split`` is not used. With ``cv.variants`` in the config, seed s of
every fold trains the config with variant ``s mod len(variants)`` applied (other
transforms, features, batch sizes...): a varied bag, whose members err less alike than
seeds of one recipe do.

The run directory holds, besides ``config.yaml`` and ``status.json`` (``"kind": "cv"``)::

    cv.json                       folds, seeds and the member list
    folds.csv                     id, fold (1-based) of every training row
    models/fold1-seed1.keras      each member's best model ...
    models/fold1-seed1.preprocess.json   ... its preprocessing ...
    models/fold1-seed1.json       ... its scores (written last: the "done" marker)
    models/fold1-seed1.history.csv
    oof.csv                       id, fold, target, one probability per class
    metrics.json                  oof_log_loss, oof_accuracy, per-fold scores, members
    ensemble.json                 the members ``predict`` averages
    submission.csv                test probabilities averaged over all members

Every training row gets exactly one out-of-fold (OOF) prediction: the average of the
``seeds`` members that did not see it. Resuming (``ottotrain cv --resume RUN_DIR``)
reuses every finished member and continues the unfinished one from its last completed
epoch (its work folder, ``work/<member>/``).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ottotrain import engine, runs
from ottotrain.config import Config, member_config, variant_index
from ottotrain.data import TrainData, fold_assignment, id_name
from ottotrain.errors import DataError, RunError
from ottotrain.features import Preprocessor
from ottotrain.io import atomic_path, read_json, write_json, write_text
from ottotrain.log import Log
from ottotrain.metrics import log_loss
from ottotrain.runs import CV_FILE, CV_KIND, ENSEMBLE_FILE, FOLDS_FILE, MODELS, OOF_FILE, WORK
from ottotrain.runs.artifacts import versions, write_history, write_predictions, write_submission
from ottotrain.runs.lifecycle import running
from ottotrain.runs.state import MemberRecord
from ottotrain.workflows.common import (
    begin,
    class_weights,
    create_run_dir,
    data_notes,
    load_data,
    member_arrays,
)
from ottotrain.workflows.fit import check_same_data


def cv_run_name(name: str) -> str:
    """The run-directory name of a cv run: ``<name>-cv``, unless the name says cv already."""
    return name if name == "cv" or name.endswith(("-cv", "_cv")) else f"{name}-cv"


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
class _Run:
    """A cv run in progress: its config, folds and what every member shares."""

    cfg: Config
    run_dir: Path
    train: TrainData
    fold_of: np.ndarray  # the fold (0-based) of every training row
    folds: int
    seeds: int
    status: dict  # kept in status.json whatever happens
    log: Log
    started: float  # time.time() when run_cv was called
    timings: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# One member


def _train_member(run: _Run, fold: int, seed_index: int) -> MemberRecord:
    """Train (or resume) one member in ``work/<name>``; move it into ``models/``; return its record."""
    name, train, run_dir = member_name(fold, seed_index), run.train, run.run_dir
    cfg = member_config(run.cfg, seed_index).model_copy(
        update={"seed": member_seed(run.cfg.seed, fold, seed_index)}
    )
    tr, va = np.flatnonzero(run.fold_of != fold), np.flatnonzero(run.fold_of == fold)
    work = run_dir / WORK / name
    work.mkdir(parents=True, exist_ok=True)
    models = run_dir / MODELS
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
    job = engine.member.MemberJob(
        cfg,
        arrays,
        work,
        class_weights(cfg, arrays.y_train, train.classes),
        tensorboard_dir=run_dir / "tensorboard" / name if cfg.train.tensorboard else None,
        name=name,
    )
    result = engine.member.train_member(job, run.log)
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
    # "finished" marker) last, then the work folder goes.
    pre.save(models / f"{name}.preprocess.json")
    write_history(models / f"{name}.history.csv", state.history)
    os.replace(result.model_path, models / f"{name}.keras")
    record.save(models / f"{name}.json")
    shutil.rmtree(work, ignore_errors=True)
    return record


# --------------------------------------------------------------------------------------
# The whole cv run


def _write_folds(path, ids, folds, id_column):
    with atomic_path(path) as tmp:
        pd.DataFrame({id_column: ids, "fold": folds + 1}).to_csv(tmp, index=False)


def _check_saved_folds(run_dir, ids, folds, id_column):
    saved = pd.read_csv(run_dir / FOLDS_FILE)
    if (
        len(saved) != len(ids)
        or not np.array_equal(saved[id_column].to_numpy(), ids)
        or not np.array_equal(saved["fold"].to_numpy() - 1, folds)
    ):
        raise RunError(
            f"{run_dir}: the training data or its fold assignment changed since the "
            "cv run started (folds.csv differs); start a new run"
        )


def run_cv(
    cfg: Config,
    folds: int | None = None,
    seeds: int | None = None,
    run_dir=None,
    runs_root="runs",
    resume=None,
    smoke=False,
    log: Log | None = None,
    config_name="run",
    on_member=None,
    test=True,
) -> dict:
    """Cross-validate (and bag) a config into a run directory; return the metrics dict.

    Args:
        cfg: a validated ``Config``.
        folds: K, the number of stratified folds (default ``cv.folds``; on resume: the run's).
        seeds: models per fold, each with its own seed (default ``cv.seeds``, else one per
            ``cv.variants`` entry, else 1; on resume: the run's). With variants, model k of
            every fold trains ``member_config(cfg, k)``.
        run_dir: exact directory to create; default ``<runs_root>/<name>-cv-<timestamp>``.
        resume: an interrupted cv run directory to continue.
        smoke: a sample of the rows, one epoch per member.
        log: progress output.
        on_member: called as ``on_member(fold, seed_index, record)`` (0-based) after each
            member trained; tune reports fold scores and prunes through it.
        test: false: no test predictions or submission (a tune trial's would cost it time).

    Returns:
        The ``metrics.json`` content, with ``run_dir`` added.
    """
    log = log or Log(1)
    t_start = time.time()
    cfg, resume_dir, smoke = begin(cfg, CV_KIND, run_dir, resume, smoke)
    if resume_dir is not None:
        saved = read_json(resume_dir / CV_FILE)
        for key, value in (("folds", folds), ("seeds", seeds)):
            if value is not None and value != saved[key]:
                raise RunError(
                    f"{resume_dir}: the run was started with --{key} {saved[key]}, "
                    f"not {value}; resume without --{key}"
                )
        folds, seeds = saved["folds"], saved["seeds"]
    variants = cfg.cv.variants
    folds = cfg.cv.folds if folds is None else int(folds)
    if seeds is None:
        seeds = cfg.cv.seeds or max(1, len(variants))
    seeds = int(seeds)
    if seeds < 1:
        raise DataError(f"--seeds {seeds}: needs at least 1 model per fold")

    t0 = time.perf_counter()
    train, test = load_data(cfg, smoke, test)
    for note in data_notes(cfg, train, test):
        log(f"Warning: {note}", 1)
    try:
        fold_of = fold_assignment(train.y, folds, cfg.seed)
    except DataError as e:
        raise DataError(f"{train.path}: {e}") from None
    t_data = time.perf_counter() - t0
    plan = members(folds, seeds)
    log(
        f"Data: {len(train.y)} rows, {len(train.features)} features, {len(train.classes)} classes"
        + (f", {len(test[0])} test rows" if test else "")
        + (" [smoke]" if smoke else ""),
        1,
    )
    log(
        f"Cross-validation: {folds} stratified folds x {seeds} seed(s) = {len(plan)} models"
        + (f" ({len(variants)} variants, cycled over the seeds)" if variants else ""),
        1,
    )

    status = {"kind": CV_KIND, "folds": folds, "seeds": seeds, "smoke": smoke}
    if resume_dir is not None:
        run_dir = resume_dir
        _check_saved_folds(run_dir, train.ids, fold_of, id_name(cfg.data.id_column))
    else:

        def write(d):
            _write_folds(d / FOLDS_FILE, train.ids, fold_of, id_name(cfg.data.id_column))
            write_json(
                d / CV_FILE,
                {
                    "folds": folds,
                    "seeds": seeds,
                    "fold_seed": cfg.seed,
                    "smoke": smoke,
                    "members": [
                        {
                            "name": member_name(f, s),
                            "fold": f + 1,
                            "seed_index": s + 1,
                            "seed": member_seed(cfg.seed, f, s),
                            "variant": variant_index(cfg, s),
                        }
                        for f, s in plan
                    ],
                },
            )

        run_dir = create_run_dir(cfg, run_dir, runs_root, cv_run_name(cfg.name or config_name), status, write)
    (run_dir / MODELS).mkdir(exist_ok=True)
    log(f"Run directory: {run_dir}", 1)

    def interrupted():
        return (
            f"finished models are kept in {run_dir / MODELS}; continue with: ottotrain cv --resume {run_dir}"
        )

    run = _Run(
        cfg, run_dir, train, fold_of, folds, seeds, status, log, t_start, {"data_seconds": round(t_data, 3)}
    )
    with running(run_dir, log, status, interrupted):
        t1 = time.perf_counter()
        for i, (f, s) in enumerate(plan):
            name = member_name(f, s)
            if (run_dir / MODELS / f"{name}.json").exists():
                log(f"[{i + 1}/{len(plan)}] {name}: finished earlier, reused", 1)
                continue
            n_val = int((fold_of == f).sum())
            log(
                f"[{i + 1}/{len(plan)}] {name}: training on {len(fold_of) - n_val} rows, "
                f"validating on fold {f + 1} ({n_val} rows)",
                1,
            )
            rec = _train_member(run, f, s)
            log(
                f"[{i + 1}/{len(plan)}] {name}: best epoch {rec.best_epoch}/{rec.epochs_run}, "
                f"fold log loss {rec.val_log_loss:.4f}, accuracy {rec.val_accuracy:.4f}",
                1,
            )
            if on_member is not None:
                on_member(f, s, rec)
        run.timings["train_seconds_this_session"] = round(time.perf_counter() - t1, 3)
        return _finish(run, test)


def _finish(run: _Run, test) -> dict:
    """Average the members: OOF predictions, scores, test submission, ensemble manifest."""
    cfg, run_dir, train, fold_of, log = run.cfg, run.run_dir, run.train, run.fold_of, run.log
    folds, seeds, status, timings = run.folds, run.seeds, run.status, run.timings
    t0 = time.perf_counter()
    n_classes = len(train.classes)
    oof = np.zeros((len(train.y), n_classes))
    count = np.zeros(len(train.y), dtype=np.int64)
    per_seed = np.zeros((seeds, len(train.y), n_classes))  # OOF of each seed alone (no bagging)
    p_test = np.zeros((len(test[0]), n_classes)) if test is not None else None
    records, manifest = [], []
    x_test = {}  # test rows as each distinct preprocessing transforms them
    for f in range(folds):
        va = np.flatnonzero(fold_of == f)
        x_test.clear()
        for s in range(seeds):
            name = member_name(f, s)
            path = run_dir / MODELS / f"{name}.preprocess.json"
            pre = Preprocessor.from_json(path.read_text(), path)
            model = engine.inference.load_model(run_dir / MODELS / f"{name}.keras")
            per_seed[s, va] = engine.inference.predict_proba(model, pre.transform(train.x[va]))
            oof[va] += per_seed[s, va]
            count[va] += 1
            if p_test is not None:
                key = pre.to_json()  # seeds of a fold share it, unless cv.variants differ
                if key not in x_test:
                    x_test[key] = pre.transform(test[1])
                p_test += engine.inference.predict_proba(model, x_test[key])
            rec = MemberRecord.load(run_dir / MODELS / f"{name}.json")
            records.append(
                {"fold": f + 1, "seed_index": s + 1, "variant": variant_index(cfg, s), **asdict(rec)}
            )
            manifest.append(
                {
                    "name": name,
                    "model": f"{MODELS}/{name}.keras",
                    "preprocess": f"{MODELS}/{name}.preprocess.json",
                    "weight": 1.0,
                }
            )
            engine.env.keras.backend.clear_session()  # free the member's graph
    if not (count == seeds).all():
        raise RunError(
            f"{run_dir}: a training row has {count.min()} out-of-fold predictions, "
            f"expected {seeds}; folds.csv or models/ are damaged"
        )
    oof /= count[:, None]
    loss = log_loss(train.y, oof)
    acc = float((oof.argmax(1) == train.y).mean())
    fold_loss = [log_loss(train.y[fold_of == f], oof[fold_of == f]) for f in range(folds)]
    fold_acc = [float((oof[fold_of == f].argmax(1) == train.y[fold_of == f]).mean()) for f in range(folds)]

    write_predictions(
        run_dir / OOF_FILE,
        oof,
        train.classes,
        {
            id_name(cfg.data.id_column): train.ids,
            "fold": fold_of + 1,
            cfg.data.target_column: [train.classes[i] for i in train.y],
        },
    )
    if p_test is not None:
        write_submission(
            run_dir / "submission.csv",
            test[0],
            p_test / (folds * seeds),
            train.classes,
            id_name(cfg.data.id_column),
        )
    write_json(
        run_dir / ENSEMBLE_FILE,
        {"kind": CV_KIND, "combine": "mean", "members": manifest, "classes": list(train.classes)},
    )
    timings["predict_seconds"] = round(time.perf_counter() - t0, 3)
    timings["member_train_seconds"] = round(sum(r["train_seconds"] for r in records), 3)
    timings["total_seconds_this_session"] = round(time.time() - run.started, 3)
    metrics = {
        "kind": CV_KIND,
        "oof_log_loss": round(loss, 6),
        "oof_accuracy": round(acc, 6),
        "fold_log_loss": [round(v, 6) for v in fold_loss],
        "fold_accuracy": [round(v, 6) for v in fold_acc],
        "fold_log_loss_mean": round(float(np.mean(fold_loss)), 6),
        "fold_log_loss_std": round(float(np.std(fold_loss)), 6),
        "fold_accuracy_mean": round(float(np.mean(fold_acc)), 6),
        "fold_accuracy_std": round(float(np.std(fold_acc)), 6),
        "member_log_loss_mean": round(float(np.mean([r["val_log_loss"] for r in records])), 6),
        # Single-model scores: the OOF log loss of each seed's K models alone, without bagging
        # (with cv.variants, seed k is variant k mod len: each variant's own score).
        "seed_oof_log_loss": [round(log_loss(train.y, p), 6) for p in per_seed],
        "folds": folds,
        "seeds": seeds,
        "n_models": folds * seeds,
        "n_train": int(len(train.y)),
        "n_features": len(train.features),
        "n_classes": n_classes,
        "smoke": status["smoke"],
        "members": records,
        "timings": timings,
        "versions": versions(),
    }
    write_json(run_dir / "metrics.json", metrics)
    shutil.rmtree(run_dir / WORK, ignore_errors=True)
    runs.write_status(run_dir, runs.FINISHED, **status)
    # The rounded figures the result carries, so that this line and the CLI's agree.
    log(
        f"OOF log loss {metrics['oof_log_loss']:.4f} (folds {metrics['fold_log_loss_mean']:.4f} ± "
        f"{metrics['fold_log_loss_std']:.4f}), accuracy {metrics['oof_accuracy']:.4f}, "
        f"{metrics['n_models']} models",
        1,
    )
    return {**metrics, "run_dir": str(run_dir)}
