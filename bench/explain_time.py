"""The time of ``ottotrain explain`` on Otto (93 columns x 5 repeats on 10,000 rows), side by side
with the naive way, for a fit run of configs/otto.yaml with and without its KNN features.

explain preprocesses the 10,000 rows once per run and permutes blocks of the preprocessed
matrix, many permutations per predict call. The naive way permutes one raw column and calls
the run's ``predict_proba`` on the whole table, for every (column, repeat): every permutation
preprocesses all the rows again, the KNN features' neighbour search included. Both draw the
same permutations (``scorers.permutation``), so where the run has no row-wide inputs (the run
without KNN) their importances agree, which is checked. The naive way of the KNN run is slow
(a neighbour search of 10,000 rows per permutation): it runs on the first ``--naive-columns-knn``
columns and is scaled to 93 (said in the table). The runs train for ``--epochs`` epochs: the
time of explain depends on the net's size and the rows, not on how long it trained.
By default both explain the training file's rows (`--data CSV`: another labelled file): the
importances of the training rows are inflated, the KNN group's most, but the time is the same.

    python bench/explain_time.py                       # the real Otto train file where found
    python bench/explain_time.py --run-knn RUN --run-plain RUN   # finished runs of configs/otto.yaml
    python bench/explain_time.py --quick               # naive way on 5 columns
    python bench/explain_time.py --smoke               # 1,500 generated rows, seconds

Writes its block of bench/results/explain.md.
"""

from __future__ import annotations

import time
from pathlib import Path

import common
import numpy as np


def train_run(work: Path, train: Path, epochs: int, knn: bool) -> Path:
    """A fit run of configs/otto.yaml on ``train`` (no test file), made through the CLI here."""
    from ottotrain.cli import main as cli

    run = work / ("fit-knn" if knn else "fit-plain")
    sets = [f"data.train={train}", "data.test=null", f"train.epochs={epochs}"]
    if not knn:
        sets.append("data.knn=null")
    args = ["fit", str(common.ROOT / "configs" / "otto.yaml"), "--run-dir", str(run), "-q"]
    cli([*args, *(x for kv in sets for x in ("--set", kv))], standalone_mode=False)
    return run


def batched(run: Path, csv: Path, rows: int, repeats: int) -> tuple[float, object]:
    """explain end to end (reading the CSV, preprocessing, permutations, files): seconds, result."""
    from ottotrain.features import knn
    from ottotrain.workflows.explain import explain

    knn._MEMO.clear()
    t = time.perf_counter()
    result = explain(run, csv, repeats=repeats, rows=rows, seed=0, out=run / "explain")
    return time.perf_counter() - t, result


def naive(run: Path, csv: Path, rows: int, repeats: int, columns: int) -> tuple[float, np.ndarray]:
    """The naive way on the first ``columns`` columns: seconds (rows read outside), increases."""
    from ottotrain.features import knn
    from ottotrain.log import Log
    from ottotrain.metrics import log_loss
    from ottotrain.workflows.explain import labelled_rows
    from ottotrain.workflows.explain.scorers import permutation
    from ottotrain.workflows.predictor import open_run

    predictor = open_run(run)
    x, y = labelled_rows(csv, predictor.state, rows, 0, Log(0))
    knn._MEMO.clear()
    t = time.perf_counter()
    base = log_loss(y, predictor.predict_proba(x))
    inc = np.empty((columns, repeats))
    for r in range(repeats):
        for j in range(columns):
            xp = x.copy()
            xp[:, j] = x[permutation(0, r, j, len(x)), j]
            inc[j, r] = log_loss(y, predictor.predict_proba(xp)) - base
    return time.perf_counter() - t, inc


def compare(name, run, csv, rows, repeats, columns) -> tuple[list, str]:
    """One run's row of the table, and how far apart the two ways' importances are."""
    b_s, result = batched(run, csv, rows, repeats)
    n_s, n_inc = naive(run, csv, rows, repeats, columns)
    order = _file_order(run)  # the naive side's columns: the first ones of the file
    by = {g.group: g.repeats for g in result.groups}
    apart = np.abs(np.array([by[f] for f in order[:columns]]) - n_inc).max()
    scaled = n_s * len(order) / columns
    row = [name, len(result.groups), f"{b_s:.1f}", f"{n_s:.1f} ({columns} columns)", f"{scaled:.1f}"]
    return [*row, f"{scaled / b_s:.1f}"], f"{name}: the two ways' increases differ by at most {apart:.2g}"


def _file_order(run: Path) -> list[str]:
    from ottotrain.io import read_json

    return read_json(run / "preprocess.json")["features"]


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("--run-knn", type=Path, help="a finished fit run of configs/otto.yaml (data.knn on)")
    ap.add_argument("--run-plain", type=Path, help="the same without data.knn")
    ap.add_argument("--data", type=Path, help="the labelled CSV to explain on (default: Otto's train file)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the runs trained here")
    ap.add_argument("--naive-columns-knn", type=int, help="columns the naive way runs on for the KNN run")
    a = ap.parse_args(argv)
    r = common.Run.start(__file__, argv, a)
    rows, repeats = r.pick(10_000, 10_000, 300), r.pick(5, 5, 2)
    with common.scratch() as work:
        d = common.data(r, work)
        csv = a.data or d.train
        runs = {
            "with KNN": a.run_knn or train_run(work, d.train, r.pick(a.epochs, 1, 1), knn=True),
            "without KNN": a.run_plain or train_run(work, d.train, r.pick(a.epochs, 1, 1), knn=False),
        }
        lines, checks = [], []
        for name, run in runs.items():
            width = len(_file_order(run))
            cols = r.pick(width if name == "without KNN" else 10, 5, 3)
            if name == "with KNN" and a.naive_columns_knn:
                cols = a.naive_columns_knn
            row, check = compare(name, run, csv, rows, repeats, min(cols, width))
            lines.append(row)
            checks.append(check)
    header = ("run", "groups", "explain s", "naive s (measured)", "naive s, all columns", "naive / explain")
    body = (
        common.table(header, lines)
        + f"\n\n{rows:,} rows x {repeats} repeats of {csv.name}; explain: end to end (reading the CSV, "
        "preprocessing once, the permutations in batches of up to 262,144 rows per predict call, "
        "the files); naive: one full predict_proba (preprocessing, KNN search, the net) per "
        "(column, repeat), its measured columns scaled to all. " + "; ".join(checks) + "."
    )
    print(body)
    r.record("explain", "explain's time: 93 columns x 5 repeats on 10,000 rows", body, data=d.label)


if __name__ == "__main__":
    main()
