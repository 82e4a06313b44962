"""Epoch times of the 3x512 model with and without tf.data's autotuner, side by side.

    python bench/pipeline_autotune.py --train ../shared/otto/train.csv.gz [--epochs 10] [--autotune]

Trains bench/configs/mlp3x512.yaml with ottotrain's loop, as shipped (``EpochBatches``:
no autotuning, no prefetch thread) or, with ``--autotune``, with the pipeline ottotrain
used before (``prefetch(AUTOTUNE)``, autotuning on); run both, alternating. Prints one
JSON line: each epoch's seconds and the final validation loss (the same both ways: only
the pipeline's threads differ). With the autotuner, ``model.fit`` waits for its timer
when an epoch's iterator closes, so some epochs take a fixed ~2.55 s whatever their
training took.
"""

import argparse
import json
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def run(train_csv, epochs, autotune):
    import tensorflow as tf

    from ottotrain import data as D
    from ottotrain.config import load_config
    from ottotrain.engine import loop as T
    from ottotrain.engine.build import build_model, compile_model, setup
    from ottotrain.log import Log
    from ottotrain.workflows.common import member_arrays

    cfg = load_config(
        BENCH / "configs" / "mlp3x512.yaml", [f"data.train={train_csv}", f"train.epochs={epochs}"]
    )
    data = D.load_train(cfg.data)
    tr, va = D.train_val_split(data.y, cfg.data.validation_split, cfg.seed, cfg.data.stratify)
    pre, arrays = member_arrays(cfg, data, tr, va)
    setup(cfg.seed, cfg.train.deterministic)
    model = compile_model(build_model(cfg, pre.n_outputs, len(data.classes), compile=False), cfg, len(tr))
    shipped = T.EpochBatches.__init__

    def with_autotune(self, x, y, batch_size):  # the pipeline before 2026-11-28 evening
        shipped(self, x, y, batch_size)
        options = tf.data.Options()
        options.autotune.enabled = True
        self.ds = self.ds.prefetch(tf.data.AUTOTUNE).with_options(options)

    T.EpochBatches.__init__ = with_autotune if autotune else shipped
    try:
        with tempfile.TemporaryDirectory() as wd:
            state = T.train_loop(model, cfg, arrays, Path(wd), Log(0))
    finally:
        T.EpochBatches.__init__ = shipped
    h = state.history
    return {"autotune": autotune, "epoch_seconds": [r.seconds for r in h], "val_loss": h[-1].val_loss}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--autotune", action="store_true", help="the old pipeline (one run)")
    a = ap.parse_args()
    print(json.dumps(run(a.train, a.epochs, a.autotune)))


if __name__ == "__main__":
    main()
