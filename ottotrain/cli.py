"""The ``ottotrain`` command line. Each command parses, calls one library function, prints.

Each command imports its library module inside the command, so that ``--help``, shell
completion and a config error answer at once instead of waiting for pandas or
TensorFlow. User errors (``OttoTrainError``) become one line on stderr and exit code 1
(2 for usage errors); ``--debug`` shows the traceback. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import click

from ottotrain import __version__
from ottotrain import log as progress
from ottotrain.errors import OttoTrainError
from ottotrain.log import Log
from ottotrain.serving.limits import DEFAULTS, Limits


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OttoTrainError as e:
            if ctx.obj and ctx.obj.get("debug") or os.environ.get("OTTOTRAIN_DEBUG"):
                raise
            raise click.ClickException(str(e)) from None
        finally:
            progress.use(None)  # the command's log ends with it (CliRunner runs many in one process)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ottotrain")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
@click.pass_context
def main(ctx, debug):
    """Turn a YAML model spec into a trained tf.keras model and a Kaggle submission.

    Start with: ottotrain fit configs/quickstart.yaml
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _verbosity(quiet, verbose):
    return 0 if quiet else (2 if verbose else 1)


def _log(quiet=False, verbose=False):
    """The command's log, to which the library's progress phases (reading, KNN...) also go."""
    return progress.use(Log(_verbosity(quiet, verbose)))


def _echo_json(obj):
    click.echo(json.dumps(obj, indent=1, default=str))


def _training_config(config, overrides, resume, run_dir=None):
    """CONFIG, or a resumed run's config.yaml, loaded with the overrides; and its name.

    Only the config is read here: nothing heavy is imported before it is valid, so config
    errors stay fast. So is an exact ``--run-dir`` that already holds a run refused here,
    before the workflow's imports (pandas, scikit-learn, matplotlib: 2 s on 2 cores).
    """
    from ottotrain import runs
    from ottotrain.config import load_config

    if config is None:
        if not resume:
            raise click.UsageError("give a CONFIG file (or --resume RUN_DIR)")
        runs.read_status(resume)  # "not a run directory" rather than "config file not found"
        config = str(Path(resume) / "config.yaml")
    cfg = load_config(config, overrides)
    if run_dir is not None and not resume:
        runs.check_run_dir_free(run_dir)
    return cfg, Path(config).stem


