"""Epoch times of the 3x512 model with and without tf.data's autotuner, side by side.

    python bench/pipeline_autotune.py --train ../shared/otto/train.csv.gz [--epochs 10] [--autotune]
    python bench/pipeline_autotune.py --smoke    # both pipelines, 2 epochs on small generated data

Trains bench/configs/mlp3x512.yaml with ottotrain's member trainer, as shipped (``EpochBatches``:
no autotuning, no prefetch thread) or, with ``--autotune``, with the pipeline ottotrain
used before (``prefetch(AUTOTUNE)``, autotuning on); ``bench/speed.py`` runs both, alternating,
each in a fresh process, and puts the figures in bench/results/speed.md. Prints one JSON line
per run: each epoch's seconds and the final validation loss (the same both ways: only the
pipeline's threads differ). With the autotuner, ``model.fit`` waits for its timer when an
epoch's iterator closes, so some epochs take a fixed ~2.55 s whatever their training took.
"""

import json
import tempfile
from pathlib import Path

import common

CONFIG = common.BENCH / "configs" / "mlp3x512.yaml"


def run(train_csv, epochs, autotune):
    import tensorflow as tf

    from ottotrain import data as D
    from ottotrain.config import load_config
    from ottotrain.engine import loop
    from ottotrain.engine.member import MemberJob, train_member
    from ottotrain.log import Log
    from ottotrain.workflows.common import member_arrays

    cfg = load_config(CONFIG, [f"data.train={train_csv}", f"train.epochs={epochs}"])
    data = D.load_train(cfg.data)
    tr, va = D.train_val_split(data.y, cfg.data.validation_split, cfg.seed, cfg.data.stratify)
    _, arrays = member_arrays(cfg, data, tr, va)
    shipped = loop.EpochBatches.__init__

    def with_autotune(self, *args, **kwargs):  # the pipeline before 2026-11-28 evening
        shipped(self, *args, **kwargs)
        options = tf.data.Options()
        options.autotune.enabled = True
        self.ds = self.ds.prefetch(tf.data.AUTOTUNE).with_options(options)

    loop.EpochBatches.__init__ = with_autotune if autotune else shipped
    try:
        with tempfile.TemporaryDirectory() as wd:
            member = train_member(MemberJob(cfg, arrays, Path(wd)), Log(0))
    finally:
        loop.EpochBatches.__init__ = shipped
    h = member.state.history
    return {"autotune": autotune, "epoch_seconds": [r.seconds for r in h], "val_loss": h[-1].val_loss}


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("--train", help="training CSV (required unless --smoke)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--autotune", action="store_true", help="the old pipeline (one run)")
    a = ap.parse_args(argv)
    if not a.smoke:
        if not a.train:
            ap.error("--train is required (or --smoke)")
        print(json.dumps(run(a.train, a.epochs, a.autotune)))
        return
    with common.scratch() as work:
        train = common.synthetic(work, 1_500, 0).train
        runs = [run(train, 2, autotune) for autotune in (False, True)]
    for r in runs:
        print(json.dumps(r))
    if runs[0]["val_loss"] != runs[1]["val_loss"]:
        raise SystemExit(f"the two pipelines trained differently: {runs}")


if __name__ == "__main__":
    main()
