"""Blending cv runs: ``ottotrain blend RUN... -o submission.csv``.

The blend is a weighted average of the runs' probabilities with non-negative
weights summing to 1, chosen to minimise the log loss of the runs' out-of-fold
(OOF) predictions. The OOF log loss of a mixture is convex in the weights, so a
local minimum is the global one: ``fit_weights`` runs SLSQP over the simplex from
the uniform mixture and from every vertex and keeps the best result (it matches a
fine grid search over the simplex to 1e-6). Each single run (a vertex) is then
compared explicitly, so the blend is never worse on OOF than its best member.

Optionally a temperature ``T`` (between 0.25 and 4) is fitted on the blended OOF
predictions (``p_i ** (1/T)``, renormalised; T > 1 softens): it corrects a
systematically over- or under-confident ensemble. It is fitted on the same OOF
rows it is scored on, so its OOF score is optimistic. Both scores are reported;
``--temperature`` applies it to the written submission.

The runs must share their rows and folds (same training file, same config
``seed``, same ``--folds``): otherwise an OOF prediction of one run could come
from a model that saw that row in another, and the weights would be biased.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar

from ottotrain import runs
from ottotrain.errors import DataError, RunError
from ottotrain.io import check_output_path
from ottotrain.metrics import log_loss
from ottotrain.runs import CV_KIND, OOF_FILE
from ottotrain.runs.artifacts import write_predictions
from ottotrain.workflows.stack.outputs import STACK_KIND


def _read_csv(path):
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except Exception as e:  # damaged file
        raise RunError(f"{path}: cannot be read ({str(e).strip().splitlines()[0][:200]})") from None


@dataclass(frozen=True)
class OofTable:
    """A finished cv (or stack) run's out-of-fold predictions (its oof.csv)."""

    dir: Path
    ids: np.ndarray
    folds: np.ndarray
    y: np.ndarray  # class indices
    classes: list[str]
    id_column: str
    proba: np.ndarray  # (rows, classes), float64


def load_cv_run(run_dir) -> OofTable:
    """Read a finished cv (or stack) run's OOF table."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    info = runs.read_status(run_dir)
    kind = info.get("kind")
    if kind not in (CV_KIND, STACK_KIND):
        raise RunError(
            f"{run_dir}: not a cv run (nor a stack run); blend needs out-of-fold predictions, made by "
            "'ottotrain cv' or 'ottotrain stack'"
        )
    if info["status"] != runs.FINISHED:
        raise RunError(
            f"{run_dir}: the {kind} run is {info['status']}; finish it first with "
            f"'ottotrain {kind} --resume {run_dir}'"
        )
    oof = _read_csv(run_dir / OOF_FILE)
    id_col, fold_col, target_col = oof.columns[:3]
    classes = list(oof.columns[3:])
    lookup = {c: i for i, c in enumerate(classes)}
    y = oof[target_col].astype(str).map(lookup)
    if y.isna().any():
        raise RunError(f"{run_dir / OOF_FILE}: a target is not one of the class columns")
    return OofTable(
        run_dir,
        ids=oof[id_col].to_numpy(),
        folds=oof[fold_col].to_numpy(),
        y=y.to_numpy(dtype=np.int64),
        classes=classes,
        id_column=id_col,
        proba=oof[classes].to_numpy(dtype=np.float64),
    )


def check_compatible(items: list[OofTable]):
    """Refuse runs that do not share rows, folds and classes, with a message that says which."""
    ref = items[0]
    for it in items[1:]:
        a, b = ref.dir, it.dir
        if it.classes != ref.classes:
            raise DataError(
                f"{b}: its classes ({', '.join(it.classes[:5])}...) differ from "
                f"{a}'s; blend runs trained on the same data"
            )
        if len(it.ids) != len(ref.ids) or not np.array_equal(it.ids, ref.ids):
            raise DataError(
                f"{b}: its OOF rows (ids) differ from {a}'s ({len(it.ids)} vs "
                f"{len(ref.ids)} rows); blend runs on the same training file"
            )
        if not np.array_equal(it.folds, ref.folds):
            n = int((it.folds != ref.folds).sum())
            raise DataError(
                f"{b}: its folds differ from {a}'s on {n} rows; runs to blend need "
                "the same fold assignment: the same config 'seed' and --folds"
            )
        if not np.array_equal(it.y, ref.y):
            raise DataError(f"{b}: its targets differ from {a}'s; blend runs on the same data")


def true_class_proba(probas, y) -> np.ndarray:
    """(rows, runs): each run's probability of the true class, clipped at 1e-15.

    The log loss of any mixture of normalised probabilities depends on these alone.
    """
    y = np.asarray(y)
    return np.stack([np.clip(p[np.arange(len(y)), y], 1e-15, 1) for p in probas], axis=1)


def fit_weights(probas, y) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the log loss of ``sum w_i p_i``."""
    k = len(probas)
    if k == 1:
        return np.ones(1)
    Py = true_class_proba(probas, y)

    def f(w):
        q = np.maximum(Py @ w, 1e-15)
        return -np.mean(np.log(q)), -(Py / q[:, None]).mean(axis=0)

    best_w, best_v = None, np.inf
    starts = [np.full(k, 1 / k)] + [np.eye(k)[i] for i in range(k)]
    for w0 in starts:
        r = minimize(
            f,
            w0,
            jac=True,
            method="SLSQP",
            bounds=[(0, 1)] * k,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(k)}],
            options={"ftol": 1e-12, "maxiter": 500},
        )
        w = np.clip(r.x, 0, None)
        w = w / w.sum() if w.sum() > 0 else np.full(k, 1 / k)
        v = f(w)[0]
        if v < best_v:
            best_w, best_v = w, v
    # Never worse than the best single run (a vertex of the simplex).
    singles = [f(np.eye(k)[i])[0] for i in range(k)]
    i = int(np.argmin(singles))
    if singles[i] <= best_v:
        best_w = np.eye(k)[i]
    return best_w


