"""``ottotrain tune``: the tutorial's "your turn" as a command, on Optuna.

A study searches the config's own keys (``tune.space``, the key paths ``--set`` takes).
Every trial is an ordinary ``fit`` run (``trials/trial-NNNN``, which ``predict``,
``evaluate`` and ``runs`` read), trained through the one member trainer; each epoch's
validation log loss is reported to Optuna, whose pruner may stop the trial there (its
run then says ``pruned``). The config's own values are trial 0, so a study never ends
worse than the config it started from (the grid sampler tries every combination instead).

The study directory holds::

    config.yaml     the config, tune section included (resume compares with it)
    status.json     "kind": "tune"
    journal.log     the Optuna study (a journal file: safe for several local processes)
    trials/         one run directory per trial
    trials.csv      number, state, value (a pruned trial's: its last epoch's), parameters,
                    seconds, run directory
    best.yaml       the best trial's complete config, without tune: (fit reproduces it)
    metrics.json    best value and trial, trial counts
    history.png, importances.png   Optuna's plots (when there are enough trials)

Killed or stopped, a study continues with ``ottotrain tune --resume STUDY_DIR``: a trial
that was running is recorded failed and the study goes on to its trial count.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
from matplotlib.backends.backend_agg import FigureCanvasAgg
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

from ottotrain import runs
from ottotrain.config import Config, config_to_dict, dump_yaml, get_path, trial_config
from ottotrain.errors import ConfigError, RunError, Stopped, TrainingError
from ottotrain.io import atomic_path, write_json, write_text
from ottotrain.log import Log
from ottotrain.runs.lifecycle import running
from ottotrain.runs.resume import check_resumable
from ottotrain.workflows.fit import fit

KIND = "tune"
JOURNAL = "journal.log"
STUDY = "ottotrain"
TRIALS = "trials"
WORKER_ENV = "OTTOTRAIN_TUNE_WORKER"  # which worker of a parallel study a process is
_PRIMITIVE = (str, int, float, bool, type(None))


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


def _objective(cfg: Config, study_dir: Path):
    def objective(trial):
        params = {key: _suggest(trial, key, search) for key, search in cfg.tune.space.items()}
        run_dir = study_dir / TRIALS / f"trial-{trial.number:04d}"

        def report(row):
            if row.val_loss is None or not math.isfinite(row.val_loss):
                return
            trial.report(row.val_loss, row.epoch - 1)
            if trial.should_prune():
                raise Stopped("pruned", f"pruned after epoch {row.epoch}")

        trial.set_user_attr("run_dir", str(run_dir.relative_to(study_dir)))
        try:
            result = fit(trial_config(cfg, params), run_dir=run_dir, log=Log(0), on_epoch=report)
        except Stopped:
            raise optuna.TrialPruned() from None
        return result["val_log_loss"]

    return objective


def _progress(log: Log, total: int):
    """One line per finished trial: number, state, value, best so far, progress."""

    def callback(study, trial):
        best = _best(study)
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        so_far = f"best {best.value:.4f} (trial {best.number})" if best else "no trial completed yet"
        log(
            f"trial {trial.number}: {trial.state.name.lower()}, val_log_loss {value}; {so_far}; "
            f"{_finished(study)}/{total} done",
            1,
        )

    return callback


def _best(study):
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return min(done, key=lambda t: t.value) if done else None


def _finished(study) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


def _write_trials_csv(path: Path, cfg: Config, study):
    keys = list(cfg.tune.space)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["number", "state", "value", *keys, "seconds", "run_dir"])
        for t in study.trials:
            params = _params(cfg, t) if set(keys) <= set(t.params) else {}
            seconds = (
                (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start
                else None
            )
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
                    t.user_attrs.get("run_dir", ""),
                ]
            )


def _plots(study_dir: Path, study):
    """Optuna's optimization history and (with enough trials) parameter importances, as PNGs."""
    for name, plot in (
        ("history.png", plot_optimization_history),
        ("importances.png", plot_param_importances),
    ):
        # Too few trials for a plot is not an error; the plots are marked experimental.
        with contextlib.suppress(Exception), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fig = plot(study).get_figure()
            FigureCanvasAgg(fig)
            with atomic_path(study_dir / name) as tmp:
                fig.savefig(tmp, format="png", dpi=100)


