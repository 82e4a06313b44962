"""The epoch loop: train a model epoch by epoch, resumably.

The loop is ours rather than one long ``model.fit`` so that every epoch ends in a
consistent, saved state (weights, optimizer, early-stopping and checkpoint counters,
learning-rate schedule, history): a run killed at any moment resumes from its last
completed epoch and ends where an uninterrupted run would. The shuffle order of epoch
``e`` depends only on ``(seed, e)`` for the same reason.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ottotrain.engine import checkpoints
from ottotrain.engine.callbacks import AveragedWeights, Progress, Validation
from ottotrain.engine.env import keras, tf
from ottotrain.engine.schedules import better, monitor_mode, plateau_update, schedule_lr
from ottotrain.errors import TrainingError
from ottotrain.log import LOG_EVERY, Log
from ottotrain.runs.rundir import STATE_DIR
from ottotrain.runs.state import EpochRow, TrainState


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

    An ensemble of ``members`` (``model.ensemble``) trains on batches of ``members`` blocks
    of ``batch_size`` rows, member-major, that ``EnsembleStart`` splits: block m is member
    m's batch i, cut from member m's own order of the epoch (or all the same order, with
    shared batches). Still one gather from one copy of the data per batch.
    """

    def __init__(self, x, y, batch_size, members=1):
        self.x = tf.Variable(x, trainable=False)
        self.y = tf.Variable(y, trainable=False)
        self.n, self.batch_size, self.members = int(self.x.shape[0]), batch_size, members
        self.order = tf.Variable(tf.range(self.n * members, dtype=tf.int64), trainable=False)
        rows = batch_size * members
        ds = tf.data.Dataset.range(0, self.n * members, rows)
        ds = ds.map(lambda s: self._batch(self.order[s : s + rows]))
        # No prefetch thread and no tf.data autotuning. A gather of one batch takes
        # microseconds, so there is nothing to overlap; and the autotuner's background
        # thread made each epoch's model.fit wait for its timer when the iterator closed:
        # 3x512 epochs of 1.4 s took exactly 2.55 s about every other epoch (bench/RESULTS.md).
        options = tf.data.Options()
        options.autotune.enabled = False
        self.ds = ds.with_options(options)

    def _batch(self, idx):
        return tf.gather(self.x, idx), tf.gather(self.y, idx)

    def epoch(self, perm=None):
        """The dataset for one epoch in the order ``perm`` (row order when None); for an
        ensemble, ``perm`` is one order per member (k x n)."""
        if self.members == 1:
            self.order.assign(np.arange(self.n) if perm is None else np.asarray(perm, dtype=np.int64))
            return self.ds
        p = (
            np.tile(np.arange(self.n), (self.members, 1))
            if perm is None
            else np.asarray(perm, dtype=np.int64)
        )
        b = self.batch_size
        self.order.assign(np.concatenate([p[:, s : s + b].reshape(-1) for s in range(0, self.n, b)]))
        return self.ds


def epoch_order(seed: int, epoch: int, n: int, members: int = 1, shared: bool = False):
    """The shuffle of epoch ``epoch``: one permutation, or one per ensemble member (k x n).

    A single model's order depends only on (seed, epoch), as always; member m > 0 of an
    ensemble draws from (seed, epoch, m), and with shared batches every member takes
    member 0's.
    """
    first = np.random.default_rng([seed, epoch]).permutation(n)
    if members == 1:
        return first
    rest = [
        first if shared else np.random.default_rng([seed, epoch, m]).permutation(n) for m in range(1, members)
    ]
    return np.stack([first, *rest])


def _epoch_line(row: EpochRow, epochs: int) -> str:
    parts = [f"Epoch {row.epoch}/{epochs}", f"{row.seconds:.1f}s"]
    for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if getattr(row, k) is not None:
            parts.append(f"{k}: {getattr(row, k):.4f}")
    parts.append(f"lr: {row.lr:.3g}")
    return " - ".join(parts)


def train_loop(model, job, log: Log, state: TrainState | None = None, callbacks=()) -> TrainState:
    """Train ``model`` epoch by epoch on ``job.arrays``; keep the best in ``job.work_dir/model.keras``.

    ``job`` is the ``member.MemberJob`` (config, arrays, work directory, class weights);
    ``state`` the resume state (None for a new run). After every epoch the state is saved
    to ``work_dir/state`` so the loop can be resumed from there.

    Raises:
        TrainingError: the loss became NaN or infinite.
        KeyboardInterrupt: Ctrl-C; everything up to the last epoch is saved.
    """
    # Full garbage collections while training skip what TensorFlow and Keras made at import:
    # engine.env froze it (gc.freeze()).
    return _train_epochs(model, job, log, state, callbacks)