def apply_temperature(p, t: float) -> np.ndarray:
    """``p ** (1/t)`` renormalised per row (t > 1 softens, t < 1 sharpens)."""
    q = np.exp(np.log(np.clip(p, 1e-15, 1)) / t)
    return q / q.sum(axis=1, keepdims=True)


def fit_temperature(p, y) -> float:
    r = minimize_scalar(
        lambda t: log_loss(y, apply_temperature(p, t)),
        bounds=(0.25, 4.0),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(r.x)


@dataclass(frozen=True)
class RunWeight:
    """One blended run: its OOF scores and its weight."""

    run: str
    oof_log_loss: float
    oof_accuracy: float
    weight: float


@dataclass(frozen=True)
class BlendResult:
    """What ``blend`` found and wrote."""

    runs: list[RunWeight]
    oof_log_loss: float
    oof_accuracy: float
    temperature: float
    oof_log_loss_temperature: float  # fitted on the same OOF rows: optimistic
    temperature_applied: bool  # to the file written
    output: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def _scores(y, p) -> tuple[float, float]:
    return round(log_loss(y, p), 6), round(float((p.argmax(1) == y).mean()), 6)


def blend(run_dirs, output=None, temperature=False) -> BlendResult:
    """Fit blend weights on the runs' OOF predictions; write the blended submission.

    Args:
        run_dirs: finished cv run directories (same rows and folds).
        output: submission path to write (None: only report).
        temperature: apply the OOF-fitted temperature to the written submission.
    """
    if not run_dirs:
        raise DataError("give at least one cv run directory to blend")
    seen = set()
    for d in run_dirs:
        key = Path(d).resolve()
        if key in seen:
            raise DataError(f"{d}: given twice; each run is blended once")
        seen.add(key)
    items = [load_cv_run(d) for d in run_dirs]
    check_compatible(items)
    y = items[0].y
    w = fit_weights([it.proba for it in items], y)
    p = sum(wi * it.proba for wi, it in zip(w, items))
    t = fit_temperature(p, y)
    if output is not None:
        output = check_output_path(output)
        _write_blend(items, w, t if temperature else None, output)
    return BlendResult(
        [RunWeight(str(it.dir), *_scores(y, it.proba), round(float(wi), 6)) for it, wi in zip(items, w)],
        *_scores(y, p),
        temperature=round(t, 4),
        oof_log_loss_temperature=round(log_loss(y, apply_temperature(p, t)), 6),
        temperature_applied=bool(temperature) and output is not None,
        output=None if output is None else str(output),
    )


def _write_blend(items: list[OofTable], w, temperature: float | None, output) -> None:
    """The weighted average of the runs' submission.csv files (tempered unless None), to ``output``."""
    subs = []
    for it in items:
        path = it.dir / "submission.csv"
        if not path.exists():
            raise RunError(
                f"{path}: missing; the run's config had no data.test, so there is "
                "nothing to blend for the submission"
            )
        subs.append(_read_csv(path))
    ref = subs[0]
    cols = [ref.columns[0], *items[0].classes]
    for it, s in zip(items[1:], subs[1:]):
        if list(s.columns) != list(ref.columns) or not np.array_equal(
            s[cols[0]].to_numpy(), ref[cols[0]].to_numpy()
        ):
            raise DataError(
                f"{it.dir / 'submission.csv'}: its ids or columns differ from "
                f"{items[0].dir / 'submission.csv'}; the runs predicted different test files"
            )
    q = sum(wi * s[cols[1:]].to_numpy(dtype=np.float64) for wi, s in zip(w, subs))
    q = q / q.sum(axis=1, keepdims=True)
    if temperature is not None:
        q = apply_temperature(q, temperature)
    write_predictions(output, q, cols[1:], {cols[0]: ref[cols[0]].to_numpy()})
