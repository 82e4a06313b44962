"""What fit, cv and check share before training: the data, a member's arrays, class weights."""

from __future__ import annotations

import importlib.util

import numpy as np

from ottotrain.config import Config
from ottotrain.data import TrainData, data_paths, load_test, load_train
from ottotrain.errors import ConfigError, DataError
from ottotrain.features import Preprocessor
from ottotrain.features.arrays import Arrays

SMOKE_ROWS = 2000


def smoke_config(cfg: Config) -> Config:
    """The config of a smoke run: one epoch (the rows are sampled by ``load_data``)."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})


def load_data(cfg: Config, smoke=False) -> tuple[TrainData, tuple | None]:
    """The training table and the test rows (ids, features) or None, checked."""
    nrows = SMOKE_ROWS if smoke else None
    train = load_train(cfg.data, nrows=nrows)
    test_path = data_paths(cfg.data)[1]
    test = None
    if test_path is not None:
        test = load_test(test_path, cfg.data.id_column, cfg.data.target_column, train.features,
                         nrows=nrows)
    return train, test


def member_arrays(cfg: Config, train: TrainData, tr, va) -> tuple[Preprocessor, Arrays]:
    """Fit preprocessing on the training rows ``tr`` only; return it and the member's arrays."""

    def rows(idx):  # a copy of those rows, ours to scale in place (a slice would be a view)
        r = train.x[idx]
        return r.copy() if np.may_share_memory(r, train.x) else r

    x_tr = rows(tr)
    try:
        pre = Preprocessor.fit(x_tr, cfg.data, train.features, train.classes,
                               cfg.data.id_column, cfg.data.target_column, train.y[tr])
    except DataError as e:  # e.g. data.knn and a class too small: say which file
        raise DataError(f"{train.path}: {e}") from None
    arrays = Arrays(pre.transform(x_tr, overwrite=True, fitted_rows=True), train.y[tr],
                    pre.transform(rows(va), overwrite=True), train.y[va], len(train.classes))
    return pre, arrays


def class_weights(cfg: Config, y, classes) -> dict | None:
    cw = cfg.train.class_weight
    if cw is None:
        return None
    counts = np.bincount(y, minlength=len(classes))
    if cw == "balanced":
        return {i: float(len(y) / (len(classes) * max(c, 1))) for i, c in enumerate(counts)}
    unknown = [k for k in cw if k not in classes]
    if unknown:
        raise ConfigError(f"{cfg.source}: train.class_weight: unknown class(es) {', '.join(unknown)}; "
                          f"the classes are {', '.join(classes)}")
    return {i: float(cw.get(c, 1.0)) for i, c in enumerate(classes)}


def require_tensorboard(cfg: Config) -> None:
    """Refuse ``train.tensorboard: true`` up front when the package is missing.

    ``tf.summary`` is implemented by the ``tensorboard`` package; without it the first
    epoch would crash, after the run directory was created.
    """
    if cfg.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"{cfg.source}: train.tensorboard: true needs the tensorboard package; "
                          "install it (pip install tensorboard) or set train.tensorboard: false")
