"""``ottotrain summary``: the Keras model summary of a config or a run, without training."""

from __future__ import annotations

from pathlib import Path


def data_sizes(cfg) -> tuple[int, int]:
    """(model input width, number of classes), reading only the header and the target column."""
    from ottotrain.data import data_paths, feature_columns, read_header, read_table
    from ottotrain.errors import DataError

    path = data_paths(cfg.data)[0]
    cols = read_header(path, "train")
    if cfg.data.target_column not in cols:
        raise DataError(f"{path}: no column '{cfg.data.target_column}' (data.target_column)")
    feats = feature_columns(cols, cfg.data, path)
    target = read_table(path, "train", usecols=[cfg.data.target_column])[cfg.data.target_column]
    n_classes = int(target.dropna().astype(str).nunique())
    knn = n_classes * len(cfg.data.knn.k) if cfg.data.knn else 0  # distances to each class
    return len(feats) * (2 if cfg.data.tfidf else 1) + knn, n_classes


def summarize(target, overrides=()) -> str:
    """Return the model summary text for a config file or a run directory.

    A config with ``cv.variants`` gets one summary per variant; a cv run one per
    seed (the models of fold 1: every fold has the same architectures).
    """
    from ottotrain.build import build_model, summary_text

    target = Path(target)
    if target.is_dir():
        from ottotrain import cv, runs
        from ottotrain.io import read_json

        if cv.is_cv_run(target):
            runs.check_safe(target)
            out = []
            for m in read_json(target / cv.CV_FILE)["members"]:
                if m["fold"] == 1:
                    model = runs.load_model(target / cv.MODELS / f"{m['name']}.keras")
                    variant = "" if m.get("variant") is None else f" (cv.variants[{m['variant']}])"
                    out.append(f"{m['name']}{variant}\n{summary_text(model)}")
            return "\n\n".join(out)
        from ottotrain.predict import load_run

        _, model, _ = load_run(target)
        return summary_text(model)
    from ottotrain.config import load_config, member_config

    cfg = load_config(target, overrides)
    variants = cfg.cv.variants
    out = []
    for k in range(max(1, len(variants))):
        mcfg = member_config(cfg, k)
        n_features, n_classes = data_sizes(mcfg)
        model = build_model(mcfg, n_features, n_classes, compile=False)
        head = f"cv.variants[{k}] {variants[k]}: " if variants else ""
        out.append(f"{head}{n_features} features, {n_classes} classes\n" + summary_text(model))
    return "\n\n".join(out)
