"""``ottotrain tune``: the tutorial's "your turn" as a command, on Optuna.

A study searches the config's own keys (``tune.space``, the key paths ``--set`` takes).
Every trial is an ordinary run (``trials/trial-NNNN``, which ``predict``, ``evaluate`` and
``runs`` read), trained through the one member trainer: a ``fit`` whose every epoch's
validation log loss goes to Optuna's pruner, or with ``objective: {cv: {folds: K}}`` a cv
run whose every fold's log loss does (the Wilcoxon pruner compares trials fold by fold).
A pruned trial's run says ``pruned``. The config's own values are trial 0, so a study never
ends worse than the config it started from (the grid sampler tries every combination instead).
Trials make no test predictions: ``ottotrain fit best.yaml`` (or ``predict`` on a trial)
does.

The study directory holds::

    config.yaml     the config, tune section included (resume compares with it)
    status.json     "kind": "tune"
    study.json      where the study is (its journal file, or the database URL without
                    its password) and its name there; --keep
    journal.log     the Optuna study, unless it is in a database (see ``study``)
    trials/         one run directory per trial this machine trained
    trials.csv      number, state, value (a pruned trial's: its last report), parameters,
                    seconds, host, run directory
    best.yaml       the best trial's complete config, without tune: (fit reproduces it)
    metrics.json    best value and trial, trial counts
    history.png, importances.png, slice.png   Optuna's plots (when there are enough trials)

Killed or stopped, a study continues with ``ottotrain tune --resume STUDY_DIR``: a trial
that was running is recorded failed, queued again, and the study goes on to its trial count.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from matplotlib import pyplot
from matplotlib.backends.backend_agg import FigureCanvasAgg
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from optuna.visualization.matplotlib import (
    plot_optimization_history,
    plot_param_importances,
    plot_slice,
)
from pydantic import ValidationError

from ottotrain import engine, runs
from ottotrain.config import Config, config_to_dict, dump_yaml, get_path, trial_config
from ottotrain.config.diff import config_changes, format_change
from ottotrain.config.schema import OWN_LAYERS
from ottotrain.data import TrainData
from ottotrain.errors import ConfigError, DataError, RunError, Stopped, TrainingError, first_line
from ottotrain.io import atomic_path, write_json, write_text
from ottotrain.log import Log
from ottotrain.runs.lifecycle import running
from ottotrain.runs.resume import check_resumable
from ottotrain.workflows import cluster
from ottotrain.workflows import study as places
from ottotrain.workflows.common import load_data
from ottotrain.workflows.cv import run_cv
from ottotrain.workflows.fit import Prepared, fit, prepare
from ottotrain.workflows.study import Place

KIND = "tune"
# What fails one trial, not the study: bad values together (tune checks each value alone),
# data a trial's preprocessing refuses, a loss gone NaN; Keras says ValueError for a model
# it cannot build.
FAILS = (RunError, ConfigError, DataError, TrainingError, ValueError)
TRIALS = "trials"
WORKER_ENV = "OTTOTRAIN_TUNE_WORKER"  # a worker process's sampler seed offset
DEADLINE_ENV = "OTTOTRAIN_TUNE_DEADLINE"  # time.time() after which no worker starts a trial
# What may differ between the processes of one study (each machine names its own data copy).
JOIN_CHANGES = ("tune.trials", "tune.timeout", "tune.heartbeat", "data.train", "data.test")


def tune_run_name(name: str) -> str:
    return name if name.endswith(("-tune", "_tune")) else f"{name}-tune"


def _sampler(cfg: Config, worker: int = 0):
    """The configured sampler; worker k of a parallel study gets seed + k (same seeds would
    have every worker suggest the same trials)."""
    s = cfg.tune.sampler
    seed = None if s.seed is None else s.seed + worker
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if s.name == "grid":
        grid = {}
        for key, search in cfg.tune.space.items():
            if search.kind != "choice":
                raise ConfigError(
                    f"{cfg.source}: tune.sampler.name: grid searches choices only; "
                    f"tune.space.{key} is an {search.kind} range (give it as choice: [...])"
                )
            grid[key] = list(range(len(search.choice)))
        return optuna.samplers.GridSampler(grid, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(cfg: Config):
    p = cfg.tune.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, p.warmup_epochs), max_resource=cfg.train.epochs
        )
    if p.name == "wilcoxon":  # compares a trial's folds with the best trial's same folds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(n_startup_steps=p.warmup_epochs)
    return optuna.pruners.NopPruner()


def _suggest(trial, key: str, search):
    """A trial's value of one key. Choices are suggested by index: any YAML value can be one."""
    if search.kind == "int":
        return trial.suggest_int(key, *search.int_range, log=search.log)
    if search.kind == "float":
        return trial.suggest_float(key, *search.float_range, log=search.log)
    return search.choice[trial.suggest_categorical(key, list(range(len(search.choice))))]