def _interruptible(run, *args, **kwargs):
    """Run a workflow; Ctrl-C exits 130 after one line (a run's own, or the phase it stopped)."""
    try:
        return run(*args, **kwargs)
    except KeyboardInterrupt:
        (progress.current() or Log(1)).interrupted()
        sys.exit(130)


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key (value parsed as YAML); repeatable.",
)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Only errors and the result.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
run_dir_option = click.option(
    "--run-dir", type=click.Path(file_okay=False), help="Exact run directory to create."
)
runs_root_option = click.option(
    "--runs-root",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where new run (and study) directories go.",
)
verbose_option = click.option("-v", "--verbose", is_flag=True, help="More detail.")
# Where many jobs (cv's members, tune's trials) run: the same meaning for every command.
scheduler_option = click.option(
    "--scheduler",
    metavar="tcp://HOST:PORT",
    help="Run the jobs on a running Dask cluster (workers started with --nthreads 1); tls:// "
    "with Dask's TLS settings. tcp:// is unauthenticated: a trusted network only.",
)
workers_option = click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Run the jobs on N local worker processes (a Dask local cluster), stopped at the end.",
)
track_option = click.option(
    "--track",
    metavar="URI",
    help="Record the run in MLflow at URI (http://HOST:PORT, sqlite:///PATH, a folder) [default: "
    "MLFLOW_TRACKING_URI, else the config's tracking.uri, else not tracked]; docs/tracking.md.",
)
member_threads_option = click.option(
    "--member-threads",
    type=click.IntRange(1),
    metavar="N",
    help="TensorFlow threads per job (recorded; results' last bits depend on it) [default: "
    "the cores shared out among the jobs that run at once].",
)


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@set_option
@run_dir_option
@runs_root_option
@click.option("--smoke", is_flag=True, help="Whole pipeline on a small sample for one epoch.")
@click.option("--resume", type=click.Path(file_okay=False), help="Continue an interrupted run.")
@track_option
@json_option
@quiet_option
@verbose_option
def fit(config, overrides, as_json, quiet, verbose, **options):
    """Train CONFIG; write the model, metrics and submission to a run directory.

    \b
    Examples:
      ottotrain fit configs/mlp.yaml
      ottotrain fit configs/mlp.yaml --set train.epochs=5 --set model.layers[1].Dense.units=256
      ottotrain fit configs/otto.yaml --smoke
      ottotrain fit --resume runs/mlp-20261128-101500
    """
    cfg, name = _training_config(config, overrides, options["resume"], options["run_dir"])
    from ottotrain.workflows.fit import fit as run_fit

    result = _interruptible(run_fit, cfg, **options, log=_log(quiet, verbose), config_name=name)
    if as_json:
        _echo_json(result.metrics() | {"run_dir": str(result.run_dir)})
    else:
        click.echo(
            f"val_log_loss={result.val_log_loss:.4f} val_accuracy={result.val_accuracy:.4f} "
            f"best_epoch={result.best_epoch}"
        )
        click.echo(result.run_dir)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("test_csv", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Submission file, .csv (.gz), .parquet or .feather by its name "
    "[default: RUN_DIR/submission-<name>.csv].",
)
@quiet_option
def predict(run_dir, test_csv, output, quiet):
    """Write a Kaggle submission for TEST_CSV from a trained RUN_DIR.

    \b
    Example:
      ottotrain predict runs/mlp-20261128-101500 data/otto/test.csv -o runs/submission.csv
    """
    from ottotrain.workflows.predict import predict as run_predict

    log = _log(quiet)
    result = _interruptible(run_predict, run_dir, test_csv, output, log=log)
    for line in result.warnings:
        log(f"Warning: {line}", 0)
    log(f"{result.rows} rows in {result.seconds:.2f}s ({result.rows_per_second:.0f} rows/s)", 1)
    click.echo(result.output)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option(
    "--no-knn-members",
    is_flag=True,
    help="Leave out a cv run's members that use data.knn (a smaller, faster export).",
)
@quiet_option
def export(run_dir, out_dir, no_knn_members, quiet):
    """Write RUN_DIR as a TensorFlow SavedModel in OUT_DIR: raw columns in, probabilities out.

    \b
    Example:
      ottotrain export runs/mlp-20261128-101500 exports/mlp
    """
    from ottotrain.workflows.export import export as run_export

    log = _log(quiet)
    result = _interruptible(run_export, run_dir, out_dir, no_knn_members)
    log(
        f"{result.members} model(s) ({result.knn_members} with KNN features), "
        f"{result.bytes / 1e6:.1f} MB in {result.seconds:.1f}s",
        1,
    )
    click.echo(result.output)


_LIMITS_HELP = {
    "max_body": "Bytes per request body; past it a 413.",
    "max_rows": "Rows per request; past it a 413.",
    "max_queue": "Requests waiting for the model; past it a 429.",
    "max_connections": "Open connections; past it a 503.",
    "header_timeout": "Seconds for a request's headers; past it a 408.",
    "idle_timeout": "Seconds a kept-alive connection may idle.",
    "time_budget": "Seconds a request may take; past it a 503.",
    "batch_rows": "Rows per model call (a bigger request goes in chunks).",
}


def _limit_options(command):
    """One option per ``serving.limits.Limits`` field, its default the field's."""
    for field in reversed(dataclasses.fields(Limits)):
        default = getattr(DEFAULTS, field.name)
        kind = click.IntRange(1) if isinstance(default, int) else click.FloatRange(0, min_open=True)
        flag = "--" + field.name.replace("_", "-")
        command = click.option(
            flag, default=default, show_default=True, type=kind, help=_LIMITS_HELP[field.name]
        )(command)
    return command


