"""What fit, cv and check share before training: the data, a member's arrays, class weights."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ottotrain import runs
from ottotrain.config import Config, check_layer, config_to_dict, dump_yaml
from ottotrain.config.schema import OWN_LAYERS
from ottotrain.data import TrainData, data_paths, load_test, load_train
from ottotrain.errors import ConfigError, DataError, RunError
from ottotrain.features import Preprocessor
from ottotrain.features.arrays import Arrays
from ottotrain.features.preprocess import gaps_outside, has_nan
from ottotrain.io import read_json, write_text
from ottotrain.runs.resume import check_resumable

SMOKE_ROWS = 2000


class ReadsAsDict:
    """For a result dataclass: 1.x returned results as dicts, so ``result["run_dir"]`` and
    ``"oof_log_loss" in result`` keep working beside the attributes."""

    def __getitem__(self, key: str):
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return key in {f.name for f in dataclasses.fields(self)}


def smoke_config(cfg: Config) -> Config:
    """The config of a smoke run: one epoch (the rows are sampled by ``load_data``)."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})


def refuse_stack(cfg: Config, command: str) -> None:
    """A stack config trains only through 'ottotrain stack': it has no model of its own."""
    if cfg.stack is not None:
        raise ConfigError(
            f"{cfg.source}: is a stack config (it has a 'stack' section): run 'ottotrain stack "
            f"{cfg.source}' instead of 'ottotrain {command}'"
        )


def begin(cfg: Config, kind: str, run_dir, resume, smoke: bool) -> tuple[Config, Path | None, bool]:
    """What a training run (fit or cv) checks before it reads any data.

    Returns:
        (the config to train, smoke run's if asked; the run to resume or None; whether
        this is a smoke run: a resumed run is one if it started as one).
    """
    refuse_stack(cfg, kind)
    if smoke:
        cfg = smoke_config(cfg)
    resume_dir = Path(resume) if resume else None
    if resume_dir is not None:
        smoke = smoke or bool(check_resumable(resume_dir, cfg, kind).get("smoke"))
    elif run_dir is not None:
        runs.check_run_dir_free(run_dir)
    require_tensorboard(cfg)
    return cfg, resume_dir, smoke


def create_run_dir(
    cfg: Config, run_dir, runs_root, name: str, status: runs.RunStatus, write: Callable[[Path], None]
) -> Path:
    """Create the run directory with config.yaml, ``write(run_dir)``'s files and its status.

    The directory is created only now, when everything the run needs has been checked,
    and removed again if any of these first files cannot be written: a run that never
    started leaves nothing.
    """
    run_dir = runs.claim_run_dir(run_dir) if run_dir else runs.new_run_dir(runs_root, name)
    try:
        write_text(run_dir / "config.yaml", dump_yaml(config_to_dict(cfg)))
        write(run_dir)
        runs.write_status(run_dir, runs.RUNNING, status)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def load_data(cfg: Config, smoke=False, test=True) -> tuple[TrainData, tuple | None]:
    """The training table and the test rows (ids, features) or None (also when not
    ``test``), checked."""
    nrows = SMOKE_ROWS if smoke else None
    train = load_train(cfg.data, nrows=nrows)
    test_path = data_paths(cfg.data)[1] if test else None
    rows = None
    if test_path is not None:
        rows = load_test(
            test_path,
            cfg.data.id_column,
            cfg.data.target_column,
            train.features,
            nrows=nrows,
            allow_missing=cfg.data.missing != "none",
            types=train.types,
            na_values=cfg.data.na_values,
        )
    return train, rows


def member_arrays(cfg: Config, train: TrainData, tr, va) -> tuple[Preprocessor, Arrays]:
    """Fit preprocessing on the training rows ``tr`` only; return it and the member's arrays."""

    def rows(idx):  # a copy of those rows, ours to scale in place (a slice would be a view)
        r = train.x[idx]
        return r.copy() if np.may_share_memory(r, train.x) else r

    x_tr = rows(tr)
    try:
        pre = Preprocessor.fit(
            x_tr,
            cfg.data,
            train.features,
            train.classes,
            train.y[tr],
            train.types,
        )
    except DataError as e:  # e.g. data.knn and a class too small: say which file
        raise DataError(f"{train.path}: {e}") from None
    z_tr = pre.transform(x_tr, overwrite=True, fitted_rows=True)
    bins = first_layer_bins(cfg)
    if bins:
        pre.fit_bins(z_tr, bins)
    x_va = pre.transform(rows(va), overwrite=True)
    return pre, Arrays(z_tr, train.y[tr], x_va, train.y[va], len(train.classes), pre.input_block())