def _finish(cfg: Config, study_dir: Path, study, log: Log, started: float) -> dict:
    _write_trials_csv(study_dir / "trials.csv", cfg, study)
    best = _best(study)
    if best is None:
        raise RunError(
            f"{study_dir}: no trial completed (every one failed or was pruned); "
            "see trials.csv and the trials' status.json"
        )
    best_tree = config_to_dict(trial_config(cfg, _params(cfg, best)))
    best_tree.pop("tune")
    write_text(study_dir / "best.yaml", dump_yaml(best_tree))
    states = [t.state for t in study.trials]
    metrics = {
        "kind": KIND,
        "best_val_log_loss": round(best.value, 6),
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
    log(f"Best trial {best.number}: val_log_loss {best.value:.4f}; {study_dir / 'best.yaml'}", 1)
    return {**metrics, "run_dir": str(study_dir)}


def _open_study(cfg: Config, study_dir: Path, worker: int = 0):
    storage = JournalStorage(JournalFileBackend(str(study_dir / JOURNAL)))
    return optuna.create_study(
        study_name=STUDY,
        storage=storage,
        sampler=_sampler(cfg, worker),
        pruner=_pruner(cfg),
        direction="minimize",
        load_if_exists=True,
    )


def _optimize(cfg: Config, study_dir: Path, study, log: Log):
    """Run trials until the study has ``tune.trials`` finished ones (complete or pruned), counted
    in the journal: several processes on one study stop together (each may finish the trial it
    started, so a study of W workers ends with at most W - 1 trials more than asked)."""
    total = cfg.tune.trials
    if _finished(study) >= total:
        return
    study.optimize(
        _objective(cfg, study_dir),
        timeout=cfg.tune.timeout,
        callbacks=[
            MaxTrialsCallback(total, states=(TrialState.COMPLETE, TrialState.PRUNED)),
            _progress(log, total),
        ],
        catch=(RunError, ConfigError, TrainingError),
    )


def _run_workers(study_dir: Path, workers: int, log: Log):
    """``workers`` processes on the study, each with its share of the cores for TensorFlow."""
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = dict(
        os.environ, TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=threads
    )
    cmd = [sys.executable, "-m", "ottotrain", "tune", "--resume", str(study_dir), "--worker"]
    cmd += [] if log.verbosity else ["-q"]
    procs = [subprocess.Popen(cmd, env={**env, WORKER_ENV: str(k)}) for k in range(workers)]
    log(
        f"{workers} workers ({threads} TensorFlow threads each): pids {' '.join(str(p.pid) for p in procs)}",
        1,
    )
    try:
        codes = [p.wait() for p in procs]
    except BaseException:  # Ctrl-C, SIGTERM: the workers stop too (their trials are recorded)
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    if any(codes):
        raise RunError(
            f"{study_dir}: a worker failed (exit codes {codes}); its trial is recorded failed; "
            f"continue with: ottotrain tune --resume {study_dir}"
        )


def tune_worker(cfg: Config, study_dir, log: Log | None = None):
    """One worker process of a study that ``tune(..., workers=N)`` started: trials only."""
    log = log or Log(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_dir = Path(study_dir)
    _optimize(cfg, study_dir, _open_study(cfg, study_dir, int(os.environ.get(WORKER_ENV, "0"))), log)


def tune(
    cfg: Config,
    study_dir=None,
    runs_root="runs",
    resume=None,
    log: Log | None = None,
    config_name="run",
    workers: int = 1,
) -> dict:
    """Run (or continue) a study of ``cfg.tune``; return its metrics, with ``run_dir``.

    Args:
        cfg: a validated ``Config`` with a ``tune`` section.
        study_dir: exact directory to create; default ``<runs_root>/<name>-tune-<timestamp>``.
        resume: a study directory to continue (its config.yaml, ``tune.trials`` and
            ``tune.timeout`` may grow).
        workers: trial processes on this machine (1: this process trains them).
    """
    log = log or Log(1)
    started = time.time()
    if cfg.tune is None:
        raise ConfigError(
            f"{cfg.source}: no tune section; add tune: {{trials: 20, space: "
            "{train.batch_size: {choice: [64, 128, 256]}}}} (see README, 'ottotrain tune')"
        )
    if resume is not None:
        study_dir = Path(resume)
        check_resumable(study_dir, cfg, KIND)
        runs.write_status(study_dir, runs.RUNNING, kind=KIND)
    else:
        if study_dir is not None:
            runs.check_run_dir_free(study_dir)
        study_dir = (
            runs.claim_run_dir(study_dir)
            if study_dir
            else runs.new_run_dir(runs_root, tune_run_name(cfg.name or config_name))
        )
        write_text(study_dir / "config.yaml", dump_yaml(config_to_dict(cfg)))
        runs.write_status(study_dir, runs.RUNNING, kind=KIND)
    log(f"Study directory: {study_dir}", 1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(cfg, study_dir)
    for t in study.trials:  # a trial whose process was killed stays "running" in the journal
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
            log(f"trial {t.number}: was running when the study stopped; recorded failed", 1)
    if not study.trials and cfg.tune.sampler.name != "grid":  # a grid tries every combination
        study.enqueue_trial(_own_values(cfg))  # trial 0: the config as it is

    def interrupted():
        return f"finished trials are kept in {study_dir}; continue with: ottotrain tune --resume {study_dir}"

    with running(study_dir, log, {"kind": KIND}, interrupted):
        if workers > 1:
            _run_workers(study_dir, workers, log)
            study = _open_study(cfg, study_dir)  # what the workers wrote
        else:
            _optimize(cfg, study_dir, study, log)
        return _finish(cfg, study_dir, study, log, started)
