"""Which boosted-tree library the stack's `lightgbm` member uses: LightGBM against XGBoost on one
Otto fold, the same rows, the same early-stopping rows, as alike settings as the two allow.

The fold is fold 1 of the cv folds (`ottotrain.data.fold_assignment`, 5 folds, seed 42); the
early-stopping rows are 10 % of its training rows (`ottotrain.data.inner_split`), as a stack
member's are. LightGBM runs through `ottotrain.learners` (the member itself) with
LightGBMMember's defaults; XGBoost gets the matching settings (hist, lossguide, max_leaves =
num_leaves, subsample = bagging_fraction, colsample_bytree = feature_fraction, lambda =
lambda_l2; min_child_weight 1, XGBoost's default, since its hessian sum is not a row count).
XGBoost's softmax objective takes the hessian as 2p(1-p), LightGBM's as K/(K-1) p(1-p) (9/8
on Otto), so at the same learning rate XGBoost's leaf values are about half as large (0.56x):
LightGBM also runs at half the learning rate, to tell the step length from the library.
XGBoost is measured only where it is installed (`pip install xgboost-cpu`, the CPU build).

    python bench/gbdt_choice.py              # real Otto fold (LightGBMMember defaults), 2 threads
    python bench/gbdt_choice.py --quick      # learning rate 0.2
    python bench/gbdt_choice.py --smoke      # 1,500 generated rows, a few rounds

Writes its block of bench/results/gbdt.md.
"""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import dataclass

import common
import numpy as np


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray
    fit: np.ndarray
    stop: np.ndarray
    test: np.ndarray
    n_classes: int


@dataclass
class Side:
    library: str
    log_loss: float
    accuracy: float
    rounds: int
    fit_seconds: float
    predict_seconds: float
    model_mb: float


def installed_mb(dist: str) -> str:
    """Disk size of an installed distribution's files (MB), or '-' when it is not installed."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return "-"
    return f"{sum(f.locate().stat().st_size for f in files if f.locate().exists()) / 1e6:.1f}"


def split(train_path, fold: int, seed: int) -> Split:
    from ottotrain.config import DataConfig
    from ottotrain.data import fold_assignment, inner_split, load_train

    tr = load_train(DataConfig(train=str(train_path)))
    folds = fold_assignment(tr.y, 5, seed)
    fit, stop = inner_split(np.flatnonzero(folds != fold - 1), tr.y, 0.1, seed)
    x = np.asarray(tr.x, np.float32)
    return Split(x, np.asarray(tr.y), fit, stop, np.flatnonzero(folds == fold - 1), len(tr.classes))


def score(name: str, s: Split, p, rounds, fit_s, predict_s, model_bytes) -> Side:
    from ottotrain.metrics import log_loss

    acc = float((p.argmax(axis=1) == s.y[s.test]).mean())
    return Side(name, log_loss(s.y[s.test], p), acc, int(rounds), fit_s, predict_s, model_bytes / 1e6)


def lightgbm_side(s: Split, params, threads: int, seed: int, label: str = "") -> Side:
    import tempfile
    from pathlib import Path

    import lightgbm

    from ottotrain import learners

    learner = learners.make("lightgbm", params, n_classes=s.n_classes, seed=seed, threads=threads)
    info = learner.fit(s.x[s.fit], s.y[s.fit], s.x[s.stop], s.y[s.stop])
    t = time.perf_counter()
    p = learner.predict_proba(s.x[s.test])
    predict_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        learner.save(d)
        size = (Path(d) / "model.txt").stat().st_size
    name = f"LightGBM {lightgbm.__version__}{label}"
    return score(name, s, p, info.rounds, info.seconds, predict_s, size)


def xgboost_side(s: Split, params, threads: int, seed: int) -> Side | None:
    try:
        import xgboost as xgb
    except ImportError:
        return None
    settings = {
        "objective": "multi:softprob",
        "num_class": s.n_classes,
        "eval_metric": "mlogloss",
        "eta": params.learning_rate,
        "tree_method": "hist",
        "grow_policy": "lossguide",
        "max_leaves": params.num_leaves,
        "max_depth": 0,
        "min_child_weight": 1,
        "subsample": params.bagging_fraction,
        "colsample_bytree": params.feature_fraction,
        "lambda": params.lambda_l2,
        "nthread": threads,
        "seed": seed,
    }
    t = time.perf_counter()
    dfit = xgb.DMatrix(s.x[s.fit], s.y[s.fit], nthread=threads)
    dstop = xgb.DMatrix(s.x[s.stop], s.y[s.stop], nthread=threads)
    booster = xgb.train(
        settings,
        dfit,
        params.max_rounds,
        evals=[(dstop, "stop")],
        early_stopping_rounds=params.early_stopping_rounds,
        verbose_eval=False,
    )
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    kept = booster.best_iteration + 1
    p = booster.predict(xgb.DMatrix(s.x[s.test], nthread=threads), iteration_range=(0, kept))
    predict_s = time.perf_counter() - t
    size = len(booster[:kept].save_raw("json"))
    return score(f"XGBoost {xgb.__version__}", s, p, kept, fit_s, predict_s, size)


def main(argv=None):
    from ottotrain.config.stack_section import LightGBMMember

    ap = common.parser(__doc__)
    ap.add_argument("--train", help="the training CSV (default: the real Otto file where found)")
    ap.add_argument("--fold", type=int, default=1, help="which of the 5 folds scores them")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    r = common.Run.start(__file__, argv, a)
    params = LightGBMMember(
        learning_rate=r.pick(0.05, 0.2, 0.3),
        max_rounds=r.pick(5000, 2000, 20),
        early_stopping_rounds=r.pick(100, 30, 5),
        num_leaves=r.pick(63, 63, 7),
    )
    threads = 1 if r.smoke else a.threads  # smoke: OpenMP threads spin on a busy machine
    with common.scratch() as work:
        d = common.Data(a.train, None, a.train, True) if a.train else common.data(r, work)
        s = split(d.train, a.fold, a.seed)
    half = params.model_copy(update={"learning_rate": params.learning_rate / 2})
    sides = [
        lightgbm_side(s, params, threads, a.seed),
        lightgbm_side(s, half, threads, a.seed, f", learning rate {half.learning_rate:g}"),
        xgboost_side(s, params, threads, a.seed),
    ]
    rows = [
        (x.library, f"{x.log_loss:.4f}", f"{x.accuracy:.4f}", x.rounds, f"{x.fit_seconds:.1f}")
        + (f"{x.predict_seconds:.2f}", f"{x.model_mb:.1f}")
        for x in sides
        if x is not None
    ]
    header = ("library", "fold log loss", "accuracy", "rounds", "fit s", "predict s", "model MB")
    body = common.table(header, rows) + (
        f"\n\nFold {a.fold} of 5 (seed {a.seed}): {len(s.fit):,} fit rows, {len(s.stop):,} early-stopping"
        f" rows, {len(s.test):,} scored rows; {threads} thread(s); learning rate {params.learning_rate},"
        f" {params.num_leaves} leaves. Installed size (MB): lightgbm {installed_mb('lightgbm')},"
        f" xgboost-cpu {installed_mb('xgboost-cpu')}, xgboost {installed_mb('xgboost')}."
        + ("" if sides[-1] else " XGBoost is not installed: LightGBM alone.")
    )
    print(body)
    r.record("gbdt", "Boosted trees: LightGBM against XGBoost, one fold", body, data=d.label)


if __name__ == "__main__":
    main()
