"""The predictor: a finished run, fit or cv, read back as an ensemble of one or many members.

A fit run is one member (``preprocess.json`` + ``model.keras``); a cv run is the members
listed in ``ensemble.json``. Either way every file is checked before anything is loaded
(no foreign files in the run, model archives made of Keras' own classes only, Keras'
safe mode), and ``predict_proba`` takes raw feature rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ottotrain import engine
from ottotrain.errors import RunError
from ottotrain.features import Preprocessor
from ottotrain.features.preprocess import PreprocessState
from ottotrain.io import read_json
from ottotrain.runs.rundir import (
    CV_KIND,
    ENSEMBLE_FILE,
    FINISHED,
    INTERRUPTED,
    REQUIRED,
    check_format,
    check_safe,
    read_status,
)
from ottotrain.workflows.average import Member, average


@dataclass
class Predictor:
    run_dir: Path
    kind: str  # "fit" or "cv"
    members: list[Member]
    status: dict

    @property
    def pre(self) -> Preprocessor:
        """The first member's preprocessing: how a file's columns are read (missing values, categories)."""
        return self.members[0].pre

    @property
    def state(self) -> PreprocessState:
        """What every member's preprocessing agrees on: features, classes, id and target columns."""
        return self.pre.state

    def predict_proba(self, x) -> np.ndarray:
        """Weighted average of the members' class probabilities for raw feature rows ``x``."""
        return average(self.members, x, engine.inference.predict_proba)[0]

    def member_proba(self, x) -> np.ndarray | None:
        """For models with ``model.ensemble``: member j's probabilities, (k, rows, classes),
        averaged over the run's models as ``predict_proba`` averages them; else None."""
        return average(self.members, x, engine.inference.member_probas)[0] if self._ensembles() else None

    def predict_with_members(self, x) -> tuple[np.ndarray, np.ndarray | None]:
        """``predict_proba`` and ``member_proba`` together, from one transform of ``x`` per member."""
        if not self._ensembles():
            return self.predict_proba(x), None
        p, members = average(self.members, x, engine.inference.predict_proba, engine.inference.member_probas)
        return p, members  # one pass: a KNN run's features are the costly part of a transform

    def _ensembles(self) -> bool:
        """Whether every model is a TabM-style ensemble of one size."""
        sizes = {engine.inference.ensemble_size(m.model) for m in self.members}
        return len(sizes) == 1 and None not in sizes


def _fit_members(run_dir: Path, info: dict) -> list[Member]:
    if info["status"] not in (FINISHED, INTERRUPTED) or not (run_dir / "model.keras").exists():
        raise RunError(
            f"{run_dir}: the run is {info['status']} and has no usable model yet; "
            "wait for it to finish, or resume it with 'ottotrain fit --resume'"
        )
    missing = [f for f in REQUIRED if not (run_dir / f).exists()]
    if missing:
        raise RunError(f"{run_dir}: incomplete run directory, missing {', '.join(missing)}")
    check_safe(run_dir)
    path = run_dir / "preprocess.json"
    pre = Preprocessor.from_json(path.read_bytes().decode("utf-8", "replace"), path)
    return [Member("model", pre, engine.inference.load_model(run_dir / "model.keras"))]


def _cv_members(run_dir: Path, info: dict) -> list[Member]:
    if info["status"] != FINISHED or not (run_dir / ENSEMBLE_FILE).exists():
        raise RunError(
            f"{run_dir}: the cv run is {info['status']} and has no ensemble yet; "
            f"finish it with 'ottotrain cv --resume {run_dir}'"
        )
    check_safe(run_dir)
    out = []
    for m in read_json(run_dir / ENSEMBLE_FILE)["members"]:
        for key in ("model", "preprocess"):
            p = (run_dir / m[key]).resolve()
            if run_dir.resolve() not in p.parents or not p.exists():
                raise RunError(
                    f"{run_dir / ENSEMBLE_FILE}: member {m.get('name')}: "
                    f"{m[key]} is missing or outside the run directory"
                )
        pre = Preprocessor.from_json((run_dir / m["preprocess"]).read_text(), run_dir / m["preprocess"])
        model = engine.inference.load_model(run_dir / m["model"])
        out.append(Member(m["name"], pre, model, float(m.get("weight", 1.0))))
    return out


def open_run(run_dir) -> Predictor:
    """Open a finished run (fit or cv) for predicting, checking it first."""
    run_dir = Path(run_dir)
    info = read_status(run_dir)
    check_format(run_dir, info)
    kind = info.get("kind", "fit")
    members = (_cv_members if kind == CV_KIND else _fit_members)(run_dir, info)
    return Predictor(run_dir, kind, members, info)


def is_cv_run(run_dir) -> bool:
    try:
        return read_status(run_dir).get("kind") == CV_KIND
    except RunError:
        return False