def _own_values(cfg: Config) -> dict:
    """Trial 0: the config's own value of every searched key that it has, inside its range."""
    tree = config_to_dict(cfg)
    out = {}
    for key, search in cfg.tune.space.items():
        value = get_path(tree, key)
        if search.kind == "choice":
            if value in search.choice:
                out[key] = search.choice.index(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = search.int_range or search.float_range
            if lo <= value <= hi and (search.kind == "float" or float(value).is_integer()):
                out[key] = value
    return out


def _params(cfg: Config, trial) -> dict:
    """The trial's values, choices resolved from their index."""
    out = {}
    for key, search in cfg.tune.space.items():
        value = trial.params[key]
        out[key] = search.choice[value] if search.kind == "choice" else value
    return out


def preparation_key(cfg: Config) -> str:
    """What ``prepare`` depends on: the seed (the validation split), the ``data`` section,
    and an embedding that opens the model (a PiecewiseLinearEmbedding's bins are fitted
    with the preprocessing, from ``model.layers[0]``)."""
    first = cfg.model.layers[0] if cfg.model.layers else None
    embedding = first if isinstance(first, dict) and next(iter(first), None) in OWN_LAYERS else None
    return json.dumps([cfg.seed, cfg.data.model_dump(mode="json"), embedding], sort_keys=True)


class _TrialData:
    """The trials' data, loaded and preprocessed once per process while what the preparation
    depends on stays the same (``preparation_key``: it changes only if the space searches the
    seed or an opening embedding). Without the test rows: a trial's submission would cost the
    study time (on Otto, the test rows' KNN features take longer than a trial's training)."""

    def __init__(self, train: TrainData | None = None):
        self.key: str | None = None
        self.prepared: Prepared | None = None
        self.train = train  # the table, when it came from the client (a cluster worker)

    def __call__(self, cfg: Config) -> Prepared:
        key = preparation_key(cfg)
        if key != self.key:
            self.key, self.prepared = None, None  # the old arrays go before the new ones come
            # prepare() drops the table's features once preprocessed: it gets a copy of the record
            loaded = None if self.train is None else (dataclasses.replace(self.train), None)
            self.prepared, self.key = prepare(cfg, test=False, loaded=loaded), key
        return self.prepared


def _train_trial(trial_cfg: Config, folds: int | None, run_dir: Path, report, data: _TrialData) -> float:
    """Train one trial into ``run_dir`` (a fit, or a cv run of ``folds`` folds); its value.
    ``report(value, step)`` gets every epoch's (every fold's) score and may raise ``Stopped``
    (pruned)."""
    quiet = Log(0)
    if folds is None:
        result = fit(
            trial_cfg,
            run_dir=run_dir,
            log=quiet,
            on_epoch=lambda row: report(row.val_loss, row.epoch - 1),
            prepared=data(trial_cfg),
        )
        return result["val_log_loss"]
    result = run_cv(
        trial_cfg,
        folds=folds,
        seeds=1,
        run_dir=run_dir,
        log=quiet,
        on_member=lambda fold, _seed, rec: report(rec.val_log_loss, fold),
        test=False,
        loaded=None if data.train is None else (data.train, None),
    )
    return result["fold_log_loss_mean"]


def _objective(cfg: Config, study_dir: Path, place: Place, log: Log):
    data = _TrialData()

    def objective(trial):
        try:
            run_dir, trial_cfg = _start_trial(cfg, study_dir, place, trial)
        except ConfigError as e:
            log(f"trial {trial.number}: failed: {first_line(e)}", 1)
            raise

        def report(value, step):
            if value is None or not math.isfinite(value):
                return
            trial.report(value, step)
            if trial.should_prune():
                raise Stopped("pruned", f"pruned after step {step + 1}")

        try:
            return _train_trial(trial_cfg, cfg.tune.cv_folds, run_dir, report, data)
        except Stopped:
            raise optuna.TrialPruned() from None
        except FAILS as e:  # this trial's values (or data) cannot train: the study goes on
            log(f"trial {trial.number}: failed: {first_line(e)}", 1)
            raise

    return objective


def _start_trial(cfg: Config, study_dir: Path, place: Place, trial) -> tuple[Path, Config]:
    """A new trial's values suggested and its owner recorded; its run directory and config."""
    params = {key: _suggest(trial, key, search) for key, search in cfg.tune.space.items()}
    run_dir = study_dir / TRIALS / f"trial-{trial.number:04d}"
    for key, value in places.trial_owner().items():
        trial.set_user_attr(key, value)
    # On a database the other machines' trials are listed too: name the directory whole.
    trial.set_user_attr("run_dir", str(run_dir if place.is_database else run_dir.relative_to(study_dir)))
    return run_dir, _trial_config(cfg, params)


def _trial_config(cfg: Config, params: dict) -> Config:
    """The trial's config; values valid each alone may not be together (tune checks each)."""
    try:
        return trial_config(cfg, params)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"{cfg.source}: tune.space: this trial's values make {where} invalid: {err['msg']}"
        ) from None


