"""The stack's results: the leaderboard of every model and the top's files.

``write_results`` writes, in the stack's run directory, top.json (the top's method and
weights), oof.csv and submission.csv (the top's), leaderboard.csv (one row per level-1
member, level-2 learner and the top, as AutoGluon's ``leaderboard()``), inputs.json (the
input columns and how they are read, for ``predict`` and ``evaluate``) and metrics.json
(``"kind": "stack"``, with ``top_ablations``: the top by greedy selection and by the blend,
over both levels, level 1 only and level 2 only, each scored the honest way).

The top's oof.csv is its nested OOF: fold k's rows are weighted by weights chosen on the
other folds' rows, so its score (``oof_log_loss``) is honest; the weights in top.json,
which make the submission, are chosen on all OOF rows (as a cv run's OOF comes from fold
models and its submission from all of them). The in-sample figure is reported beside it.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ottotrain.config.data_section import DataConfig
from ottotrain.data import id_name
from ottotrain.errors import RunError
from ottotrain.features import Preprocessor
from ottotrain.io import atomic_path, read_json, write_json
from ottotrain.metrics import log_loss
from ottotrain.runs.artifacts import versions
from ottotrain.workflows.cv_member import FoldedData
from ottotrain.workflows.stack.outputs import STACK_KIND, ModelOutput, write_output
from ottotrain.workflows.stack.top import TOP_NAME, TopResult, ablations

TOP_FILE, LEADERBOARD_FILE, INPUTS_FILE = "top.json", "leaderboard.csv", "inputs.json"


@dataclass
class LeaderRow:
    """One model of the stack, as the leaderboard shows it."""

    model: str
    level: int  # 1, 2, or 3 for the top
    oof_log_loss: float
    oof_accuracy: float
    train_seconds: float
    predict_seconds: float
    weight: float  # its weight at the top (the top: 1)


def leader_row(out: ModelOutput, y, weight: float) -> LeaderRow:
    return LeaderRow(
        out.name,
        out.level,
        round(log_loss(y, out.oof), 6),
        round(float((out.oof.argmax(1) == np.asarray(y)).mean()), 6),
        round(out.train_seconds, 3),
        round(out.predict_seconds, 3),
        round(weight, 6),
    )


def leaderboard(outputs: list[ModelOutput], top: TopResult, y) -> list[LeaderRow]:
    """Every model and the top, best OOF log loss first (the top's: its nested figure)."""
    rows = [leader_row(o, y, top.weights.get(o.name, 0.0)) for o in outputs]
    rows.append(leader_row(top.output(), y, 1.0))
    return sorted(rows, key=lambda r: (r.oof_log_loss, -r.level))


def write_leaderboard(path: Path, rows: list[LeaderRow]) -> None:
    names = [f.name for f in fields(LeaderRow)]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(names)
        w.writerows([[getattr(r, n) for n in names] for r in rows])


def read_leaderboard(run_dir: Path) -> list[LeaderRow]:
    """The rows of a finished stack's leaderboard.csv."""
    path = Path(run_dir) / LEADERBOARD_FILE
    if not path.exists():
        raise RunError(f"{run_dir}: has no {LEADERBOARD_FILE}; the stack has not finished")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    types = {f.name: f.type for f in fields(LeaderRow)}
    conv = {"str": str, "int": int, "float": float}
    return [LeaderRow(**{k: conv[types[k]](v) for k, v in r.items()}) for r in rows]


def write_inputs(run_dir: Path, data: FoldedData, data_cfg: DataConfig) -> None:
    """inputs.json: the input columns, classes, id and target columns and column types that a
    test or labelled file is read with (a preprocessing state that transforms nothing)."""
    plain = data_cfg.model_copy(update={"knn": None, "tfidf": False, "transform": "none", "scaling": "none"})
    t = data.train
    pre = Preprocessor.fit(t.x, plain, t.features, t.classes, t.y, t.types)
    pre.save(Path(run_dir) / INPUTS_FILE)


def write_results(
    run_dir: Path,
    outputs: list[ModelOutput],
    top: TopResult,
    data: FoldedData,
    test_ids,
    data_cfg: DataConfig,
    *,
    left_out: list[dict] = (),
    timings: dict | None = None,
) -> list[LeaderRow]:
    """Write the stack's top-level files (see the module); return the leaderboard.

    Args:
        outputs: every level-1 member and level-2 learner that finished.
        top: ``top.combine``'s result (with the stack's folds: its nested OOF).
        test_ids: the test rows' ids, or None without a test file.
        left_out: the members the time budget left out, [{"name", "why"}].
        timings: seconds per phase, as the stack measured them.
    """
    run_dir, y = Path(run_dir), data.train.y
    rows = leaderboard(outputs, top, y)
    write_inputs(run_dir, data, data_cfg)
    t = data.train
    write_output(
        run_dir,
        top.output(),
        t.ids,
        data.fold_of,
        y,
        t.classes,
        id_name(data_cfg.id_column),
        data_cfg.target_column,
        test_ids,
    )
    t0 = time.perf_counter()
    others = ablations(outputs, y, data.fold_of, top.rounds)
    ablation_seconds = round(time.perf_counter() - t0, 3)
    write_json(run_dir / TOP_FILE, top_record(top, outputs))
    write_leaderboard(run_dir / LEADERBOARD_FILE, rows)
    best = next(r for r in rows if r.model == TOP_NAME)
    write_json(
        run_dir / "metrics.json",
        {
            "kind": STACK_KIND,
            "oof_log_loss": best.oof_log_loss,
            "oof_accuracy": best.oof_accuracy,
            "top_in_sample_oof_log_loss": round(top.oof_log_loss, 6),
            "top_method": top.method,
            "leaderboard": [asdict(r) for r in rows],
            "top_ablations": [asdict(a) for a in others],
            "top_ablations_seconds": ablation_seconds,
            "left_out": list(left_out),
            "timings": dict(timings or {}),
            "versions": versions(),
        },
    )
    return rows


def top_record(top: TopResult, outputs: list[ModelOutput]) -> dict:
    """top.json: the method, the weights, and the level of each model weighted."""
    levels = {o.name: o.level for o in outputs}
    return {
        "method": top.method,
        "weights": top.weights,
        "levels": {name: levels.get(name) for name in top.weights},
        "oof_log_loss": None if top.nested_oof_log_loss is None else round(top.nested_oof_log_loss, 6),
        "in_sample_oof_log_loss": round(top.oof_log_loss, 6),
    }


def read_top(run_dir: Path) -> dict:
    path = Path(run_dir) / TOP_FILE
    if not path.exists():
        raise RunError(f"{run_dir}: has no {TOP_FILE}; the stack has not finished")
    return read_json(path)


def format_leaderboard(run_dir) -> str:
    """The leaderboard as text (as AutoGluon's ``leaderboard()``): best OOF log loss first, and
    what the top chose and the budget left out."""
    run_dir = Path(run_dir)
    rows = read_leaderboard(run_dir)
    top = read_top(run_dir)
    w = max(len("model"), *(len(r.model) for r in rows))
    lines = [f"{'model':<{w}}  level  oof_log_loss  oof_accuracy  train_s  predict_s  weight"]
    for r in rows:
        lines.append(
            f"{r.model:<{w}}  {r.level:>5}  {r.oof_log_loss:>12.4f}  {r.oof_accuracy:>12.4f}  "
            f"{r.train_seconds:>7.1f}  {r.predict_seconds:>9.1f}  {r.weight:>6.3f}"
        )
    chosen = sum(1 for v in top["weights"].values() if v > 0)
    metrics = _metrics(run_dir)
    honest = top.get("oof_log_loss")
    lines.append(
        f"top: {top['method']}, {chosen} of {len(top['weights'])} models weighted; OOF log loss "
        + (f"{honest:.4f} with weights chosen on the other folds, " if honest is not None else "")
        + f"{top['in_sample_oof_log_loss']:.4f} with the weights of the submission (chosen on all OOF rows)"
    )
    if metrics.get("top_ablations"):
        lines.append("other tops, OOF log loss with weights chosen on the other folds:")
    for a in metrics.get("top_ablations", []):
        lines.append(
            f"  {a['method']} over {a['models']}: {a['nested_oof_log_loss']:.4f} "
            f"(in-sample {a['in_sample_oof_log_loss']:.4f})"
        )
    for gone in metrics.get("left_out", []):
        lines.append(f"left out: {gone.get('name')} ({gone.get('why')})")
    return "\n".join(lines)


def _metrics(run_dir: Path) -> dict:
    try:
        m = read_json(run_dir / "metrics.json")
    except (OSError, ValueError):
        return {}
    return m if isinstance(m, dict) else {}
