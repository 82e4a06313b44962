"""``ottotrain evaluate``: score a finished run on a labelled CSV, or on its own OOF predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ottotrain import runs
from ottotrain.data import load_labelled
from ottotrain.errors import RunError
from ottotrain.log import Log
from ottotrain.metrics import log_loss
from ottotrain.runs import CV_KIND, OOF_FILE
from ottotrain.workflows.blend import load_cv_run
from ottotrain.workflows.stack.outputs import STACK_KIND
from ottotrain.workflows.stack.predict import open_any


def evaluate(run_dir, data_csv=None, log=None) -> dict:
    """Score a finished run on a labelled CSV, or a cv or stack run on its own OOF predictions.

    Args:
        run_dir: a run directory made by ``fit``, ``cv`` (its ensemble is scored) or ``stack``
            (its levels and top recomputed from the saved members).
        data_csv: CSV with the target column and the feature columns seen at fit (the id
            column is optional); None: the run's oof.csv (a cv or stack run).
        log: progress output (stderr).

    Returns:
        dict with ``log_loss`` (Kaggle's), ``accuracy``, ``per_class`` (precision,
        recall, f1, support per class) and ``confusion`` (rows: true class,
        columns: predicted class); with ``model.ensemble``, ``member_log_loss``: each
        TabM-style member's log loss alone (member j of every model of a cv run together).
    """
    log = log or Log(0)
    if data_csv is None:
        y, proba, classes = oof_predictions(run_dir)
        log(f"Scoring the {len(y):,} out-of-fold predictions of {run_dir}", 1)
        return {"run_dir": str(run_dir), "data": str(Path(run_dir) / OOF_FILE), **scores(y, proba, classes)}
    predictor = open_any(run_dir)
    state = predictor.state
    x, y = load_labelled(data_csv, state)
    what = f"the {len(predictor.members)} models of {run_dir}" if predictor.kind == CV_KIND else str(run_dir)
    log(f"Scoring {len(y):,} rows of {data_csv} with {what}", 1)
    proba, members = predictor.predict_with_members(x)
    extra = {} if members is None else {"member_log_loss": [round(log_loss(y, p), 6) for p in members]}
    return {"run_dir": str(run_dir), "data": str(data_csv), **scores(y, proba, list(state.classes)), **extra}


def oof_predictions(run_dir) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels, probabilities, classes) of a finished cv or stack run's oof.csv."""
    info = runs.read_status(run_dir)
    if info.get("kind") not in (CV_KIND, STACK_KIND):
        raise RunError(
            f"{run_dir}: a {info.get('kind', 'fit')} run has no out-of-fold predictions; "
            "give a labelled DATA_CSV to score it on"
        )
    oof = load_cv_run(run_dir)
    return oof["y"], oof["proba"], oof["classes"]


def scores(y, proba, classes: list[str]) -> dict:
    """Log loss, accuracy, per-class precision/recall/f1 and the confusion matrix."""
    pred = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y, pred, labels=labels)
    return {
        "rows": int(len(y)),
        "log_loss": round(log_loss(y, proba), 6),
        "accuracy": round(float((pred == y).mean()), 6),
        "per_class": [
            {
                "class": c,
                "precision": round(float(p), 6),
                "recall": round(float(r), 6),
                "f1": round(float(f), 6),
                "support": int(s),
            }
            for c, p, r, f, s in zip(classes, prec, rec, f1, support)
        ],
        "confusion": {"classes": classes, "matrix": cm.astype(int).tolist()},
    }


def format_evaluation(result: dict, brief: bool = False) -> str:
    """The evaluation as text: the scores, then (unless ``brief``) per-class and confusion tables."""
    r = result
    lines = [f"log_loss={r['log_loss']:.4f} accuracy={r['accuracy']:.4f} rows={r['rows']}"]
    if brief:
        return lines[0]
    if "member_log_loss" in r:
        each = r["member_log_loss"]
        lines.append(
            f"{len(each)} ensemble members alone: log_loss "
            + " ".join(f"{v:.4f}" for v in each)
            + f" (mean {sum(each) / len(each):.4f}; together {r['log_loss']:.4f})"
        )
    classes = r["confusion"]["classes"]
    w = max(len("class"), *(len(c) for c in classes))
    lines += ["", f"{'class':<{w}}  precision  recall      f1  support"]
    for c in r["per_class"]:
        lines.append(
            f"{c['class']:<{w}}  {c['precision']:>9.4f}  {c['recall']:>6.4f}  {c['f1']:>6.4f}  "
            f"{c['support']:>7,}"
        )
    m = r["confusion"]["matrix"]
    cw = max(5, *(len(str(v)) for row in m for v in row), *(len(str(i + 1)) for i in range(len(classes))))
    lines += [
        "",
        "Confusion matrix (rows: true class, columns: predicted; columns numbered as rows):",
        " " * (w + 4) + " ".join(f"{i + 1:>{cw}}" for i in range(len(classes))),
    ]
    for i, (c, row) in enumerate(zip(classes, m)):
        lines.append(f"{i + 1:>2} {c:<{w}} " + " ".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)
