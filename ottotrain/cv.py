"""Cross-validation with bagging: ``ottotrain cv``.

One cv run trains ``folds x seeds`` member models. The training rows are split
into K stratified folds (deterministic for the config's ``seed``); the member
``fold<k>-seed<s>`` is trained on every fold but k, with fold k as its
validation data (early stopping, checkpoint choice, learning-rate plateaus),
and its preprocessing is fitted on its own training rows only. So
``data.validation_split`` is not used. With ``cv.variants`` in the config, seed
s of every fold trains the config with variant ``s mod len(variants)`` applied
(other transforms, features, batch sizes...): a varied bag, whose members err
less alike than seeds of one recipe do.

The run directory holds, besides ``config.yaml`` and ``status.json``
(``"kind": "cv"``)::

    cv.json                       folds, seeds and the member list
    folds.csv                     id, fold (1-based) of every training row
    models/fold1-seed1.keras      each member's best model ...
    models/fold1-seed1.preprocess.json   ... its preprocessing ...
    models/fold1-seed1.json       ... its scores (written last: the "done" marker)
    models/fold1-seed1.history.csv
    oof.csv                       id, fold, target, one probability per class
    metrics.json                  oof_log_loss, oof_accuracy, per-fold scores, members
    ensemble.json                 the members ``predict`` averages
    submission.csv                test probabilities averaged over all members

Every training row gets exactly one out-of-fold (OOF) prediction: the average
of the ``seeds`` members that did not see it. Resuming (``ottotrain cv --resume
RUN_DIR``) reuses every finished member and continues the unfinished one from
its last completed epoch (``train_loop``'s state in ``work/<member>/``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from ottotrain import runs
from ottotrain.config import Config, config_to_dict, dump_yaml, member_config, variant_index
from ottotrain.errors import DataError, RunError, TrainingError
from ottotrain.io import atomic_path, read_json, write_json, write_text

KIND = "cv"
CV_FILE = "cv.json"
FOLDS_FILE = "folds.csv"
OOF_FILE = "oof.csv"
ENSEMBLE_FILE = "ensemble.json"
MODELS = "models"
WORK = "work"


def fold_assignment(y, k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) of every row: stratified by class, deterministic for ``seed``."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    if k < 2:
        raise DataError(f"--folds {k}: cross-validation needs at least 2 folds")
    if k > len(y):
        raise DataError(f"--folds {k}: more folds than training rows ({len(y)})")
    counts = np.bincount(y)
    if counts[counts > 0].min() < k:
        raise DataError(f"--folds {k}: the smallest class has only {counts[counts > 0].min()} rows; "
                        f"stratified {k}-fold cross-validation needs at least {k} rows per class "
                        "(use fewer folds)")
    folds = np.empty(len(y), dtype=np.int64)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, va) in enumerate(skf.split(np.zeros(len(y)), y)):
        folds[va] = i
    return folds


def cv_run_name(name: str) -> str:
    """The run-directory name of a cv run: ``<name>-cv``, unless the name says cv already."""
    return name if name == "cv" or name.endswith(("-cv", "_cv")) else f"{name}-cv"


def member_name(fold: int, seed_index: int) -> str:
    """``fold1-seed1`` for fold 0, seed 0 (names are 1-based)."""
    return f"fold{fold + 1}-seed{seed_index + 1}"


def member_seed(base_seed: int, fold: int, seed_index: int) -> int:
    """The training seed of one member (init, dropout, shuffling): distinct per member."""
    return int((base_seed + 1000 * seed_index + fold) % (2**31 - 1))


def members(folds: int, seeds: int) -> list[tuple[int, int]]:
    """(fold, seed index) in training order: seed-major, so a partial run covers all folds."""
    return [(f, s) for s in range(seeds) for f in range(folds)]


def _quiet_retracing():
    """Predicting with many models in one process makes TensorFlow warn about retracing."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def is_cv_run(run_dir) -> bool:
    try:
        return runs.read_status(run_dir).get("kind") == KIND
    except RunError:
        return False


# --------------------------------------------------------------------------------------
# One member


