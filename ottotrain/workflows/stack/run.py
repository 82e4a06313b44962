"""``ottotrain stack``: level-1 members, level-2 learners on their OOF predictions, the top.

The run directory (see docs/stack.md)::

    config.yaml, status.json ("kind": "stack"), folds.csv
    stack.json          folds, seed, classes, the members, level2, left_out, time_limit_seconds
    members/<name>/     each level-1 model (a Keras member: a complete cv run)
    level2/<name>/      each level-2 learner
    top.json, oof.csv, submission.csv, metrics.json, leaderboard.csv   the top's
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ottotrain import execute, runs, tracking
from ottotrain.config import Config
from ottotrain.config.stack_section import Level2Spec
from ottotrain.data import fold_assignment
from ottotrain.errors import ConfigError, DataError
from ottotrain.io import atomic_path, write_json
from ottotrain.log import Log
from ottotrain.runs import FOLDS_FILE
from ottotrain.runs.lifecycle import running
from ottotrain.workflows.common import ReadsAsDict, create_run_dir, load_data
from ottotrain.workflows.cv_member import FoldedData
from ottotrain.workflows.stack.budget import Budget, format_seconds, parse_time_limit
from ottotrain.workflows.stack.leaderboard import write_results
from ottotrain.workflows.stack.level1 import (
    SMOKE_ROUNDS,
    check_reused,
    member_entries,
    prepare_members,
    train_level1,
)
from ottotrain.workflows.stack.level2 import check_features, reuse_level2, train_level2
from ottotrain.workflows.stack.outputs import ModelOutput
from ottotrain.workflows.stack.resume import check_stack_resumable
from ottotrain.workflows.stack.state import (
    LEVEL2,
    STACK_FILE,
    STACK_KIND,
    LeftOut,
    StackOptions,
    StackRun,
)
from ottotrain.workflows.stack.top import TOP_NAME, combine


@dataclass
class StackResult(ReadsAsDict):
    """What a stack scored (its top, nested on the folds where the top gives it) and where it is."""

    oof_log_loss: float
    oof_accuracy: float
    best_model: str  # the best single model below the top (a member or a level-2 learner)
    best_model_log_loss: float
    weights: dict[str, float]  # the top's, of the models it chose
    models: int  # level-1 and level-2 models that finished
    left_out: list[LeftOut]
    run_dir: Path

    def summary(self) -> dict:
        """The result as plain data (``--json``)."""
        return asdict(self) | {"run_dir": str(self.run_dir)}


def stack_run_name(name: str) -> str:
    return name if name == "stack" or name.endswith(("-stack", "_stack")) else f"{name}-stack"


def run_stack(
    cfg: Config, options: StackOptions | None = None, *, log: Log | None = None, **fields
) -> StackResult:
    """Train a stack into a run directory (or continue one); return its scores.

    Raises:
        ConfigError: not a stack config, a bad member or level-2 feature, a bad --time-limit.
        RunError: a reused run that does not fit the stack, a run that cannot be resumed.
    """
    opts, log = options or StackOptions(**fields), log or Log(1)
    if cfg.stack is None:
        raise ConfigError(f"{cfg.source}: has no 'stack' section; train it with 'ottotrain cv', or add one")
    execute.check_options(opts.scheduler, opts.workers)
    limit = parse_time_limit(
        opts.time_limit or cfg.stack.time_limit, "--time-limit" if opts.time_limit else "stack.time_limit:"
    )
    budget = Budget(limit)
    resume_dir, smoke = _begin(cfg, opts)
    settings = tracking.resolve(cfg, opts.track, cfg.name or opts.config_name, resume_dir)
    with tracking.process(settings, log) as side:
        configs = prepare_members(cfg)
        run = _loaded(cfg, opts, resume_dir, smoke, log, budget)
        status = runs.RunStatus(kind=STACK_KIND, smoke=smoke)
        run.run_dir = resume_dir or create_run_dir(
            cfg,
            opts.run_dir,
            opts.runs_root,
            stack_run_name(cfg.name or opts.config_name),
            status,
            lambda d: _first_files(run, d),
        )
        _log_plan(run, limit)
        with (
            running(run.run_dir, log, status, lambda: _interrupted(run.run_dir)),
            tracking.tracked(side, cfg, run.run_dir, STACK_KIND, log),
        ):
            result = _stack(run, configs)
            runs.write_status(run.run_dir, runs.FINISHED, status)
        return result


def _loaded(cfg: Config, opts: StackOptions, resume_dir, smoke: bool, log: Log, budget: Budget) -> StackRun:
    """The stack's run, its rows read and folded, and the reused members checked against them."""
    train, test = load_data(cfg, smoke)
    for note in train.notes:  # the Keras members' cv runs add their own notes on the test rows
        log(f"Warning: {note}", 1)
    try:
        data = FoldedData(train, fold_assignment(train.y, cfg.cv.folds, cfg.seed))
    except DataError as e:
        raise DataError(f"{train.path}: {e}") from None
    check_features(cfg.stack.level2, train.features, cfg.source)
    run = StackRun(cfg, resume_dir or Path(), data, test, opts, log, budget, smoke)
    check_reused(run, fresh=resume_dir is None)
    return run