@dataclass
class _Loop:
    """What every epoch of one run shares: the settings, the batches, the callbacks."""

    model: object
    job: object
    log: Log
    callbacks: tuple
    state_dir: Path
    steps: int
    members: int
    batches: EpochBatches
    validation: Validation
    averaged: AveragedWeights | None

    @classmethod
    def start(cls, model, job, log, callbacks) -> _Loop:
        cfg, arrays = job.cfg, job.arrays
        state_dir = job.work_dir / STATE_DIR
        state_dir.mkdir(exist_ok=True)
        y_train = keras.utils.to_categorical(arrays.y_train, arrays.n_classes).astype(np.float32)
        ens = cfg.model.ensemble
        members = ens.k if ens is not None else 1  # k = 1 builds the plain model: one order
        return cls(
            model,
            job,
            log,
            tuple(callbacks),
            state_dir,
            steps=-(-len(arrays.x_train) // cfg.train.batch_size),
            members=members,
            batches=EpochBatches(arrays.x_train, y_train, cfg.train.batch_size, members),
            validation=Validation(arrays.x_val, arrays.y_val),
            averaged=AveragedWeights() if getattr(model.optimizer, "use_ema", False) else None,
        )

    def fit_epoch(self, epoch: int, lr: float) -> tuple[dict, EpochRow]:
        """Train one epoch at learning rate ``lr``: its logs and its history row."""
        cfg, t = self.job.cfg, self.job.cfg.train
        self.model.optimizer.learning_rate.assign(lr)
        ens = cfg.model.ensemble
        n = self.batches.n
        shared = ens is not None and ens.shared_batches
        perm = epoch_order(cfg.seed, epoch, n, self.members, shared) if t.shuffle else None
        train_ds = self.batches.epoch(perm)
        t0 = time.perf_counter()
        # Keras' own bar draws the batches on a terminal; a log file hears of a long epoch.
        log = self.log
        epoch_phase = log.phase(
            f"Epoch {epoch + 1}/{t.epochs}", self.steps, "batches", LOG_EVERY, summary=False, bar=False
        )
        with contextlib.redirect_stdout(log.stream), epoch_phase:
            progress = Progress(log, epoch, t.epochs, self.steps, epoch_phase)
            h = self.model.fit(
                train_ds,
                epochs=1,
                verbose=0,
                shuffle=False,
                class_weight=self.job.class_weight,
                callbacks=[
                    *([self.averaged] if self.averaged else []),
                    self.validation,
                    progress,
                    *self.callbacks,
                ],
            )
        logs = {k: float(v[-1]) for k, v in h.history.items()}
        seconds = round(time.perf_counter() - t0, 4)
        keys = ("loss", "accuracy", "val_loss", "val_accuracy")
        return logs, EpochRow(epoch + 1, *(logs.get(k) for k in keys), lr, seconds)

    def save_point(self, state: TrainState, epoch: int, improved: bool) -> list:
        """Write the resume point of ``epoch`` (and its best file when ``improved``); return
        the weights just scored.

        Weights + optimizer first, then the JSON that points at them, then the old files go.
        None of these per-epoch writes is fsynced: atomic renames already make them safe
        against a killed process; model.keras is synced once, at the end. ``values`` are the
        weights just scored (their moving average with use_ema); the resume point holds the
        trained ones, from which the next epoch goes on.
        """
        model, state_dir = self.model, self.state_dir
        values = [v.numpy() for v in model.variables]
        if self.averaged:
            self.averaged.restore()
        trained = [v.numpy() for v in model.variables] if self.averaged else values
        ckpt = state_dir / f"epoch-{epoch + 1:05d}.npz"
        checkpoints.write_arrays(ckpt, trained + [v.numpy() for v in model.optimizer.variables])
        if improved:
            state.best_file = f"best-{epoch + 1:05d}.npz"
            checkpoints.write_arrays(state_dir / state.best_file, values)
        state.checkpoint = ckpt.name
        state.seed_state = checkpoints.seed_state(model)
        state.save(state_dir / "trainer.json")
        for old in state_dir.glob("*.npz"):
            if old.name not in (ckpt.name, state.best_file):
                old.unlink(missing_ok=True)
        return values


def _check_finite(job, state: TrainState, row: EpochRow) -> None:
    """Stop with a TrainingError when the epoch's loss is NaN or infinite."""
    if all(math.isfinite(v) for v in (row.loss, row.val_loss) if v is not None):
        return
    state.stop = "nan"
    kept = (
        f"the best model so far (epoch {state.best_epoch}) is kept in {job.work_dir / 'model.keras'}"
        if state.best_epoch
        else "no epoch ended with a finite loss, so there is no model to keep"
    )
    raise TrainingError(
        f"{job.cfg.source}: epoch {row.epoch}: the loss became {row.loss} "
        f"(val_loss {row.val_loss}); training stopped, {kept}. Lower the learning rate "
        f"(now {row.lr:g}), add gradient clipping (train.gradient_clip_norm: 1.0) or "
        "check the feature scaling (data.scaling: standard)"
    )


def _count(t, state: TrainState, logs: dict, epoch: int, lr: float) -> bool:
    """Update the checkpoint, early-stopping and schedule counters after ``epoch``; whether
    the checkpoint's monitor improved."""
    value = logs.get(t.checkpoint.monitor)
    improved = better(value, state.best, monitor_mode(t.checkpoint.monitor, t.checkpoint.mode))
    if improved:
        state.best, state.best_epoch = value, epoch + 1
    es = t.early_stopping
    if es:
        ev = logs.get(es.monitor)
        if better(ev, state.es.best, monitor_mode(es.monitor, es.mode), es.min_delta):
            state.es.best, state.es.wait = ev, 0
        else:
            state.es.wait += 1
    plateau_update(t.lr_schedule, state.sched, logs, lr)
    state.epoch = epoch + 1
    if es and state.es.wait >= es.patience:  # as Keras' EarlyStopping
        state.stop = "early_stopping"
    return improved


def _train_epochs(model, job, log, state, callbacks):
    t = job.cfg.train
    if state is None:
        state = TrainState(base_lr=float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    loop = _Loop.start(model, job, log, callbacks)
    es = t.early_stopping
    best_weights = None  # the best epoch's model variables, kept in memory
    if state.best_file and (loop.state_dir / state.best_file).is_file():
        best_weights = checkpoints.read_arrays(loop.state_dir / state.best_file)
    try:
        if state.stop == "early_stopping" and es is not None and state.es.wait < es.patience:
            state.stop = None  # resumed with more patience (--set): the run goes on
        # A run killed after early stopping but before finishing must not train on.
        first = t.epochs if state.stop == "early_stopping" else state.epoch
        for epoch in range(first, t.epochs):
            lr = schedule_lr(t.lr_schedule, state.base_lr, epoch, t.epochs, state.sched)
            logs, row = loop.fit_epoch(epoch, lr)
            _check_finite(job, state, row)
            state.history.append(row)
            line = _epoch_line(row, t.epochs)
            log(line if not (log.tty and log.verbosity >= 1) else "  " + line.split(" - ", 1)[1], 1)
            improved = _count(t, state, logs, epoch, lr)
            scored = loop.save_point(state, epoch, improved)
            if improved:
                best_weights = scored
            if job.on_epoch is not None:
                job.on_epoch(row)
            if state.stop == "early_stopping":
                log(
                    f"Early stopping: {es.monitor} did not improve for {es.patience} epochs "
                    f"after epoch {state.best_epoch}",
                    1,
                )
                break
    except BaseException:
        # Ctrl-C, SIGTERM, NaN or a crash: the best model so far is kept in model.keras.
        if best_weights is not None:
            checkpoints.assign(model.variables, best_weights, loop.state_dir / state.best_file)
            checkpoints.save_model(model, job.work_dir / "model.keras")
        raise
    _keep(model, job, state, best_weights, loop)
    return state


def _keep(model, job, state: TrainState, best_weights, loop: _Loop) -> None:
    """Put the kept epoch's weights in the model and save it as model.keras.

    Which weights end in model.keras (and are scored, predicted, submitted): the epoch with
    the best checkpoint.monitor, unless early_stopping.restore_best_weights is false, which
    keeps the last trained epoch's weights instead.
    """
    es = job.cfg.train.early_stopping
    if state.stop is None:
        state.stop = "epochs"
    state.kept_epoch = state.best_epoch
    if es is not None and not es.restore_best_weights and state.history:
        state.kept_epoch = state.epoch
        if loop.averaged:  # the last epoch as it was scored: its weights' average
            model.optimizer.finalize_variable_values(model.trainable_variables)
    elif best_weights is not None:
        checkpoints.assign(model.variables, best_weights, loop.state_dir / state.best_file)
    if state.history:
        checkpoints.save_model(model, job.work_dir / "model.keras")
