"""``ottotrain evaluate``: score a finished run on a labelled CSV, or on its own OOF predictions.

Besides the scores it measures calibration (``ottotrain.calibration``) and writes everything
into ``RUN/evaluate/SOURCE/`` (SOURCE: ``oof``, or the data file's name without its suffix),
all files at once: ``evaluation.json``, ``per_class.csv`` and the reliability and confusion
diagrams.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ottotrain import runs, tracking
from ottotrain.calibration import DEFAULT_BINS, Calibration, calibration, check_bins
from ottotrain.data import load_labelled
from ottotrain.errors import RunError
from ottotrain.io import TABLE_SUFFIXES, write_folder
from ottotrain.log import Log
from ottotrain.metrics import log_loss, row_log_loss
from ottotrain.runs import CV_KIND, OOF_FILE
from ottotrain.workflows.blend import load_cv_run
from ottotrain.workflows.plots import (
    class_reliability_figure,
    confusion_figure,
    png_bytes,
    reliability_figure,
)
from ottotrain.workflows.stack.outputs import STACK_KIND
from ottotrain.workflows.stack.predict import open_any

EVALUATE_DIR = "evaluate"
OOF_SOURCE = "oof"
JSON_FILE = "evaluation.json"
PER_CLASS_FILE = "per_class.csv"
RELIABILITY_FILE = "reliability.png"
CLASS_RELIABILITY_FILE = "reliability_classes.png"
CONFUSION_FILE = "confusion.png"


@dataclass(frozen=True)
class ClassScore:
    """One class's quality: as the predicted class (precision, recall, F1) and as probabilities."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int  # rows of this class
    log_loss: float | None  # mean -log p(true class) over this class's rows; None: no rows
    ece: float  # one-vs-rest calibration error of this class's probability, over all rows

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"class": d.pop("name"), **d}


@dataclass(frozen=True)
class Confusion:
    classes: list[str]
    matrix: list[list[int]]  # rows: true class, columns: predicted class


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate`` measured on one set of labelled rows (``--json`` prints ``to_dict()``)."""

    run_dir: str
    data: str  # the labelled file, or the run's oof.csv
    rows: int
    log_loss: float  # Kaggle's
    accuracy: float
    ece: float  # top-label expected calibration error
    classwise_ece: float  # one-vs-rest ECE averaged over the classes
    per_class: list[ClassScore]
    confusion: Confusion
    calibration: Calibration
    member_log_loss: list[float] | None = None  # an ensemble's members alone (``model.ensemble``)
    files: list[str] = field(default_factory=list)  # written into RUN/evaluate/SOURCE/

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_class"] = [c.to_dict() for c in self.per_class]
        if self.member_log_loss is None:
            del d["member_log_loss"]
        return d


def evaluate(run_dir, data_csv=None, bins: int = DEFAULT_BINS, log=None) -> Evaluation:
    """Score a finished run on a labelled CSV, or a cv or stack run on its own OOF predictions.

    Args:
        run_dir: a run directory made by ``fit``, ``cv`` (its ensemble is scored) or ``stack``
            (its levels and top recomputed from the saved members).
        data_csv: CSV with the target column and the feature columns seen at fit (the id
            column is optional); None: the run's oof.csv (a cv or stack run).
        bins: equal-width bins of the reliability diagrams and the ECE.
        log: progress output (stderr).

    Returns:
        The scores, per-class quality, confusion matrix and calibration; ``files``: what was
        written into ``RUN/evaluate/SOURCE/``. With ``model.ensemble``, ``member_log_loss``:
        each TabM-style member's log loss alone (member j of every model of a cv run together).

    Raises:
        ConfigError: ``bins`` is not an integer from 1 to 1000.
        RunError, DataError: the run or the file cannot be used, or the folder not written.
    """
    log = log or Log(0)
    bins = check_bins(bins)
    members = None
    if data_csv is None:
        y, proba, classes = oof_predictions(run_dir)
        log(f"Scoring the {len(y):,} out-of-fold predictions of {run_dir}", 1)
        data = Path(run_dir) / OOF_FILE
    else:
        predictor = open_any(run_dir)
        x, y = load_labelled(data_csv, predictor.state)
        what = f"the {len(predictor.members)} models of {run_dir}" if predictor.kind == CV_KIND else run_dir
        log(f"Scoring {len(y):,} rows of {data_csv} with {what}", 1)
        proba, each = predictor.predict_with_members(x)
        members = None if each is None else [round(log_loss(y, p), 6) for p in each]
        data, classes = Path(data_csv), list(predictor.state.classes)
    result = replace(scores(y, proba, classes, bins), run_dir=str(run_dir), data=str(data))
    result = replace(result, member_log_loss=members)
    folder = Path(run_dir) / EVALUATE_DIR / source_name(data_csv)
    result = write_evaluation(result, folder, "Out-of-fold" if data_csv is None else Path(data_csv).name)
    tracking.log_outputs(
        run_dir, result.files, tracked_figures(result, folder.name), f"{EVALUATE_DIR}/{folder.name}", log
    )
    return result


def tracked_figures(result: Evaluation, source: str) -> dict[str, float]:
    """The scores as MLflow metrics, ``evaluate.SOURCE.NAME`` (a name MLflow accepts)."""
    source = re.sub(r"[^\w.-]", "_", source)
    figures = {"log_loss": result.log_loss, "accuracy": result.accuracy, "ece": result.ece}
    figures["classwise_ece"] = result.classwise_ece
    return {f"{EVALUATE_DIR}.{source}.{k}": v for k, v in figures.items()}


def oof_predictions(run_dir) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels, probabilities, classes) of a finished cv or stack run's oof.csv."""
    info = runs.read_status(run_dir)
    if info.get("kind") not in (CV_KIND, STACK_KIND):
        raise RunError(
            f"{run_dir}: a {info.get('kind', 'fit')} run has no out-of-fold predictions; "
            "give a labelled DATA_CSV to score it on"
        )
    oof = load_cv_run(run_dir)
    return oof.y, oof.proba, oof.classes


