"""The parallel plan: trials asked and told here, on the study's storage, and trained where
the executor runs them (this process, local worker processes, a Dask cluster's workers).

A trial is asked when a worker can take it, so that the sampler sees every result told
before; the study stops asking at ``tune.trials`` finished trials (complete or pruned),
counted in the storage: several ``ottotrain tune`` processes on one study stop together
(each finishes what it asked, so a study of W processes ends with at most W - 1 slots'
trials more than asked). On a database, the trials asked here send heartbeats while they
train, and a trial whose machine went silent is failed and queued again by the next ask.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ottotrain import engine, runs
from ottotrain.config import Config
from ottotrain.errors import ConfigError, first_line
from ottotrain.log import Log
from ottotrain.workflows import cluster
from ottotrain.workflows.common import load_data
from ottotrain.workflows.tune import report, space, storage
from ottotrain.workflows.tune.objective import TrialData, TrialJob, TrialOutcome, run_trial, trial_dir
from ottotrain.workflows.tune.storage import Place

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def start_trial(cfg: Config, study_dir: Path, place: Place, trial) -> Config:
    """A new trial's values suggested and its owner recorded; its config."""
    values = space.suggest(cfg, trial)
    for key, value in storage.trial_owner().items():
        trial.set_user_attr(key, value)
    # On a database the other machines' trials are listed too: name the directory whole.
    run_dir = trial_dir(trial.number)
    trial.set_user_attr("run_dir", str(study_dir / run_dir if place.is_database else run_dir))
    return space.trial_settings(cfg, values)


def tell(study, trial, outcome: TrialOutcome, host: str, log: Log):
    """Tell the study what a trial came to, its reports to the pruner first; the frozen trial."""
    trial.set_user_attr("worker", host)
    for step, value in outcome.reports:
        trial.report(value, step)
    if outcome.error is not None:
        log(f"trial {trial.number}: failed: {outcome.error}", 1)
        return study.tell(trial, state=TrialState.FAIL)
    if outcome.pruned:
        return study.tell(trial, state=TrialState.PRUNED)
    return study.tell(trial, outcome.value)


Run = Callable[[Iterator[tuple[int, TrialJob]], Callable[[int, TrialOutcome, str], None]], None]


def optimize(cfg: Config, study_dir: Path, study, place: Place, log: Log, run: Run) -> None:
    """Ask trials until the study has ``tune.trials`` finished ones (or ``tune.timeout`` is
    past); ``run(jobs, done)`` trains them and calls ``done(number, outcome, host)`` here."""
    total = cfg.tune.trials
    grid = space.grid_size(cfg)
    deadline = None if cfg.tune.timeout is None else time.time() + cfg.tune.timeout
    asked: dict[int, optuna.Trial] = {}
    show = report.progress(log, total, cfg, study_dir, place)

    def more() -> bool:
        if grid is not None and sum(t.state != TrialState.WAITING for t in study.trials) >= grid:
            return False  # every combination tried (a failed one too, as Optuna's grid counts)
        return report.finished(study) + len(asked) < total and (deadline is None or time.time() < deadline)

    def jobs():
        while more():
            storage.fail_stale(study, place)
            trial = study.ask()
            try:
                trial_cfg = start_trial(cfg, study_dir, place, trial)
            except ConfigError as e:  # values bad together: this trial fails, the study goes on
                show(
                    study,
                    tell(study, trial, TrialOutcome(None, [], error=first_line(e)), platform.node(), log),
                )
                continue
            asked[trial.number] = trial
            finished = study.get_trials(deepcopy=False, states=FINISHED)
            yield trial.number, TrialJob(cfg, trial_cfg, trial.number, place.name, finished)

    def done(number: int, outcome: TrialOutcome, host: str):
        show(study, tell(study, asked.pop(number), outcome, host, log))

    with storage.heartbeats(place, cfg.tune.heartbeat, lambda: list(asked)):
        try:
            run(jobs(), done)
        except BaseException:  # Ctrl-C, a stop: the trials in flight are queued again for --resume
            with contextlib.suppress(Exception):  # a storage gone away keeps them running: --resume
                storage.retry_dead(study, [study.get_trials(deepcopy=False)[n] for n in asked], Log(0), "")
            raise


def in_process(study_dir: Path, data: TrialData, threads: int | None) -> Run:
    """Trials one after the other in this process, straight into the study directory."""

    def run(jobs, done):
        if threads is not None:
            engine.env.use_threads(threads)
        for number, job in jobs:
            done(number, run_trial(job, data, study_dir), platform.node())

    return run


def on_cluster(on: cluster.Cluster, study_dir: Path, data: TrialData, hint: str) -> Run:
    """Trials on the cluster's workers, one per worker at a time; their files come back here."""
    here = cluster.versions()

    def run(jobs, done):
        with cluster.shared_data(on, data) as token:

            def next_task():
                number, job = next(jobs, (None, None))
                if job is None:
                    return None
                return f"trial-{number:04d}", trial_task, (job, token, here, on.threads)

            def finished(result: cluster.TaskResult):
                number = int(result.name.removeprefix("trial-"))
                cluster.write_files(study_dir, result.files, last=f"{trial_dir(number)}/{runs.STATUS}")
                done(number, result.value, result.host)

            cluster.run_tasks(on, next_task, finished, hint, in_flight=on.slots)

    return run


def trial_task(job: TrialJob, data: str, client_versions: dict, threads: int) -> cluster.TaskResult:
    """On a cluster worker: train one trial (``data``: the ``TrialData``, by its
    ``cluster.shared_data`` token); its run directory's files come back."""
    cluster.check_worker(client_versions)
    work = functools.partial(run_trial, job, cluster.run_data(data))
    return cluster.run_task(f"trial-{job.number:04d}", threads, work)


def trial_data(cfg: Config) -> TrialData:
    """The study's training table, read once for all its trials."""
    return TrialData(load_data(cfg, test=False)[0])
