"""LightGBM baseline on the same stratified folds as 'ottotrain cv' (dev-only: needs lightgbm).

Same protocol as the neural cv runs: 5 stratified folds from ottotrain.data.fold_assignment
with the config seed (42 in configs/otto*.yaml), each fold's model early-stopped on that
fold, one OOF prediction per training row, test probabilities averaged over the folds.
It writes a blendable run directory (status kind "cv", oof.csv, folds.csv, metrics.json,
submission.csv; no Keras models, so 'ottotrain predict' cannot use it):

    python bench/metric_lgbm.py --train ../shared/otto/train.csv.gz \
        --test ../shared/otto/test.csv.gz --out /tmp/metric/runs/lgbm
    python bench/metric_lgbm.py --smoke   # 1,500 generated rows into a scratch folder
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import common
import numpy as np


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("--train", help="required unless --smoke")
    ap.add_argument("--test")
    ap.add_argument("--out", help="the run directory to write (required unless --smoke)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42, help="fold seed: the config seed of the cv runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--learning-rate", type=float, default=0.1)
    args = ap.parse_args(argv)
    if args.smoke:
        with common.scratch() as work:
            d = common.synthetic(work, 1_500, 300)
            # One thread: LightGBM's OpenMP threads spin and crawl on a busy shared machine.
            small = {"train": str(d.train), "test": str(d.test), "out": work / "lgbm", "threads": 1}
            return run(argparse.Namespace(**{**vars(args), **small, "learning_rate": 0.3}))
    if not (args.train and args.out):
        ap.error("--train and --out are required (or --smoke)")
    run(args)


def run(args):
    import lightgbm as lgb
    import pandas as pd

    from ottotrain import runs
    from ottotrain.config import DataConfig
    from ottotrain.data import fold_assignment, load_test, load_train
    from ottotrain.io import write_json
    from ottotrain.metrics import log_loss

    t_start = time.perf_counter()
    train = load_train(DataConfig(train=args.train))
    folds = fold_assignment(train.y, args.folds, args.seed)
    test = load_test(args.test, "id", "target", train.features) if args.test else None
    params = {
        "objective": "multiclass",
        "num_class": len(train.classes),
        "learning_rate": args.learning_rate,
        "num_leaves": 31,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.5,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "num_threads": args.threads,
        "verbose": -1,
        "seed": args.seed,
    }
    oof = np.zeros((len(train.y), len(train.classes)))
    p_test = np.zeros((len(test[0]), len(train.classes))) if test else None
    per_fold = []
    for f in range(args.folds):
        tr, va = folds != f, folds == f
        t0 = time.perf_counter()
        booster = lgb.train(
            params,
            lgb.Dataset(train.x[tr], train.y[tr]),
            num_boost_round=3000,
            valid_sets=[lgb.Dataset(train.x[va], train.y[va])],
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        oof[va] = booster.predict(train.x[va], num_iteration=booster.best_iteration)
        if test:
            p_test += booster.predict(test[1], num_iteration=booster.best_iteration) / args.folds
        loss = log_loss(train.y[va], oof[va])
        per_fold.append(
            {
                "fold": f + 1,
                "log_loss": round(loss, 6),
                "rounds": booster.best_iteration,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(per_fold[-1], flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    df = pd.DataFrame(oof, columns=train.classes)
    df.insert(0, "target", np.asarray(train.classes)[train.y])
    df.insert(0, "fold", folds + 1)
    df.insert(0, "id", train.ids)
    df.to_csv(out / "oof.csv", index=False, float_format="%.6g")
    pd.DataFrame({"id": train.ids, "fold": folds + 1}).to_csv(out / "folds.csv", index=False)
    if test:
        s = pd.DataFrame(p_test, columns=train.classes)
        s.insert(0, "id", test[0])
        s.to_csv(out / "submission.csv", index=False, float_format="%.6g")
    fl = [r["log_loss"] for r in per_fold]
    metrics = {
        "kind": "cv",
        "model": "lightgbm",
        "params": params,
        "oof_log_loss": round(log_loss(train.y, oof), 6),
        "oof_accuracy": round(float((oof.argmax(1) == train.y).mean()), 6),
        "fold_log_loss": fl,
        "fold_log_loss_mean": round(float(np.mean(fl)), 6),
        "fold_log_loss_std": round(float(np.std(fl)), 6),
        "folds": args.folds,
        "seeds": 1,
        "per_fold": per_fold,
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "lightgbm": lgb.__version__,
    }
    write_json(out / "metrics.json", metrics)
    runs.write_status(out, runs.FINISHED, runs.RunStatus(kind="cv", folds=args.folds, seeds=1))
    print(
        json.dumps(
            {
                k: metrics[k]
                for k in (
                    "oof_log_loss",
                    "oof_accuracy",
                    "fold_log_loss_mean",
                    "fold_log_loss_std",
                    "total_seconds",
                )
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