@main.command()
@click.argument("target", metavar="RUN_DIR|EXPORT_DIR", type=click.Path(file_okay=False))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 opens it to the network.",
)
@click.option("--port", default=8501, show_default=True, type=click.IntRange(0, 65535), help="0: a free one.")
@click.option("--name", help="Model name in the URLs [default: the directory's name].")
@click.option("--no-knn-members", is_flag=True, help="A cv run directory: leave out its KNN members.")
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Processes on the port."
)
@_limit_options
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="JSON lines on stdout.")
@click.option(
    "--lite/--no-lite",
    default=True,
    show_default=True,
    help="Compute with TensorFlow Lite where the model converts and matches the SavedModel.",
)
def serve(target, host, port, name, no_knn_members, workers, access_log, lite, **limits):
    """Serve a run or an export over HTTP: TensorFlow Serving's REST API and KServe's v2.

    \b
    Routes: POST /v1/models/NAME:predict, GET /v1/models/NAME[/metadata],
    POST /v2/models/NAME/infer, GET /v2/health/ready, GET /metrics (docs/serving.md).
    Past a limit a request gets a 413, 429 or 503 with a JSON body.

    \b
    Example:
      ottotrain serve exports/mlp --port 8501
      curl -d '{"instances": [{"feat_1": 0, ...}]}' localhost:8501/v1/models/mlp:predict
    """
    import signal

    from ottotrain.workflows.serve import serve as run_serve

    try:
        stopped = run_serve(
            target,
            host,
            port,
            name,
            no_knn_members,
            Limits(**limits),
            workers=workers,
            access_log=access_log,
            log=lambda m: click.echo(m, err=True),
            lite=lite,
        )
    except KeyboardInterrupt:  # Ctrl-C while the model was loading
        stopped = signal.SIGINT
    click.echo(f"stopped ({stopped.name if stopped is not None else 'shut down'})", err=True)
    sys.exit(130 if stopped == signal.SIGINT else 0)


@main.command()
@click.argument("target", type=click.Path())
@set_option
def summary(target, overrides):
    """Print the Keras model summary of a CONFIG or RUN_DIR without training (a stack run: its leaderboard).

    \b
    Examples:
      ottotrain summary configs/mlp.yaml
      ottotrain summary runs/mlp-20261128-101500
    """
    from ottotrain.workflows.summary import summarize

    click.echo(summarize(target, overrides))


def _cardinalities(ctx, param, value):
    """``--categorical 3,50,1000`` -> (3, 50, 1000): comma-separated integers, each >= 2."""
    if value is None:
        return ()
    try:
        cards = tuple(int(v) for v in value.split(","))
    except ValueError:
        cards = None
    if not cards or any(c < 2 for c in cards):
        raise click.BadParameter(
            f"{value!r}: expected comma-separated cardinalities, integers >= 2 (e.g. 3,50,1000)."
        )
    return cards


@main.command("make-data")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--rows", default=20000, show_default=True, type=click.IntRange(min=10), help="Training rows.")
@click.option("--test-rows", type=click.IntRange(min=1), help="Test rows [default: rows/2].")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--classes", default=9, show_default=True, type=click.IntRange(2, 100))
@click.option("--features", default=93, show_default=True, type=click.IntRange(1, 10000))
@click.option(
    "--missing",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Fraction of feature (and categorical) cells left empty (the other values stay the same).",
)
@click.option(
    "--categorical",
    metavar="K1,K2,..",
    callback=_cardinalities,
    help="Add string columns cat_1.. (after feat_*) with these cardinalities (each >= 2), "
    "informative about the class; ~2% of their test cells are values unseen in train.",
)
def make_data(out_dir, rows, test_rows, seed, classes, features, missing, categorical):
    """Write synthetic Otto-shaped train.csv and test.csv into OUT_DIR.

    \b
    Example:
      ottotrain make-data data/synthetic --rows 50000
      ottotrain make-data data/synthetic-cat --categorical 3,50,1000
    """
    from ottotrain.data.synth import make_data as run_make

    train, test = _interruptible(
        run_make,
        out_dir,
        rows=rows,
        seed=seed,
        test_rows=test_rows,
        n_classes=classes,
        n_features=features,
        missing=missing,
        categorical=categorical,
    )
    click.echo(train)
    click.echo(test)


