"""Level 2 of the stack: learners trained fold by fold on the level-1 OOF predictions.

A level-2 learner's inputs are the level-1 models' OOF probabilities as log-probabilities
(clipped at 1e-15), in the order of its inputs, then the input columns of ``features`` as
``sign(x) log(1 + |x|)`` (log1p for counts); every column is standard-scaled with statistics
of the fold's level-2 training rows only. (Unscaled, the log-probabilities span some 30
units: lbfgs then ran out of its 1,000 iterations on 400 rows where it converges in 40.)
On the stack's folds: the model of fold k trains on the other folds' OOF rows (a net and
LightGBM early-stop on ``data.inner_split`` rows of those; trees ignore the scaling),
predicts fold k (its OOF, so the level-2 score is as honest as level 1's) and the test rows,
whose inputs are the level-1 test probabilities; its test prediction is the mean over the
folds.

The folder of a level-2 learner holds oof.csv, submission.csv, metrics.json,
``models/fold<k>/`` (a saved learner, or a Keras net's ``model.keras``) and level2.json: its
spec, its inputs and feature columns in order and each fold's scaler, all that
``load_level2`` needs to recompute it.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ottotrain import engine, learners
from ottotrain.config import Config
from ottotrain.config.data_section import DataConfig
from ottotrain.config.stack_section import Level2Spec
from ottotrain.data import id_name, inner_split
from ottotrain.errors import ConfigError, RunError, did_you_mean
from ottotrain.features.arrays import Arrays
from ottotrain.io import read_json, write_json
from ottotrain.log import Log
from ottotrain.metrics import log_loss
from ottotrain.runs import WORK
from ottotrain.workflows.common import class_weights
from ottotrain.workflows.cv_member import FoldedData, member_seed
from ottotrain.workflows.stack.outputs import ModelOutput, read_output, write_output

LEVEL2_FILE = "level2.json"
ALL = "all"
NET_FILE = "model.keras"
EARLY_STOPPED = ("net", "lightgbm")  # the kinds that stop on inner-validation rows


def feature_columns(spec: Level2Spec, columns: list[str]) -> list[str]:
    """The input columns a level-2 learner joins, in the data's order for ``['all']``."""
    return list(columns) if ALL in spec.features else list(spec.features)


def check_features(level2: list[Level2Spec], columns: list[str], source: str = "<config>") -> None:
    """Refuse a level-2 feature that is not an input column, in one line naming it.

    Raises:
        ConfigError: ``stack.level2[i].features`` names an unknown column.
    """
    known = set(columns)
    for i, spec in enumerate(level2):
        for j, name in enumerate(spec.features):
            if name != ALL and name not in known:
                raise ConfigError(
                    f"{source}: stack.level2[{i}].features[{j}]: '{name}' is not an input column"
                    f"{did_you_mean(name, columns)}; give column names of data.train, or [all]"
                )


def log_inputs(probas: list[np.ndarray]) -> np.ndarray:
    """The level-1 probabilities as log-probabilities (clipped at 1e-15), side by side."""
    return np.hstack([np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-15, None)) for p in probas])


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """log1p for counts, and defined for any number (missing values count as 0)."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class Scaler:
    """Standard scaling of a level-2 learner's columns, fitted on one fold's level-2 training rows."""

    mean: list[float]
    scale: list[float]

    @classmethod
    def fit(cls, z: np.ndarray) -> "Scaler":
        sd = z.std(axis=0)
        return cls(z.mean(axis=0).tolist(), np.where(sd > 0, sd, 1.0).tolist())

    def apply(self, z: np.ndarray) -> np.ndarray:
        return (z - np.asarray(self.mean)) / np.asarray(self.scale)


def joined(logp: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    """A level-2 learner's columns before scaling: the log-probabilities, then the features'."""
    return logp if z is None else np.hstack([logp, z])


def _column_block(x, features: list[str], chosen: list[str]) -> np.ndarray | None:
    if not chosen or x is None:
        return None
    at = {f: j for j, f in enumerate(features)}
    return signed_log1p(np.asarray(x)[:, [at[c] for c in chosen]])


@dataclass
class _Fold:
    """What one fold's level-2 model predicted, and what it took."""

    oof: np.ndarray
    test: np.ndarray | None
    scaler: Scaler
    train_seconds: float
    predict_seconds: float
    rounds: int | None = None  # LightGBM's boosting rounds, chosen by early stopping


def _net_config(spec: Level2Spec, data_cfg: DataConfig, seed: int) -> Config:
    cfg = Config(seed=seed, data=data_cfg, model=spec.net.model, train=spec.net.train)
    return cfg.with_source(f"stack.level2 '{spec.name}'")


def _proba(kind: str, model):
    """A fold model's ``predict_proba``: a learner's own, or a Keras net's through the engine."""
    if kind == "net":
        return lambda x: engine.inference.predict_proba(model, np.asarray(x, dtype=np.float32))
    return model.predict_proba


