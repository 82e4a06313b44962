"""The ``ottotrain`` command line. Each command parses, calls one library function, prints.

Library modules are imported inside the commands so that ``--help`` and config
errors never pay for TensorFlow. User errors (``OttoTrainError``) become one line
on stderr and exit code 1 (2 for usage errors); ``--debug`` shows the traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import sys

import click

from ottotrain import __version__
from ottotrain.errors import OttoTrainError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OttoTrainError as e:
            if ctx.obj and ctx.obj.get("debug") or os.environ.get("OTTOTRAIN_DEBUG"):
                raise
            raise click.ClickException(str(e)) from None


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
    from ottotrain.train import Log

    return Log(_verbosity(quiet, verbose))


def _echo_json(obj):
    click.echo(json.dumps(obj, indent=1, default=str))


set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config key (value parsed as YAML); repeatable.")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Only errors and the result.")
verbose_option = click.option("-v", "--verbose", is_flag=True, help="More detail.")


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@set_option
@click.option("--run-dir", type=click.Path(file_okay=False), help="Exact run directory to create.")
@click.option("--runs-root", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where new run directories go.")
@click.option("--smoke", is_flag=True, help="Whole pipeline on a small sample for one epoch.")
@click.option("--resume", type=click.Path(file_okay=False), help="Continue an interrupted run.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@quiet_option
@verbose_option
def fit(config, overrides, run_dir, runs_root, smoke, resume, as_json, quiet, verbose):
    """Train CONFIG; write the model, metrics and submission to a run directory.

    \b
    Examples:
      ottotrain fit configs/mlp.yaml
      ottotrain fit configs/mlp.yaml --set train.epochs=5 --set model.layers[0].Dense.units=256
      ottotrain fit configs/otto.yaml --smoke
      ottotrain fit --resume runs/mlp-20261128-101500
    """
    from pathlib import Path

    from ottotrain.config import load_config
    from ottotrain.train import fit as run_fit

    if config is None:
        if not resume:
            raise click.UsageError("give a CONFIG file (or --resume RUN_DIR)")
        config = str(Path(resume) / "config.yaml")
    cfg = load_config(config, overrides)
    try:
        result = run_fit(cfg, run_dir=run_dir, runs_root=runs_root, smoke=smoke, resume=resume,
                         log=_log(quiet, verbose), config_name=Path(config).stem)
    except KeyboardInterrupt:
        sys.exit(130)
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"val_log_loss={result['val_log_loss']:.4f} val_accuracy={result['val_accuracy']:.4f} "
                   f"best_epoch={result['best_epoch']}")
        click.echo(result["run_dir"])


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("test_csv", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Submission file (default: RUN_DIR/submission-<name>.csv).")
def predict(run_dir, test_csv, output):
    """Write a Kaggle submission for TEST_CSV from a trained RUN_DIR.

    \b
    Example:
      ottotrain predict runs/mlp-20261128-101500 data/otto/test.csv -o submission.csv
    """
    from ottotrain.predict import predict as run_predict

    result = run_predict(run_dir, test_csv, output)
    click.echo(f"{result['rows']} rows in {result['seconds']:.2f}s "
               f"({result['rows_per_second']:.0f} rows/s)", err=True)
    click.echo(result["output"])


@main.command()
@click.argument("target", type=click.Path())
@set_option
def summary(target, overrides):
    """Print the Keras model summary of a CONFIG or RUN_DIR without training.

    \b
    Examples:
      ottotrain summary configs/mlp.yaml
      ottotrain summary runs/mlp-20261128-101500
    """
    from ottotrain.summary import summarize

    click.echo(summarize(target, overrides))


@main.command("make-data")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--rows", default=20000, show_default=True, type=click.IntRange(min=10),
              help="Training rows.")
@click.option("--test-rows", type=click.IntRange(min=1), help="Test rows [default: rows/2].")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--classes", default=9, show_default=True, type=click.IntRange(2, 100))
@click.option("--features", default=93, show_default=True, type=click.IntRange(1, 10000))
def make_data(out_dir, rows, test_rows, seed, classes, features):
    """Write synthetic Otto-shaped train.csv and test.csv into OUT_DIR.

    \b
    Example:
      ottotrain make-data data/synthetic --rows 50000
    """
    from ottotrain.synth import make_data as run_make

    train, test = run_make(out_dir, rows=rows, seed=seed, test_rows=test_rows,
                           n_classes=classes, n_features=features)
    click.echo(train)
    click.echo(test)


if __name__ == "__main__":  # pragma: no cover
    main()
