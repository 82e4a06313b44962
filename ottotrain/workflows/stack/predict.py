"""Predicting with a finished stack: level 1 from the saved members, level 2, then the top.

A Keras member (``members/<name>/``) is a cv run directory, read by the cv-run predictor; a
learner member (lightgbm, knn) is one saved learner per fold (``models/fold<k>/``), whose
probabilities are averaged as the stack averaged them for its submission. Each level-2
learner is read back from ``level2/<name>/`` (its fold models and scalers) and fed the
level-1 probabilities, rounded as the members' files hold them (the stack trained level 2 on
those); the top's weights (top.json) mix the result. Only the models the
top or a level-2 learner uses are loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ottotrain import learners, runs
from ottotrain.errors import RunError
from ottotrain.features import Preprocessor
from ottotrain.features.preprocess import PreprocessState
from ottotrain.io import read_json
from ottotrain.runs.artifacts import as_written
from ottotrain.workflows.predictor import Predictor, open_run
from ottotrain.workflows.stack.leaderboard import INPUTS_FILE, read_top
from ottotrain.workflows.stack.level2 import Level2Model, load_level2
from ottotrain.workflows.stack.outputs import STACK_KIND
from ottotrain.workflows.stack.top import mix

STACK_FILE = "stack.json"
LEVEL2_DIR, MEMBERS_DIR = "level2", "members"


@dataclass
class LevelOne:
    """A level-1 member read back: the models it makes (a KNN member: one per k), its kind, and
    how it predicts raw rows (model name -> probabilities)."""

    names: list[str]
    kind: str  # "cv" (a Keras member: a cv run), or the learner's kind
    predict: Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class StackPredictor:
    """A finished stack, read back for predicting raw feature rows."""

    run_dir: Path
    pre: Preprocessor  # inputs.json: the input columns and how a file is read (transforms nothing)
    members: list[LevelOne]
    level2: list[Level2Model]
    weights: dict[str, float]  # the top's
    kind: str = STACK_KIND

    @property
    def state(self) -> PreprocessState:
        return self.pre.state

    def predict_proba(self, x) -> np.ndarray:
        """The top's probabilities for raw feature rows ``x`` (the training file's columns)."""
        x = np.asarray(x)
        probas = {}
        for m in self.members:  # as the stack read them from the members' files
            probas.update({n: as_written(p) for n, p in m.predict(x).items()})
        for model in self.level2:
            probas[model.name] = model.predict_proba(probas, x, self.state.features)
        names = [n for n, w in self.weights.items() if w > 0]
        return mix(np.array([self.weights[n] for n in names]), [probas[n] for n in names])

    def predict_with_members(self, x) -> tuple[np.ndarray, None]:
        """As a cv run's predictor: the probabilities, and no ensemble members' own."""
        return self.predict_proba(x), None


def _fold_models(folder: Path, folds: int) -> list:
    return [learners.load(folder / runs.MODELS / f"fold{k + 1}") for k in range(folds)]


def _knn_member(names: list[str], folders: list[Path], folds: int) -> LevelOne:
    """A KNN member's models (one per k) as the stack made them: every k's votes from one search
    of the largest k (``learners.knn_votes``), not one search per k; each model's probabilities
    are the mean over its fold models."""
    refs = _fold_models(folders[0], folds)  # every k's folder holds the same reference rows
    ks = [int(read_json(f / runs.MODELS / "fold1" / "learner.json")["params"]["k"]) for f in folders]
    p = refs[0].params

    def predict(x) -> dict[str, np.ndarray]:
        votes = [learners.knn_votes(r.x_ref, r.y_ref, x, ks, p.space, p.weights, r.n_classes) for r in refs]
        return {n: np.mean([v[k] for v in votes], axis=0) for n, k in zip(names, ks)}

    return LevelOne(names, "knn", predict)


def _member(run_dir: Path, entries: list[dict], folds: int) -> LevelOne:
    """One member of stack.json (a KNN member: its entries, one per k) read back."""
    folders = [member_folder(run_dir, e) for e in entries]
    names = [e["name"] for e in entries]
    if (folders[0] / runs.STATUS).exists():  # a Keras member: a complete cv run directory
        predictor = open_run(folders[0])
        return LevelOne(names, runs.CV_KIND, lambda x: {names[0]: predictor.predict_proba(x)})
    member = folders[0] / "member.json"
    kind = read_json(member)["kind"] if member.exists() else entries[0].get("kind", "?")
    if kind == "knn":
        return _knn_member(names, folders, folds)
    models = _fold_models(folders[0], folds)
    return LevelOne(names, kind, lambda x: {names[0]: np.mean([m.predict_proba(x) for m in models], axis=0)})


def _members(run_dir: Path, info: dict, needed: set[str]) -> list[LevelOne]:
    """The level-1 members that make a model in ``needed``, grouped as stack.json's ``member``."""
    groups: dict[str, list[dict]] = {}
    for e in info["members"]:
        groups.setdefault(e.get("member", e["name"]), []).append(e)
    chosen = [g for g in groups.values() if any(e["name"] in needed for e in g)]
    return [_member(run_dir, g, int(info["folds"])) for g in chosen]


