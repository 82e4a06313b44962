"""Cross-validation with bagging: ``ottotrain cv``, a plan of member jobs over an executor.

One cv run trains ``folds x seeds`` members (``workflows.cv_member``), each through
``engine.member.train_member`` exactly as ``fit`` trains its one. The training rows are
split into K stratified folds (deterministic for the config's ``seed``); the member
``fold<k>-seed<s>`` is trained on every fold but k, with fold k as its validation data,
and its preprocessing is fitted on its own training rows only. So
``data.validation_split`` is not used. With ``cv.inner_validation`` (a share), each member
early-stops on that share of its own training rows instead, so that fold k chose nothing
(``workflows.cv_member``; metrics.json records the share). With ``cv.variants`` in the config,
seed s of every fold trains the config with variant ``s mod len(variants)`` applied: a
varied bag, whose members err less alike than seeds of one recipe do.

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

Resuming (``ottotrain cv --resume RUN_DIR``) reuses every finished member and continues
the unfinished one from its last completed epoch (its work folder, ``work/<member>/``).
The members run on the executor (``ottotrain.execute``): here, on ``--workers N`` local
worker processes or on a ``--scheduler``'s workers; the run directory is the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ottotrain import execute, tracking
from ottotrain.config import Config, variant_index
from ottotrain.data import fold_assignment, id_name
from ottotrain.errors import DataError, RunError
from ottotrain.execute import Done, Executor
from ottotrain.io import atomic_path, read_json, write_json
from ottotrain.log import Log
from ottotrain.runs import CV_FILE, CV_KIND, FOLDS_FILE, MODELS, RunStatus
from ottotrain.runs.lifecycle import running
from ottotrain.runs.state import MemberRecord
from ottotrain.workflows.common import begin, create_run_dir, data_notes, load_data
from ottotrain.workflows.cv_member import (
    FoldedData,
    check_inner_validation,
    fold_member,
    member_job,
    member_name,
    member_seed,
    members,
)
from ottotrain.workflows.cv_result import CvResult, CvRun, finish
from ottotrain.workflows.export import export

OnMember = Callable[[int, int, MemberRecord], None]  # (fold, seed index, record), 0-based


@dataclass(frozen=True)
class CvOptions:
    """How to run a cv: ``ottotrain cv``'s options."""

    folds: int | None = None  # K stratified folds (default cv.folds; on resume: the run's)
    # Models per fold, each with its own seed (default cv.seeds, else one per cv.variants
    # entry, else 1; on resume: the run's). With variants, model k trains member_config(cfg, k).
    seeds: int | None = None
    run_dir: Path | str | None = None  # exact directory to create (default <runs_root>/<name>-cv-<time>)
    runs_root: Path | str = "runs"
    resume: Path | str | None = None  # an interrupted cv run directory to continue
    smoke: bool = False  # a sample of the rows, one epoch per member
    config_name: str = "run"
    test: bool = True  # false: no test predictions or submission (a tune trial's)
    # TensorFlow intra-op threads of every member (their results' last bits depend on it;
    # recorded in the run, kept on resume). Default: the cores shared among the members at once.
    member_threads: int | None = None
    scheduler: str | None = None  # train the members on this Dask scheduler's workers
    workers: int | None = None  # train the members on this many local worker processes
    track: str | bool | None = None  # MLflow tracking: a URI; None: the config's or the environment's


def cv_run_name(name: str) -> str:
    """The run-directory name of a cv run: ``<name>-cv``, unless the name says cv already."""
    return name if name == "cv" or name.endswith(("-cv", "_cv")) else f"{name}-cv"


