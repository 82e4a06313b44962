"""Gradient-boosted trees: LightGBM, multiclass, early-stopped on rows of the training folds.

The rows go in as the raw counts (float32): trees split on order, so no scaling is needed.
Saved as LightGBM's own text model (``model.txt``, cut at the best round), no pickle.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from ottotrain.config.stack_section import LightGBMMember
from ottotrain.io import write_text
from ottotrain.learners.base import FitInfo, Learner, check_rows, check_xy, finish, reading
from ottotrain.metrics import log_loss

MODEL = "model.txt"


class LightGBMLearner(Learner):
    kind = "lightgbm"
    params_model = LightGBMMember

    def __init__(self, params: LightGBMMember, **kw):
        super().__init__(params, **kw)
        self.booster: lgb.Booster | None = None

    def booster_params(self) -> dict[str, Any]:
        """LightGBM's parameters for this member."""
        p = self.params
        return {
            "objective": "multiclass",
            "num_class": self.n_classes,
            "metric": "multi_logloss",
            "learning_rate": p.learning_rate,
            "num_leaves": p.num_leaves,
            "min_data_in_leaf": p.min_child_samples,
            "feature_fraction": p.feature_fraction,
            "bagging_fraction": p.bagging_fraction,
            "bagging_freq": 1 if p.bagging_fraction < 1 else 0,  # without it bagging never happens
            "lambda_l2": p.lambda_l2,
            "num_threads": self.threads,
            "seed": self.seed,
            "deterministic": True,
            # Row-wise histograms suit many rows and few (dense-ish) features on few cores, and
            # saying so skips LightGBM's timing of both ways (its result would vary run to run).
            "force_row_wise": True,
            "verbose": -1,
        }

    def fit(self, x, y, x_stop=None, y_stop=None) -> FitInfo:
        t0 = time.perf_counter()
        x, y = check_xy(x, y, self.n_classes, "lightgbm fit")
        train = lgb.Dataset(np.asarray(x, np.float32), y, free_raw_data=True)
        valid, callbacks = [], []
        if x_stop is not None:
            xs, ys = check_xy(x_stop, y_stop, self.n_classes, "lightgbm early-stopping rows")
            valid = [lgb.Dataset(np.asarray(xs, np.float32), ys, reference=train)]
            callbacks = [lgb.early_stopping(self.params.early_stopping_rounds, verbose=False)]
        booster = lgb.train(
            self.booster_params(),
            train,
            num_boost_round=self.params.max_rounds,
            valid_sets=valid,
            callbacks=callbacks,
        )
        rounds = (
            booster.best_iteration if valid and booster.best_iteration > 0 else booster.current_iteration()
        )
        # Keep only the rounds that count: predictions before and after a save are the same trees.
        self.booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))
        stop = None
        if valid:
            stop = log_loss(ys, self.predict_proba(xs))
        return FitInfo(rounds=int(rounds), stop_log_loss=stop, seconds=time.perf_counter() - t0)

    def predict_proba(self, x) -> np.ndarray:
        if self.booster is None:
            raise ValueError("lightgbm: predict_proba before fit")
        x = check_rows(x, self.booster.num_feature(), "lightgbm predict")
        p = self.booster.predict(np.asarray(x, np.float32), num_threads=self.threads)
        return finish(p)

    def _save_files(self, folder: Path) -> dict[str, Any]:
        if self.booster is None:
            raise ValueError("lightgbm: save before fit")
        write_text(folder / MODEL, self.booster.model_to_string())
        return {"model": MODEL, "rounds": self.booster.current_iteration()}

    def _restore(self, folder: Path, state: dict[str, Any]) -> None:
        path = folder / state.get("model", MODEL)
        with reading(path, lgb.basic.LightGBMError):
            self.booster = lgb.Booster(model_str=path.read_text(encoding="utf-8"))
            if self.booster.num_model_per_iteration() != self.n_classes:
                raise ValueError(
                    f"a model of {self.booster.num_model_per_iteration()} classes, not {self.n_classes}"
                )
