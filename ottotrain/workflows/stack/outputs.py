"""What each model of a stack leaves for the levels above it: OOF and test probabilities.

Every model of a stack (a level-1 member, a level-2 learner, the top) writes, in its own
folder, the files a cv run writes: ``oof.csv`` (id, fold, target, one probability per
class; every training row predicted by a model that did not see it) and ``submission.csv``
(id, one probability per class, for the test rows), plus ``metrics.json``. A finished cv
run is therefore a level-1 member as it stands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ottotrain.errors import RunError
from ottotrain.runs import OOF_FILE
from ottotrain.runs.artifacts import proba_rows, write_predictions, write_submission

SUBMISSION = "submission.csv"
STACK_KIND = "stack"  # status.json's "kind" of a stack run


@dataclass
class ModelOutput:
    """One model's probabilities on the stack's rows, and what it cost."""

    name: str
    level: int  # 1, 2, or 3 for the top
    oof: np.ndarray  # (training rows, classes), in the stack's row order
    test: np.ndarray | None  # (test rows, classes), or None without test rows
    train_seconds: float = 0.0
    predict_seconds: float = 0.0


def write_output(
    folder: Path, out: ModelOutput, ids, fold_of, y, classes, id_column, target_column, test_ids
):
    """``folder/oof.csv`` and (with test rows) ``folder/submission.csv``, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    leading = {id_column: ids, "fold": np.asarray(fold_of) + 1, target_column: [classes[i] for i in y]}
    write_predictions(folder / OOF_FILE, out.oof, classes, leading)
    if out.test is not None:
        write_submission(folder / SUBMISSION, test_ids, out.test, classes, id_column)


def read_output(folder: Path, name: str, level: int, ids, fold_of, classes, id_column) -> ModelOutput:
    """A model's ``oof.csv`` and ``submission.csv``, checked against the stack's rows and folds.

    Raises:
        RunError: the files are missing, or hold other rows, folds or classes (one line saying which).
    """
    path = folder / OOF_FILE
    if not path.exists():
        raise RunError(f"{folder}: has no {OOF_FILE}; is it a finished cv run?")
    oof = pd.read_csv(path)
    missing = [c for c in (id_column, "fold", *classes) if c not in oof.columns]
    if missing:
        raise RunError(f"{path}: lacks the column(s) {', '.join(map(str, missing))} the stack needs")
    if len(oof) != len(ids) or not np.array_equal(oof[id_column].to_numpy(), np.asarray(ids)):
        raise RunError(
            f"{path}: its rows differ from the stack's ({len(oof)} rows against {len(ids)}); "
            "a member must be a cv run on the stack's data.train"
        )
    if not np.array_equal(oof["fold"].to_numpy() - 1, np.asarray(fold_of)):
        raise RunError(
            f"{path}: its folds differ from the stack's; a member must use the stack's seed and "
            "cv.folds (run it again from the stack, or with the same seed and folds)"
        )
    test = None
    if (folder / SUBMISSION).exists():
        test = proba_rows(pd.read_csv(folder / SUBMISSION)[list(classes)].to_numpy())
    return ModelOutput(name, level, proba_rows(oof[list(classes)].to_numpy()), test)