def first_layer_bins(cfg: Config) -> int | None:
    """The bins of a PiecewiseLinearEmbedding that opens the layer list (they are fitted on
    the training rows, by the preprocessing), or None."""
    first = cfg.model.layers[0] if cfg.model.layers else None
    if isinstance(first, dict) and "PiecewiseLinearEmbedding" in first:
        return check_layer(0, first)[1]["bins"]
    return None


def class_weights(cfg: Config, y, classes) -> dict | None:
    cw = cfg.train.class_weight
    if cw is None:
        return None
    counts = np.bincount(y, minlength=len(classes))
    if cw == "balanced":
        return {i: float(len(y) / (len(classes) * max(c, 1))) for i, c in enumerate(counts)}
    unknown = [k for k in cw if k not in classes]
    if unknown:
        raise ConfigError(
            f"{cfg.source}: train.class_weight: unknown class(es) {', '.join(unknown)}; "
            f"the classes are {', '.join(classes)}"
        )
    return {i: float(cw.get(c, 1.0)) for i, c in enumerate(classes)}


def require_tensorboard(cfg: Config) -> None:
    """Refuse ``train.tensorboard: true`` up front when the package is missing.

    ``tf.summary`` is implemented by the ``tensorboard`` package; without it the first
    epoch would crash, after the run directory was created.
    """
    if cfg.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            f"{cfg.source}: train.tensorboard: true needs the tensorboard package; "
            "install it (pip install tensorboard) or set train.tensorboard: false"
        )


def _per_column(counts: dict[str, int]) -> str:
    """'a (3), b (1)': the first 8 columns and their counts."""
    return ", ".join(f"{c} ({n})" for c, n in list(counts.items())[:8]) + (", ..." if len(counts) > 8 else "")


def unseen_missing_line(path, unseen: dict[str, int]) -> str:
    """The one line about missing values where the training rows had none (filled all the same)."""
    return (
        f"{path}: {sum(unseen.values())} missing value(s) in column(s) that had none at fit: "
        f"{_per_column(unseen)}; filled with the training medians (no 'was missing' column for them)"
    )


def unseen_categories_line(path, unseen: dict[str, int]) -> str:
    """The one line about categories the training file did not have (they count as 'other')."""
    return (
        f"{path}: {sum(unseen.values())} value(s) never seen at fit in column(s): "
        f"{_per_column(unseen)}; they count as the 'other' category"
    )


def data_notes(cfg: Config, train: TrainData, test) -> list[str]:
    """The warning lines about the data: columns dropped or read oddly at fit, test rows with
    missing numbers where the training rows had none, categories the training rows lacked."""
    notes = list(train.notes)
    first = cfg.model.layers[0] if cfg.model.layers else None
    embedding = next(iter(first), None) if isinstance(first, dict) else None
    if embedding in OWN_LAYERS and len(train.types.categorical) == len(train.features):
        notes.append(f"{train.path}: no numeric column to embed; model.layers[0] ({embedding}) is left out")
    if test is None or train.x is None:
        return notes
    path, types = data_paths(cfg.data)[1], train.types
    numeric = [j for j, f in enumerate(train.features) if f not in types.categorical]
    xt = test[1] if len(numeric) == len(train.features) else test[1][:, numeric]
    if has_nan(xt):
        xn = train.x if len(numeric) == len(train.features) else train.x[:, numeric]
        had = set(np.flatnonzero(np.isnan(xn).any(axis=0)).tolist())
        unseen = gaps_outside(xt, [train.features[j] for j in numeric], had)
        if unseen:
            notes.append(unseen_missing_line(path, unseen))
    cats = [j for j, f in enumerate(train.features) if f in types.categorical]
    if cats:
        counts = (test[1][:, cats] == -1).sum(axis=0)
        new = {train.features[j]: int(n) for j, n in zip(cats, counts) if n}
        if new:
            notes.append(unseen_categories_line(path, new))
    return notes


def check_same_data(path: Path, pre):
    """Refuse to resume on other data: the preprocessing learned from it must be identical."""
    try:
        saved = read_json(path)
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: cannot be read ({e}); the run cannot be resumed") from None
    # Keys the saved state lacks came with a newer ottotrain (e.g. data.missing's medians).
    now = {k: v for k, v in json.loads(pre.to_json()).items() if k in saved}
    if saved != now:
        what = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        raise RunError(
            f"{path.parent}: the training data changed since the run started "
            f"(preprocessing differs in: {', '.join(what[:8])}); resume needs the same "
            "data, or start a new run"
        )