def _train_member(cfg: Config, run_dir: Path, name: str, train, tr, va, log, tensorboard=False):
    """Train (or resume) one member; move its best model into ``models/``; return its record."""
    from ottotrain import data as D
    from ottotrain.build import build_model, compile_model
    from ottotrain.train import (class_weights, fit_arrays, load_resume_state, predict_proba,
                                 setup_tf, train_loop)

    work = run_dir / WORK / name
    work.mkdir(parents=True, exist_ok=True)
    models = run_dir / MODELS
    pre, arrays = fit_arrays(cfg, train, tr, va)
    cw = class_weights(cfg, arrays.y_train, train.classes)

    keras = setup_tf(cfg)
    keras.backend.clear_session()  # members never share graph state or memory
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, pre.n_outputs, len(train.classes), compile=False)
    compile_model(model, cfg, len(tr))
    state = load_resume_state(work, model)
    if state is not None:
        log(f"  resuming {name} after epoch {state['epoch']}", 1)
    extra = []
    if tensorboard:
        extra.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard" / name)))
    t0 = time.perf_counter()
    # A member killed after its last epoch has nothing left to train: train_loop returns
    # at once (and still applies early_stopping.restore_best_weights).
    state = train_loop(model, cfg, arrays, work, log, state, cw, extra)
    wall = time.perf_counter() - t0
    if not (work / "model.keras").exists() and (models / f"{name}.keras").exists():
        os.replace(models / f"{name}.keras", work / "model.keras")  # killed while moving it

    best = runs.load_model(work / "model.keras", compile=False)
    p = predict_proba(best, arrays.x_val)
    record = {
        "name": name,
        "seed": cfg.seed,
        "val_log_loss": round(D.log_loss(arrays.y_val, p), 6),
        "val_accuracy": round(float((p.argmax(1) == arrays.y_val).mean()), 6),
        "best_epoch": state["best_epoch"],
        "kept_epoch": state.get("kept_epoch", state["best_epoch"]),
        "epochs_run": len(state["history"]),
        "stopped_by": state["stop"] or "epochs",
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "train_seconds": round(sum(r["seconds"] for r in state["history"]), 3),
        "wall_seconds_this_session": round(wall, 3),
    }
    # Order matters for resuming: model and preprocessing first, the record (the
    # "finished" marker) last, then the work folder goes.
    pre.save(models / f"{name}.preprocess.json")
    _history_csv(models / f"{name}.history.csv", state["history"])
    os.replace(work / "model.keras", models / f"{name}.keras")
    write_json(models / f"{name}.json", record)
    shutil.rmtree(work, ignore_errors=True)
    return record


def _history_csv(path, history):
    import pandas as pd

    cols = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    with atomic_path(path) as tmp:
        pd.DataFrame(history, columns=cols).to_csv(tmp, index=False)


# --------------------------------------------------------------------------------------
# The whole cv run


def _load_data(cfg: Config, smoke: bool):
    from ottotrain import data as D
    from ottotrain.train import SMOKE_ROWS

    train = D.load_train(cfg.data, nrows=SMOKE_ROWS if smoke else None)
    test = None
    test_path = D.data_paths(cfg.data)[1]
    if test_path is not None:
        test = D.load_test(test_path, cfg.data.id_column, cfg.data.target_column, train.features,
                           nrows=SMOKE_ROWS if smoke else None)
    return train, test


def _write_folds(path, ids, folds, id_column):
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame({id_column: ids, "fold": folds + 1}).to_csv(tmp, index=False)


def _check_saved_folds(run_dir, ids, folds, id_column):
    import pandas as pd

    saved = pd.read_csv(run_dir / FOLDS_FILE)
    if (len(saved) != len(ids) or not np.array_equal(saved[id_column].to_numpy(), ids)
            or not np.array_equal(saved["fold"].to_numpy() - 1, folds)):
        raise RunError(f"{run_dir}: the training data or its fold assignment changed since the "
                       "cv run started (folds.csv differs); start a new run")


