"""``ottotrain summary``: the Keras model summary of a config or a run, without training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ottotrain import engine, runs
from ottotrain.config import load_config, member_config
from ottotrain.data import data_paths, feature_columns, read_columns, read_header, read_table
from ottotrain.data.tables import missing_column_error
from ottotrain.errors import DataError, RunError
from ottotrain.io import read_json
from ottotrain.workflows.predictor import is_cv_run, open_run


def data_sizes(cfg) -> tuple[int, int]:
    """(model input width, number of classes), from the header, the target column and (for
    data.missing: auto) which feature columns have missing values."""
    path = data_paths(cfg.data)[0]
    cols = read_header(path, "train")
    if cfg.data.target_column not in cols:
        raise missing_column_error(path, cols, cfg.data, "target_column")
    feats = feature_columns(cols, cfg.data, path)
    target = read_table(path, "train", usecols=[cfg.data.target_column])[cfg.data.target_column]
    n_classes = int(target.dropna().astype(str).nunique())
    knn = n_classes * len(cfg.data.knn.k) if cfg.data.knn else 0  # distances to each class
    return len(feats) * (2 if cfg.data.tfidf else 1) + knn + _indicators(cfg, path, feats), n_classes


def _indicators(cfg, path, feats) -> int:
    """data.missing's "was missing" columns: every feature, or (auto) those with missing values."""
    if cfg.data.missing == "all":
        return len(feats)
    if cfg.data.missing == "none":
        return 0
    try:  # the fast, cached reader first
        x, _ = read_columns(path, "train", feats, (), allow_missing=True)
    except DataError:  # a bad cell is fit's to report: here only which columns have gaps
        return int(read_table(path, "train", usecols=feats).isna().any().sum())
    return int(np.isnan(x).any(axis=0).sum())


def _run_summary(run_dir: Path) -> str:
    if not is_cv_run(run_dir):
        return engine.build.summary_text(open_run(run_dir).members[0].model)
    runs.check_safe(run_dir)
    out = []
    for m in read_json(run_dir / runs.CV_FILE)["members"]:
        if m["fold"] == 1:  # every fold has the same architectures
            model = engine.inference.load_model(run_dir / runs.MODELS / f"{m['name']}.keras")
            variant = "" if m.get("variant") is None else f" (cv.variants[{m['variant']}])"
            out.append(f"{m['name']}{variant}\n{engine.build.summary_text(model)}")
    return "\n\n".join(out)


def summarize(target, overrides=()) -> str:
    """Return the model summary text for a config file or a run directory.

    A config with ``cv.variants`` gets one summary per variant; a cv run one per
    seed (the models of fold 1).
    """
    target = Path(target)
    if target.is_dir():
        return _run_summary(target)
    if not target.exists() and target.suffix not in (".yaml", ".yml"):
        raise RunError(
            f"{target}: no such run directory or config file; give a CONFIG.yaml "
            "or a RUN_DIR made by 'ottotrain fit' or 'ottotrain cv'"
        )
    cfg = load_config(target, overrides)
    variants = cfg.cv.variants
    out = []
    for k in range(max(1, len(variants))):
        mcfg = member_config(cfg, k)
        n_features, n_classes = data_sizes(mcfg)
        model = engine.build.build_model(mcfg, n_features, n_classes, compile=False)
        head = f"cv.variants[{k}] {variants[k]}: " if variants else ""
        out.append(f"{head}{n_features} features, {n_classes} classes\n" + engine.build.summary_text(model))
    return "\n\n".join(out)
