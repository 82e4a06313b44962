"""One-fold experiments behind the recipe choices in bench/results/metric.md.

Trains one model of a config on fold F of the same 5 stratified folds that
``ottotrain cv`` uses (config seed 42), records its validation probabilities,
and scores bags (plain averages) of recorded models. Cheaper than a whole cv
run when comparing recipes, and the bag scores show which members add most.

    python bench/metric_fold.py train CONFIG TAG --train ../shared/otto/train.csv.gz \\
        [--fold 0] [--seed 1] [--set KEY=VALUE]... [--out /tmp/metric/fold]
    python bench/metric_fold.py bag TAG:SEED+TAG:SEED... [--fold 0] [--out /tmp/metric/fold]
    python bench/metric_fold.py --smoke   # two 2-epoch members and their bag, small generated data
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np


def train(a):
    from ottotrain import data as D
    from ottotrain.config import load_config
    from ottotrain.engine.member import MemberJob, train_member
    from ottotrain.log import Log
    from ottotrain.workflows.common import class_weights, member_arrays

    sets = [*a.set, f"data.train={a.train}", "data.test=null", f"seed={a.seed}"]
    cfg = load_config(a.config, sets)
    data = D.load_train(cfg.data)
    folds = D.fold_assignment(data.y, 5, 42)
    tr, va = np.flatnonzero(folds != a.fold), np.flatnonzero(folds == a.fold)
    _, arrays = member_arrays(cfg, data, tr, va)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as work:
        job = MemberJob(cfg, arrays, Path(work), class_weights(cfg, arrays.y_train, data.classes))
        member = train_member(job, Log(0))  # its validation probabilities: the kept (best) epoch's
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{a.tag}-f{a.fold}-s{a.seed}.npy", member.val_proba.astype(np.float32))
    np.save(out / f"y-f{a.fold}.npy", arrays.y_val)
    rec = {
        "tag": a.tag,
        "fold": a.fold,
        "seed": a.seed,
        "seconds": round(time.time() - t0, 1),
        "epochs": len(member.state.history),
        "best_epoch": member.state.best_epoch,
        "val_log_loss": round(member.val_log_loss, 5),
    }
    print(json.dumps(rec))
    return rec


def bag(a):
    from ottotrain.metrics import log_loss

    out = Path(a.out)
    y = np.load(out / f"y-f{a.fold}.npy")
    for spec in a.members:
        ps = [np.load(out / f"{m.split(':')[0]}-f{a.fold}-s{m.split(':')[1]}.npy") for m in spec.split("+")]
        singles = " ".join(f"{log_loss(y, p):.4f}" for p in ps)
        print(f"{spec}: members {singles} -> bag {log_loss(y, np.mean(ps, axis=0)):.4f}")


def smoke(argv):
    """Two members of bench/configs/mlp.yaml (2 epochs) on fold 0 of small generated data, then their bag."""
    with common.scratch() as work:
        train = common.synthetic(work, 1_500, 0).train
        out = work / "fold"
        for seed in (1, 2):
            main(["train", str(common.BENCH / "configs" / "mlp.yaml"), "mlp", "--train", str(train)]
                 + ["--seed", str(seed), "--set", "train.epochs=2", "--out", str(out)])  # fmt: skip
        main(["bag", "mlp:1+mlp:2", "--out", str(out)])


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--smoke"]:
        return smoke(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("config")
    t.add_argument("tag")
    t.add_argument("--train", required=True)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--set", action="append", default=[])
    b = sub.add_parser("bag")
    b.add_argument("members", nargs="+", help="TAG:SEED+TAG:SEED...")
    for p in (t, b):
        p.add_argument("--fold", type=int, default=0)
        p.add_argument("--out", default="/tmp/metric/fold")
    a = ap.parse_args(argv)
    train(a) if a.cmd == "train" else bag(a)


if __name__ == "__main__":
    main()
