"""``tune()``: start, continue or join a study, run its plan, report it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import optuna

from ottotrain import runs, tracking
from ottotrain.config import Config, config_to_dict, dump_yaml
from ottotrain.errors import ConfigError, RunError
from ottotrain.execute import check_options, open_executor
from ottotrain.io import write_text
from ottotrain.log import Log
from ottotrain.runs.lifecycle import running
from ottotrain.runs.resume import check_resumable
from ottotrain.workflows.common import refuse_stack
from ottotrain.workflows.tune import plan, report, space, storage
from ottotrain.workflows.tune.report import KIND, StudyResult
from ottotrain.workflows.tune.storage import Place


def tune_run_name(name: str) -> str:
    return name if name.endswith(("-tune", "_tune")) else f"{name}-tune"


def tune(
    cfg: Config,
    study_dir=None,
    runs_root="runs",
    resume=None,
    log: Log | None = None,
    config_name="run",
    workers: int | None = None,
    storage_url: str | None = None,
    study_name: str | None = None,
    keep: int | None = None,
    scheduler: str | None = None,
    member_threads: int | None = None,
    track: str | bool | None = None,
) -> StudyResult:
    """Run (or continue, or join) a study of ``cfg.tune``; return what it found.

    The arguments are ``ottotrain tune``'s options (``storage_url``: ``--storage``,
    ``study_name``: ``--study``); ``resume``'s config may grow ``tune.trials``,
    ``tune.timeout`` and ``tune.heartbeat``; ``track``: MLflow tracking (the study a parent
    run, each trial a child; see ``tracking.resolve``).
    """
    log = log or Log(1)
    refuse_stack(cfg, "tune")
    if cfg.tune is None:
        raise ConfigError(
            f"{cfg.source}: no tune section; add tune: {{trials: 20, space: "
            "{train.batch_size: {choice: [64, 128, 256]}}}} (see README, 'ottotrain tune')"
        )
    check_options(scheduler, workers)
    if resume is not None and study_name is not None:
        raise RunError(f"{resume}: --study is the study's own on resume; leave it out")
    name = tune_run_name(cfg.name or config_name)
    settings = tracking.resolve(cfg, track, cfg.name or config_name, resume)
    with tracking.process(settings, log) as side:
        place = None if resume is not None else storage.place_of(storage_url, study_name, name, keep)
        started = time.time()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # The cluster first: a study whose scheduler cannot be reached is not started.
        with open_executor(scheduler, workers, member_threads, log) as executor:
            if resume is not None:
                study_dir, place, study = _resume(cfg, Path(resume), storage_url, keep, log)
            else:
                study_dir, study = _start(cfg, study_dir, runs_root, name, place)
            where = f" (study '{place.name}' in {place.shown})" if place.is_database else ""
            log(f"Study directory: {study_dir}{where}", 1)
            hint = (
                f"finished trials are kept in {study_dir}; continue with: ottotrain tune --resume {study_dir}"
            )
            with (
                running(study_dir, log, runs.RunStatus(KIND), lambda: hint),
                tracking.tracked(side, cfg, study_dir, KIND, log),
            ):
                plan.optimize(cfg, study_dir, study, place, executor, log)
                return report.finish(cfg, study_dir, study, place, log, started)


def _open(cfg: Config, study_dir: Path, place: Place, offset: int = 0, create=False):
    return storage.open_study(
        cfg, study_dir, place, space.sampler(cfg, offset), space.pruner(cfg), create=create
    )


def _start(cfg: Config, study_dir, runs_root, name: str, place: Place):
    """A new study directory, and the study in it (or the one it joins on a database)."""
    if study_dir is not None:
        runs.check_run_dir_free(study_dir)
    study_dir = runs.claim_run_dir(study_dir) if study_dir else runs.new_run_dir(runs_root, name)
    try:
        write_text(study_dir / "config.yaml", dump_yaml(config_to_dict(cfg)))
        runs.write_status(study_dir, runs.RUNNING, runs.RunStatus(KIND))
        storage.save_place(study_dir, place)
        study, made = _open(cfg, study_dir, place, create=True)
    except BaseException:
        shutil.rmtree(study_dir, ignore_errors=True)  # nothing started: leave nothing
        raise
    if made:
        if cfg.tune.sampler.name != "grid":  # a grid tries every combination
            study.enqueue_trial(space.own_values(cfg))  # trial 0: the config as it is
        return study_dir, study
    # Joining another machine's study: other sampler seeds than its (the same seeds would
    # suggest the same trials again).
    return study_dir, _open(cfg, study_dir, place, 1 + 64 * (os.getpid() % 100_000))[0]


def _resume(cfg: Config, study_dir: Path, storage_url: str | None, keep: int | None, log: Log):
    """The study directory's study, its dead trials failed and queued again."""
    check_resumable(study_dir, cfg, KIND)
    place = storage.load_place(study_dir, storage_url, keep)
    study, _ = _open(cfg, study_dir, place)
    storage.retry_dead(study, storage.dead_here(study, place), log, "was running when the study stopped")
    runs.write_status(study_dir, runs.RUNNING, runs.RunStatus(KIND))
    if keep is not None:
        storage.save_place(study_dir, place)
    return study_dir, place, _open(cfg, study_dir, place, 1 + 64 * len(study.trials))[0]
