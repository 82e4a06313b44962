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

    cv.json                       folds, seeds, member threads and the member list
    folds.csv                     id, fold (1-based) of every training row
    models/fold1-seed1.keras      each member's best model ...
    models/fold1-seed1.preprocess.json   ... its preprocessing ...
    models/fold1-seed1.json       ... its scores (written last: the "done" marker)
    models/fold1-seed1.history.csv
    models/fold1-seed1.oof.npz    its probabilities on fold 1's rows
    oof.csv                       id, fold, target, one probability per class
    metrics.json                  oof_log_loss, oof_accuracy, per-fold scores, members
    ensemble.json                 the members ``predict`` averages
    submission.csv                test probabilities averaged over all members

Every training row gets exactly one out-of-fold (OOF) prediction: the average of the
``seeds`` members that did not see it. Resuming (``ottotrain cv --resume RUN_DIR``)
reuses every finished member and continues the unfinished one from its last completed
epoch (its work folder, ``work/<member>/``).

With ``--workers N`` or ``--scheduler`` the members train on Dask workers
(``workflows.cluster``), each through the same ``train_member_files`` in a temporary
folder there; the client writes the files that come back, and the run directory is the
one a serial run writes.
"""

from __future__ import annotations

import contextlib
import functools
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
from ottotrain.runs.artifacts import (
    read_member_oof,
    versions,
    write_history,
    write_member_oof,
    write_predictions,
    write_submission,
)
from ottotrain.runs.lifecycle import running
from ottotrain.runs.state import MemberRecord
from ottotrain.workflows import cluster
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
class MemberSpec:
    """One member of a cv run, as plain data: what trains it, here or on a cluster worker."""

    cfg: Config  # its config: the variant applied, its own seed
    name: str  # fold1-seed1
    fold: int  # 0-based: the fold it validates on


@dataclass
class FoldedData:
    """What every member of a run trains from: the table and the fold of each row."""

    train: TrainData
    fold_of: np.ndarray  # the fold (0-based) of every training row


@dataclass
class _Run:
    """A cv run in progress: its config, folds and what every member shares."""

    cfg: Config
    run_dir: Path
    data: FoldedData
    folds: int
    seeds: int
    threads: int  # TensorFlow intra-op threads of every member
    status: dict  # kept in status.json whatever happens
    log: Log
    started: float  # time.time() when run_cv was called
    timings: dict = field(default_factory=dict)

    @property
    def train(self) -> TrainData:
        return self.data.train

    @property
    def fold_of(self) -> np.ndarray:
        return self.data.fold_of

    def spec(self, fold: int, seed_index: int) -> MemberSpec:
        cfg = member_config(self.cfg, seed_index).model_copy(
            update={"seed": member_seed(self.cfg.seed, fold, seed_index)}
        )
        return MemberSpec(cfg, member_name(fold, seed_index), fold)


# --------------------------------------------------------------------------------------
# One member


def train_member_files(
    spec: MemberSpec, data: FoldedData, work: Path, out: Path, log: Log, tensorboard_dir: Path | None = None
) -> MemberRecord:
    """Train (or resume) one member in ``work``; write its files into ``out/models``; return its record.

    ``out`` is the run directory (a serial run), or a worker's temporary folder whose files
    go to the client's run directory (a cluster run): the same files either way.
    """
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
    job = engine.member.MemberJob(
        cfg,
        arrays,
        work,
        class_weights(cfg, arrays.y_train, train.classes),
        tensorboard_dir=tensorboard_dir,
        name=name,
    )
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


def _train_member(run: _Run, fold: int, seed_index: int) -> MemberRecord:
    """Train (or resume) one member in ``work/<name>`` of the run directory, in this process."""
    spec, run_dir = run.spec(fold, seed_index), run.run_dir
    work = run_dir / WORK / spec.name
    tensorboard = run_dir / "tensorboard" / spec.name if spec.cfg.train.tensorboard else None
    record = train_member_files(spec, run.data, work, run_dir, run.log, tensorboard)
    shutil.rmtree(work, ignore_errors=True)
    return record


def member_task(spec: MemberSpec, data: str, client_versions: dict, threads: int) -> cluster.TaskResult:
    """On a cluster worker: train one member from scratch (``data``: the run's ``FoldedData``,
    by its ``cluster.shared_data`` token); its run-directory files come back."""
    cluster.check_worker(client_versions)
    work = functools.partial(_member_in, spec, cluster.run_data(data))
    return cluster.run_task(spec.name, threads, work)


def _member_in(spec: MemberSpec, data: FoldedData, out: Path) -> MemberRecord:
    tensorboard = out / "tensorboard" / spec.name if spec.cfg.train.tensorboard else None
    record = train_member_files(spec, data, out / WORK / spec.name, out, Log(0), tensorboard)
    shutil.rmtree(out / WORK)  # the resume point: not a run-directory file
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
    member_threads: int | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    loaded: tuple | None = None,
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
        member_threads: TensorFlow intra-op threads of every member (their results' last
            bits depend on it; recorded in the run, kept on resume). Default: the cores
            shared out among the members that run at once.
        scheduler: train the members on this Dask scheduler's workers (tcp://HOST:PORT).
        workers: train the members on a local cluster of this many worker processes.
        loaded: ``load_data``'s result, when the caller has read the data already.

    Returns:
        The ``metrics.json`` content, with ``run_dir`` added.
    """
    log = log or Log(1)
    t_start = time.time()
    cluster.check_options(scheduler, workers)
    cfg, resume_dir, smoke = begin(cfg, CV_KIND, run_dir, resume, smoke)
    if resume_dir is not None:
        saved = read_json(resume_dir / CV_FILE)
        for key, value in (("folds", folds), ("seeds", seeds), ("member-threads", member_threads)):
            was = saved.get(key.replace("-", "_"))
            if value is not None and was is not None and value != was:
                raise RunError(
                    f"{resume_dir}: the run was started with --{key} {was}, not {value}; "
                    f"resume without --{key}"
                )
        folds, seeds = saved["folds"], saved["seeds"]
        member_threads = saved.get("member_threads", member_threads)
    variants = cfg.cv.variants
    folds = cfg.cv.folds if folds is None else int(folds)
    if seeds is None:
        seeds = cfg.cv.seeds or max(1, len(variants))
    seeds = int(seeds)
    if seeds < 1:
        raise DataError(f"--seeds {seeds}: needs at least 1 model per fold")
    if member_threads is not None and member_threads < 1:
        raise DataError(f"--member-threads {member_threads}: needs at least 1 thread")

    t0 = time.perf_counter()
    train, test = load_data(cfg, smoke, test) if loaded is None else loaded
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
    with contextlib.ExitStack() as stack:
        # The cluster first: a run whose scheduler cannot be reached leaves nothing.
        on = None
        if scheduler is not None or workers is not None:
            on = stack.enter_context(cluster.open_cluster(scheduler, workers, member_threads, log))
        threads = on.threads if on else member_threads or cluster.default_threads()
        status = {"kind": CV_KIND, "folds": folds, "seeds": seeds, "smoke": smoke, "member_threads": threads}
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
                        "member_threads": threads,
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

            run_dir = create_run_dir(
                cfg, run_dir, runs_root, cv_run_name(cfg.name or config_name), status, write
            )
        (run_dir / MODELS).mkdir(exist_ok=True)
        log(f"Run directory: {run_dir}", 1)

        def interrupted():
            return (
                f"finished models are kept in {run_dir / MODELS}; "
                f"continue with: ottotrain cv --resume {run_dir}"
            )

        run = _Run(
            cfg,
            run_dir,
            FoldedData(train, fold_of),
            folds,
            seeds,
            threads,
            status,
            log,
            t_start,
            {"data_seconds": round(t_data, 3)},
        )
        with running(run_dir, log, status, interrupted):
            t1 = time.perf_counter()
            todo = []
            for i, (f, s) in enumerate(plan):
                if (run_dir / MODELS / f"{member_name(f, s)}.json").exists():
                    log(f"[{i + 1}/{len(plan)}] {member_name(f, s)}: finished earlier, reused", 1)
                else:
                    todo.append((i, f, s))
            if on is None:
                _train_here(run, plan, todo, on_member)
            else:
                _train_on_cluster(run, on, plan, todo, on_member)
            run.timings["train_seconds_this_session"] = round(time.perf_counter() - t1, 3)
            return _finish(run, test)


