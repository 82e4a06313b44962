"""``ottotrain explain``: permutation importance of a finished run on labelled rows.

For every raw input column the rows' log loss is measured with that column's model inputs
permuted (see ``groups``: its value, TF-IDF value, 'was missing' indicator, one-hot columns or
embedding index, all with the same row permutation); the KNN features and the non-zero
count, which depend on every column, are a group each. fit and cv runs (TabM ensembles
included) preprocess the rows once and permute blocks of the preprocessed matrix; a stack
permutes raw columns and runs its own prediction path (docs/explain.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ottotrain import tracking
from ottotrain.data import load_labelled
from ottotrain.errors import DataError
from ottotrain.log import Log
from ottotrain.workflows.explain.groups import raw_groups
from ottotrain.workflows.explain.measure import CONFIDENCE, Losses, interval, measure
from ottotrain.workflows.explain.outputs import write_outputs
from ottotrain.workflows.explain.scorers import MatrixScorer, RawScorer
from ottotrain.workflows.predictor import Predictor
from ottotrain.workflows.stack.predict import StackPredictor, open_any

MIN_ROWS = 10  # fewer rows: a permutation moves too few values to measure anything
OUT_DIR = "explain"


@dataclass
class GroupImportance:
    """One group's log-loss increase: mean and t interval over the repeats, per class, rank."""

    group: str
    inputs: list[str]  # the model inputs permuted together (a stack: the raw column)
    mean: float
    ci_low: float  # NaN with one repeat
    ci_high: float
    per_class: list[float]  # each class's mean -log p increase, in ``Explanation.classes`` order
    repeats: list[float]  # each repeat's increase
    rank: int  # 1: the largest mean increase


@dataclass
class Explanation:
    """``explain``'s result: the groups by rank, the setting, and the files written."""

    run_dir: str
    data: str
    kind: str  # fit, cv or stack
    rows: int
    repeats: int
    seed: int
    confidence: float
    base_log_loss: float
    base_per_class: list[float]
    classes: list[str]
    groups: list[GroupImportance]
    files: list[Path] = field(default_factory=list)


def check_options(repeats: int, rows: int | None) -> None:
    """Refuse a setting that cannot give an importance (one line each)."""
    if repeats < 1:
        raise DataError(f"--repeats {repeats}: needs at least 1 permutation per column (5 is usual)")
    if rows is not None and rows < MIN_ROWS:
        raise DataError(f"--rows {rows}: needs at least {MIN_ROWS} rows to permute")


def labelled_rows(data_csv, state, rows: int | None, seed: int, log: Log) -> tuple[np.ndarray, np.ndarray]:
    """DATA_CSV's rows, checked against the run's columns (as evaluate checks them); ``rows`` of
    them drawn at random (seeded) when asked."""
    x, y = load_labelled(data_csv, state)
    if len(y) < MIN_ROWS:
        raise DataError(f"{data_csv}: {len(y)} labelled row(s); explain needs at least {MIN_ROWS}")
    if rows is not None and rows < len(y):
        keep = np.sort(np.random.default_rng(seed).choice(len(y), rows, replace=False))
        x, y = x[keep], y[keep]
    elif rows is not None:
        log(f"--rows {rows}: {data_csv} has {len(y):,} rows; using them all", 1)
    return x, y


def scorer_for(predictor: Predictor | StackPredictor, x: np.ndarray) -> MatrixScorer | RawScorer:
    """Blocks of the preprocessed rows for a fit or cv run; raw columns through a stack's own path."""
    if isinstance(predictor, StackPredictor):
        return RawScorer(predictor.predict_proba, x, raw_groups(list(predictor.state.features)))
    return MatrixScorer(predictor.members, x)


def ranked(losses: Losses, scorer: MatrixScorer | RawScorer) -> list[GroupImportance]:
    """The groups' importances, by mean increase (largest first)."""
    groups = [
        GroupImportance(
            g.name, list(g.inputs), *interval(values), per_class.mean(axis=0).tolist(), values.tolist(), 0
        )
        for g, values, per_class in zip(scorer.groups, losses.increase, losses.class_increase)
    ]
    groups.sort(key=lambda gi: -gi.mean)
    for rank, gi in enumerate(groups, 1):
        gi.rank = rank
    return groups


def explain(run_dir, data_csv, repeats=5, rows=None, seed=0, out=None, log=None) -> Explanation:
    """Permutation importance of a finished run (fit, cv or stack) on the labelled ``data_csv``.

    Args:
        run_dir: the run directory.
        data_csv: CSV with the target column and the feature columns seen at fit.
        repeats: permutations per group (the interval is over them).
        rows: use this many rows drawn at random (``seed``); None: every row.
        seed: seeds the row draw and every permutation.
        out: folder for importance.csv, importance.json and importance.png; None: RUN/explain.
        log: progress output (stderr).

    Returns:
        the ``Explanation``, its ``files`` the paths written.
    """
    log = log or Log(0)
    check_options(repeats, rows)
    predictor = open_any(run_dir)
    x, y = labelled_rows(data_csv, predictor.state, rows, seed, log)
    scorer = scorer_for(predictor, x)
    classes = list(predictor.state.classes)
    log(f"Permuting {len(scorer.groups)} groups x {repeats} repeats on {len(y):,} rows of {data_csv}", 1)
    losses = measure(scorer, y, len(classes), repeats, seed)
    result = Explanation(
        str(run_dir),
        str(data_csv),
        predictor.kind,
        len(y),
        repeats,
        seed,
        CONFIDENCE,
        losses.base,
        losses.base_per_class.tolist(),
        classes,
        ranked(losses, scorer),
    )
    result.files = write_outputs(result, Path(out) if out is not None else Path(run_dir) / OUT_DIR)
    tracking.log_outputs(run_dir, result.files, {"explain.base_log_loss": result.base_log_loss}, OUT_DIR, log)
    return result