def run_cv(cfg: Config, folds: int | None = None, seeds: int | None = None, run_dir=None,
           runs_root="runs", resume=None, smoke=False, log=None, config_name="run"):
    """Cross-validate (and bag) a config into a run directory; return the metrics dict.

    Args:
        cfg: a validated ``Config``.
        folds: K, the number of stratified folds (default ``cv.folds``; on resume: the run's).
        seeds: models per fold, each with its own seed (default ``cv.seeds``, else one per
            ``cv.variants`` entry, else 1; on resume: the run's). With variants, model k of
            every fold trains ``member_config(cfg, k)``.
        run_dir: exact directory to create; default ``<runs_root>/<name>-cv-<timestamp>`` (``cv_run_name``).
        resume: an interrupted cv run directory to continue.
        smoke: a sample of the rows, one epoch per member.
        log: progress output (``train.Log``).

    Returns:
        The ``metrics.json`` content, with ``run_dir`` added.
    """
    from ottotrain.train import Log, _versions, check_resumable

    log = log or Log(1)
    t_start = time.time()
    _quiet_retracing()  # every member is a new model: TensorFlow's retracing warning is noise
    if smoke:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})
    resume_dir = Path(resume) if resume else None
    if resume_dir is not None:
        info = runs.read_status(resume_dir)
        if info.get("kind") != KIND:
            raise RunError(f"{resume_dir}: not a cv run (made by 'ottotrain fit'); "
                           "resume it with 'ottotrain fit --resume'")
        if info["status"] == runs.FINISHED:
            raise RunError(f"{resume_dir}: the cv run already finished; start a new one with "
                           "'ottotrain cv'")
        check_resumable(resume_dir, cfg)
        saved = read_json(resume_dir / CV_FILE)
        for key, value in (("folds", folds), ("seeds", seeds)):
            if value is not None and value != saved[key]:
                raise RunError(f"{resume_dir}: the run was started with --{key} {saved[key]}, "
                               f"not {value}; resume without --{key}")
        folds, seeds, smoke = saved["folds"], saved["seeds"], saved.get("smoke", False)
    variants = cfg.cv.variants
    folds = cfg.cv.folds if folds is None else int(folds)
    if seeds is None:
        seeds = cfg.cv.seeds or max(1, len(variants))
    seeds = int(seeds)
    if seeds < 1:
        raise DataError(f"--seeds {seeds}: needs at least 1 model per fold")

    t0 = time.perf_counter()
    train, test = _load_data(cfg, smoke)
    fold_of = fold_assignment(train.y, folds, cfg.seed)
    t_data = time.perf_counter() - t0
    plan = members(folds, seeds)
    log(f"Data: {len(train.y)} rows, {len(train.features)} features, {len(train.classes)} classes"
        + (f", {len(test[0])} test rows" if test else "") + (" [smoke]" if smoke else ""), 1)
    log(f"Cross-validation: {folds} stratified folds x {seeds} seed(s) = {len(plan)} models"
        + (f" ({len(variants)} variants, cycled over the seeds)" if variants else ""), 1)

    if resume_dir is not None:
        run_dir = resume_dir
        _check_saved_folds(run_dir, train.ids, fold_of, cfg.data.id_column)
    else:
        name = cv_run_name(cfg.name or config_name)
        run_dir = runs.claim_run_dir(run_dir) if run_dir else runs.new_run_dir(runs_root, name)
        write_text(run_dir / "config.yaml", dump_yaml(config_to_dict(cfg)))
        _write_folds(run_dir / FOLDS_FILE, train.ids, fold_of, cfg.data.id_column)
        write_json(run_dir / CV_FILE, {
            "folds": folds, "seeds": seeds, "fold_seed": cfg.seed, "smoke": smoke,
            "members": [{"name": member_name(f, s), "fold": f + 1, "seed_index": s + 1,
                         "seed": member_seed(cfg.seed, f, s),
                         "variant": variant_index(cfg, s)} for f, s in plan]})
    (run_dir / MODELS).mkdir(exist_ok=True)
    runs.write_status(run_dir, runs.RUNNING, kind=KIND, folds=folds, seeds=seeds, smoke=smoke)
    log(f"Run directory: {run_dir}", 1)

    t1 = time.perf_counter()
    try:
        for i, (f, s) in enumerate(plan):
            name = member_name(f, s)
            if (run_dir / MODELS / f"{name}.json").exists():
                log(f"[{i + 1}/{len(plan)}] {name}: finished earlier, reused", 1)
                continue
            tr, va = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
            log(f"[{i + 1}/{len(plan)}] {name}: training on {len(tr)} rows, "
                f"validating on fold {f + 1} ({len(va)} rows)", 1)
            mcfg = member_config(cfg, s).model_copy(update={"seed": member_seed(cfg.seed, f, s)})
            rec = _train_member(mcfg, run_dir, name, train, tr, va, log, cfg.train.tensorboard)
            log(f"[{i + 1}/{len(plan)}] {name}: best epoch {rec['best_epoch']}/{rec['epochs_run']}, "
                f"fold log loss {rec['val_log_loss']:.4f}, accuracy {rec['val_accuracy']:.4f}", 1)
    except KeyboardInterrupt:
        runs.write_status(run_dir, runs.INTERRUPTED, kind=KIND, folds=folds, seeds=seeds, smoke=smoke)
        log(f"Interrupted: finished models are kept in {run_dir / MODELS}; "
            f"continue with: ottotrain cv --resume {run_dir}", 0)
        raise
    except TrainingError:
        runs.write_status(run_dir, runs.FAILED, kind=KIND, folds=folds, seeds=seeds, smoke=smoke,
                          reason="nan")
        raise
    t_train = time.perf_counter() - t1
    return _finish(cfg, run_dir, train, test, fold_of, folds, seeds, smoke, log,
                   {"data_seconds": round(t_data, 3), "train_seconds_this_session": round(t_train, 3)},
                   t_start, _versions())


