"""``ottotrain predict``: a Kaggle submission from a finished run, with nothing but the run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ottotrain import runs
from ottotrain.data import id_name, load_test, missing_allowed
from ottotrain.errors import DataError
from ottotrain.io import check_output_path
from ottotrain.log import Log
from ottotrain.runs.artifacts import write_submission
from ottotrain.workflows.common import unseen_categories_line, unseen_missing_line
from ottotrain.workflows.report import unfinished_note
from ottotrain.workflows.stack.predict import open_any

# A run's own files, which a submission must never overwrite.
_RUN_FILES = (*runs.REQUIRED, "metrics.json", "history.csv", "summary.txt")


@dataclass(frozen=True)
class PredictResult:
    """What ``predict`` wrote and how fast."""

    output: str
    rows: int
    seconds: float
    rows_per_second: float | None
    warnings: list[str]


def predict(run_dir, test_csv, out=None, log=None) -> PredictResult:
    """Write a Kaggle submission for ``test_csv`` from a finished run (fit, cv or stack).

    Args:
        run_dir: a run directory made by ``fit``, ``cv`` (a cv run predicts with all its models)
            or ``stack`` (its levels recomputed from the saved members).
        test_csv: CSV with the id column and the features seen at fit.
        out: output path (default ``<run_dir>/submission-<test name>.csv``).
        log: where the progress goes (reading, nearest-neighbour features, predicting).

    Returns:
        the output path, the row count, rows per second and ``warnings`` (an
        unfinished run, missing values or categories the run never saw).
    """
    log = log or Log(0)
    run_dir = Path(run_dir)
    if out is not None:
        out = Path(out)
        if out.resolve().parent == run_dir.resolve() and out.name in _RUN_FILES:  # before its format
            raise DataError(f"{out}: would overwrite the run's own {out.name}; give another output file name")
        out = check_output_path(out)
        if out.exists() and out.resolve() == Path(test_csv).resolve():
            raise DataError(f"{out}: is the test file itself; give another output file name")
    with log.phase("Loading the run"):
        predictor = open_any(run_dir)
    s = predictor.state
    warnings = [note] if (note := unfinished_note(run_dir)) else []
    t0 = time.perf_counter()
    ids, x = load_test(
        test_csv,
        s.id_column,
        s.target_column,
        s.features,
        allow_missing=missing_allowed(s),
        types=s.column_types(),
        na_values=s.na_values or (),
    )
    pre = predictor.pre
    if unseen := pre.unseen_missing(x):
        warnings.append(unseen_missing_line(test_csv, unseen))
    if new := pre.unseen_categories(x):
        warnings.append(unseen_categories_line(test_csv, new))
    proba = predictor.predict_proba(x)
    if out is None:
        out = run_dir / f"submission-{Path(test_csv).name.split('.')[0]}.csv"
    write_submission(out, ids, proba, s.classes, id_name(s.id_column))
    dt = time.perf_counter() - t0
    return PredictResult(
        str(out),
        rows=int(len(ids)),
        seconds=round(dt, 3),
        rows_per_second=round(len(ids) / dt, 1) if dt > 0 else None,
        warnings=warnings,
    )
