"""Level-1 members that are cv runs: a Keras config trained by ``run_cv``, or a finished run reused.

A Keras member's config is its file, then its ``set`` overrides, then what the stack
forces on every member: its data source, ``seed``, ``cv.folds`` and
``cv.inner_validation``, so that every member is scored on the same rows and folds and
early-stops inside its training folds. Its folder ``members/<name>`` is a complete cv run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ottotrain import runs
from ottotrain.config import Config, load_config
from ottotrain.config.stack_section import MemberSpec
from ottotrain.errors import ConfigError, RunError
from ottotrain.runs import CV_KIND, FINISHED
from ottotrain.workflows.cv import CvOptions, run_cv
from ottotrain.workflows.stack.outputs import ModelOutput, read_output
from ottotrain.workflows.stack.state import StackRun

# The data keys the stack sets on every member: where the rows come from and what they are.
_DATA_SOURCE = ("train", "test", "synthetic", "id_column", "target_column")


def _forced(stack: Config) -> list[str]:
    """``--set``-style items for what the stack forces on a Keras member."""
    data = stack.data.model_dump(mode="json")
    items = [f"data.{k}={json.dumps(data[k])}" for k in _DATA_SOURCE]
    items += [f"seed={stack.seed}", f"cv.folds={stack.cv.folds}"]
    return items + [f"cv.inner_validation={stack.stack.inner_validation}"]


def member_config(stack: Config, spec: MemberSpec, index: int) -> Config:
    """The config a Keras member trains: its file, its ``set``, then the stack's rows and folds.

    Raises:
        ConfigError: one line naming the member, the file and the problem.
    """
    sets = [f"{k}={json.dumps(v)}" for k, v in spec.set.items()]
    where = f"{stack.source}: stack.members[{index}] ({spec.name})"
    try:
        cfg = load_config(spec.config, [*sets, *_forced(stack)])
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if cfg.stack is not None:
        raise ConfigError(f"{where}: {spec.config} is a stack config itself; a member is a Keras config")
    return cfg


def member_status(folder: Path) -> str | None:
    """A member folder's status: None when there is no run in it yet."""
    if not (folder / runs.STATUS).exists():
        return None
    return runs.read_status(folder).get("status")


def train_cv_member(run: StackRun, cfg: Config, spec: MemberSpec, label: str) -> None:
    """Train (or resume) a Keras member into its folder, a cv run of its own.

    Raises:
        OverBudget: after a model whose cost says the rest would not fit (the member's
            cv run is left interrupted, so ``--resume`` continues it).
    """
    folder, opts, log = run.member_dir(spec.name), run.options, run.log
    status = member_status(folder)
    if status is None and folder.exists():
        shutil.rmtree(folder)  # a member that never started: nothing of it is kept
    n_models = run.folds * int(cfg.cv.seeds or max(1, len(cfg.cv.variants)))
    seconds: list[float] = []

    def on_member(fold: int, seed_index: int, record) -> None:
        seconds.append(record.wall_seconds_this_session)
        done = sum(1 for p in (folder / runs.MODELS).glob("fold*-seed*.json") if p.stem.count(".") == 0)
        log(f"{label} {spec.name}: {done}/{n_models} models{run.budget.left_text()}", 1)
        run.budget.check(spec.name, done, n_models, seconds)

    options = CvOptions(
        run_dir=None if status else folder,
        resume=folder if status else None,
        smoke=run.smoke,
        config_name=spec.name,
        scheduler=opts.scheduler,
        workers=opts.workers,
        member_threads=None if status else opts.member_threads,
        track=False,  # the stack's run logs its members
    )
    run_cv(cfg, options, log=log, on_member=on_member, loaded=(run.data.train, run.test))


def reuse_run(run: StackRun, spec: MemberSpec) -> None:
    """Check a finished cv run against the stack's rows and folds, then copy it into the stack.

    Raises:
        RunError: one line saying what differs (not a cv run, unfinished, rows, folds, classes).
    """
    source, folder = Path(spec.run), run.member_dir(spec.name)
    if member_status(folder) == FINISHED:
        return
    check_reusable(run, spec)
    if folder.exists():
        shutil.rmtree(folder)  # a copy cut short
    shutil.copytree(source, folder.with_name(f".{spec.name}.copy"), dirs_exist_ok=True)
    folder.with_name(f".{spec.name}.copy").rename(folder)


def check_reusable(run: StackRun, spec: MemberSpec) -> ModelOutput:
    """A reused run's outputs, checked: a finished cv run on the stack's rows, folds and classes."""
    source = Path(spec.run)
    where = f"stack.members: '{spec.name}': run {source}"
    try:
        info = runs.read_status(source)
    except RunError as e:
        raise RunError(f"{where}: {e}") from None
    if info.get("kind", "fit") != CV_KIND:
        raise RunError(
            f"{where}: is a {info.get('kind', 'fit')} run, not a cv run; a reused member is a cv run"
        )
    if info.get("status") != FINISHED:
        raise RunError(
            f"{where}: is {info.get('status')}, not finished; "
            f"finish it first (ottotrain cv --resume {source})"
        )
    return _read(run, source, spec.name)


def _read(run: StackRun, folder: Path, name: str) -> ModelOutput:
    try:
        out = read_output(folder, name, 1, run.data.train.ids, run.data.fold_of, run.classes, run.id_column)
    except RunError as e:
        raise RunError(f"stack.members: '{name}': {e}") from None
    if (run.test is None) != (out.test is None):
        raise RunError(
            f"stack.members: '{name}': {folder} "
            + (
                "has no submission.csv; the stack has test rows"
                if out.test is None
                else "has test predictions; the stack has no data.test"
            )
        )
    return out


def cv_output(run: StackRun, name: str) -> ModelOutput:
    """A finished cv member's outputs, with its training and prediction seconds."""
    folder = run.member_dir(name)
    out = _read(run, folder, name)
    timings = json.loads((folder / "metrics.json").read_text(encoding="utf-8")).get("timings", {})
    out.train_seconds = float(timings.get("member_train_seconds", 0.0))
    out.predict_seconds = float(timings.get("predict_seconds", 0.0))
    return out