def _fit(spec: Level2Spec, x_tr, y_tr, stop, out: Path, ctx: dict):
    """Train fold k's model on (x_tr, y_tr) (early-stopped on its ``stop`` rows) and save it in
    ``out``; return it and its boosting rounds (None but for LightGBM)."""
    n_classes, seed = ctx["n_classes"], ctx["seed"]
    if spec.kind != "net":  # a learner: logistic (no early stopping) or lightgbm
        learner = learners.make(
            spec.kind, getattr(spec, spec.kind), n_classes=n_classes, seed=seed, threads=ctx["threads"]
        )
        if stop is None:
            info = learner.fit(x_tr, y_tr, None, None)
        else:
            fit, stop_rows = stop
            info = learner.fit(x_tr[fit], y_tr[fit], x_tr[stop_rows], y_tr[stop_rows])
        learner.save(out)
        return learner, info.rounds if spec.kind == "lightgbm" else None
    fit, stop_rows = stop
    cfg = _net_config(spec, ctx["data_cfg"], seed)
    x32 = np.asarray(x_tr, dtype=np.float32)
    arrays = Arrays(x32[fit], y_tr[fit], x32[stop_rows], y_tr[stop_rows], n_classes)
    work = out.parent.parent / WORK / out.name  # the level's work/fold<k>: gone once trained
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    weights = class_weights(cfg, arrays.y_train, ctx["classes"])
    job = engine.member.MemberJob(cfg, arrays, work, weights, name=f"{spec.name} {out.name}")
    result = engine.member.train_member(job, ctx["log"])
    out.mkdir(parents=True, exist_ok=True)
    os.replace(result.model_path, out / NET_FILE)
    shutil.rmtree(work.parent, ignore_errors=True)
    return engine.inference.load_model(out / NET_FILE), None


def _train_fold(spec, k: int, logp, z, test_logp, z_test, data: FoldedData, folder: Path, ctx) -> _Fold:
    y = data.train.y
    tr, va = np.flatnonzero(data.fold_of != k), np.flatnonzero(data.fold_of == k)
    x = joined(logp, z)
    scaler = Scaler.fit(x[tr])
    x_tr = scaler.apply(x[tr])
    stop = None
    if spec.kind in EARLY_STOPPED:  # on rows of the training folds, never on fold k
        stop = inner_split(np.arange(len(tr)), y[tr], ctx["inner_validation"], ctx["seed"])
    t0 = time.perf_counter()
    model, rounds = _fit(spec, x_tr, y[tr], stop, folder / "models" / f"fold{k + 1}", ctx)
    t1 = time.perf_counter()
    predict = _proba(spec.kind, model)
    oof = predict(scaler.apply(x[va]))
    test = None if test_logp is None else predict(scaler.apply(joined(test_logp, z_test)))
    return _Fold(oof, test, scaler, t1 - t0, time.perf_counter() - t1, rounds)


def train_level2(
    spec: Level2Spec,
    inputs: list[ModelOutput],
    data: FoldedData,
    test,
    folder: Path,
    log: Log,
    *,
    inner_validation: float,
    seed: int,
    threads: int,
    data_cfg: DataConfig | None = None,
) -> ModelOutput:
    """Train one level-2 learner fold by fold; write its folder; return its OOF and test predictions.

    Args:
        inputs: the level-1 models' outputs (their ``oof`` and ``test``), in the order used.
        data: the training table and the stack's folds.
        test: (ids, raw feature rows) of the test file, or None.
        threads: a learner's threads (logistic, LightGBM; a net trains with the process's
            TensorFlow threads).
        data_cfg: the stack's data section (its id and target column names, and the net's config).
    """
    train, folds = data.train, int(data.fold_of.max()) + 1
    chosen = feature_columns(spec, train.features)
    check_features([spec], train.features)
    data_cfg = data_cfg or DataConfig(train=str(train.path))  # default id and target column names
    logp, z = log_inputs([o.oof for o in inputs]), _column_block(train.x, train.features, chosen)
    with_test = test is not None and all(o.test is not None for o in inputs)
    test_logp = log_inputs([o.test for o in inputs]) if with_test else None
    z_test = _column_block(test[1], train.features, chosen) if with_test else None
    ctx = {"n_classes": len(train.classes), "classes": train.classes, "threads": threads, "log": log}
    ctx.update(data_cfg=data_cfg, inner_validation=inner_validation)
    oof = np.zeros((len(train.y), len(train.classes)))
    fold_results = []
    for k in range(folds):
        ctx["seed"] = member_seed(seed, k, 0)
        r = _train_fold(spec, k, logp, z, test_logp, z_test, data, folder, ctx)
        oof[data.fold_of == k] = r.oof
        fold_results.append(r)
        va = data.fold_of == k
        rounds = "" if r.rounds is None else f", {r.rounds} rounds"
        log(
            f"level 2 {spec.name}: fold {k + 1}/{folds} log loss {log_loss(train.y[va], r.oof):.4f}{rounds}",
            1,
        )
    test_p = np.mean([r.test for r in fold_results], axis=0) if with_test else None
    out = ModelOutput(
        spec.name,
        2,
        oof,
        test_p,
        train_seconds=sum(r.train_seconds for r in fold_results),
        predict_seconds=sum(r.predict_seconds for r in fold_results),
    )
    _write_files(spec, inputs, chosen, fold_results, out, data, test, folder, data_cfg)
    return out


