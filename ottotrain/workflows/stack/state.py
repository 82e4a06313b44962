"""What a stack run carries from step to step: its options, its data and folds, its clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ottotrain.config import Config
from ottotrain.data import id_name
from ottotrain.log import Log
from ottotrain.workflows.cv_member import FoldedData
from ottotrain.workflows.stack.budget import Budget
from ottotrain.workflows.stack.outputs import STACK_KIND

__all__ = ["STACK_KIND", "LeftOut", "StackData", "StackOptions", "StackRun"]

STACK_FILE = "stack.json"
MEMBERS, LEVEL2 = "members", "level2"
MEMBER_FILE = "member.json"


@dataclass(frozen=True)
class StackOptions:
    """How to run a stack: ``ottotrain stack``'s options."""

    run_dir: Path | str | None = None  # exact directory to create (default <runs_root>/<name>-stack-<time>)
    runs_root: Path | str = "runs"
    resume: Path | str | None = None  # a stack run to continue (or to grow by new members)
    smoke: bool = False  # a sample of the rows, one epoch per Keras model, few boosting rounds
    time_limit: str | None = None  # '2h', '45m', '90s', '3600' (default: stack.time_limit)
    config_name: str = "run"
    scheduler: str | None = None  # train the members on this Dask scheduler's workers
    workers: int | None = None  # train the members on this many local worker processes
    member_threads: int | None = None  # threads of every job (default: the cores shared out)
    track: str | bool | None = None  # MLflow tracking: a URI; None: the config's or the environment's


@dataclass
class LeftOut:
    """A member the stack did not use, and why."""

    name: str
    why: str


@dataclass
class StackData:
    """What every level-1 fold job gets: the training rows, their folds, the test rows."""

    folded: FoldedData
    test_x: np.ndarray | None


@dataclass
class StackRun:
    """One stack session: its config, run directory, data, options, clock and outcome so far."""

    cfg: Config
    run_dir: Path
    data: FoldedData
    test: tuple | None  # (ids, x) as load_data gives, or None
    options: StackOptions
    log: Log
    budget: Budget
    smoke: bool
    left_out: list[LeftOut] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def folds(self) -> int:
        return self.cfg.cv.folds

    @property
    def classes(self) -> list[str]:
        return list(self.data.train.classes)

    @property
    def id_column(self) -> str:
        return id_name(self.cfg.data.id_column)

    def member_dir(self, name: str) -> Path:
        return self.run_dir / MEMBERS / name
