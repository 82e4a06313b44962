"""What a study reports: a line per finished trial, trials.csv, Optuna's plots, best.yaml
and metrics.json; with ``--keep``, the run directories of the trials outside the best K go."""

from __future__ import annotations

import contextlib
import csv
import platform
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from matplotlib import pyplot
from matplotlib.backends.backend_agg import FigureCanvasAgg
from optuna.trial import TrialState
from optuna.visualization.matplotlib import (
    plot_optimization_history,
    plot_param_importances,
    plot_slice,
)

from ottotrain import runs
from ottotrain.config import Config, config_to_dict, dump_yaml, trial_config
from ottotrain.errors import RunError
from ottotrain.io import atomic_path, write_json, write_text
from ottotrain.log import Log
from ottotrain.workflows.common import ReadsAsDict
from ottotrain.workflows.tune import space
from ottotrain.workflows.tune.objective import trial_dir
from ottotrain.workflows.tune.storage import Place

KIND = "tune"


def progress(log: Log, total: int, cfg: Config, study_dir: Path, place: Place):
    """One line per finished trial (number, state, value, best so far, progress); with
    ``--keep``, the run directories of trials outside the best K go as soon as they finish."""

    def callback(study, trial):
        best = best_trial(study)
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        so_far = f"best {best.value:.4f} (trial {best.number})" if best else "no trial completed yet"
        log(
            f"trial {trial.number}: {trial.state.name.lower()}, {metric(cfg)} {value}; {so_far}; "
            f"{finished(study)}/{total} done",
            1,
        )
        if place.keep is not None:
            prune_dirs(study, study_dir, place)

    return callback


def metric(cfg: Config) -> str:
    return "val_log_loss" if cfg.tune.cv_folds is None else "fold_log_loss"


def prune_dirs(study, study_dir: Path, place: Place):
    """Remove this machine's run directories of finished trials outside the best ``keep``."""
    done = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE),
        key=lambda t: t.value,
    )
    kept = {t.number for t in done[: place.keep]}
    for t in study.get_trials(deepcopy=False):
        if t.state.is_finished() and t.number not in kept:
            shutil.rmtree(study_dir / trial_dir(t.number), ignore_errors=True)


def best_trial(study):
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return min(done, key=lambda t: t.value) if done else None


def finished(study) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


def write_trials_csv(path: Path, cfg: Config, study):
    keys = list(cfg.tune.space)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["number", "state", "value", *keys, "seconds", "host", "run_dir"])
        for t in study.trials:
            params = space.params(cfg, t) if set(keys) <= set(t.params) else {}
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


def plots(study_dir: Path, study):
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


@dataclass(frozen=True)
class StudyResult(ReadsAsDict):
    """What a study found (``metrics.json``) and where it is; read as a dict too, by its
    fields and its metrics.json keys (``result["best_val_log_loss"]``), as 1.x returned it."""

    metric: str  # what its trials scored: val_log_loss, or fold_log_loss (a cv objective)
    best_value: float
    best_trial: int
    best_params: dict
    best_run_dir: str | None
    trials: int
    complete: int
    pruned: int
    failed: int
    total_seconds_this_session: float
    run_dir: Path

    def metrics(self) -> dict:
        """The ``metrics.json`` content."""
        fields = {k: v for k, v in vars(self).items() if k not in ("metric", "best_value", "run_dir")}
        return {"kind": KIND, f"best_{self.metric}": self.best_value, **fields}

    def __getitem__(self, key: str):
        return self.metrics().get(key) if key in self.metrics() else super().__getitem__(key)

    def __contains__(self, key: str) -> bool:
        return key in self.metrics() or super().__contains__(key)


def finish(cfg: Config, study_dir: Path, study, place: Place, log: Log, started: float) -> StudyResult:
    """The study's report: trials.csv, best.yaml, metrics.json, plots."""
    if place.keep is not None:  # also when --keep comes with a resume that trains nothing
        prune_dirs(study, study_dir, place)
    write_trials_csv(study_dir / "trials.csv", cfg, study)
    best = best_trial(study)
    if best is None:
        raise RunError(
            f"{study_dir}: no trial completed (every one failed or was pruned); "
            "see trials.csv and the trials' status.json"
        )
    write_text(study_dir / "best.yaml", dump_yaml(best_config(cfg, best)))
    states = [t.state for t in study.trials]
    result = StudyResult(
        metric=metric(cfg),
        best_value=round(best.value, 6),
        best_trial=best.number,
        best_params=space.params(cfg, best),
        best_run_dir=best.user_attrs.get("run_dir"),
        trials=len(states),
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        total_seconds_this_session=round(time.time() - started, 3),
        run_dir=study_dir,
    )
    write_json(study_dir / "metrics.json", result.metrics())
    plots(study_dir, study)
    runs.write_status(study_dir, runs.FINISHED, runs.RunStatus(KIND))
    log(f"Best trial {best.number}: {result.metric} {best.value:.4f}; {study_dir / 'best.yaml'}", 1)
    return result


def best_config(cfg: Config, best) -> dict:
    """The best trial's complete config, without tune: (``ottotrain fit`` reproduces it)."""
    tree = config_to_dict(trial_config(cfg, space.params(cfg, best)))
    tree.pop("tune")
    if cfg.tune.cv_folds is not None:  # so that 'ottotrain cv best.yaml --seeds 1' repeats it
        tree["cv"]["folds"] = cfg.tune.cv_folds
    return tree