def _write_files(spec, inputs, chosen, fold_results, out: ModelOutput, data, test, folder: Path, data_cfg):
    train = data.train
    write_output(
        folder,
        out,
        train.ids,
        data.fold_of,
        train.y,
        train.classes,
        id_name(data_cfg.id_column),
        data_cfg.target_column,
        test[0] if out.test is not None else None,
    )
    folds = [
        {"log_loss": log_loss(train.y[data.fold_of == k], r.oof)}
        | ({} if r.rounds is None else {"rounds": r.rounds})
        for k, r in enumerate(fold_results)
    ]
    write_json(
        folder / LEVEL2_FILE,
        {
            "name": spec.name,
            "kind": spec.kind,
            "spec": spec.model_dump(mode="json"),
            "inputs": [o.name for o in inputs],
            "features": chosen,
            "classes": list(train.classes),
            "scalers": [vars(r.scaler) for r in fold_results],
        },
    )
    write_json(
        folder / "metrics.json",
        {
            "name": spec.name,
            "level": 2,
            "oof_log_loss": round(log_loss(train.y, out.oof), 6),
            "oof_accuracy": round(float((out.oof.argmax(1) == train.y).mean()), 6),
            "folds": folds,
            "train_seconds": round(out.train_seconds, 3),
            "predict_seconds": round(out.predict_seconds, 3),
        },
    )


def reuse_level2(
    spec: Level2Spec,
    inputs: list[ModelOutput],
    data: FoldedData,
    with_test: bool,
    folder: Path,
    id_column: str,
):
    """The outputs of a level-2 learner that finished earlier with this spec on these inputs
    (a resumed stack), read back from ``folder``; None when it must be trained (again).

    Its metrics.json, written last, marks it finished; level2.json must name the same spec,
    level-1 models and feature columns. The rows, folds and seed cannot change on resume, so the
    learner would be trained to the same model.
    """
    path = folder / LEVEL2_FILE
    if not (folder / "metrics.json").exists() or not path.exists():
        return None
    info = read_json(path)
    train = data.train
    try:
        same = Level2Spec.model_validate(info["spec"]) == spec
    except ValueError:  # a spec of another version: train it again
        return None
    if not same or info["inputs"] != [o.name for o in inputs]:
        return None
    if (
        info["features"] != feature_columns(spec, train.features)
        or with_test != (folder / "submission.csv").exists()
    ):
        return None
    out = read_output(folder, spec.name, 2, train.ids, data.fold_of, train.classes, id_column)
    metrics = read_json(folder / "metrics.json")
    out.train_seconds, out.predict_seconds = metrics["train_seconds"], metrics["predict_seconds"]
    return out


@dataclass
class Level2Model:
    """A trained level-2 learner read back from its folder, for predicting new rows."""

    name: str
    kind: str  # logistic | net | lightgbm
    inputs: list[str]  # the level-1 models whose probabilities it reads, in order
    features: list[str]  # the input columns it joins
    scalers: list[Scaler]
    models: list  # one per fold: a learner, or a Keras model

    def predict_proba(self, level1: dict[str, np.ndarray], x, features: list[str]) -> np.ndarray:
        """The mean over the folds' models, for level-1 probabilities ``level1`` (name -> rows)
        and raw feature rows ``x`` (columns ``features``)."""
        logp = log_inputs([level1[n] for n in self.inputs])
        z = _column_block(x, features, self.features)
        x = joined(logp, z)
        ps = [_proba(self.kind, m)(s.apply(x)) for s, m in zip(self.scalers, self.models)]
        return np.mean(ps, axis=0)


def load_level2(folder: Path) -> Level2Model:
    """Read a level-2 learner's folder (level2.json and models/fold<k>/) back.

    Raises:
        RunError: a file is missing or damaged (one line naming it).
    """
    path = folder / LEVEL2_FILE
    if not path.exists():
        raise RunError(f"{folder}: has no {LEVEL2_FILE}; the stack's level 2 did not finish")
    info = read_json(path)
    models = []
    for k in range(len(info["scalers"])):
        where = folder / "models" / f"fold{k + 1}"
        if info["kind"] == "net":
            if not (where / NET_FILE).exists():
                raise RunError(f"{where / NET_FILE}: missing; the stack's level 2 is incomplete")
            models.append(engine.inference.load_model(where / NET_FILE))
        else:
            models.append(learners.load(where))
    scalers = [Scaler(**s) for s in info["scalers"]]
    return Level2Model(info["name"], info["kind"], info["inputs"], info["features"], scalers, models)
