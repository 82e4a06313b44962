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
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ottotrain import runs
from ottotrain.config import Config
from ottotrain.errors import ConfigError, first_line
from ottotrain.execute import Done, Executor, Job
from ottotrain.log import Log
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


def optimize(cfg: Config, study_dir: Path, study, place: Place, executor: Executor, log: Log) -> None:
    """Ask trials until the study has ``tune.trials`` finished ones (or ``tune.timeout`` is
    past), each when the executor can run it; tell each outcome as it comes back."""
    total = cfg.tune.trials
    grid = space.grid_size(cfg)
    deadline = None if cfg.tune.timeout is None else time.time() + cfg.tune.timeout
    asked: dict[str, optuna.Trial] = {}
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
                failed = TrialOutcome(None, [], error=first_line(e))
                show(study, tell(study, trial, failed, platform.node(), log))
                continue
            name = trial_dir(trial.number)
            asked[name] = trial
            beat(trial.number)
            finished = study.get_trials(deepcopy=False, states=FINISHED)
            job = TrialJob(cfg, trial_cfg, trial.number, place.name, finished)
            yield Job(name, functools.partial(run_trial, job), last=f"{name}/{runs.STATUS}")

    def done(d: Done):
        show(study, tell(study, asked.pop(d.job.name), d.value, d.host, log))

    hint = f"continue with: ottotrain tune --resume {study_dir}"
    with storage.heartbeats(place, cfg.tune.heartbeat, lambda: [t.number for t in asked.values()]) as beat:
        try:
            data = TrialData(load_data(cfg, test=False)[0])  # the study's training table, read once
            executor.map(jobs(), done, out=study_dir, data=data, resume_hint=hint, pull=True)
        except BaseException:  # Ctrl-C, a stop: the trials in flight are queued again for --resume
            with contextlib.suppress(Exception):  # a storage gone away keeps them running: --resume
                dead = [study.get_trials(deepcopy=False)[t.number] for t in asked.values()]
                storage.retry_dead(study, dead, Log(0), "")
            raise