# --------------------------------------------------------------------------------------
# Trials on a Dask cluster: asked and told here, trained on the workers


@dataclass
class TrialJob:
    """One trial for a cluster worker, as plain data."""

    cfg: Config  # the study's config (its tune section: the objective, the pruner)
    trial_cfg: Config  # the trial's
    number: int
    study_name: str
    finished: list  # the study's finished trials when this one was asked: what its pruner sees


@dataclass
class TrialOutcome:
    """What a worker's trial came to: its value, or pruned, or the line that failed it."""

    value: float | None
    reports: list[tuple[int, float]]  # (step, value) as the pruner got them
    pruned: bool = False
    error: str | None = None


def trial_task(job: TrialJob, train: str, client_versions: dict, threads: int) -> cluster.TaskResult:
    """On a cluster worker: train one trial (``train``: the ``TrainData``, by its
    ``cluster.shared_data`` token); its run directory's files come back."""
    cluster.check_worker(client_versions)
    work = functools.partial(_trial_in, job, cluster.run_data(train))
    return cluster.run_task(f"trial-{job.number:04d}", threads, work)


def _trial_in(job: TrialJob, train: TrainData, out: Path) -> TrialOutcome:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The pruner decides against a copy of the study as it was when the trial was asked.
    mirror = optuna.create_study(direction="minimize", pruner=_pruner(job.cfg), study_name=job.study_name)
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
        run_dir = out / TRIALS / f"trial-{job.number:04d}"
        value = _train_trial(job.trial_cfg, job.cfg.tune.cv_folds, run_dir, report, _TrialData(train))
        return TrialOutcome(value, reports)
    except Stopped:
        return TrialOutcome(None, reports, pruned=True)
    except FAILS as e:
        return TrialOutcome(None, reports, error=first_line(e))