def _train_here(run: _Run, plan, todo, on_member) -> None:
    """The members one after the other in this process."""
    log, fold_of = run.log, run.fold_of
    if todo:
        engine.env.use_threads(run.threads)
    for i, f, s in todo:
        name = member_name(f, s)
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


def _train_on_cluster(run: _Run, on: cluster.Cluster, plan, todo, on_member) -> None:
    """The members as tasks on the cluster; each one's files written here as it comes back."""
    log, run_dir = run.log, run.run_dir
    if not todo:
        return
    here = cluster.versions()
    where = {member_name(f, s): (i, f, s) for i, f, s in todo}
    t0, member_seconds, done = time.perf_counter(), [], 0
    log(f"{len(todo)} members to train on {on.slots} worker(s)", 1)

    def finished(result: cluster.TaskResult):
        nonlocal done
        i, f, s = where[result.name]
        cluster.write_files(run_dir, result.files, last=f"{MODELS}/{result.name}.json")
        rec: MemberRecord = result.value
        member_seconds.append(result.seconds)
        done += 1
        log(
            f"[{i + 1}/{len(plan)}] {result.name}: fold log loss {rec.val_log_loss:.4f}, best epoch "
            f"{rec.best_epoch}/{rec.epochs_run}, {result.seconds:.1f} s on {result.host} ({result.worker}); "
            f"{done}/{len(todo)} done",
            1,
        )
        if on_member is not None:
            on_member(f, s, rec)

    hint = f"continue with: ottotrain cv --resume {run_dir} (with --scheduler or --workers)"
    with cluster.shared_data(on, run.data) as data:
        specs = ((name, run.spec(f, s)) for name, (_, f, s) in where.items())
        tasks = ((name, member_task, (spec, data, here, run.threads)) for name, spec in specs)
        cluster.run_tasks(on, lambda: next(tasks, None), finished, hint)
    wall = time.perf_counter() - t0
    run.timings["cluster_wall_seconds"] = round(wall, 3)
    run.timings["cluster_member_seconds"] = round(sum(member_seconds), 3)
    log(
        f"Cluster: {wall:.1f} s wall for {sum(member_seconds):.1f} s of member time "
        f"({len(todo)} members on {on.slots} worker(s), {sum(member_seconds) / max(wall, 1e-9):.2f}x)",
        1,
    )


def _member_oof(run_dir: Path, name: str, pre: Preprocessor, x_val, n_classes: int) -> np.ndarray:
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
            pre, model = Preprocessor.from_json(path.read_text(), path), None
            per_seed[s, va] = _member_oof(run_dir, name, pre, train.x[va], n_classes)
            oof[va] += per_seed[s, va]
            count[va] += 1
            if p_test is not None:
                model = engine.inference.load_model(run_dir / MODELS / f"{name}.keras")
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
            if model is not None:
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
