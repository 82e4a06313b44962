"""Training: ``fit`` a config into a run directory, epoch by epoch, resumably.

The loop is ours rather than one long ``model.fit`` so that every epoch ends in a
consistent, saved state (weights, optimizer, early-stopping and checkpoint
counters, learning-rate schedule, history): a run killed at any moment resumes
from its last completed epoch and ends where an uninterrupted run would. The
shuffle order of epoch ``e`` depends only on ``(seed, e)`` for the same reason.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ottotrain import __version__
from ottotrain.config import Config, check_schedule, config_to_dict, dump_yaml
from ottotrain.errors import DataError, RunError, TrainingError
from ottotrain.io import atomic_path, read_json, write_json, write_text
from ottotrain import runs

SMOKE_ROWS = 2000
STATE_DIR = "state"


def monitor_mode(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


def _better(value, best, mode, min_delta=0.0):
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class Log:
    """Where progress goes: stderr, at a verbosity (0 quiet, 1 normal, 2 verbose)."""

    def __init__(self, verbosity=1, stream=None):
        self.verbosity = verbosity
        self.stream = stream or sys.stderr
        # Asked now, before TensorFlow is imported: build.py then routes fd 2 through a
        # pipe to filter TF's native log lines, and isatty() would say False from then on.
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, msg, level=1):
        if self.verbosity >= level:
            print(msg, file=self.stream, flush=True)

    @property
    def tty(self):
        return self._tty


# --------------------------------------------------------------------------------------
# Learning-rate schedules, per epoch, with state kept in the resume file.


def schedule_lr(sched: dict | None, base_lr: float, epoch: int, epochs: int, state: dict) -> float:
    """Learning rate for ``epoch`` (0-based)."""
    if not sched:
        return base_lr
    name = sched["name"]
    if name == "reduce_on_plateau":
        return state.get("lr", base_lr)
    warm = sched.get("warmup_epochs", 0)
    if warm and epoch < warm:
        return base_lr * (epoch + 1) / warm
    if name == "exponential":
        return base_lr * sched["decay_rate"] ** epoch
    lo = sched.get("min_lr_ratio", 0.0)
    t = (epoch - warm) / max(1, epochs - warm)
    if name == "cosine":
        return base_lr * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t)))
    if name == "linear_warmup":
        return base_lr * (1 - (1 - lo) * t)
    raise AssertionError(name)  # check_schedule admits no other names


def plateau_update(sched, state, value, lr):
    """After an epoch: reduce the learning rate when the monitor stalled."""
    if not sched or sched["name"] != "reduce_on_plateau" or value is None:
        return
    best = state.get("best")
    if _better(value, best, monitor_mode(sched["monitor"], "auto"), sched["min_delta"]):
        state["best"], state["wait"] = value, 0
        state.setdefault("lr", lr)
        return
    state["wait"] = state.get("wait", 0) + 1
    if state["wait"] >= sched["patience"]:  # as Keras' ReduceLROnPlateau
        state["lr"], state["wait"] = max(lr * sched["factor"], sched["min_lr"]), 0


# --------------------------------------------------------------------------------------
# Progress output


def _make_progress(keras, log: Log, epoch: int, epochs: int, steps: int):
    """A Keras callback that shows a progress bar on a terminal, nothing otherwise."""

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None):
            if log.tty and log.verbosity >= 1:
                print(f"Epoch {epoch + 1}/{epochs}", file=log.stream, flush=True)
                # Keras' logs are running means already: show them, don't average them again.
                self.bar = keras.utils.Progbar(steps, stateful_metrics=["loss", "accuracy"])
                self.bar._dynamic_display = True  # Progbar asks isatty() too (see Log)
            else:
                self.bar = None

        def on_train_batch_end(self, batch, logs=None):
            if self.bar is not None:
                with contextlib.redirect_stdout(log.stream):
                    self.bar.update(batch + 1, [(k, v) for k, v in (logs or {}).items()])

    return Progress()


def _epoch_line(row, epochs):
    parts = [f"Epoch {row['epoch']}/{epochs}", f"{row['seconds']:.1f}s"]
    for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if k in row and row[k] is not None:
            parts.append(f"{k}: {row[k]:.4f}")
    parts.append(f"lr: {row['lr']:.3g}")
    return " - ".join(parts)


def validation_callback(keras, x_val, y_val, chunk=16384):
    """A Keras callback that scores the validation rows at the end of every epoch.

    One forward pass gives both ``val_loss`` (the validation log loss: Kaggle's metric,
    in float64, the figure metrics.json reports for the best epoch) and ``val_accuracy``,
    written into the epoch's logs before any later callback (TensorBoard, History) reads
    them. Keras' own validation would need a compiled accuracy metric, which also runs
    on every training batch (see ``build.compile_model``). Unlike Keras' ``val_loss``, no
    regularization penalty or label smoothing is added: what is monitored is the metric.

    The pass is one traced call per ``chunk`` rows rather than ``model.predict``, whose
    per-call set-up costs about 10 ms an epoch (a tenth of a tutorial MLP's epoch); the
    probabilities are the same.
    """
    import tensorflow as tf

    from ottotrain.data import log_loss

    x = tf.convert_to_tensor(x_val)
    spec = [tf.TensorSpec([None, x.shape[1]], x.dtype)]

    class Validation(keras.callbacks.Callback):
        forward = None

        def on_epoch_end(self, epoch, logs=None):
            if self.forward is None:  # traced once: fit gives the callback the same model
                model = self.model
                self.forward = tf.function(lambda b: model(b, training=False), input_signature=spec)
            p = np.concatenate([self.forward(x[i:i + chunk]).numpy()
                                for i in range(0, int(x.shape[0]), chunk)])
            if logs is not None:
                logs["val_loss"] = log_loss(y_val, p) if np.isfinite(p).all() else math.nan
                logs["val_accuracy"] = float((p.argmax(axis=1) == y_val).mean())

    return Validation()


# --------------------------------------------------------------------------------------
# The epoch loop, shared by fit and cv.


class Arrays:
    """Preprocessed arrays for one training job."""

    def __init__(self, x_train, y_train, x_val, y_val, n_classes):
        self.x_train, self.y_train = x_train, y_train
        self.x_val, self.y_val = x_val, y_val
        self.n_classes = n_classes


def class_weights(cfg: Config, y, classes) -> dict | None:
    cw = cfg.train.class_weight
    if cw is None:
        return None
    counts = np.bincount(y, minlength=len(classes))
    if cw == "balanced":
        return {i: float(len(y) / (len(classes) * max(c, 1))) for i, c in enumerate(counts)}
    unknown = [k for k in cw if k not in classes]
    if unknown:
        from ottotrain.errors import ConfigError

        raise ConfigError(f"{cfg._source}: train.class_weight: unknown class(es) {', '.join(unknown)}; "
                          f"the classes are {', '.join(classes)}")
    return {i: float(cw.get(c, 1.0)) for i, c in enumerate(classes)}


def setup_tf(cfg: Config):
    """Seed everything and pick deterministic ops; returns the keras module."""
    from ottotrain.build import import_keras

    keras = import_keras()
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        # An earlier run in this process (cv, tests) may have switched it on; honour 'false'.
        from tensorflow.python.framework import config as _tf_config

        if getattr(_tf_config, "is_op_determinism_enabled", lambda: False)():
            _tf_config.disable_op_determinism()
    return keras


def _seed_generators(layer):
    """A layer's random-number generators (Keras 3 tracks them in ``_seed_generators``)."""
    gens = list(getattr(layer, "_seed_generators", None) or ())
    if not gens:  # older Keras: the usual attribute names
        for attr in ("seed_generator", "generator"):
            gen = getattr(layer, attr, None)
            if gen is not None and hasattr(gen, "state"):
                gens.append(gen)
    return gens


def _seed_state(model):
    """The states of the model's random-number generators (dropout, noise).

    Keras does not save them in ``.keras`` files: a loaded model draws fresh
    seeds, so a resumed run would use other dropout masks than an uninterrupted
    one. We keep them in the resume state, per layer name, in order.
    """
    out = {}
    for layer in model._flatten_layers(include_self=False):
        gens = _seed_generators(layer)
        if gens:
            out[layer.name] = [np.asarray(g.state.numpy()).tolist() for g in gens]
    return out


def _restore_seed_state(model, saved):
    for layer in model._flatten_layers(include_self=False):
        states = saved.get(layer.name)
        if not states:
            continue
        if not isinstance(states[0], list):  # a single generator's state (older resume files)
            states = [states]
        for gen, value in zip(_seed_generators(layer), states):
            dtype = getattr(gen.state.dtype, "name", gen.state.dtype)
            gen.state.assign(np.asarray(value, dtype=dtype))


def _save_model(model, path, durable=True):
    with atomic_path(path, durable) as tmp:
        model.save(tmp)


# The per-epoch resume point is a plain .npz of variable values (model, then optimizer),
# not a .keras file: the architecture is rebuilt from config.yaml on resume, so only the
# numbers need saving. That is 3-7x cheaper than model.save (no zip, no HDF5, no config
# JSON) and stays pickle-free (np.load refuses object arrays). model.keras is written
# once, when training stops.


def _write_arrays(path, values, durable=False):
    with atomic_path(path, durable) as tmp, open(tmp, "wb") as f:
        np.savez(f, *values)


def _read_arrays(path) -> list:
    with np.load(path, allow_pickle=False) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _read_checkpoint(path) -> list:
    import zipfile

    try:
        return _read_arrays(path)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise RunError(f"{path}: damaged resume checkpoint ({type(e).__name__}: {e}); "
                       "start a new run") from None


def _assign(variables, values, path):
    """Set ``variables`` to ``values``, checking that they are the same count and shapes."""
    variables = list(variables)
    if len(values) != len(variables) or any(tuple(v.shape) != a.shape
                                            for v, a in zip(variables, values)):
        raise RunError(f"{path}: the saved weights do not fit the model built from the run's "
                       "config (other layers or shapes); the run cannot be resumed, start a new one")
    for v, a in zip(variables, values):
        v.assign(a)


class EpochBatches:
    """The training batches of every epoch, from one ``tf.data`` pipeline built once.

    Batch ``i`` of an epoch is rows ``perm[i*b:(i+1)*b]`` of ``x``/``y``, gathered
    in the graph from one copy of the data. The order lives in a variable that
    ``epoch(perm)`` sets, so the pipeline (and its traced map function, tens of
    milliseconds to build) is made once per run rather than once per epoch, and no
    permuted copy of the data is ever made. Same batches, same order as ``x[perm]``
    cut into consecutive batches: the same results.

    The data are held in (non-trainable) variables rather than tensors: ``tf.data``
    captures a variable by its handle, but a plain tensor by value, which copied the
    whole training set a second time when the first epoch started (1.7 GB more at 4.25M
    rows).
    """

    def __init__(self, tf, x, y, batch_size):
        self.x = tf.Variable(x, trainable=False)
        self.y = tf.Variable(y, trainable=False)
        n = int(self.x.shape[0])
        self.order = tf.Variable(tf.range(n, dtype=tf.int64), trainable=False)
        ds = tf.data.Dataset.range(0, n, batch_size)
        ds = ds.map(lambda s: self._batch(tf, self.order[s:s + batch_size]))
        # No prefetch thread and no tf.data autotuning. A gather of one batch takes
        # microseconds, so there is nothing to overlap; and the autotuner's background
        # thread made each epoch's model.fit wait for its timer when the iterator closed:
        # 3x512 epochs of 1.4 s took exactly 2.55 s about every other epoch (bench/RESULTS.md).
        options = tf.data.Options()
        options.autotune.enabled = False
        self.ds = ds.with_options(options)

    def _batch(self, tf, idx):
        return tf.gather(self.x, idx), tf.gather(self.y, idx)

    def epoch(self, perm=None):
        """The dataset for one epoch in the order ``perm`` (row order when None)."""
        n = int(self.x.shape[0])
        self.order.assign(np.arange(n) if perm is None else np.asarray(perm, dtype=np.int64))
        return self.ds



def train_loop(model, cfg: Config, arrays: Arrays, work_dir: Path, log: Log, state: dict | None = None,
               class_weight=None, extra_callbacks=()):
    """Train ``model`` epoch by epoch; keep the best model in ``work_dir/model.keras``.

    ``state`` is the resume state (None for a new run). After every epoch the
    state is saved to ``work_dir/state`` so the loop can be resumed from there.

    Returns:
        The final state dict (history, best epoch, stop reason).

    Raises:
        TrainingError: the loss became NaN or infinite.
        KeyboardInterrupt: Ctrl-C; everything up to the last epoch is saved.
    """
    # Keras makes many short-lived Python objects per fit call, which now and then set off
    # a full garbage collection that scans every object TensorFlow, Keras and pandas made
    # at import: about 0.2 s each time on 2 cores (measured on the tutorial MLP). Objects
    # alive now are exempt from those scans while training and handed back afterwards;
    # reference counting still frees them, and what training itself makes is collected
    # as usual.
    gc.freeze()
    try:
        return _train_epochs(model, cfg, arrays, work_dir, log, state, class_weight, extra_callbacks)
    finally:
        gc.unfreeze()


def _train_epochs(model, cfg, arrays, work_dir, log, state, class_weight, extra_callbacks):
    keras = sys.modules["keras"]
    import tensorflow as tf

    t = cfg.train
    sched = check_schedule(t.lr_schedule) if t.lr_schedule else None
    base_lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    if state is None:
        state = {"epoch": 0, "history": [], "best": None, "best_epoch": None,
                 "es": {"best": None, "wait": 0}, "sched": {}, "stop": None, "base_lr": base_lr}
    else:
        base_lr = state["base_lr"]
    ck_mode = monitor_mode(t.checkpoint.monitor, t.checkpoint.mode)
    es = t.early_stopping
    es_mode = monitor_mode(es.monitor, es.mode) if es else None
    state_dir = work_dir / STATE_DIR
    state_dir.mkdir(exist_ok=True)
    n = len(arrays.x_train)
    steps = -(-n // t.batch_size)
    y_train = keras.utils.to_categorical(arrays.y_train, arrays.n_classes).astype(np.float32)
    validation = validation_callback(keras, arrays.x_val, arrays.y_val)
    batches = EpochBatches(tf, arrays.x_train, y_train, t.batch_size)
    stream = log.stream

    best_weights = None  # the best epoch's model variables, kept in memory
    if state.get("best_file") and (state_dir / state["best_file"]).is_file():
        best_weights = _read_arrays(state_dir / state["best_file"])
    try:
        # A run killed after early stopping but before finishing must not train on.
        first = t.epochs if state.get("stop") == "early_stopping" else state["epoch"]
        for epoch in range(first, t.epochs):
            lr = schedule_lr(sched, base_lr, epoch, t.epochs, state["sched"])
            model.optimizer.learning_rate.assign(lr)
            perm = np.random.default_rng([cfg.seed, epoch]).permutation(n) if t.shuffle else None
            train_ds = batches.epoch(perm)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(stream):
                h = model.fit(train_ds, epochs=1, verbose=0, shuffle=False,
                              class_weight=class_weight,
                              callbacks=[validation, _make_progress(keras, log, epoch, t.epochs, steps),
                                         *extra_callbacks])
            logs = {k: float(v[-1]) for k, v in h.history.items()}
            row = {"epoch": epoch + 1, **{k: logs.get(k) for k in
                                           ("loss", "accuracy", "val_loss", "val_accuracy")},
                   "lr": lr, "seconds": round(time.perf_counter() - t0, 4)}
            if not all(math.isfinite(v) for v in (row["loss"], row["val_loss"]) if v is not None):
                state["stop"] = "nan"
                kept = (f"the best model so far (epoch {state['best_epoch']}) is kept in "
                        f"{work_dir / 'model.keras'}" if state["best_epoch"] else
                        "no epoch ended with a finite loss, so there is no model to keep")
                raise TrainingError(
                    f"{cfg._source}: epoch {epoch + 1}: the loss became {row['loss']} "
                    f"(val_loss {row['val_loss']}); training stopped, {kept}. Lower the learning rate "
                    f"(now {lr:g}), add gradient clipping (train.gradient_clip_norm: 1.0) or "
                    "check the feature scaling (data.scaling: standard)")
            state["history"].append(row)
            log(_epoch_line(row, t.epochs) if not (log.tty and log.verbosity >= 1) else
                "  " + _epoch_line(row, t.epochs).split(" - ", 1)[1], 1)

            value = logs.get(t.checkpoint.monitor)
            improved = _better(value, state["best"], ck_mode)
            if improved:
                state["best"], state["best_epoch"] = value, epoch + 1
            if es:
                ev = logs.get(es.monitor)
                if _better(ev, state["es"]["best"], es_mode, es.min_delta):
                    state["es"] = {"best": ev, "wait": 0}
                else:
                    state["es"]["wait"] += 1
            plateau_update(sched, state["sched"], logs.get(sched["monitor"]) if sched and
                           "monitor" in sched else None, lr)
            state["epoch"] = epoch + 1
            if es and state["es"]["wait"] >= es.patience:  # as Keras' EarlyStopping
                state["stop"] = "early_stopping"
            # Resume point: weights + optimizer first, then the JSON that points at them, then
            # the old files go. None of these per-epoch writes is fsynced: atomic renames already
            # make them safe against a killed process; model.keras is synced once, at the end.
            values = [v.numpy() for v in model.variables]
            ckpt = state_dir / f"epoch-{epoch + 1:05d}.npz"
            _write_arrays(ckpt, values + [v.numpy() for v in model.optimizer.variables])
            if improved:
                best_weights = values
                state["best_file"] = f"best-{epoch + 1:05d}.npz"
                _write_arrays(state_dir / state["best_file"], values)
            state["checkpoint"] = ckpt.name
            state["seed_state"] = _seed_state(model)
            write_json(state_dir / "trainer.json", state, durable=False)
            for old in state_dir.glob("*.npz"):
                if old.name not in (ckpt.name, state.get("best_file")):
                    old.unlink(missing_ok=True)
            if state["stop"] == "early_stopping":
                log(f"Early stopping: {es.monitor} did not improve for {es.patience} epochs "
                    f"after epoch {state['best_epoch']}", 1)
                break
    except BaseException:
        # Ctrl-C, SIGTERM, NaN or a crash: the best model so far is kept in model.keras.
        if best_weights is not None:
            _assign(model.variables, best_weights, state_dir / state["best_file"])
            _save_model(model, work_dir / "model.keras")
        raise
    if state["stop"] is None:
        state["stop"] = "epochs"
    # Which weights end in model.keras (and are scored, predicted, submitted): the epoch
    # with the best checkpoint.monitor, unless early_stopping.restore_best_weights is
    # false, which keeps the last trained epoch's weights instead.
    state["kept_epoch"] = state["best_epoch"]
    if es is not None and not es.restore_best_weights and state["history"]:
        state["kept_epoch"] = state["epoch"]
    elif best_weights is not None:
        _assign(model.variables, best_weights, state_dir / state["best_file"])
    if state["history"]:
        _save_model(model, work_dir / "model.keras")
    return state


def load_resume_state(work_dir: Path, model):
    """Restore ``model`` (built and compiled from the run's config) to the last completed epoch.

    Returns:
        The loop state saved with it, or None when there is none (nothing to resume).
    """
    path = work_dir / STATE_DIR / "trainer.json"
    if not path.exists():
        return None
    try:
        state = read_json(path)
    except ValueError as e:
        raise RunError(f"{path}: damaged resume state ({e}); the run cannot be resumed, "
                       "start a new one") from None
    keys = ("epoch", "history", "best", "best_epoch", "es", "sched", "base_lr", "checkpoint")
    name = state.get("checkpoint") if isinstance(state, dict) else None
    if (not isinstance(state, dict) or any(k not in state for k in keys)
            or not isinstance(name, str) or not re.fullmatch(r"epoch-\d{5,}\.npz", name)):
        raise RunError(f"{path}: damaged or foreign resume state (expected the keys "
                       f"{', '.join(keys)} and a checkpoint named epoch-NNNNN.npz); "
                       "start a new run")
    ckpt = work_dir / STATE_DIR / name
    best = state.get("best_file")
    if not ckpt.is_file() or (best is not None and not (work_dir / STATE_DIR / best).is_file()):
        raise RunError(f"{ckpt.parent}: a file named in {path.name} is missing "
                       f"({name if not ckpt.is_file() else best}); start a new run")
    values = _read_checkpoint(ckpt)
    n = len(model.variables)
    if best is not None and len(_read_checkpoint(work_dir / STATE_DIR / best)) != n:
        raise RunError(f"{work_dir / STATE_DIR / best}: the saved weights do not fit the model "
                       "built from the run's config; start a new run")
    model.optimizer.build(model.trainable_variables)  # create its slots, then fill them
    _assign(model.variables, values[:n], ckpt)
    _assign(model.optimizer.variables, values[n:], ckpt)
    _restore_seed_state(model, state.get("seed_state", {}))
    return state


# --------------------------------------------------------------------------------------
# fit: data -> preprocessing -> model -> run directory -> train -> artifacts


def prepare(cfg: Config, smoke=False, log: Log | None = None):
    """Load and check the data named by the config; split and preprocess it.

    Everything that can fail on user input happens here, before any run
    directory exists.
    """
    from ottotrain import data as D

    log = log or Log(0)
    nrows = SMOKE_ROWS if smoke else None
    train = D.load_train(cfg.data, nrows=nrows)
    test = None
    test_path = D.data_paths(cfg.data)[1]
    if test_path is not None:
        test = D.load_test(test_path, cfg.data.id_column, cfg.data.target_column,
                           train.features, nrows=SMOKE_ROWS if smoke else None)
    try:
        tr, va = D.train_val_split(train.y, cfg.data.validation_split, cfg.seed, cfg.data.stratify)
    except D.DataError as e:
        raise D.DataError(f"{train.path}: {e}") from None
    pre, arrays = fit_arrays(cfg, train, tr, va)
    train.x = None  # its scaled row copies in ``arrays`` are all that is used from here on
    x_test = (test[0], pre.transform(test[1], overwrite=True)) if test is not None else None
    return train, pre, arrays, x_test, va


def fit_arrays(cfg: Config, train, tr, va):
    """Fit preprocessing on the training rows ``tr`` only; return it and the arrays."""
    from ottotrain.data import Preprocessor

    def rows(idx):  # a copy of those rows, ours to scale in place (a slice would be a view)
        r = train.x[idx]
        return r.copy() if np.may_share_memory(r, train.x) else r

    x_tr = rows(tr)
    try:
        pre = Preprocessor.fit(x_tr, cfg.data, train.features, train.classes,
                               cfg.data.id_column, cfg.data.target_column, train.y[tr])
    except DataError as e:  # e.g. data.knn and a class too small: say which file
        raise DataError(f"{train.path}: {e}") from None
    arrays = Arrays(pre.transform(x_tr, overwrite=True, fitted_rows=True), train.y[tr],
                    pre.transform(rows(va), overwrite=True), train.y[va], len(train.classes))
    return pre, arrays


def predict_proba(model, x, batch_size=8192) -> np.ndarray:
    """Class probabilities, rows summing to 1 (in float64)."""
    p = model.predict(x, batch_size=batch_size, verbose=0).astype(np.float64)
    p = np.clip(p, 0, None)
    return p / p.sum(axis=1, keepdims=True)


def write_submission(path, ids, proba, classes, id_column="id"):
    """Kaggle layout: id column then one probability column per class, atomically."""
    import pandas as pd

    df = pd.DataFrame(proba, columns=list(classes))
    df.insert(0, id_column, ids)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")


def _versions():
    import platform as pf

    out = {"ottotrain": __version__, "python": pf.python_version()}
    for mod in ("tensorflow", "keras", "numpy", "pandas", "sklearn"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def fit(cfg: Config, run_dir=None, runs_root="runs", smoke=False, resume=None, log: Log | None = None,
        config_name="run"):
    """Train a config and fill a run directory; return the metrics dict.

    Args:
        cfg: a validated ``Config`` (see ``load_config``).
        run_dir: exact directory to create (must not hold a run); default
            ``<runs_root>/<name>-<timestamp>``.
        smoke: a quick end-to-end check: a sample of the rows, one epoch.
        resume: a run directory to continue from its last completed epoch.
        log: progress output (stderr by default).

    Returns:
        The ``metrics.json`` content, with ``run_dir`` added.
    """
    from ottotrain.build import build_model, compile_model, summary_text

    log = log or Log(1)
    t_start = time.time()
    if smoke:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})
    resume_dir = Path(resume) if resume else None
    if resume_dir is not None:
        check_resumable(resume_dir, cfg)
        # A smoke run resumes as one: same sample of rows (its config already says 1 epoch).
        smoke = smoke or bool(runs.read_status(resume_dir).get("smoke"))

    t0 = time.perf_counter()
    train, pre, arrays, x_test, va = prepare(cfg, smoke, log)
    t_data = time.perf_counter() - t0
    log(f"Data: {len(train.y)} rows ({len(arrays.y_train)} train, {len(arrays.y_val)} validation), "
        f"{len(train.features)} features, {len(train.classes)} classes"
        + (f", {len(x_test[0])} test rows" if x_test else "") + (" [smoke]" if smoke else ""), 1)
    cw = class_weights(cfg, arrays.y_train, train.classes)
    from ottotrain.tblog import require_tensorboard, tensorboard_callback

    require_tensorboard(cfg)  # before the run directory exists

    keras = setup_tf(cfg)
    model = build_model(cfg, pre.n_outputs, len(train.classes), compile=False)
    compile_model(model, cfg, len(arrays.y_train))
    state = None
    if resume_dir is not None:
        run_dir = resume_dir
        _check_same_data(run_dir, pre)
        runs.remove_temp_files(run_dir)
        state = load_resume_state(run_dir, model)
        if state is not None:
            log(f"Resuming {run_dir} after epoch {state['epoch']}", 1)
        runs.write_status(run_dir, runs.RUNNING, smoke=smoke)
    else:
        name = cfg.name or config_name
        run_dir = runs.claim_run_dir(run_dir) if run_dir else runs.new_run_dir(runs_root, name)
        try:
            write_text(run_dir / "config.yaml", dump_yaml(config_to_dict(cfg)))
            pre.save(run_dir / "preprocess.json")
            write_text(run_dir / "summary.txt", summary_text(model) + "\n")
            runs.write_status(run_dir, runs.RUNNING, smoke=smoke)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)  # the run never started: leave nothing
            raise
    log(f"Run directory: {run_dir}", 1)

    t1 = time.perf_counter()
    # Whatever stops the run (Ctrl-C, SIGTERM, NaN, a crash), the status and history say
    # so and the run can be resumed from its last completed epoch.
    restore_term = _sigterm_as_interrupt()
    try:
        extra = []
        if cfg.train.tensorboard:
            extra.append(tensorboard_callback(keras, run_dir / "tensorboard",
                                              state["epoch"] if state else 0))
        state = train_loop(model, cfg, arrays, run_dir, log, state, cw, extra)
        t_train = time.perf_counter() - t1
        return finish(cfg, run_dir, state, train, pre, arrays, x_test, va, smoke, log,
                      {"data_seconds": round(t_data, 3), "train_seconds": round(t_train, 3),
                       "total_seconds": round(time.time() - t_start, 3)})
    except KeyboardInterrupt:
        if _mark_stopped(run_dir, runs.INTERRUPTED, smoke=smoke):
            kept = ("kept the best model and the history so far" if (run_dir / "model.keras").exists()
                    else "no epoch had completed, nothing to keep yet")
            log(f"Interrupted: {kept} in {run_dir}; continue with: ottotrain fit --resume {run_dir}", 0)
        raise
    except TrainingError as e:
        _mark_stopped(run_dir, runs.FAILED, smoke=smoke, reason="nan", message=str(e)[:500])
        raise
    except Exception as e:
        _mark_stopped(run_dir, runs.FAILED, smoke=smoke, reason="error",
                      message=f"{type(e).__name__}: {e}"[:500])
        raise
    finally:
        restore_term()


