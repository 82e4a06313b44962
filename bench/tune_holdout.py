"""Score cv runs' OOF predictions apart on the rows a tune study chose with and the others.

A study scores its trials on the config's validation split (15 % of the training rows), so a
found config's OOF log loss over all rows is slightly optimistic on those rows. This prints,
for each cv run, the OOF log loss on all rows, on the rows outside the study's split (never
used to choose anything) and on the split's rows.

    python bench/tune_holdout.py --config configs/otto-tune.yaml \
        --train ../shared/otto/train.csv.gz RUN_DIR...
    python bench/tune_holdout.py --smoke   # two small cv runs made here, on generated data
"""

from __future__ import annotations

from pathlib import Path

import common
import numpy as np
import pandas as pd

from ottotrain.config import load_config
from ottotrain.data import id_name, load_train, train_val_split
from ottotrain.metrics import log_loss


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("--config", help="the study's config (its seed and split); required unless --smoke")
    ap.add_argument("--train", help="required unless --smoke")
    ap.add_argument("runs", nargs="*", type=Path)
    a = ap.parse_args(argv)
    if a.smoke:
        with common.scratch() as work:
            train = common.synthetic(work, 1_500, 0).train
            config, runs = common.cv_runs(work, train, 2)
            return holdout(config, train, runs)
    if not (a.config and a.train and a.runs):
        ap.error("--config, --train and RUN_DIR... are required (or --smoke)")
    holdout(a.config, a.train, a.runs)


def holdout(config, train_csv, run_dirs):
    cfg = load_config(config, [f"data.train={train_csv}", "data.test=null"])
    train = load_train(cfg.data)
    _, va = train_val_split(train.y, cfg.data.validation_split, cfg.seed, cfg.data.stratify)
    chosen = np.zeros(len(train.y), dtype=bool)
    chosen[va] = True
    print(f"{len(train.y)} rows, {chosen.sum()} in the study's validation split")
    print("| run | OOF all rows | rows outside the split | the split's rows |")
    print("| --- | --- | --- | --- |")
    for run in run_dirs:
        oof = pd.read_csv(run / "oof.csv")
        if not np.array_equal(oof[id_name(cfg.data.id_column)].to_numpy(), train.ids):
            raise SystemExit(f"{run}: oof.csv rows are not the training file's, in order")
        p = oof[train.classes].to_numpy()
        scores = [log_loss(train.y[m], p[m]) for m in (slice(None), ~chosen, chosen)]
        print(f"| {run.name} | " + " | ".join(f"{s:.4f}" for s in scores) + " |")


if __name__ == "__main__":
    main()
