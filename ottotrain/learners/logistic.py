"""A regularised multinomial logistic regression (scikit-learn's lbfgs), the baseline level 2.

Saved as its coefficients (``logistic.npz``); predictions are ``softmax(x @ W.T + b)`` in
numpy, so a loaded learner needs no scikit-learn object and predicts what it did before.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from ottotrain.config.stack_section import LogisticLevel2
from ottotrain.learners.base import (
    FitInfo,
    Learner,
    check_rows,
    check_xy,
    finish,
    load_npz,
    reading,
    save_npz,
)

COEFFICIENTS = "logistic.npz"
ABSENT = -50.0  # intercept of a class no training row had: exp(-50) is below every floor


class LogisticLearner(Learner):
    kind = "logistic"
    params_model = LogisticLevel2

    def __init__(self, params: LogisticLevel2, **kw):
        super().__init__(params, **kw)
        self.coef: np.ndarray | None = None  # (n_classes, features)
        self.intercept: np.ndarray | None = None  # (n_classes,)

    def fit(self, x, y, x_stop=None, y_stop=None) -> FitInfo:
        """Fit on (x, y); the early-stopping rows are not used (lbfgs runs to convergence)."""
        t0 = time.perf_counter()
        x, y = check_xy(x, y, self.n_classes, "logistic fit")
        model = LogisticRegression(C=self.params.C, max_iter=self.params.max_iter, random_state=self.seed)
        with warnings.catch_warnings():
            # Reaching max_iter is the user's chosen budget, not an error; n_iter says so.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(np.asarray(x, np.float64), y)
        self.coef, self.intercept = _all_classes(model, self.n_classes)
        return FitInfo(
            rounds=int(np.max(model.n_iter_)), stop_log_loss=None, seconds=time.perf_counter() - t0
        )

    def predict_proba(self, x) -> np.ndarray:
        if self.coef is None:
            raise ValueError("logistic: predict_proba before fit")
        x = check_rows(x, self.coef.shape[1], "logistic predict")
        z = np.asarray(x, np.float64) @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return finish(e / e.sum(axis=1, keepdims=True))

    def _save_files(self, folder: Path) -> dict[str, Any]:
        if self.coef is None:
            raise ValueError("logistic: save before fit")
        save_npz(folder / COEFFICIENTS, coef=self.coef, intercept=self.intercept)
        return {"coefficients": COEFFICIENTS, "features": int(self.coef.shape[1])}

    def _restore(self, folder: Path, state: dict[str, Any]) -> None:
        path = folder / state.get("coefficients", COEFFICIENTS)
        with reading(path):
            arrays = load_npz(path)
            coef, intercept = arrays["coef"].astype(np.float64), arrays["intercept"].astype(np.float64)
            if coef.ndim != 2 or coef.shape[0] != self.n_classes or intercept.shape != (self.n_classes,):
                raise ValueError(f"coefficients of shape {coef.shape}, intercepts {intercept.shape}")
        self.coef, self.intercept = coef, intercept


def _all_classes(model: LogisticRegression, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's coefficients as one row per class 0..n_classes-1.

    With two classes present it keeps one row w (p1 = sigmoid(w.x + b)), which is the
    softmax of the rows (0, w); a class absent from the training rows gets ``ABSENT``.
    """
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    w = np.zeros((n_classes, coef.shape[1]))
    b = np.full(n_classes, ABSENT)
    w[model.classes_], b[model.classes_] = coef, intercept
    return w, b