def member_run_options(f):
    """What cv and stack share: where the members run, and what is printed."""
    for option in (
        verbose_option,
        quiet_option,
        json_option,
        track_option,
        member_threads_option,
        workers_option,
        scheduler_option,
    ):
        f = option(f)
    return f


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--folds", type=click.IntRange(min=2), help="Stratified folds K [default: the config's cv.folds, 5]."
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    help="Models per fold, each with its own seed (bagging) [default: the config's "
    "cv.seeds, else one per cv.variants entry, else 1].",
)
@set_option
@run_dir_option
@runs_root_option
@click.option("--smoke", is_flag=True, help="Whole pipeline on a small sample, one epoch per model.")
@click.option(
    "--resume",
    type=click.Path(file_okay=False),
    help="Continue an interrupted cv run (finished models are reused).",
)
@member_run_options
def cv(config, overrides, as_json, quiet, verbose, **options):
    """Cross-validate CONFIG: K stratified folds x N seeds, out-of-fold scores, ensemble submission.

    Each model trains on K-1 folds and early-stops on the held-out fold
    (data.validation_split is not used), or with --set cv.inner_validation=0.1
    on 10 % of its own training rows, so that the fold only scores it (an honest
    OOF score); preprocessing is fitted on its training rows. The
    run directory gets oof.csv (one out-of-fold prediction per training row),
    metrics.json (oof_log_loss, per-fold mean ± std), every model under models/,
    and submission.csv averaged over all models. 'ottotrain predict' on the run
    uses the whole ensemble.

    \b
    Examples:
      ottotrain cv configs/otto-cv.yaml
      ottotrain cv configs/otto.yaml --folds 5 --seeds 3 --set data.transform=anscombe
      ottotrain cv --resume runs/otto-cv-20261128-101500
      ottotrain cv configs/otto-cv.yaml --workers 2
      ottotrain cv configs/otto-cv.yaml --scheduler tcp://10.0.0.5:8786
    """
    cfg, name = _training_config(config, overrides, options["resume"], options["run_dir"])
    from ottotrain.workflows.cv import CvOptions, run_cv

    result = _interruptible(run_cv, cfg, CvOptions(**options, config_name=name), log=_log(quiet, verbose))
    if as_json:
        _echo_json(result.metrics() | {"run_dir": str(result.run_dir)})
    else:
        click.echo(
            f"oof_log_loss={result.oof_log_loss:.4f} oof_accuracy={result.oof_accuracy:.4f} "
            f"fold_log_loss={result.fold_log_loss_mean:.4f}±{result.fold_log_loss_std:.4f} "
            f"models={result.n_models}"
        )
        click.echo(result.run_dir)


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@set_option
@run_dir_option
@runs_root_option
@click.option(
    "--smoke", is_flag=True, help="Whole stack on a small sample: one epoch per net, few boosting rounds."
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False),
    help="Continue a stack run: unfinished members go on, finished ones are reused; with "
    "CONFIG, members added to it are trained (and the top again, and each level-2 learner "
    "whose settings or inputs changed).",
)
@click.option(
    "--time-limit",
    metavar="DURATION",
    help="Time budget such as 2h, 45m, 900s: members that would not fit are left out "
    "[default: the config's stack.time_limit, else none].",
)
@member_run_options
def stack(config, overrides, as_json, quiet, verbose, **options):
    """Stack CONFIG: level-1 members on shared folds, level-2 learners on their OOF predictions, a top.

    Every member (a Keras config, a finished cv run, LightGBM, KNN votes) is scored on the
    same folds and early-stops on rows of its own training folds; level 2 learns from their
    out-of-fold predictions on those folds; the top (greedy ensemble selection or a blend)
    weights them. The run directory holds every member, the leaderboard and submission.csv.

    \b
    Examples:
      ottotrain stack configs/quickstart-stack.yaml
      ottotrain stack configs/otto-stack.yaml --time-limit 2h
      ottotrain stack --resume runs/otto-stack-20261207-101500
      ottotrain stack configs/otto-stack.yaml --resume runs/otto-stack-20261207-101500
    """
    cfg, name = _training_config(config, overrides, options["resume"], options["run_dir"])
    from ottotrain.workflows.stack.run import StackOptions, run_stack

    result = _interruptible(
        run_stack, cfg, StackOptions(**options, config_name=name), log=_log(quiet, verbose)
    )
    if as_json:
        _echo_json(result.summary())
    else:
        click.echo(
            f"oof_log_loss={result.oof_log_loss:.4f} oof_accuracy={result.oof_accuracy:.4f} "
            f"best_model={result.best_model} ({result.best_model_log_loss:.4f}) models={result.models}"
            + (f" left_out={','.join(x.name for x in result.left_out)}" if result.left_out else "")
        )
        click.echo(result.run_dir)


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@set_option
@click.option("--study-dir", type=click.Path(file_okay=False), help="Exact study directory to create.")
@runs_root_option
@click.option(
    "--resume",
    type=click.Path(file_okay=False),
    help="Continue a study (killed, stopped, or finished: with --set tune.trials=N, more trials).",
)
@workers_option
@click.option(
    "--storage",
    metavar="URL",
    help="A PostgreSQL (or MySQL) URL: the same --storage and --study on several machines make "
    "one study. Keep the password out of it (PGPASSWORD or ~/.pgpass). Default: the study "
    "directory's journal file.",
)
@click.option(
    "--study", "study_name", metavar="NAME", help="The study's name in --storage [default: <name>-tune]."
)
@click.option(
    "--keep", type=click.IntRange(1), metavar="K", help="Keep only the run directories of the best K trials."
)
@scheduler_option
@member_threads_option
@track_option
@json_option
@quiet_option
@verbose_option
def tune(
    config,
    overrides,
    study_dir,
    runs_root,
    resume,
    workers,
    storage,
    study_name,
    keep,
    scheduler,
    member_threads,
    track,
    as_json,
    quiet,
    verbose,
):
    """Search CONFIG's tune.space with Optuna: every trial a fit run; best.yaml reproduces the best.

    The config's own values are trial 0; each epoch's validation log loss (with
    tune.objective {cv: {folds: K}}: each fold's) goes to the pruner, which may stop a
    hopeless trial there. The study directory gets trials.csv, best.yaml (a complete
    config: 'ottotrain fit best.yaml' trains the best trial again), plots and one run
    directory per trial under trials/.

    \b
    Examples:
      ottotrain tune configs/otto-tune.yaml --workers 2
      ottotrain tune configs/quickstart-tune.yaml --set tune.trials=5 --keep 3
      ottotrain tune --resume runs/otto-tune-20261201-101500 --set tune.trials=40
      PGPASSWORD=... ottotrain tune configs/otto-tune.yaml --storage postgresql://me@db:5432/optuna
      ottotrain tune configs/otto-tune.yaml --scheduler tcp://10.0.0.5:8786
    """
    cfg, name = _training_config(config, overrides, resume, study_dir)
    from ottotrain.workflows.tune import tune as run_tune

    result = _interruptible(
        run_tune,
        cfg,
        study_dir=study_dir,
        runs_root=runs_root,
        resume=resume,
        log=_log(quiet, verbose),
        config_name=name,
        workers=workers,
        storage_url=storage,
        study_name=study_name,
        keep=keep,
        scheduler=scheduler,
        member_threads=member_threads,
        track=track,
    )
    if as_json:
        _echo_json(result.metrics() | {"best_value": result.best_value, "run_dir": str(result.run_dir)})
    else:
        click.echo(
            f"best_{result.metric}={result.best_value:.4f} best_trial={result.best_trial} "
            f"trials={result.trials} pruned={result.pruned} failed={result.failed}"
        )
        click.echo(result.run_dir / "best.yaml")


