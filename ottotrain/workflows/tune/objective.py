"""One trial: its data, its training (a fit, or a cv run), its reports to the pruner.

A trial is a ``TrialJob`` run by ``run_trial`` wherever the executor puts it (this process, a
local worker process, a cluster's worker): it trains the trial's config into its run
directory under ``out`` and comes back as a ``TrialOutcome``. The pruner decides on a copy
of the study as it was when the trial was asked; the plan tells the study the outcome.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import optuna

from ottotrain.config import Config
from ottotrain.config.schema import OWN_LAYERS
from ottotrain.data import TrainData
from ottotrain.errors import ConfigError, DataError, RunError, Stopped, TrainingError, first_line
from ottotrain.log import Log
from ottotrain.workflows.cv import CvOptions, run_cv
from ottotrain.workflows.fit import Prepared, fit, prepare
from ottotrain.workflows.tune import space

TRIALS = "trials"  # the trials' run directories, under the study directory
# What fails one trial, not the study: values bad together (tune checks each value alone),
# data a trial's preprocessing refuses, a loss gone NaN; Keras says ValueError for a model
# it cannot build.
FAILS = (RunError, ConfigError, DataError, TrainingError, ValueError)


def trial_dir(number: int) -> str:
    """A trial's run directory, relative to the study directory."""
    return f"{TRIALS}/trial-{number:04d}"


def preparation_key(cfg: Config) -> str:
    """What ``prepare`` depends on: the seed (the validation split), the ``data`` section,
    and an embedding that opens the model (a PiecewiseLinearEmbedding's bins are fitted
    with the preprocessing, from ``model.layers[0]``)."""
    first = cfg.model.layers[0] if cfg.model.layers else None
    embedding = first if isinstance(first, dict) and next(iter(first), None) in OWN_LAYERS else None
    return json.dumps([cfg.seed, cfg.data.model_dump(mode="json"), embedding], sort_keys=True)


class TrialData:
    """The study's training table, and the trials' preprocessed data, kept while what the
    preparation depends on stays the same (``preparation_key``: it changes only if the space
    searches the seed or an opening embedding). Without the test rows: a trial's submission
    would cost the study time (on Otto, the test rows' KNN features take longer than a
    trial's training). Sent to another process, it goes without its preprocessed arrays."""

    def __init__(self, train: TrainData):
        self.train = train
        self.key: str | None = None
        self.prepared: Prepared | None = None

    def __getstate__(self):
        return {"train": self.train, "key": None, "prepared": None}

    def __call__(self, cfg: Config) -> Prepared:
        key = preparation_key(cfg)
        if key != self.key:
            self.key, self.prepared = None, None  # the old arrays go before the new ones come
            # prepare() drops the table's features once preprocessed: it gets a copy of the record
            loaded = (dataclasses.replace(self.train), None)
            self.prepared, self.key = prepare(cfg, test=False, loaded=loaded), key
        return self.prepared


@dataclass
class TrialJob:
    """One trial, as plain data."""

    cfg: Config  # the study's config (its tune section: the objective, the pruner)
    trial_cfg: Config  # the trial's
    number: int
    study_name: str
    finished: list  # the study's finished trials when this one was asked: what its pruner sees


@dataclass
class TrialOutcome:
    """What a trial came to: its value, or pruned, or the line that failed it."""

    value: float | None
    reports: list[tuple[int, float]]  # (step, value) as the pruner got them
    pruned: bool = False
    error: str | None = None


def run_trial(job: TrialJob, data: TrialData, out: Path, log: Log | None = None) -> TrialOutcome:
    """Train one trial into ``out/trials/trial-NNNN``; every epoch's (cv: every fold's) score
    goes to the pruner, which may stop it there."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The pruner decides against a copy of the study as it was when the trial was asked.
    mirror = optuna.create_study(
        direction="minimize", pruner=space.pruner(job.cfg), study_name=job.study_name
    )
    mirror.add_trials(job.finished)
    trial = mirror.ask()
    reports = []

    def report(value, step):
        if value is None or not math.isfinite(value):
            return
        reports.append((step, value))
        trial.report(value, step)
        if trial.should_prune():
            raise Stopped("pruned", f"pruned after step {step + 1}")

    try:
        run_dir = out / trial_dir(job.number)
        value = train_trial(job.trial_cfg, job.cfg.tune.cv_folds, run_dir, report, data)
        return TrialOutcome(value, reports)
    except Stopped:
        return TrialOutcome(None, reports, pruned=True)
    except FAILS as e:  # this trial's values (or data) cannot train: the study goes on
        return TrialOutcome(None, reports, error=first_line(e))


def train_trial(trial_cfg: Config, folds: int | None, run_dir: Path, report, data: TrialData) -> float:
    """Train one trial into ``run_dir`` (a fit, or a cv run of ``folds`` folds); its value.
    ``report(value, step)`` gets every epoch's (every fold's) score and may raise ``Stopped``
    (pruned)."""
    quiet = Log(-1)  # not even a trial's own stop lines ('fit --resume' it): the study says its own
    if folds is None:
        result = fit(
            trial_cfg,
            run_dir=run_dir,
            log=quiet,
            on_epoch=lambda row: report(row.val_loss, row.epoch - 1),
            prepared=data(trial_cfg),
            track=False,  # the study's run logs its trials
        )
        return result.val_log_loss
    options = CvOptions(folds=folds, seeds=1, run_dir=run_dir, test=False, track=False)
    result = run_cv(
        trial_cfg,
        options,
        log=quiet,
        on_member=lambda fold, _seed, rec: report(rec.val_log_loss, fold),
        loaded=(dataclasses.replace(data.train), None),
    )
    return result.fold_log_loss_mean
