"""Summarise finished (or partly finished) cv runs for bench/results/metric.md.

For each run: OOF log loss / accuracy of the ensemble, per-fold mean ± std, the
single-model OOF log loss of each seed (its K fold models alone, no bagging,
recomputed from the saved models when metrics.json lacks it), and the summed
training time of the members. Then the blend of all given runs (ottotrain.blend).

    python bench/metric_report.py --train ../shared/otto/train.csv.gz RUN_DIR...
    python bench/metric_report.py --smoke   # two small cv runs made here, on generated data
"""

from __future__ import annotations

import json
from pathlib import Path

import common
import numpy as np


def seed_oofs(run_dir: Path, train, folds: int, seeds: int):
    """OOF log loss of each complete seed alone, from the saved member models."""
    import pandas as pd

    from ottotrain.engine.inference import load_model, predict_proba
    from ottotrain.features import Preprocessor
    from ottotrain.metrics import log_loss

    fold_of = pd.read_csv(run_dir / "folds.csv")["fold"].to_numpy() - 1
    out = []
    for s in range(1, seeds + 1):
        names = [run_dir / "models" / f"fold{f}-seed{s}" for f in range(1, folds + 1)]
        if not all(n.with_suffix(".json").exists() for n in names):
            break
        p = np.zeros((len(train.y), len(train.classes)))
        for f, n in enumerate(names):
            va = fold_of == f
            pre = Preprocessor.from_json(n.with_suffix(".preprocess.json").read_text())
            p[va] = predict_proba(load_model(n.with_suffix(".keras")), pre.transform(train.x[va]))
        out.append(round(log_loss(train.y, p), 6))
    return out


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("--train", help="required unless --smoke")
    ap.add_argument("runs", nargs="*")
    args = ap.parse_args(argv)
    if args.smoke:
        with common.scratch() as work:
            train = common.synthetic(work, 1_500, 0).train
            _, runs = common.cv_runs(work, train, 2)
            return report(str(train), runs)
    if not (args.train and args.runs):
        ap.error("--train and RUN_DIR... are required (or --smoke)")
    report(args.train, args.runs)


def report(train_csv, run_dirs):

    from ottotrain.config import DataConfig
    from ottotrain.data import load_train
    from ottotrain.workflows.blend import blend

    train = load_train(DataConfig(train=train_csv))
    rows = []
    for r in map(Path, run_dirs):
        m = json.loads((r / "metrics.json").read_text())
        row = {
            "run": r.name,
            "oof_log_loss": m["oof_log_loss"],
            "oof_accuracy": m["oof_accuracy"],
            "fold_log_loss": f"{m['fold_log_loss_mean']:.4f} ± {m['fold_log_loss_std']:.4f}",
            "models": m.get("n_models", m.get("folds")),
        }
        if (r / "models").exists():
            row["seed_oof_log_loss"] = m.get("seed_oof_log_loss") or seed_oofs(
                r, train, m["folds"], m["seeds"]
            )
            row["member_train_seconds"] = m["timings"]["member_train_seconds"]
        else:
            row["total_seconds"] = m.get("total_seconds")
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(run_dirs) > 1:
        print(json.dumps(blend(run_dirs).to_dict()), flush=True)


if __name__ == "__main__":
    main()