@main.command()
@click.argument("runs_", metavar="RUN...", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the blended submission here (default: only report the scores).",
)
@click.option(
    "--temperature",
    is_flag=True,
    help="Also apply the temperature fitted on the OOF predictions to the submission.",
)
@json_option
def blend(runs_, output, temperature, as_json):
    """Blend cv runs: weights >= 0 summing to 1 that minimise the out-of-fold log loss.

    The runs must share their training rows and folds (same data, config seed
    and --folds). Prints each run's OOF score and weight, the blend's OOF score
    with and without temperature scaling, and writes the weighted average of the
    runs' submission.csv files.

    \b
    Example:
      ottotrain blend runs/otto-cv-A runs/otto-cv-B -o runs/blend.csv
    """
    from ottotrain.workflows.blend import blend as run_blend

    result = _interruptible(run_blend, list(runs_), output, temperature)
    if as_json:
        _echo_json(result.to_dict())
        return
    width = max(len(r.run) for r in result.runs)
    for r in result.runs:
        click.echo(
            f"{r.run:<{width}}  oof_log_loss={r.oof_log_loss:.4f} "
            f"oof_accuracy={r.oof_accuracy:.4f} weight={r.weight:.3f}"
        )
    click.echo(
        f"{'blend':<{width}}  oof_log_loss={result.oof_log_loss:.4f} oof_accuracy={result.oof_accuracy:.4f}"
    )
    applied = (
        f", applied to {result.output}"
        if result.temperature_applied
        else ", not applied: give -o to write a submission with it"
        if temperature
        else ", not applied"
    )
    click.echo(
        f"{'blend + temperature':<{width}}  oof_log_loss={result.oof_log_loss_temperature:.4f} "
        f"(T={result.temperature:.3f}, fitted on the same OOF rows{applied})"
    )
    if result.output:
        click.echo(result.output)