def run_cv(
    cfg: Config,
    options: CvOptions | None = None,
    *,
    log: Log | None = None,
    on_member: OnMember | None = None,
    loaded: tuple | None = None,
    **option_fields,
) -> CvResult:
    """Cross-validate (and bag) a config into a run directory; return its scores.

    Args:
        cfg: a validated ``Config``.
        options: a ``CvOptions``, or its fields by keyword.
        log: progress output.
        on_member: called as ``on_member(fold, seed_index, record)`` after each member trained.
        loaded: ``load_data``'s result, when the caller has read the data already.
    """
    opts = options or CvOptions(**option_fields)
    log = log or Log(1)
    started = time.time()
    execute.check_options(opts.scheduler, opts.workers)
    cfg, resume_dir, smoke = begin(cfg, CV_KIND, opts.run_dir, opts.resume, opts.smoke)
    settings = tracking.resolve(
        cfg, opts.track, cfg.name or opts.config_name, resume_dir, export_model=export
    )
    with tracking.process(settings, log) as side:
        folds, seeds, threads = _counts(cfg, opts, resume_dir)
        t0 = time.perf_counter()
        train, test = load_data(cfg, smoke, opts.test) if loaded is None else loaded
        for note in data_notes(cfg, train, test):
            log(f"Warning: {note}", 1)
        try:
            data = FoldedData(train, fold_assignment(train.y, folds, cfg.seed))
        except DataError as e:
            raise DataError(f"{train.path}: {e}") from None
        check_inner_validation(cfg, data, folds)
        timings = {"data_seconds": round(time.perf_counter() - t0, 3)}
        _log_plan(cfg, log, data, test, folds, seeds, smoke)
        # The executor first: a run whose scheduler cannot be reached leaves nothing.
        with execute.open_executor(opts.scheduler, opts.workers, threads, log) as ex:
            status = RunStatus(kind=CV_KIND, folds=folds, seeds=seeds, smoke=smoke, member_threads=ex.threads)
            run_dir = _run_dir(cfg, opts, resume_dir, data, status)
            run = CvRun(cfg, run_dir, data, folds, seeds, ex.threads, status, log, started, timings)
            with (
                running(run_dir, log, status, lambda: _interrupted(run_dir)),
                tracking.tracked(side, cfg, run_dir, CV_KIND, log),
            ):
                _train(run, ex, on_member)
                return finish(run, test)


def _counts(cfg: Config, opts: CvOptions, resume_dir: Path | None) -> tuple[int, int, int | None]:
    """Folds, seeds and member threads: the options', the config's, or the resumed run's."""
    folds, seeds, threads = opts.folds, opts.seeds, opts.member_threads
    if resume_dir is not None:
        saved = read_json(resume_dir / CV_FILE)
        for key, value in (("folds", folds), ("seeds", seeds), ("member-threads", threads)):
            was = saved.get(key.replace("-", "_"))
            if value is not None and was is not None and value != was:
                raise RunError(
                    f"{resume_dir}: the run was started with --{key} {was}, not {value}; "
                    f"resume without --{key}"
                )
        folds, seeds = saved["folds"], saved["seeds"]
        threads = saved.get("member_threads", threads)
    folds = cfg.cv.folds if folds is None else int(folds)
    seeds = int(cfg.cv.seeds or max(1, len(cfg.cv.variants)) if seeds is None else seeds)
    if seeds < 1:
        raise DataError(f"--seeds {seeds}: needs at least 1 model per fold")
    if threads is not None and threads < 1:
        raise DataError(f"--member-threads {threads}: needs at least 1 thread")
    return folds, seeds, threads


def _log_plan(cfg: Config, log: Log, data: FoldedData, test, folds: int, seeds: int, smoke: bool) -> None:
    train, variants = data.train, cfg.cv.variants
    log(
        f"Data: {len(train.y)} rows, {len(train.features)} features, {len(train.classes)} classes"
        + (f", {len(test[0])} test rows" if test else "")
        + (" [smoke]" if smoke else ""),
        1,
    )
    log(
        f"Cross-validation: {folds} stratified folds x {seeds} seed(s) = {folds * seeds} models"
        + (f" ({len(variants)} variants, cycled over the seeds)" if variants else "")
        + (
            f"; each early-stops on {100 * cfg.cv.inner_validation:g} % of its training rows, "
            "not on the fold that scores it (cv.inner_validation)"
            if cfg.cv.inner_validation
            else ""
        ),
        1,
    )