def _optimize_on_cluster(cfg: Config, study_dir: Path, study, place: Place, on: cluster.Cluster, log: Log):
    """Trials on the cluster's workers, one per worker at a time, until the study has
    ``tune.trials`` finished ones; each asked and told here, on the study's own storage."""
    total = cfg.tune.trials
    deadline = None if cfg.tune.timeout is None else time.time() + cfg.tune.timeout
    if _finished(study) >= total:
        return
    train, _ = load_data(cfg, test=False)
    here = cluster.versions()
    asked = {}
    progress = _progress(log, total, cfg, study_dir, place)
    finished_states = (TrialState.COMPLETE, TrialState.PRUNED)

    def next_task():
        if _finished(study) + len(asked) >= total or (deadline is not None and time.time() >= deadline):
            return None
        trial = study.ask()
        try:
            _, trial_cfg = _start_trial(cfg, study_dir, place, trial)
        except ConfigError as e:
            log(f"trial {trial.number}: failed: {first_line(e)}", 1)
            study.tell(trial, state=TrialState.FAIL)
            return next_task()
        name = f"trial-{trial.number:04d}"
        asked[name] = trial
        job = TrialJob(cfg, trial_cfg, trial.number, place.name, study.get_trials(states=finished_states))
        return name, trial_task, (job, data, here, on.threads)

    def done(result: cluster.TaskResult):
        trial, outcome = asked.pop(result.name), result.value
        cluster.write_files(study_dir, result.files, last=f"{TRIALS}/{result.name}/{runs.STATUS}")
        trial.set_user_attr("worker", result.host)
        for step, value in outcome.reports:
            trial.report(value, step)
        if outcome.error is not None:
            log(f"trial {trial.number}: failed on {result.host}: {outcome.error}", 1)
            study.tell(trial, state=TrialState.FAIL)
        elif outcome.pruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, outcome.value)
        progress(study, next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number))

    hint = f"continue with: ottotrain tune --resume {study_dir} --scheduler ADDRESS"
    with cluster.shared_data(on, train) as data:
        cluster.run_tasks(on, next_task, done, hint, in_flight=on.slots)


def _progress(log: Log, total: int, cfg: Config, study_dir: Path, place: Place):
    """One line per finished trial (number, state, value, best so far, progress); with
    ``--keep``, the run directories of trials outside the best K go as soon as they finish."""

    def callback(study, trial):
        best = _best(study)
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        so_far = f"best {best.value:.4f} (trial {best.number})" if best else "no trial completed yet"
        log(
            f"trial {trial.number}: {trial.state.name.lower()}, {_metric(cfg)} {value}; {so_far}; "
            f"{_finished(study)}/{total} done",
            1,
        )
        if place.keep is not None:
            _prune_dirs(study, study_dir, place)

    return callback


def _metric(cfg: Config) -> str:
    return "val_log_loss" if cfg.tune.cv_folds is None else "fold_log_loss"


def _prune_dirs(study, study_dir: Path, place: Place):
    """Remove this machine's run directories of finished trials outside the best ``keep``."""
    done = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE),
        key=lambda t: t.value,
    )
    kept = {t.number for t in done[: place.keep]}
    for t in study.get_trials(deepcopy=False):
        if t.state.is_finished() and t.number not in kept:
            shutil.rmtree(study_dir / TRIALS / f"trial-{t.number:04d}", ignore_errors=True)


def _best(study):
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return min(done, key=lambda t: t.value) if done else None


def _finished(study) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


