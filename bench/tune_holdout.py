"""Score cv runs' OOF predictions apart on the rows a tune study chose with and the others.

A study scores its trials on the config's validation split (15 % of the training rows), so a
found config's OOF log loss over all rows is slightly optimistic on those rows. This prints,
for each cv run, the OOF log loss on all rows, on the rows outside the study's split (never
used to choose anything) and on the split's rows.

    python bench/tune_holdout.py --config configs/otto-tune.yaml \
        --train ../shared/otto/train.csv.gz RUN_DIR...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ottotrain.config import load_config
from ottotrain.data import id_name, load_train, train_val_split
from ottotrain.metrics import log_loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="the study's config (its seed and split)")
    ap.add_argument("--train", required=True)
    ap.add_argument("runs", nargs="+", type=Path)
    a = ap.parse_args()
    cfg = load_config(a.config, [f"data.train={a.train}", "data.test=null"])
    train = load_train(cfg.data)
    _, va = train_val_split(train.y, cfg.data.validation_split, cfg.seed, cfg.data.stratify)
    chosen = np.zeros(len(train.y), dtype=bool)
    chosen[va] = True
    print(f"{len(train.y)} rows, {chosen.sum()} in the study's validation split")
    print("| run | OOF all rows | rows outside the split | the split's rows |")
    print("| --- | --- | --- | --- |")
    for run in a.runs:
        oof = pd.read_csv(run / "oof.csv")
        if not np.array_equal(oof[id_name(cfg.data.id_column)].to_numpy(), train.ids):
            raise SystemExit(f"{run}: oof.csv rows are not the training file's, in order")
        p = oof[train.classes].to_numpy()
        scores = [log_loss(train.y[m], p[m]) for m in (slice(None), ~chosen, chosen)]
        print(f"| {run.name} | " + " | ".join(f"{s:.4f}" for s in scores) + " |")


if __name__ == "__main__":
    main()