def _run_dir(
    cfg: Config, opts: CvOptions, resume_dir: Path | None, data: FoldedData, status: RunStatus
) -> Path:
    """The resumed run's directory (its folds checked), or a new one with folds.csv and cv.json."""
    id_column = id_name(cfg.data.id_column)
    if resume_dir is not None:
        _check_saved_folds(resume_dir, data.train.ids, data.fold_of, id_column)
        return resume_dir
    folds, seeds = status.folds, status.seeds

    def write(d: Path):
        with atomic_path(d / FOLDS_FILE) as tmp:
            pd.DataFrame({id_column: data.train.ids, "fold": data.fold_of + 1}).to_csv(tmp, index=False)
        plan = [
            {
                "name": member_name(f, s),
                "fold": f + 1,
                "seed_index": s + 1,
                "seed": member_seed(cfg.seed, f, s),
                "variant": variant_index(cfg, s),
            }
            for f, s in members(folds, seeds)
        ]
        kept = {k: v for k, v in status.to_json().items() if k != "kind"}
        write_json(d / CV_FILE, kept | {"fold_seed": cfg.seed, "members": plan})

    name = cv_run_name(cfg.name or opts.config_name)
    return create_run_dir(cfg, opts.run_dir, opts.runs_root, name, status, write)


def _check_saved_folds(run_dir: Path, ids, folds, id_column: str) -> None:
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


def _interrupted(run_dir: Path) -> str:
    return f"finished models are kept in {run_dir / MODELS}; continue with: ottotrain cv --resume {run_dir}"


def _train(run: CvRun, ex: Executor, on_member: OnMember | None) -> None:
    """The members not finished yet, as jobs on the executor; each one's line as it finishes."""
    log, run_dir, plan = run.log, run.run_dir, members(run.folds, run.seeds)
    (run_dir / MODELS).mkdir(exist_ok=True)
    log(f"Run directory: {run_dir}", 1)
    todo = {}
    for i, (f, s) in enumerate(plan):
        label = f"[{i + 1}/{len(plan)}]"
        if (run_dir / MODELS / f"{member_name(f, s)}.json").exists():
            log(f"{label} {member_name(f, s)}: finished earlier, reused", 1)
        else:
            todo[member_name(f, s)] = (label, f, s)
    if todo and not ex.in_process:
        log(f"{len(todo)} members to train on {ex.where}", 1)
    t0, member_seconds = time.perf_counter(), []

    def finished(done: Done) -> None:
        label, f, s = todo[done.job.name]
        rec: MemberRecord = done.value
        member_seconds.append(done.seconds)
        where = (
            ""
            if ex.in_process
            else f" on {done.host} ({done.worker}); {len(member_seconds)}/{len(todo)} done"
        )
        log(
            f"{label} {done.job.name}: best epoch {rec.best_epoch}/{rec.epochs_run}, fold log loss "
            f"{rec.val_log_loss:.4f}, accuracy {rec.val_accuracy:.4f}, {done.seconds:.1f} s{where}",
            1,
        )
        if on_member is not None:
            on_member(f, s, rec)

    jobs = [member_job(fold_member(run.cfg, f, s, label)) for label, f, s in todo.values()]
    hint = f"continue with: ottotrain cv --resume {run_dir}" + (
        "" if ex.in_process else " (with --scheduler or --workers)"
    )
    ex.map(jobs, finished, out=run_dir, data=run.data, resume_hint=hint)
    wall = time.perf_counter() - t0
    run.timings["train_seconds_this_session"] = round(wall, 3)
    if todo and not ex.in_process:
        run.timings["cluster_wall_seconds"] = round(wall, 3)
        run.timings["cluster_member_seconds"] = round(sum(member_seconds), 3)
        busy = sum(member_seconds)
        log(
            f"Cluster: {wall:.1f} s wall for {busy:.1f} s of member time on {ex.where} ({busy / wall:.2f}x)",
            1,
        )