def _finish(cfg, run_dir, train, test, fold_of, folds, seeds, smoke, log, timings, t_start, versions):
    """Average the members: OOF predictions, scores, test submission, ensemble manifest."""
    import pandas as pd

    from ottotrain import data as D
    from ottotrain.build import import_keras
    from ottotrain.train import predict_proba, write_submission

    keras = import_keras()
    _quiet_retracing()
    t0 = time.perf_counter()
    n_classes = len(train.classes)
    oof = np.zeros((len(train.y), n_classes))
    count = np.zeros(len(train.y), dtype=np.int64)
    per_seed = np.zeros((seeds, len(train.y), n_classes))  # OOF of each seed alone (no bagging)
    p_test = np.zeros((len(test[0]), n_classes)) if test is not None else None
    records, manifest = [], []
    x_test = {}  # test rows as each distinct preprocessing transforms them
    for f in range(folds):
        va = np.flatnonzero(fold_of == f)
        x_test.clear()
        for s in range(seeds):
            name = member_name(f, s)
            path = run_dir / MODELS / f"{name}.preprocess.json"
            pre = D.Preprocessor.from_json(path.read_text(), path)
            model = runs.load_model(run_dir / MODELS / f"{name}.keras", compile=False)
            per_seed[s, va] = predict_proba(model, pre.transform(train.x[va]))
            oof[va] += per_seed[s, va]
            count[va] += 1
            if p_test is not None:
                key = pre.to_json()  # seeds of a fold share it, unless cv.variants differ
                if key not in x_test:
                    x_test[key] = pre.transform(test[1])
                p_test += predict_proba(model, x_test[key])
            rec = read_json(run_dir / MODELS / f"{name}.json")
            records.append({"fold": f + 1, "seed_index": s + 1, "variant": variant_index(cfg, s),
                            **rec})
            manifest.append({"name": name, "model": f"{MODELS}/{name}.keras",
                             "preprocess": f"{MODELS}/{name}.preprocess.json", "weight": 1.0})
            keras.backend.clear_session()
    assert (count == seeds).all(), "every training row must get exactly one OOF prediction"
    oof /= count[:, None]
    loss = D.log_loss(train.y, oof)
    acc = float((oof.argmax(1) == train.y).mean())
    fold_loss = [D.log_loss(train.y[fold_of == f], oof[fold_of == f]) for f in range(folds)]
    fold_acc = [float((oof[fold_of == f].argmax(1) == train.y[fold_of == f]).mean())
                for f in range(folds)]

    df = pd.DataFrame(oof, columns=train.classes)
    df.insert(0, cfg.data.target_column, np.asarray(train.classes)[train.y])
    df.insert(0, "fold", fold_of + 1)
    df.insert(0, cfg.data.id_column, train.ids)
    with atomic_path(run_dir / OOF_FILE) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    if p_test is not None:
        write_submission(run_dir / "submission.csv", test[0], p_test / (folds * seeds),
                         train.classes, cfg.data.id_column)
    write_json(run_dir / ENSEMBLE_FILE, {"kind": KIND, "combine": "mean", "members": manifest,
                                         "classes": list(train.classes)})
    timings["predict_seconds"] = round(time.perf_counter() - t0, 3)
    timings["member_train_seconds"] = round(sum(r["train_seconds"] for r in records), 3)
    timings["total_seconds_this_session"] = round(time.time() - t_start, 3)
    metrics = {
        "kind": KIND,
        "oof_log_loss": round(loss, 6),
        "oof_accuracy": round(acc, 6),
        "fold_log_loss": [round(v, 6) for v in fold_loss],
        "fold_accuracy": [round(v, 6) for v in fold_acc],
        "fold_log_loss_mean": round(float(np.mean(fold_loss)), 6),
        "fold_log_loss_std": round(float(np.std(fold_loss)), 6),
        "fold_accuracy_mean": round(float(np.mean(fold_acc)), 6),
        "fold_accuracy_std": round(float(np.std(fold_acc)), 6),
        "member_log_loss_mean": round(float(np.mean([r["val_log_loss"] for r in records])), 6),
        # Single-model scores: the OOF log loss of each seed's K models alone, without bagging
        # (with cv.variants, seed k is variant k mod len: each variant's own score).
        "seed_oof_log_loss": [round(D.log_loss(train.y, p), 6) for p in per_seed],
        "folds": folds,
        "seeds": seeds,
        "n_models": folds * seeds,
        "n_train": int(len(train.y)),
        "n_features": len(train.features),
        "n_classes": n_classes,
        "smoke": smoke,
        "members": records,
        "timings": timings,
        "versions": versions,
    }
    write_json(run_dir / "metrics.json", metrics)
    shutil.rmtree(run_dir / WORK, ignore_errors=True)
    runs.write_status(run_dir, runs.FINISHED, kind=KIND, folds=folds, seeds=seeds, smoke=smoke)
    log(f"OOF log loss {loss:.4f} (folds {np.mean(fold_loss):.4f} ± {np.std(fold_loss):.4f}), "
        f"accuracy {acc:.4f}, {folds * seeds} models", 1)
    return {**metrics, "run_dir": str(run_dir)}


