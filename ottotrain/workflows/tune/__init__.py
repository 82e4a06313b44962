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

The study directory (config.yaml, study.json, journal.log, trials/, trials.csv, best.yaml,
metrics.json, plots) is described in docs/tune.md. Killed or stopped, a study continues with
``ottotrain tune --resume STUDY_DIR``.

Its jobs, by module: ``space`` (sampler, pruner, a trial's values and config), ``objective``
(one trial: its data, its training, its reports to the pruner), ``plan`` (trials asked and
told here, trained by the executor), ``report`` (trials.csv, plots, best.yaml), ``storage``
(where the study lives, heartbeats, dead trials), ``run`` (start, resume or join a study).
"""

from ottotrain.workflows.tune.report import KIND, StudyResult
from ottotrain.workflows.tune.run import tune, tune_run_name

__all__ = ["KIND", "StudyResult", "tune", "tune_run_name"]