def _begin(cfg: Config, opts: StackOptions) -> tuple[Path | None, bool]:
    """The run to resume (checked) or None, and whether this is a smoke run."""
    if opts.resume:
        info = check_stack_resumable(opts.resume, cfg)
        return Path(opts.resume), opts.smoke or bool(info.get("smoke"))
    if opts.run_dir is not None:
        runs.check_run_dir_free(opts.run_dir)
    return None, opts.smoke


def _first_files(run: StackRun, run_dir: Path) -> None:
    ids, fold_of = run.data.train.ids, run.data.fold_of
    with atomic_path(run_dir / FOLDS_FILE) as tmp:
        pd.DataFrame({run.id_column: ids, "fold": fold_of + 1}).to_csv(tmp, index=False)
    run.run_dir = run_dir
    write_stack_json(run, [])


def write_stack_json(run: StackRun, finished: list[ModelOutput]) -> None:
    """stack.json: the members that finished (or all, before any has), level 2, what was left out."""
    done = {o.name for o in finished}
    members = [e for e in member_entries(run.cfg) if not finished or e["name"] in done]
    write_json(
        run.run_dir / STACK_FILE,
        {
            "folds": run.folds,
            "seed": run.cfg.seed,
            "classes": run.classes,
            "members": members,
            "level2": [s.name for s in run.cfg.stack.level2],
            "left_out": [asdict(x) for x in run.left_out],
            "time_limit_seconds": run.budget.limit,
        },
    )


def _log_plan(run: StackRun, limit: float | None) -> None:
    train, test = run.data.train, run.test
    run.log(
        f"Data: {len(train.y)} rows, {len(train.features)} features, {len(train.classes)} classes"
        + (f", {len(test[0])} test rows" if test else "")
        + (" [smoke]" if run.smoke else ""),
        1,
    )
    stack = run.cfg.stack
    run.log(
        f"Stack: {len(stack.members)} members, {len(stack.level2)} level-2 learner(s), "
        f"top: {stack.top.method}, {run.folds} folds"
        + (f", time limit {format_seconds(limit)}" if limit else ""),
        1,
    )
    run.log(f"Run directory: {run.run_dir}", 1)


def _interrupted(run_dir: Path) -> str:
    kept = run_dir / "members"
    return f"finished members are kept in {kept}; continue with: ottotrain stack --resume {run_dir}"


def _stack(run: StackRun, configs: dict[str, Config]) -> StackResult:
    t0 = time.perf_counter()
    level1 = train_level1(run, configs)
    run.timings["level1_seconds"] = round(time.perf_counter() - t0, 3)
    t1 = time.perf_counter()
    level2 = [_level2(run, spec, level1) for spec in run.cfg.stack.level2]
    run.timings["level2_seconds"] = round(time.perf_counter() - t1, 3)
    outputs = level1 + level2
    top = combine(outputs, run.data.train.y, run.cfg.stack.top, fold_of=run.data.fold_of)
    write_stack_json(run, level1)
    test_ids = None if run.test is None else run.test[0]
    rows = write_results(
        run.run_dir,
        outputs,
        top,
        run.data,
        test_ids,
        run.cfg.data,
        left_out=[asdict(x) for x in run.left_out],
        timings=run.timings,
    )
    _log_end(run)
    below = [r for r in rows if r.model in {o.name for o in outputs}]
    best = min(below, key=lambda r: r.oof_log_loss)
    top_row = next(r for r in rows if r.model == TOP_NAME)
    return StackResult(
        oof_log_loss=top_row.oof_log_loss,
        oof_accuracy=top_row.oof_accuracy,
        best_model=best.model,
        best_model_log_loss=best.oof_log_loss,
        weights={n: w for n, w in top.weights.items() if w > 0},
        models=len(outputs),
        left_out=run.left_out,
        run_dir=run.run_dir,
    )


def _level2(run: StackRun, spec: Level2Spec, inputs: list[ModelOutput]) -> ModelOutput:
    folder = run.run_dir / LEVEL2 / spec.name
    if run.smoke and spec.net is not None:
        net = spec.net.model_copy(update={"train": spec.net.train.model_copy(update={"epochs": 1})})
        spec = spec.model_copy(update={"net": net})
    if run.smoke and spec.lightgbm is not None:
        rounds = min(spec.lightgbm.max_rounds, SMOKE_ROUNDS)
        spec = spec.model_copy(update={"lightgbm": spec.lightgbm.model_copy(update={"max_rounds": rounds})})
    done = reuse_level2(spec, inputs, run.data, run.test is not None, folder, run.id_column)
    if done is not None:
        run.log(f"level 2 {spec.name}: finished earlier on the same members, reused", 1)
        return done
    shutil.rmtree(folder, ignore_errors=True)  # trained again on the members there are now
    threads = run.options.member_threads or execute.default_threads()
    return train_level2(
        spec,
        inputs,
        run.data,
        run.test,
        folder,
        run.log,
        inner_validation=run.cfg.stack.inner_validation,
        seed=run.cfg.seed,
        threads=threads,
        data_cfg=run.cfg.data,
    )


def _log_end(run: StackRun) -> None:
    for x in run.left_out:
        run.log(f"Left out: {x.name}: {x.why}", 1)
    if run.left_out:
        run.log(
            f"The stack was made of the members that finished; 'ottotrain stack --resume {run.run_dir}' "
            "(with a longer --time-limit) trains the rest",
            1,
        )