def _write_trials_csv(path: Path, cfg: Config, study):
    keys = list(cfg.tune.space)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["number", "state", "value", *keys, "seconds", "host", "run_dir"])
        for t in study.trials:
            params = _params(cfg, t) if set(keys) <= set(t.params) else {}
            seconds = (
                (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start
                else None
            )
            run_dir = t.user_attrs.get("run_dir", "")
            here = t.user_attrs.get("host", platform.node()) == platform.node()  # older trials: no host
            if run_dir and here and not (path.parent / run_dir).exists():
                run_dir = ""  # removed by --keep
            w.writerow(
                [
                    t.number,
                    t.state.name.lower(),
                    "" if t.value is None else repr(t.value),
                    *(
                        dump_yaml(params[k]).strip().removesuffix("...").strip() if k in params else ""
                        for k in keys
                    ),
                    "" if seconds is None else round(seconds, 3),
                    t.user_attrs.get("host", ""),
                    run_dir,
                ]
            )


def _plots(study_dir: Path, study):
    """Optuna's optimization history, parameter importances and slice plot, as PNGs."""
    for name, plot in (
        ("history.png", plot_optimization_history),
        ("importances.png", plot_param_importances),
        ("slice.png", plot_slice),
    ):
        # Too few trials for a plot is not an error; the plots' warnings (experimental, too
        # few trials for importances, one value of a key) are not the user's concern.
        with contextlib.suppress(Exception), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = plot(study)
            first = axes.flat[0] if hasattr(axes, "flat") else axes  # slice: one axis per key
            fig = first.get_figure()
            try:
                FigureCanvasAgg(fig)
                with atomic_path(study_dir / name) as tmp:
                    fig.savefig(tmp, format="png", dpi=100)
            finally:
                pyplot.close(fig)  # Optuna draws through pyplot, which keeps every figure


def _finish(cfg: Config, study_dir: Path, study, place: Place, log: Log, started: float) -> dict:
    if place.keep is not None:  # also when --keep comes with a resume that trains nothing
        _prune_dirs(study, study_dir, place)
    _write_trials_csv(study_dir / "trials.csv", cfg, study)
    best = _best(study)
    if best is None:
        raise RunError(
            f"{study_dir}: no trial completed (every one failed or was pruned); "
            "see trials.csv and the trials' status.json"
        )
    best_cfg = trial_config(cfg, _params(cfg, best))
    best_tree = config_to_dict(best_cfg)
    best_tree.pop("tune")
    if cfg.tune.cv_folds is not None:  # so that 'ottotrain cv best.yaml --seeds 1' repeats it
        best_tree["cv"]["folds"] = cfg.tune.cv_folds
    write_text(study_dir / "best.yaml", dump_yaml(best_tree))
    states = [t.state for t in study.trials]
    metrics = {
        "kind": KIND,
        f"best_{_metric(cfg)}": round(best.value, 6),
        "best_trial": best.number,
        "best_params": _params(cfg, best),
        "best_run_dir": best.user_attrs.get("run_dir"),
        "trials": len(states),
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
        "total_seconds_this_session": round(time.time() - started, 3),
    }
    write_json(study_dir / "metrics.json", metrics)
    _plots(study_dir, study)
    runs.write_status(study_dir, runs.FINISHED, kind=KIND)
    log(f"Best trial {best.number}: {_metric(cfg)} {best.value:.4f}; {study_dir / 'best.yaml'}", 1)
    return {**metrics, "best_value": round(best.value, 6), "run_dir": str(study_dir)}


def _open_study(cfg: Config, study_dir: Path, place: Place, worker: int = 0, create=False):
    """The study (made now if ``create`` and it does not exist); and whether it was made now.

    Joining a study that exists (another machine's, on a database) needs the same config,
    apart from ``JOIN_CHANGES``.
    """
    storage = places.open_storage(place, study_dir, cfg.tune.heartbeat)
    args = {
        "study_name": place.name,
        "storage": storage,
        "sampler": _sampler(cfg, worker),
        "pruner": _pruner(cfg),
    }
    if create:
        try:
            study = optuna.create_study(direction="minimize", **args)
        except optuna.exceptions.DuplicatedStudyError:
            pass
        else:
            study.set_user_attr("config", dump_yaml(config_to_dict(cfg)))
            return study, True
    try:
        study = optuna.load_study(**args)
    except KeyError:
        raise RunError(f"{study_dir}: no study '{place.name}' in {place.shown}") from None
    saved = study.user_attrs.get("config")
    if saved is not None:
        refused = [
            format_change(*c)
            for c in config_changes(yaml.safe_load(saved), config_to_dict(cfg))
            if c[0] not in JOIN_CHANGES
        ]
        if refused:
            raise RunError(
                f"--study {place.name} in {place.shown}: the study was started with another "
                f"config: {'; '.join(refused[:10])}; join it with the same config (only "
                f"{', '.join(JOIN_CHANGES)} may differ), or name a new study with --study"
            )
    return study, False


def _optimize(cfg: Config, study_dir: Path, study, place: Place, log: Log):
    """Run trials until the study has ``tune.trials`` finished ones (complete or pruned), counted
    in the storage: several processes on one study stop together (each may finish the trial it
    started, so a study of W processes ends with at most W - 1 trials more than asked)."""
    total = cfg.tune.trials
    if _finished(study) >= total:
        return
    timeout = cfg.tune.timeout
    deadline = os.environ.get(DEADLINE_ENV)
    if deadline is not None:  # a restarted worker keeps the study's deadline, not its own
        left = float(deadline) - time.time()
        if left <= 0:
            return
        timeout = left
    study.optimize(
        _objective(cfg, study_dir, place, log),
        timeout=timeout,
        callbacks=[
            MaxTrialsCallback(total, states=(TrialState.COMPLETE, TrialState.PRUNED)),
            _progress(log, total, cfg, study_dir, place),
        ],
        catch=FAILS,
    )


def _worker_env(place: Place, workers: int, timeout: float | None, threads: int | None = None) -> dict:
    threads = str(threads or cluster.default_threads(workers))
    env = dict(
        os.environ, TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=threads
    )
    env.pop(places.STORAGE_ENV, None)
    if place.url is not None:
        env[places.STORAGE_ENV] = place.url  # in the environment: never on a command line
    if timeout is not None:
        env[DEADLINE_ENV] = repr(time.time() + timeout)
    return env


def _run_workers(
    cfg: Config, study_dir: Path, place: Place, workers: int, seed_offset: int, log: Log, threads: int | None
):
    """``workers`` processes on the study, each with its share of the cores for TensorFlow.

    A worker killed by a signal (the OOM killer, a kill -9) costs only its trial: that is
    recorded failed and queued again, and a new worker takes its place while the study
    still needs trials.
    """
    env = _worker_env(place, workers, cfg.tune.timeout, threads)
    cmd = [sys.executable, "-m", "ottotrain", "tune", "--resume", str(study_dir), "--worker"]
    cmd += [] if log.verbosity else ["-q"]

    def start(k, restarts=0):  # a restarted worker's sampler must not repeat the dead one's
        return subprocess.Popen(cmd, env={**env, WORKER_ENV: str(seed_offset + k + workers * restarts)})

    procs = {k: start(k) for k in range(workers)}
    log(
        f"{workers} workers ({env['TF_NUM_INTRAOP_THREADS']} TensorFlow threads each): "
        f"pids {' '.join(str(p.pid) for p in procs.values())}",
        1,
    )
    failed, restarts = [], 0
    try:
        while procs:
            time.sleep(0.2)
            for k, p in list(procs.items()):
                code = p.poll()
                if code is None:
                    continue
                del procs[k]
                if code >= 0:
                    if code:
                        failed.append(code)
                    continue
                study, _ = _open_study(cfg, study_dir, place)
                dead = places.running_here(study, place, pid=p.pid)
                places.retry_dead(study, dead, log, f"its worker (pid {p.pid}) was killed by signal {-code}")
                if _finished(study) < cfg.tune.trials and restarts < 4 * workers:
                    restarts += 1
                    procs[k] = start(k, restarts)
                    log(f"worker {k + 1} restarted as pid {procs[k].pid}", 1)
    except BaseException:  # Ctrl-C, SIGTERM: the workers stop too (their trials are recorded)
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait()
        raise
    if failed:
        raise RunError(
            f"{study_dir}: a worker failed (exit codes {failed}); its trial is recorded failed; "
            f"continue with: ottotrain tune --resume {study_dir}"
        )


def tune_worker(cfg: Config, study_dir, log: Log | None = None):
    """One worker process of a study that ``tune(..., workers=N)`` started: trials only."""
    log = log or Log(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_dir = Path(study_dir)
    place = places.load_place(study_dir, os.environ.get(places.STORAGE_ENV))
    study, _ = _open_study(cfg, study_dir, place, int(os.environ.get(WORKER_ENV, "0")))
    _optimize(cfg, study_dir, study, place, log)


def _start_dir(cfg: Config, study_dir, runs_root, config_name) -> Path:
    if study_dir is not None:
        runs.check_run_dir_free(study_dir)
    study_dir = (
        runs.claim_run_dir(study_dir)
        if study_dir
        else runs.new_run_dir(runs_root, tune_run_name(cfg.name or config_name))
    )
    write_text(study_dir / "config.yaml", dump_yaml(config_to_dict(cfg)))
    runs.write_status(study_dir, runs.RUNNING, kind=KIND)
    return study_dir


def tune(
    cfg: Config,
    study_dir=None,
    runs_root="runs",
    resume=None,
    log: Log | None = None,
    config_name="run",
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    keep: int | None = None,
    scheduler: str | None = None,
    member_threads: int | None = None,
) -> dict:
    """Run (or continue, or join) a study of ``cfg.tune``; return its metrics, with ``run_dir``.

    Args:
        cfg: a validated ``Config`` with a ``tune`` section.
        study_dir: exact directory to create; default ``<runs_root>/<name>-tune-<timestamp>``.
        resume: a study directory to continue (its config.yaml, ``tune.trials``,
            ``tune.timeout`` and ``tune.heartbeat`` may grow).
        workers: trial processes on this machine (1: this process trains them).
        storage: a PostgreSQL or MySQL URL; the same ``storage`` and ``study_name`` on
            several machines make one study (default: the study directory's journal file).
        study_name: the study's name in ``storage`` (default: ``<name>-tune``).
        keep: keep only the run directories of the best ``keep`` trials.
        scheduler: train the trials on this Dask scheduler's workers (tcp://HOST:PORT), one
            per worker at a time; the study stays here, on its storage.
        member_threads: TensorFlow threads per trial (default: the cores shared out among
            the trials that run at once).
    """
    log = log or Log(1)
    if cfg.tune is None:
        raise ConfigError(
            f"{cfg.source}: no tune section; add tune: {{trials: 20, space: "
            "{train.batch_size: {choice: [64, 128, 256]}}}} (see README, 'ottotrain tune')"
        )
    cluster.check_options(scheduler, workers if workers > 1 else None)
    if scheduler is None:
        args = (cfg, study_dir, runs_root, resume, log, config_name, workers, storage, study_name, keep)
        return _tune(*args, on=None, threads=member_threads)
    # The cluster first: a study whose scheduler cannot be reached is not started.
    with cluster.open_cluster(scheduler, None, member_threads, log) as on:
        return _tune(cfg, study_dir, runs_root, resume, log, config_name, 1, storage, study_name, keep, on=on)


def _tune(
    cfg: Config,
    study_dir,
    runs_root,
    resume,
    log: Log,
    config_name: str,
    workers: int,
    storage: str | None,
    study_name: str | None,
    keep: int | None,
    on: cluster.Cluster | None,
    threads: int | None = None,
) -> dict:
    started = time.time()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if resume is not None:
        if study_name is not None:
            raise RunError(f"{resume}: --study is the study's own on resume; leave it out")
        study_dir = Path(resume)
        check_resumable(study_dir, cfg, KIND)
        place = places.load_place(study_dir, storage, keep)
        study, made = _open_study(cfg, study_dir, place)
        places.retry_dead(study, places.dead_here(study, place), log, "was running when the study stopped")
        runs.write_status(study_dir, runs.RUNNING, kind=KIND)
    else:
        place = places.place_of(storage, study_name, workers, tune_run_name(cfg.name or config_name))
        place = Place(place.name, place.url, keep)
        study_dir = _start_dir(cfg, study_dir, runs_root, config_name)
        try:
            places.save_place(study_dir, place)
            study, made = _open_study(cfg, study_dir, place, create=True)
        except BaseException:
            shutil.rmtree(study_dir, ignore_errors=True)  # nothing started: leave nothing
            raise
    if keep is not None:
        places.save_place(study_dir, place)
    where = f" (study '{place.name}' in {place.shown})" if place.is_database else ""
    log(f"Study directory: {study_dir}{where}", 1)
    if made and cfg.tune.sampler.name != "grid":  # a grid tries every combination
        study.enqueue_trial(_own_values(cfg))  # trial 0: the config as it is
    # The process that made the study has its sampler seeds; one that joined, or resumed it,
    # takes others (the same seeds would suggest the same trials again).
    if made:
        seed_offset = 0
    elif resume is not None:
        seed_offset = 1 + 64 * len(study.trials)
    else:
        seed_offset = 1 + 64 * (os.getpid() % 100_000)

    def interrupted():
        return f"finished trials are kept in {study_dir}; continue with: ottotrain tune --resume {study_dir}"

    with running(study_dir, log, {"kind": KIND}, interrupted):
        if on is not None:
            _optimize_on_cluster(cfg, study_dir, study, place, on, log)
        elif workers > 1:
            _run_workers(cfg, study_dir, place, workers, seed_offset, log, threads)
            study, _ = _open_study(cfg, study_dir, place)  # what the workers wrote
            places.retry_dead(study, places.dead_here(study, place), log, "its worker died")
        else:
            if threads is not None:
                engine.env.use_threads(threads)
            if seed_offset:
                study, _ = _open_study(cfg, study_dir, place, seed_offset)
            _optimize(cfg, study_dir, study, place, log)
        return _finish(cfg, study_dir, study, place, log, started)
