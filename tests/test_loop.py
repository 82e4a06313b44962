"""The epoch loop (engine/loop.py): the optimizer's weight average (``use_ema``).

Keras swaps the average in at the end of every ``fit`` call; the loop calls ``fit`` once
per epoch, so it must score and keep the average while training goes on from the trained
weights, and resume to the same place.
"""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from ottotrain.config import load_config
from ottotrain.log import Log
from ottotrain.metrics import log_loss
from tests.conftest import tiny_config

EMA = {"use_ema": True, "ema_momentum": 0.9}


def _config(tiny_data, tmp_path, name, optimizer=None, **train):
    cfg = tiny_config(
        tiny_data, epochs=4, optimizer={"name": "adam", "learning_rate": 0.01, **(optimizer or {})}, **train
    )
    cfg["model"]["layers"].insert(1, {"Dropout": {"rate": 0.2}})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_config(path)


def _fit(cfg, tmp_path, name, **kw):
    from ottotrain.workflows.fit import fit

    run = tmp_path / name
    fit(cfg, run_dir=run, log=Log(0), **kw)
    return run, pd.read_csv(run / "history.csv")


def _val_log_loss(run):
    v = pd.read_csv(run / "val_predictions.csv")
    classes = [c for c in v.columns if c.startswith("Class_")]
    return log_loss(v["target"].map({c: i for i, c in enumerate(classes)}).to_numpy(), v[classes].to_numpy())


def test_use_ema_trains_the_weights_and_scores_and_keeps_their_average(tiny_data, tmp_path):
    _, plain = _fit(_config(tiny_data, tmp_path, "plain"), tmp_path, "plain")
    run, ema = _fit(_config(tiny_data, tmp_path, "ema", EMA), tmp_path, "ema")
    # The trained weights take the same path as without the average: every epoch's training
    # loss is the same. (Restarting each epoch from the average would change epochs 2-4.)
    np.testing.assert_allclose(ema["loss"], plain["loss"], rtol=1e-6)
    # What is scored is the average, and the kept model is the one that was scored.
    assert np.abs(ema["val_loss"] - plain["val_loss"]).min() > 1e-4
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val_log_loss"] == pytest.approx(ema["val_loss"][metrics["kept_epoch"] - 1], abs=1e-6)
    assert _val_log_loss(run) == pytest.approx(metrics["val_log_loss"], abs=1e-5)


def test_use_ema_keeps_the_last_epochs_average_without_restore_best_weights(tiny_data, tmp_path):
    es = {"monitor": "val_loss", "patience": 10, "restore_best_weights": False}
    run, hist = _fit(_config(tiny_data, tmp_path, "last", EMA, early_stopping=es), tmp_path, "last")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["kept_epoch"] == 4
    assert _val_log_loss(run) == pytest.approx(hist["val_loss"].iloc[-1], abs=1e-5)


def test_use_ema_resumes_exactly(tiny_data, tmp_path):
    cfg = _config(tiny_data, tmp_path, "resume", EMA)
    ref, ref_hist = _fit(cfg, tmp_path, "ref")

    def stop_after_two(row):
        if row.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(cfg, tmp_path, "run", on_epoch=stop_after_two)
    from ottotrain.workflows.fit import fit

    fit(cfg, resume=tmp_path / "run", log=Log(0))
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    np.testing.assert_allclose(hist[["loss", "val_loss"]], ref_hist[["loss", "val_loss"]], atol=1e-6)
    np.testing.assert_allclose(
        pd.read_csv(tmp_path / "run" / "val_predictions.csv").iloc[:, 2:].to_numpy(float),
        pd.read_csv(ref / "val_predictions.csv").iloc[:, 2:].to_numpy(float),
        atol=1e-6,
    )
