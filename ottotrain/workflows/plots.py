"""Plots of a run: learning curves, the confusion matrix and reliability diagrams, as PNG files.

Figures are drawn with matplotlib's object API on an Agg canvas, never through
``pyplot``: no GUI backend is touched and the global backend of a notebook or an
application that imports ottotrain stays as it was. Sizes are fixed in pixels
(figure inches x DPI, no tight bounding box) so the files are predictable.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ottotrain.calibration import Calibration, Reliability
from ottotrain.errors import RunError
from ottotrain.io import atomic_path

DPI = 100
CURVES_SIZE = (1200, 400)  # pixels: loss, accuracy, learning rate side by side
CONFUSION_SIZE = (700, 600)
RELIABILITY_SIZE = (600, 650)
CLASS_PANEL_SIZE = (330, 330)  # pixels of one class's panel in the per-class reliability figure


def _figure(size, layout=None):
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes, for files that are written together (``io.write_folder``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(path)


def _read_history(path):
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:  # a zero-byte file: a run killed before any epoch
        return None
    if df.empty or "epoch" not in df:
        return None
    return df


def plot_curves(history_csv, out_png) -> Path | None:
    """Loss, accuracy and learning rate per epoch from ``history.csv``; None if it has no rows."""
    df = _read_history(history_csv)
    if df is None:
        return None
    fig = _figure(CURVES_SIZE)
    axes = fig.subplots(1, 3)
    epochs = df["epoch"]
    marker = "o" if len(df) <= 30 else None  # single epochs stay visible
    best = None
    if "val_loss" in df and df["val_loss"].notna().any():
        best = int(df.loc[df["val_loss"].idxmin(), "epoch"])
    for ax, (title, keys, ylabel) in zip(
        axes,
        (
            ("Loss", ("loss", "val_loss"), "categorical cross-entropy"),
            ("Accuracy", ("accuracy", "val_accuracy"), "accuracy"),
        ),
    ):
        for key, label in zip(keys, ("train", "validation")):
            if key in df and df[key].notna().any():
                ax.plot(epochs, df[key], marker=marker, markersize=3, label=f"{label} ({key})")
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best})")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    ax = axes[2]
    if "lr" in df and df["lr"].notna().any():
        lr = df["lr"]
        ax.plot(epochs, lr, marker=marker, markersize=3, color="tab:green", label="learning rate")
        lo, hi = lr.min(), lr.max()
        if lo > 0 and hi / lo > 20:  # schedules spanning decades read better on a log axis
            ax.set_yscale("log")
        ax.legend(fontsize="small")
    ax.set_title("Learning rate")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    for a in axes:
        a.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_member_curves(histories: dict, out_png) -> Path | None:
    """A cv run's learning curves: every member's (``{name: history.csv}``) on one figure.

    Validation loss and accuracy solid, training ones dashed, in the member's colour; a dot
    on each member's best epoch. None if no member has a row.
    """
    frames = {name: df for name, path in histories.items() if (df := _read_history(path)) is not None}
    if not frames:
        return None
    fig = _figure(CURVES_SIZE)
    axes = fig.subplots(1, 3)
    colors = [f"C{i % 10}" for i in range(len(frames))]
    for (name, df), color in zip(frames.items(), colors):
        for ax, keys in zip(axes, (("loss", "val_loss"), ("accuracy", "val_accuracy"), ("lr",))):
            for key in keys:
                if key in df and df[key].notna().any():
                    train = key in ("loss", "accuracy")
                    ax.plot(
                        df["epoch"],
                        df[key],
                        color=color,
                        linestyle="--" if train else "-",
                        linewidth=0.8 if train else 1.2,
                        label=name if key == "val_loss" else None,
                    )
        if "val_loss" in df and df["val_loss"].notna().any():
            best = df.loc[df["val_loss"].idxmin()]
            axes[0].plot(best["epoch"], best["val_loss"], "o", color=color, markersize=4)
    titles = (
        ("Loss (validation solid, training dashed)", "categorical cross-entropy"),
        ("Accuracy", "accuracy"),
        ("Learning rate", "learning rate"),
    )
    for ax, (title, ylabel) in zip(axes, titles):
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if len(frames) <= 20:  # beyond that a legend hides the curves
        axes[0].legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_confusion(val_predictions_csv, out_png, what="Validation") -> Path | None:
    """Confusion matrix from ``val_predictions.csv`` (or a cv run's ``oof.csv``); None if no rows.

    The file holds an id column, ``target``, then one probability column per class
    (a cv run's ``oof.csv`` has a ``fold`` column before ``target``).
    Cells show counts; their colour is the count as a share of the true class's rows,
    so that small classes are as readable as large ones.
    """
    try:
        df = pd.read_csv(val_predictions_csv)
    except pd.errors.EmptyDataError:
        return None
    if df.empty or "target" not in df or df.shape[1] < 4:
        return None
    classes = list(df.columns[df.columns.get_loc("target") + 1 :])
    index = {c: i for i, c in enumerate(classes)}
    y = df["target"].astype(str).map(index)
    keep = y.notna().to_numpy()
    y = y[keep].to_numpy(dtype=int)
    pred = df[classes].to_numpy(dtype=float)[keep].argmax(axis=1)
    k = len(classes)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (y, pred), 1)
    return _save(confusion_figure(cm, classes, what), out_png)


def confusion_figure(cm, classes: list[str], what: str) -> Figure:
    """The confusion matrix ``cm`` (rows: true class) drawn: counts in the cells, coloured by
    their share of the true class's rows, so that small classes are as readable as large ones."""
    cm = np.asarray(cm, dtype=int)
    k = len(classes)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = _figure(CONFUSION_SIZE)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("share of the true class")
    ax.set_xticks(range(k), labels=classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels=classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = float(np.trace(cm)) / max(1, cm.sum())
    ax.set_title(f"{what} confusion matrix ({cm.sum():,} rows, accuracy {acc:.3f})")
    if k <= 30:  # beyond that the numbers no longer fit in the cells
        size = "small" if k <= 12 else "xx-small"
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    return fig


def _reliability_panel(fig, spec, rel: Reliability, title: str, xlabel: str, ylabel: str):
    """One reliability curve over its bins' row counts (a log-scaled strip below it)."""
    ax, strip = (fig.add_subplot(s) for s in spec.subgridspec(2, 1, height_ratios=(3, 1), hspace=0.05))
    edges = np.linspace(0.0, 1.0, rel.bins + 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="calibrated")
    points = [(c, f) for c, f in zip(rel.confidence, rel.frequency) if c is not None]
    if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", markersize=3, color="tab:blue", label="model")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel, fontsize="small")
    ax.set_title(f"{title}  ECE {rel.ece:.4f}", fontsize="medium")
    ax.tick_params(labelbottom=False, labelsize="small")
    ax.grid(alpha=0.3)
    strip.bar(edges[:-1], rel.count, width=np.diff(edges), align="edge", color="tab:gray", log=True)
    strip.set_xlim(0, 1)
    strip.set_ylim(bottom=0.7)  # from 1 row up, so that the bars compare across panels
    strip.set_xlabel(xlabel, fontsize="small")
    strip.set_ylabel("rows", fontsize="small")
    strip.tick_params(labelsize="x-small")
    return ax


def reliability_figure(cal: Calibration, what: str) -> Figure:
    """Top-label reliability diagram: accuracy against confidence (the largest probability)."""
    fig = _figure(RELIABILITY_SIZE, layout="constrained")
    ax = _reliability_panel(
        fig,
        fig.add_gridspec(1, 1)[0],
        cal.top_label,
        f"{what}: top label",
        f"confidence (largest probability; {cal.bins} {cal.binning} bins)",
        "accuracy",
    )
    ax.legend(fontsize="small", loc="upper left")
    return fig


def class_reliability_figure(cal: Calibration, classes: list[str], what: str) -> Figure:
    """One-vs-rest reliability diagrams, one panel per class: the class's share of the rows
    against its predicted probability."""
    k = len(classes)
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    height = rows * CLASS_PANEL_SIZE[1] + 90
    fig = _figure((cols * CLASS_PANEL_SIZE[0], height))
    # Fixed margins, not a layout engine: the engine takes seconds over 2 x k axes.
    margin = 50 / height
    grid = fig.add_gridspec(
        rows, cols, left=0.07, right=0.98, bottom=margin, top=1 - 95 / height, wspace=0.3, hspace=0.35
    )
    for i, (name, rel) in enumerate(zip(classes, cal.classes)):
        _reliability_panel(fig, grid[i // cols, i % cols], rel, name, "predicted probability", "frequency")
    fig.suptitle(
        f"{what}: one-vs-rest reliability per class\n"
        f"{cal.bins} {cal.binning} bins, classwise ECE {cal.classwise_ece:.4f}",
        fontsize="medium",
    )
    return fig


def plot_run(run_dir, strict=False) -> list[Path]:
    """Write ``curves.png`` and ``confusion.png`` into a run directory.

    Each plot is drawn only if its input exists and has rows: ``history.csv`` for
    the curves (a cv run: every member's ``models/*.history.csv``), ``val_predictions.csv``
    (a cv run: ``oof.csv``) for the confusion matrix. A missing input is skipped, not an
    error, unless ``strict``.

    Returns:
        The paths written.

    Raises:
        RunError: ``strict`` and there is no run directory or nothing to plot.
    """
    run_dir = Path(run_dir)
    if strict and not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    out = []
    histories = sorted((run_dir / "models").glob("*.history.csv"))
    members = {p.name.removesuffix(".history.csv"): p for p in histories}
    if (run_dir / "history.csv").is_file():
        out.append(plot_curves(run_dir / "history.csv", run_dir / "curves.png"))
    elif members:  # a cv run: its members' curves
        out.append(plot_member_curves(members, run_dir / "curves.png"))
    for src, what in (("val_predictions.csv", "Validation"), ("oof.csv", "Out-of-fold")):
        if (run_dir / src).is_file():
            out.append(plot_confusion(run_dir / src, run_dir / "confusion.png", what))
            break
    out = [p for p in out if p is not None]
    if strict and not out:
        raise RunError(
            f"{run_dir}: nothing to plot (no history.csv, val_predictions.csv or oof.csv "
            "with rows); plots come from a run that trained at least one epoch"
        )
    return out