def scores(y, proba, classes: list[str], bins: int = DEFAULT_BINS) -> Evaluation:
    """Log loss, accuracy, per-class quality, the confusion matrix and calibration of ``proba``
    for labels ``y`` (``run_dir`` and ``data`` left empty)."""
    y = np.asarray(y)
    pred = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    losses = row_log_loss(y, proba)
    cal = calibration(y, proba, bins)
    per_class = [
        ClassScore(
            name=c,
            precision=round(float(prec[k]), 6),
            recall=round(float(rec[k]), 6),
            f1=round(float(f1[k]), 6),
            support=int(support[k]),
            log_loss=round(float(losses[y == k].mean()), 6) if support[k] else None,
            ece=cal.classes[k].ece,
        )
        for k, c in enumerate(classes)
    ]
    cm = confusion_matrix(y, pred, labels=labels)
    return Evaluation(
        run_dir="",
        data="",
        rows=int(len(y)),
        log_loss=round(float(losses.mean()), 6),
        accuracy=round(float((pred == y).mean()), 6),
        ece=cal.ece,
        classwise_ece=cal.classwise_ece,
        per_class=per_class,
        confusion=Confusion(classes=list(classes), matrix=cm.astype(int).tolist()),
        calibration=cal,
    )


def source_name(data_csv) -> str:
    """The evaluate subfolder of a source: ``oof``, or the file's name less its table suffix."""
    if data_csv is None:
        return OOF_SOURCE
    name = Path(data_csv).name
    suffix = next((s for s in sorted(TABLE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")
    return name[: len(name) - len(suffix)] or name


def per_class_csv(result: Evaluation) -> str:
    """The per-class table as CSV text: class, precision, recall, f1, support, log_loss, ece."""
    return pd.DataFrame([c.to_dict() for c in result.per_class]).to_csv(index=False, lineterminator="\n")


def write_evaluation(result: Evaluation, folder: Path, what: str) -> Evaluation:
    """Draw and write the evaluation's files as the folder ``folder``, all at once; the result
    with their paths in ``files``."""
    names = (JSON_FILE, PER_CLASS_FILE, RELIABILITY_FILE, CLASS_RELIABILITY_FILE, CONFUSION_FILE)
    result = replace(result, files=[str(folder / n) for n in names])
    classes = result.confusion.classes
    contents = {
        JSON_FILE: json.dumps(result.to_dict(), indent=1) + "\n",
        PER_CLASS_FILE: per_class_csv(result),
        RELIABILITY_FILE: png_bytes(reliability_figure(result.calibration, what)),
        CLASS_RELIABILITY_FILE: png_bytes(class_reliability_figure(result.calibration, classes, what)),
        CONFUSION_FILE: png_bytes(confusion_figure(result.confusion.matrix, classes, what)),
    }
    contents = {k: v.encode("utf-8") if isinstance(v, str) else v for k, v in contents.items()}
    try:
        write_folder(folder, contents)
    except OSError as e:
        raise RunError(
            f"{folder}: cannot write the evaluation there ({e.strerror or e}); "
            f"evaluate writes into RUN/{EVALUATE_DIR}/, which must be a folder it may write in"
        ) from None
    return result


def format_evaluation(result: Evaluation, brief: bool = False) -> str:
    """The evaluation as text: the scores, then (unless ``brief``) per-class and confusion tables."""
    r = result
    lines = [
        f"log_loss={r.log_loss:.4f} accuracy={r.accuracy:.4f} ece={r.ece:.4f} "
        f"classwise_ece={r.classwise_ece:.4f} rows={r.rows}"
    ]
    if brief:
        return lines[0]
    if r.member_log_loss is not None:
        each = r.member_log_loss
        lines.append(
            f"{len(each)} ensemble members alone: log_loss "
            + " ".join(f"{v:.4f}" for v in each)
            + f" (mean {sum(each) / len(each):.4f}; together {r.log_loss:.4f})"
        )
    lines += ["", *_class_table(r), "", *_confusion_table(r)]
    cal = r.calibration
    lines += [
        "",
        f"ECE over {cal.bins} {cal.binning} bins: top-label {r.ece:.4f}, "
        f"classwise {r.classwise_ece:.4f} (each class one-vs-rest, the table's ece column, averaged)",
    ]
    if r.files:
        folder = Path(r.files[0]).parent
        lines.append(f"written to {folder}/: " + ", ".join(Path(f).name for f in r.files))
    return "\n".join(lines)


def _class_table(r: Evaluation) -> list[str]:
    w = max(len("class"), *(len(c.name) for c in r.per_class))
    lines = [f"{'class':<{w}}  precision  recall      f1  support  log_loss     ece"]
    for c in r.per_class:
        loss = "-" if c.log_loss is None else f"{c.log_loss:.4f}"
        lines.append(
            f"{c.name:<{w}}  {c.precision:>9.4f}  {c.recall:>6.4f}  {c.f1:>6.4f}  "
            f"{c.support:>7,}  {loss:>8}  {c.ece:>6.4f}"
        )
    return lines


def _confusion_table(r: Evaluation) -> list[str]:
    classes, m = r.confusion.classes, r.confusion.matrix
    w = max(len("class"), *(len(c) for c in classes))
    cw = max(5, *(len(str(v)) for row in m for v in row), *(len(str(i + 1)) for i in range(len(classes))))
    lines = [
        "Confusion matrix (rows: true class, columns: predicted; columns numbered as rows):",
        " " * (w + 4) + " ".join(f"{i + 1:>{cw}}" for i in range(len(classes))),
    ]
    for i, (c, row) in enumerate(zip(classes, m)):
        lines.append(f"{i + 1:>2} {c:<{w}} " + " ".join(f"{v:>{cw}}" for v in row))
    return lines