# --------------------------------------------------------------------------------------
# The experiment loop: init, check, config, schema, runs, evaluate, explain, plot.


@main.command()
@click.argument("path", default="ottotrain.yaml", required=False, type=click.Path(dir_okay=False))
@quiet_option
def init(path, quiet):
    """Write a commented starter config file.

    Writes PATH [default: ottotrain.yaml]: the tutorial's MLP on the Kaggle Otto files
    in data/otto/ of the current folder (train.csv.gz and test.csv.gz; the config names
    them relative to its own folder). An existing file is never overwritten.

    \b
    Examples:
      ottotrain init
      ottotrain init configs/first.yaml
    """
    from ottotrain.workflows.starter import next_step, write_starter

    written = write_starter(path)
    if not quiet:
        click.echo(next_step(written), err=True)
    click.echo(written)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@quiet_option
def check(config, overrides, as_json, quiet):
    """Check a config and its data; train nothing.

    Shows what fit would do with CONFIG. Reads and checks the CSV files (columns, numbers, classes, train/test
    agreement), splits them, builds the model, and prints the class balance,
    the split, the model summary and the training plan. Exit code 1 on any
    problem, so it fits in scripts: ottotrain check -q CONFIG && ottotrain fit CONFIG

    \b
    Examples:
      ottotrain check configs/mlp.yaml
      ottotrain check configs/mlp.yaml --set data.validation_split=0.2
    """
    from ottotrain.config import load_config
    from ottotrain.workflows.check import check as run_check
    from ottotrain.workflows.check import format_check, one_line

    result = _interruptible(run_check, load_config(config, overrides), log=_log(quiet))
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(one_line(result) if quiet else format_check(result, overrides))


@main.command("config")
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
def config_cmd(config_file, overrides):
    """Print a config with every default filled in.

    CONFIG with the --set overrides applied and data paths made absolute; the
    output is itself a valid config.

    \b
    Examples:
      ottotrain config configs/mlp.yaml
      ottotrain config configs/mlp.yaml --set train.epochs=5 > resolved.yaml
    """
    from ottotrain.config import config_to_dict, dump_yaml, load_config

    click.echo(dump_yaml(config_to_dict(load_config(config_file, overrides))), nl=False)


@main.command()
def schema():
    """Print the config file's JSON Schema (for editors).

    Editors with YAML language support use it to complete and check configs as
    you type; see docs/commands.md for VS Code's yaml.schemas setting and the
    yaml-language-server modeline.

    \b
    Example:
      ottotrain schema > ottotrain.schema.json
    """
    from ottotrain.config import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@main.command("runs")
