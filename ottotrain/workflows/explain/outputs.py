"""explain's files (importance.csv, importance.json, importance.png) and its short table.

The files are written atomically, each whole or not at all; the chart follows plots.py
(matplotlib's object API on an Agg canvas, a fixed size in pixels).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ottotrain.io import atomic_path, write_json
from ottotrain.workflows.plots import _figure, _save

if TYPE_CHECKING:
    from ottotrain.workflows.explain import Explanation

CSV, JSON, PNG = "importance.csv", "importance.json", "importance.png"
CHART_WIDTH, BAR_HEIGHT = 900, 22  # pixels; the height grows with the bars
CHART_BARS = 30  # the chart shows the top groups only: beyond, bars are unreadable


def importance_table(result: Explanation) -> pd.DataFrame:
    """One row per group, by rank: group, columns (its inputs), mean, interval, per class, rank."""
    rows = []
    for g in result.groups:
        row = {"group": g.group, "columns": ";".join(g.inputs), "mean": g.mean}
        row |= {"ci_low": g.ci_low, "ci_high": g.ci_high}
        row |= {f"loss_{c}": v for c, v in zip(result.classes, g.per_class)}
        rows.append(row | {"rank": g.rank})
    return pd.DataFrame(rows)


def write_outputs(result: Explanation, folder: Path) -> list[Path]:
    """importance.csv, importance.json (the whole result) and importance.png in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / CSV
    with atomic_path(csv) as tmp:
        importance_table(result).to_csv(tmp, index=False)
    info = {k: v for k, v in as_dict(result).items() if k != "files"}
    write_json(folder / JSON, info)
    return [csv, folder / JSON, plot_importance(result, folder / PNG)]


def as_dict(result: Explanation) -> dict:
    """The result as JSON takes it: NaN as null, paths as text."""
    return _no_nan({**dataclasses.asdict(result), "files": [str(f) for f in result.files]})


def _no_nan(obj):
    """NaN (no interval from one repeat, a class without rows) as JSON's null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj


def plot_importance(result: Explanation, out_png: Path) -> Path:
    """Horizontal bars of the top groups' mean increase, their t intervals as error bars."""
    top = result.groups[:CHART_BARS][::-1]  # the largest at the top
    fig = _figure((CHART_WIDTH, 160 + BAR_HEIGHT * len(top)))
    ax = fig.subplots()
    means = np.array([g.mean for g in top])
    lo, hi = np.array([g.ci_low for g in top]), np.array([g.ci_high for g in top])
    err = None if np.isnan(lo).all() else np.vstack([means - lo, hi - means])
    ax.barh(range(len(top)), means, xerr=err, color="tab:blue", ecolor="black", capsize=2)
    ax.set_yticks(range(len(top)), labels=[g.group for g in top], fontsize="small")
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_xlabel("log loss increase when permuted")
    shown = f"top {len(top)} of {len(result.groups)}" if len(top) < len(result.groups) else "all"
    ci = f", {result.confidence:.0%} t interval" if err is not None else ""
    ax.set_title(
        f"Permutation importance ({shown} groups; {result.rows:,} rows x {result.repeats} repeats{ci}; "
        f"log loss {result.base_log_loss:.4f})",
        fontsize="medium",
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out_png)


def format_importance(result: Explanation, top: int = 10) -> str:
    """The top groups as a short table, under the unpermuted log loss."""
    r = result
    lines = [f"log_loss={r.base_log_loss:.4f} rows={r.rows} repeats={r.repeats} kind={r.kind}"]
    w = max(len("group"), *(len(g.group) for g in result.groups[:top]))
    lines.append(f"{'rank':>4}  {'group':<{w}}  {'increase':>9}  {'interval':>21}  inputs")
    for g in result.groups[:top]:
        ci = "" if math.isnan(g.ci_low) else f"[{g.ci_low:+.4f}, {g.ci_high:+.4f}]"
        lines.append(f"{g.rank:>4}  {g.group:<{w}}  {g.mean:>+9.4f}  {ci:>21}  {len(g.inputs)}")
    return "\n".join(lines)
