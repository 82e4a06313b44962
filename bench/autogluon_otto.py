"""AutoGluon-Tabular on the stack's rows and folds: issue 29's side-by-side reference.

The rows of one fold F of the stack's folds (``ottotrain.data.fold_assignment(y, 5, 42)``, as
``ottotrain stack configs/otto-stack.yaml`` makes them) are held out; AutoGluon trains on the
other folds' rows with ``presets`` and ``time_limit``, and its log loss on fold F is set beside
the stack run's OOF log loss on the same rows (every stack model that predicted a fold-F row was
trained without it, so the two figures score the same rows the same way).

AutoGluon is never a dependency of ottotrain: the 'autogluon' extra (benchmarks only) installs it,
in an environment of its own because it pins pandas below 2.4 (its neural models want PyTorch;
the CPU wheel is enough):

    python -m venv .venv-ag && .venv-ag/bin/pip install -e '.[autogluon]' \\
        --extra-index-url https://download.pytorch.org/whl/cpu
    .venv-ag/bin/python bench/autogluon_otto.py --time-limit 3600 --stack runs/otto-stack
    python bench/autogluon_otto.py --smoke    # 1,500 generated rows, 40 s; skips without AutoGluon
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import common
import numpy as np
import pandas as pd

from ottotrain.data.split import fold_assignment
from ottotrain.metrics import log_loss


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("--time-limit", type=int, default=3600, help="AutoGluon's time_limit, seconds")
    ap.add_argument("--presets", default="best_quality")
    ap.add_argument("--fold", type=int, default=5, help="the held-out fold (1-based)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42, help="the stack config's seed (its folds)")
    ap.add_argument("--stack", type=Path, help="a finished stack run on the same data, scored on fold F")
    args = ap.parse_args(argv)
    if importlib.util.find_spec("autogluon") is None:
        print("skipped: AutoGluon is not installed here (see bench/autogluon_otto.py's docstring)")
        return
    run = common.Run.start(__file__, argv, args)
    with common.scratch() as work:
        data = common.data(run, work, smoke_rows=1_500)
        limit, presets = (
            run.pick(args.time_limit, args.time_limit // 4, 40),
            run.pick(args.presets, args.presets, "medium_quality"),
        )
        rows = measure(data.train, args.fold - 1, args.folds, args.seed, limit, presets, work, args.stack)
    body = common.table(["model", f"log loss on fold {args.fold}", "seconds"], rows)
    note = (
        f"AutoGluon-Tabular, presets={presets}, time_limit={limit} s, trained on the other folds' rows "
        f"(folds: fold_assignment(y, {args.folds}, seed {args.seed}))."
    )
    print(body)
    run.record(
        "stack", "AutoGluon beside the stack, on the same held-out fold", f"{note}\n\n{body}", data=data.label
    )


def measure(train_csv, fold, folds, seed, limit, presets, work: Path, stack: Path | None) -> list:
    from autogluon.tabular import TabularPredictor

    df = pd.read_csv(train_csv)
    target, ids = "target", df.pop("id")
    classes = sorted(df[target].unique())
    y = np.searchsorted(classes, df[target].to_numpy())
    fold_of = fold_assignment(y, folds, seed)
    fit_rows, held = df[fold_of != fold], df[fold_of == fold]
    t0 = time.perf_counter()
    predictor = TabularPredictor(label=target, eval_metric="log_loss", path=str(work / "ag"), verbosity=1)
    predictor.fit(fit_rows, presets=presets, time_limit=limit)
    seconds = time.perf_counter() - t0
    p = predictor.predict_proba(held.drop(columns=[target]))[classes].to_numpy()
    rows = [["AutoGluon (its best)", f"{log_loss(y[fold_of == fold], p):.4f}", f"{seconds:.0f}"]]
    board = predictor.leaderboard(held, silent=True)
    for _, r in board.head(8).iterrows():
        rows.append([f"  {r['model']}", f"{-r['score_test']:.4f}", f"{r['fit_time']:.0f}"])
    if stack is not None:
        oof = pd.read_csv(stack / "oof.csv")
        if not np.array_equal(oof["id"].to_numpy(), ids.to_numpy()):
            raise SystemExit(f"{stack}/oof.csv: its rows are not the training file's rows")
        on_fold = (oof["fold"].to_numpy() - 1) == fold
        p_stack = oof.loc[on_fold, classes].to_numpy()
        rows.append([f"ottotrain stack ({stack.name})", f"{log_loss(y[on_fold], p_stack):.4f}", ""])
    return rows


if __name__ == "__main__":
    main()