def stack_info(run_dir) -> dict:
    """stack.json of a finished stack run, checked.

    Raises:
        RunError: not a stack run, not finished, or its files are missing (one line).
    """
    run_dir = Path(run_dir)
    info = runs.read_status(run_dir)
    runs.check_format(run_dir, info)
    if info.get("kind") != STACK_KIND:
        raise RunError(f"{run_dir}: not a stack run (its kind is {info.get('kind', 'fit')})")
    if info["status"] != runs.FINISHED:
        raise RunError(
            f"{run_dir}: the stack is {info['status']}; finish it first with "
            f"'ottotrain stack --resume {run_dir}'"
        )
    path = run_dir / STACK_FILE
    if not path.exists():
        raise RunError(f"{run_dir}: has no {STACK_FILE}; the stack run is damaged")
    return read_json(path)


def open_stack(run_dir) -> StackPredictor:
    """Open a finished stack run for predicting: the models its top needs, and their inputs."""
    run_dir = Path(run_dir)
    info = stack_info(run_dir)
    weights = read_top(run_dir)["weights"]
    level2_names = [n for n in info.get("level2", []) if (run_dir / LEVEL2_DIR / n).is_dir()]
    level2 = [load_level2(run_dir / LEVEL2_DIR / n) for n in level2_names if weights.get(n, 0) > 0]
    needed = {n for n, w in weights.items() if w > 0} | {n for m in level2 for n in m.inputs}
    members = _members(run_dir, info, needed)
    unknown = needed - {n for m in members for n in m.names} - {m.name for m in level2}
    if unknown:
        raise RunError(f"{run_dir}: the top uses {', '.join(sorted(unknown))}, which the run does not hold")
    return StackPredictor(run_dir, read_inputs(run_dir), members, level2, weights)


def read_inputs(run_dir: Path) -> Preprocessor:
    """inputs.json: the stack's input columns and how a file's cells are read."""
    path = run_dir / INPUTS_FILE
    if not path.exists():
        raise RunError(f"{path}: missing; the stack run is damaged")
    return Preprocessor.from_json(path.read_text(encoding="utf-8"), path)


def member_folder(run_dir: Path, entry: dict) -> Path:
    """The folder of a stack.json member entry (checked to exist)."""
    folder = run_dir / entry.get("folder", f"{MEMBERS_DIR}/{entry['name']}")
    if not folder.is_dir():
        raise RunError(f"{folder}: missing; the stack's member '{entry['name']}' is not in the run")
    return folder


def predict_stack(run_dir, x) -> np.ndarray:
    """The stack's probabilities for raw feature rows ``x`` (columns: the training file's)."""
    return open_stack(run_dir).predict_proba(x)


def open_any(run_dir) -> Predictor | StackPredictor:
    """A finished run of any kind (fit, cv, stack) opened for predicting raw feature rows."""
    return open_stack(run_dir) if is_stack_run(run_dir) else open_run(run_dir)


def is_stack_run(run_dir) -> bool:
    try:
        return runs.read_status(run_dir).get("kind") == STACK_KIND
    except RunError:
        return False