# --------------------------------------------------------------------------------------
# Predicting with a finished cv run


def load_ensemble(run_dir):
    """(list of (preprocessor, model, weight), status) of a finished cv run, loaded safely."""
    from ottotrain.data import Preprocessor

    run_dir = Path(run_dir)
    info = runs.read_status(run_dir)
    runs.check_format(run_dir, info)
    if info["status"] != runs.FINISHED or not (run_dir / ENSEMBLE_FILE).exists():
        raise RunError(f"{run_dir}: the cv run is {info['status']} and has no ensemble yet; "
                       f"finish it with 'ottotrain cv --resume {run_dir}'")
    runs.check_safe(run_dir)
    manifest = read_json(run_dir / ENSEMBLE_FILE)
    out = []
    for m in manifest["members"]:
        for key in ("model", "preprocess"):
            p = (run_dir / m[key]).resolve()
            if run_dir.resolve() not in p.parents or not p.exists():
                raise RunError(f"{run_dir / ENSEMBLE_FILE}: member {m.get('name')}: "
                               f"{m[key]} is missing or outside the run directory")
        pre = Preprocessor.from_json((run_dir / m["preprocess"]).read_text(), run_dir / m["preprocess"])
        model = runs.load_model(run_dir / m["model"], compile=False)  # checked, safe mode
        out.append((pre, model, float(m.get("weight", 1.0))))
    return out, info


def ensemble_proba(members_, x) -> np.ndarray:
    """Weighted average of the members' probabilities for raw feature rows ``x``."""
    from ottotrain.train import predict_proba

    _quiet_retracing()
    total = sum(w for _, _, w in members_)
    p = None
    cache = {}
    for pre, model, w in members_:
        key = pre.to_json()
        if key not in cache:
            cache.clear()  # members of one fold are adjacent: keep one transform at a time
            cache[key] = pre.transform(x)
        q = predict_proba(model, cache[key]) * (w / total)
        p = q if p is None else p + q
    return p