@click.argument("runs_dir", metavar="[DIR]", default="runs", required=False, type=click.Path(file_okay=False))
@click.option(
    "--sort",
    type=click.Choice(["date", "score"]),
    default="date",
    show_default=True,
    help="date: oldest first; score: best log loss first.",
)
@click.option(
    "--diff",
    nargs=2,
    metavar="RUN_A RUN_B",
    help="Show how two runs' configs differ (paths, or names under DIR).",
)
@click.option("--track", metavar="URI", help="List an MLflow experiment's runs instead (with --experiment).")
@click.option("--experiment", metavar="NAME", help="The MLflow experiment to list (with --track).")
@json_option
def runs_cmd(runs_dir, sort, diff, track, experiment, as_json):
    """List runs with their scores, or diff two.

    Lists the runs under DIR [default: runs]: kind, date, status, epochs, log
    loss, accuracy, duration. cv runs show their out-of-fold log loss; unfinished
    runs the validation log loss of their best epoch so far.

    \b
    Examples:
      ottotrain runs
      ottotrain runs runs --sort score
      ottotrain runs --diff mlp-20261128-101500 mlp-20261128-113000
      ottotrain runs --track http://127.0.0.1:5000 --experiment otto
    """
    from ottotrain.workflows import report

    if diff:
        result = report.diff_runs(*diff, root=runs_dir)
        if as_json:
            _echo_json(result)
        else:
            click.echo(report.format_diff(result))
        return
    rows = report.list_runs(runs_dir, sort, track, experiment)
    if as_json:
        _echo_json(rows)
    elif not rows:
        click.echo(f"no runs in {runs_dir}", err=True)
    else:
        click.echo(report.format_runs(rows))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("data_csv", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--bins",
    default=15,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Equal-width probability bins of the reliability diagrams and the ECE.",
)
@json_option
@quiet_option
def evaluate(run_dir, data_csv, bins, as_json, quiet):
    """Score a trained RUN_DIR on a labelled DATA_CSV (a cv or stack run: on its OOF rows without one).

    Prints Kaggle's log loss, accuracy, expected calibration error (top-label and
    classwise), per-class precision, recall, F1, log loss and ECE, and the confusion
    matrix. Writes them with reliability diagrams (overall and per class) and the
    confusion matrix to RUN_DIR/evaluate/SOURCE/ (SOURCE: oof, or DATA_CSV's name).
    DATA_CSV needs the target column and the feature columns seen at fit.

    \b
    Examples:
      ottotrain evaluate runs/mlp-20261128-101500 data/otto/holdout.csv
      ottotrain evaluate runs/otto-stack-20261207-101500 --bins 10
    """
    from ottotrain.workflows.evaluate import evaluate as run_evaluate
    from ottotrain.workflows.evaluate import format_evaluation

    result = _interruptible(run_evaluate, run_dir, data_csv, bins=bins, log=_log(quiet))
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(format_evaluation(result, brief=quiet))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("data_csv", type=click.Path(dir_okay=False))
@click.option("--repeats", default=5, show_default=True, type=int, help="Permutations per column.")
@click.option("--rows", type=int, help="Use N rows of DATA_CSV drawn at random (seeded) [default: all].")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the row draw, permutations.")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Folder for the files [default: RUN_DIR/explain].",
)
@json_option
@quiet_option
def explain(run_dir, data_csv, repeats, rows, seed, out_dir, as_json, quiet):
    """Permutation importance of RUN_DIR's input columns on a labelled DATA_CSV.

    For each raw column, the log loss increase when its values (with its missing
    indicator, one-hot columns or embedding index) are shuffled across rows; the
    KNN features are one group. Mean and 95% t interval over the repeats, overall
    and per class. Writes importance.csv, importance.json and importance.png; prints
    the top 10. Works for fit, cv and stack runs.

    \b
    Examples:
      ottotrain explain runs/otto-20261207-101500 data/otto/holdout.csv --rows 10000
      ottotrain explain runs/otto-cv-20261207-101500 holdout.csv --repeats 10 -o importance/
    """
    from ottotrain.workflows.explain import explain as run_explain
    from ottotrain.workflows.explain.outputs import as_dict, format_importance

    log = _log(quiet)
    result = _interruptible(run_explain, run_dir, data_csv, repeats, rows, seed, out_dir, log=log)
    if as_json:
        _echo_json(as_dict(result))
        return
    click.echo(format_importance(result))
    log("Wrote " + ", ".join(str(f) for f in result.files), 1)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def plot(run_dir):
    """(Re)draw RUN_DIR's curves.png and confusion.png.

    fit draws them itself at the end; use this for a run that was interrupted.

    \b
    Example:
      ottotrain plot runs/mlp-20261128-101500
    """
    from ottotrain.workflows.plots import plot_run

    for p in _interruptible(plot_run, run_dir, strict=True):
        click.echo(p)


if __name__ == "__main__":  # pragma: no cover
    main()
