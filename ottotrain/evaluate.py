"""``ottotrain evaluate``: score a finished run on a labelled CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ottotrain.errors import DataError


def _columns_problem(path, cols, features, id_column, target_column) -> str | None:
    from ottotrain.data import column_mismatch

    return column_mismatch(path, cols, features, (id_column, target_column))


def load_labelled(path, state: dict):
    """Read a labelled CSV against a run's preprocessing state.

    Returns:
        (float32 features, integer labels in the run's class order).

    Raises:
        DataError: no target column, other feature columns than at fit, bad values,
            or class labels the run never saw.
    """
    from ottotrain.data import read_columns, read_header

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found; give a labelled CSV with the training columns")
    features, classes = state["features"], state["classes"]
    idc, tgt = state["id_column"], state["target_column"]
    cols = read_header(path, "labelled")
    if tgt not in cols:
        raise DataError(f"{path}: no target column '{tgt}'; evaluate needs labelled rows "
                        "(for an unlabelled file use 'ottotrain predict')")
    problem = _columns_problem(path, cols, features, idc, tgt)
    if problem:
        raise DataError(problem)
    x, rest = read_columns(path, "labelled", features, (tgt,))
    labels = rest[tgt]
    if labels.isna().any():
        i = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise DataError(f"{path}: column '{tgt}', line {i + 2}: missing class label")
    labels = labels.astype(str)
    unseen = sorted(set(labels.unique()) - set(classes))
    if unseen:
        raise DataError(f"{path}: column '{tgt}' has class(es) the run never saw at fit: "
                        f"{', '.join(unseen[:10])}{', ...' if len(unseen) > 10 else ''}; "
                        f"the model knows {', '.join(classes[:12])}{', ...' if len(classes) > 12 else ''}")
    lookup = {c: i for i, c in enumerate(classes)}
    y = labels.map(lookup).to_numpy(dtype=np.int64)
    return x, y


def evaluate(run_dir, data_csv, log=None) -> dict:
    """Score a finished run on a labelled CSV.

    Args:
        run_dir: a run directory made by ``fit`` (or ``cv``: its ensemble is scored).
        data_csv: CSV with the target column and the feature columns seen at fit
            (the id column is optional).
        log: a ``train.Log`` for progress (stderr).

    Returns:
        dict with ``log_loss`` (Kaggle's), ``accuracy``, ``per_class`` (precision,
        recall, f1, support per class) and ``confusion`` (rows: true class,
        columns: predicted class).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from ottotrain import data as D
    from ottotrain.cv import ensemble_proba, is_cv_run, load_ensemble
    from ottotrain.predict import load_run
    from ottotrain.train import Log, predict_proba

    log = log or Log(0)
    if is_cv_run(run_dir):  # a cv run scores as predict uses it: its whole ensemble
        members, _ = load_ensemble(run_dir)
        state = members[0][0].state
        x, y = load_labelled(data_csv, state)
        log(f"Scoring {len(y):,} rows of {data_csv} with the {len(members)} models of {run_dir}", 1)
        proba = ensemble_proba(members, x)
    else:
        pre, model, _ = load_run(run_dir)
        state = pre.state
        x, y = load_labelled(data_csv, state)
        log(f"Scoring {len(y):,} rows of {data_csv} with {run_dir}", 1)
        proba = predict_proba(model, pre.transform(x))
    classes = list(state["classes"])
    pred = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y, pred, labels=labels)
    return {
        "run_dir": str(run_dir),
        "data": str(data_csv),
        "rows": int(len(y)),
        "log_loss": round(D.log_loss(y, proba), 6),
        "accuracy": round(float((pred == y).mean()), 6),
        "per_class": [{"class": c, "precision": round(float(p), 6), "recall": round(float(r), 6),
                       "f1": round(float(f), 6), "support": int(s)}
                      for c, p, r, f, s in zip(classes, prec, rec, f1, support)],
        "confusion": {"classes": classes, "matrix": cm.astype(int).tolist()},
    }


def format_evaluation(result: dict, brief: bool = False) -> str:
    """The evaluation as text: the scores, then (unless ``brief``) per-class and confusion tables."""
    r = result
    lines = [f"log_loss={r['log_loss']:.4f} accuracy={r['accuracy']:.4f} rows={r['rows']}"]
    if brief:
        return lines[0]
    classes = r["confusion"]["classes"]
    w = max(len("class"), *(len(c) for c in classes))
    lines += ["", f"{'class':<{w}}  precision  recall      f1  support"]
    for c in r["per_class"]:
        lines.append(f"{c['class']:<{w}}  {c['precision']:>9.4f}  {c['recall']:>6.4f}  {c['f1']:>6.4f}  "
                     f"{c['support']:>7,}")
    m = r["confusion"]["matrix"]
    cw = max(5, *(len(str(v)) for row in m for v in row), *(len(str(i + 1)) for i in range(len(classes))))
    lines += ["", "Confusion matrix (rows: true class, columns: predicted; columns numbered as rows):",
              " " * (w + 4) + " ".join(f"{i + 1:>{cw}}" for i in range(len(classes)))]
    for i, (c, row) in enumerate(zip(classes, m)):
        lines.append(f"{i + 1:>2} {c:<{w}} " + " ".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)