def _sigterm_as_interrupt():
    """Treat SIGTERM (kill, a batch system's time limit) like Ctrl-C; returns an undo."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


def _mark_stopped(run_dir, status, **extra) -> bool:
    """Record why a run stopped (history so far, status); False if it had already finished.

    A second Ctrl-C while this runs is ignored, so the record is never half-written.
    """
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        with contextlib.suppress(RunError):
            if runs.read_status(run_dir).get("status") == runs.FINISHED:
                return False
        with contextlib.suppress(OSError, ValueError, KeyError):
            _write_history(run_dir, _saved_history(run_dir))
        runs.write_status(run_dir, status, **extra)
        return True
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def _check_same_data(run_dir, pre):
    """Refuse to resume on other data: the preprocessing learned from it must be identical."""
    path = Path(run_dir) / "preprocess.json"
    try:
        saved = read_json(path)
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: cannot be read ({e}); the run cannot be resumed") from None
    now = json.loads(pre.to_json())
    if saved != now:
        what = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        raise RunError(f"{run_dir}: the training data changed since the run started "
                       f"(preprocessing differs in: {', '.join(what[:8])}); resume needs the same "
                       "data, or start a new run with 'ottotrain fit'")


def _saved_history(run_dir):
    p = Path(run_dir) / STATE_DIR / "trainer.json"
    return read_json(p)["history"] if p.exists() else []


def _write_history(run_dir, history):
    import pandas as pd

    cols = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    with atomic_path(Path(run_dir) / "history.csv") as tmp:
        pd.DataFrame(history, columns=cols).to_csv(tmp, index=False)


def finish(cfg, run_dir, state, train, pre, arrays, x_test, va, smoke, log, timings):
    """Score the best model, write history, metrics, predictions and the submission."""
    from ottotrain import data as D

    best = runs.load_model(run_dir / "model.keras", compile=False)
    t0 = time.perf_counter()
    p_val = predict_proba(best, arrays.x_val)
    val_loss = D.log_loss(arrays.y_val, p_val)
    val_acc = float((p_val.argmax(1) == arrays.y_val).mean())
    _write_history(run_dir, state["history"])
    if x_test is not None:
        write_submission(run_dir / "submission.csv", x_test[0], predict_proba(best, x_test[1]),
                         train.classes, cfg.data.id_column)
    # Validation predictions, for plots, blending and error analysis.
    import pandas as pd

    vdf = pd.DataFrame(p_val, columns=train.classes)
    vdf.insert(0, "target", np.asarray(train.classes)[arrays.y_val])
    vdf.insert(0, cfg.data.id_column, train.ids[va])
    with atomic_path(run_dir / "val_predictions.csv") as tmp:
        vdf.to_csv(tmp, index=False, float_format="%.6g")
    timings["predict_seconds"] = round(time.perf_counter() - t0, 3)
    hist = state["history"]
    metrics = {
        "val_log_loss": round(val_loss, 6),
        "val_accuracy": round(val_acc, 6),
        "best_epoch": state["best_epoch"],
        "kept_epoch": state.get("kept_epoch", state["best_epoch"]),
        "epochs_run": len(hist),
        "stopped_by": state["stop"],
        "monitor": cfg.train.checkpoint.monitor,
        "n_train": int(len(arrays.y_train)),
        "n_val": int(len(arrays.y_val)),
        "n_features": len(train.features),
        "n_classes": len(train.classes),
        "smoke": smoke,
        "seconds_per_epoch": round(sum(r["seconds"] for r in hist) / max(1, len(hist)), 4),
        "timings": timings,
        "versions": _versions(),
    }
    write_json(run_dir / "metrics.json", metrics)
    with contextlib.suppress(Exception):
        from ottotrain.plots import plot_run

        plot_run(run_dir)
    # Finished first, then drop the resume state: a crash in between leaves a finished
    # run with a stale state folder, never an unfinished run without its resume point.
    runs.write_status(run_dir, runs.FINISHED, smoke=smoke)
    shutil.rmtree(run_dir / STATE_DIR, ignore_errors=True)
    log(f"Best epoch {metrics['best_epoch']}/{metrics['epochs_run']}: validation log loss "
        f"{val_loss:.4f}, accuracy {val_acc:.4f}", 1)
    return {**metrics, "run_dir": str(run_dir)}


def check_resumable(run_dir: Path, cfg: Config):
    """Refuse to resume a run that is finished, foreign, or made with another config."""
    import yaml

    info = runs.read_status(run_dir)
    runs.check_format(run_dir, info)
    if info["status"] == runs.FINISHED:
        raise RunError(f"{run_dir}: the run already finished; start a new one with 'ottotrain fit'")
    runs.check_not_running(run_dir, info)
    runs.check_safe(run_dir)
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise RunError(f"{run_dir / 'config.yaml'}: cannot be read ({str(e).splitlines()[0]}); "
                       "the run cannot be resumed, start a new one") from None
    now = config_to_dict(cfg)
    diffs = diff_configs(saved, now)
    if diffs:
        raise RunError(f"{run_dir}: the config changed since the run started, refusing to resume: "
                       + "; ".join(diffs[:10]) + ("; ..." if len(diffs) > 10 else "")
                       + f"; resume without CONFIG or --set (it uses {run_dir / 'config.yaml'}), "
                       "or start a new run")


def diff_configs(a, b, path="") -> list[str]:
    """List the differences between two config trees as 'key: old -> new'."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{p}: (unset) -> {b[k]!r}")
            elif k not in b:
                out.append(f"{p}: {a[k]!r} -> (unset)")
            else:
                out.extend(diff_configs(a[k], b[k], p))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(diff_configs(x, y, f"{path}[{i}]"))
    elif a != b:
        out.append(f"{path}: {a!r} -> {b!r}")
    return out
