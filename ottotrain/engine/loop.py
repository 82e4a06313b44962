"""The epoch loop: train a model epoch by epoch, resumably.

The loop is ours rather than one long ``model.fit`` so that every epoch ends in a
consistent, saved state (weights, optimizer, early-stopping and checkpoint counters,
learning-rate schedule, history): a run killed at any moment resumes from its last
completed epoch and ends where an uninterrupted run would. The shuffle order of epoch
``e`` depends only on ``(seed, e)`` for the same reason.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time

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
    # Keras makes many short-lived Python objects per fit call, which now and then set off
    # a full garbage collection that scans every object TensorFlow, Keras and pandas made
    # at import: about 0.2 s each time on 2 cores (measured on the tutorial MLP). Objects
    # alive now are exempt from those scans while training and handed back afterwards;
    # reference counting still frees them, and what training itself makes is collected
    # as usual.
    gc.freeze()
    try:
        return _train_epochs(model, job, log, state, callbacks)
    finally:
        gc.unfreeze()


def _train_epochs(model, job, log, state, callbacks):
    cfg, arrays, work_dir, class_weight = job.cfg, job.arrays, job.work_dir, job.class_weight
    t = cfg.train
    sched = t.lr_schedule
    if state is None:
        state = TrainState(base_lr=float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    base_lr = state.base_lr
    ck_mode = monitor_mode(t.checkpoint.monitor, t.checkpoint.mode)
    es = t.early_stopping
    es_mode = monitor_mode(es.monitor, es.mode) if es else None
    state_dir = work_dir / STATE_DIR
    state_dir.mkdir(exist_ok=True)
    n = len(arrays.x_train)
    steps = -(-n // t.batch_size)
    y_train = keras.utils.to_categorical(arrays.y_train, arrays.n_classes).astype(np.float32)
    validation = Validation(arrays.x_val, arrays.y_val)
    ens = cfg.model.ensemble
    members = ens.k if ens is not None else 1  # k = 1 builds the plain model: one order
    batches = EpochBatches(arrays.x_train, y_train, t.batch_size, members)
    averaged = AveragedWeights() if getattr(model.optimizer, "use_ema", False) else None

    best_weights = None  # the best epoch's model variables, kept in memory
    if state.best_file and (state_dir / state.best_file).is_file():
        best_weights = checkpoints.read_arrays(state_dir / state.best_file)
    try:
        if state.stop == "early_stopping" and es is not None and state.es.wait < es.patience:
            state.stop = None  # resumed with more patience (--set): the run goes on
        # A run killed after early stopping but before finishing must not train on.
        first = t.epochs if state.stop == "early_stopping" else state.epoch
        for epoch in range(first, t.epochs):
            lr = schedule_lr(sched, base_lr, epoch, t.epochs, state.sched)
            model.optimizer.learning_rate.assign(lr)
            perm = (
                epoch_order(cfg.seed, epoch, n, members, ens is not None and ens.shared_batches)
                if t.shuffle
                else None
            )
            train_ds = batches.epoch(perm)
            t0 = time.perf_counter()
            # Keras' own bar draws the batches on a terminal; a log file hears of a long epoch.
            epoch_phase = log.phase(
                f"Epoch {epoch + 1}/{t.epochs}", steps, "batches", LOG_EVERY, summary=False, bar=False
            )
            with contextlib.redirect_stdout(log.stream), epoch_phase:
                h = model.fit(
                    train_ds,
                    epochs=1,
                    verbose=0,
                    shuffle=False,
                    class_weight=class_weight,
                    callbacks=[
                        *([averaged] if averaged else []),
                        validation,
                        Progress(log, epoch, t.epochs, steps, epoch_phase),
                        *callbacks,
                    ],
                )
            logs = {k: float(v[-1]) for k, v in h.history.items()}
            row = EpochRow(
                epoch + 1,
                logs.get("loss"),
                logs.get("accuracy"),
                logs.get("val_loss"),
                logs.get("val_accuracy"),
                lr,
                round(time.perf_counter() - t0, 4),
            )
            if not all(math.isfinite(v) for v in (row.loss, row.val_loss) if v is not None):
                state.stop = "nan"
                kept = (
                    f"the best model so far (epoch {state.best_epoch}) is kept in {work_dir / 'model.keras'}"
                    if state.best_epoch
                    else "no epoch ended with a finite loss, so there is no model to keep"
                )
                raise TrainingError(
                    f"{cfg.source}: epoch {epoch + 1}: the loss became {row.loss} "
                    f"(val_loss {row.val_loss}); training stopped, {kept}. Lower the learning rate "
                    f"(now {lr:g}), add gradient clipping (train.gradient_clip_norm: 1.0) or "
                    "check the feature scaling (data.scaling: standard)"
                )
            state.history.append(row)
            log(
                _epoch_line(row, t.epochs)
                if not (log.tty and log.verbosity >= 1)
                else "  " + _epoch_line(row, t.epochs).split(" - ", 1)[1],
                1,
            )

            value = logs.get(t.checkpoint.monitor)
            improved = better(value, state.best, ck_mode)
            if improved:
                state.best, state.best_epoch = value, epoch + 1
            if es:
                ev = logs.get(es.monitor)
                if better(ev, state.es.best, es_mode, es.min_delta):
                    state.es.best, state.es.wait = ev, 0
                else:
                    state.es.wait += 1
            plateau_update(sched, state.sched, logs, lr)
            state.epoch = epoch + 1
            if es and state.es.wait >= es.patience:  # as Keras' EarlyStopping
                state.stop = "early_stopping"
            # Resume point: weights + optimizer first, then the JSON that points at them, then
            # the old files go. None of these per-epoch writes is fsynced: atomic renames already
            # make them safe against a killed process; model.keras is synced once, at the end.
            # `values` are the weights just scored (their moving average with use_ema); the
            # resume point holds the trained ones, from which the next epoch goes on.
            values = [v.numpy() for v in model.variables]
            if averaged:
                averaged.restore()
            trained = [v.numpy() for v in model.variables] if averaged else values
            ckpt = state_dir / f"epoch-{epoch + 1:05d}.npz"
            checkpoints.write_arrays(ckpt, trained + [v.numpy() for v in model.optimizer.variables])
            if improved:
                best_weights = values
                state.best_file = f"best-{epoch + 1:05d}.npz"
                checkpoints.write_arrays(state_dir / state.best_file, values)
            state.checkpoint = ckpt.name
            state.seed_state = checkpoints.seed_state(model)
            state.save(state_dir / "trainer.json")
            for old in state_dir.glob("*.npz"):
                if old.name not in (ckpt.name, state.best_file):
                    old.unlink(missing_ok=True)
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
            checkpoints.assign(model.variables, best_weights, state_dir / state.best_file)
            checkpoints.save_model(model, work_dir / "model.keras")
        raise
    if state.stop is None:
        state.stop = "epochs"
    # Which weights end in model.keras (and are scored, predicted, submitted): the epoch
    # with the best checkpoint.monitor, unless early_stopping.restore_best_weights is
    # false, which keeps the last trained epoch's weights instead.
    state.kept_epoch = state.best_epoch
    if es is not None and not es.restore_best_weights and state.history:
        state.kept_epoch = state.epoch
        if averaged:  # the last epoch as it was scored: its weights' average
            model.optimizer.finalize_variable_values(model.trainable_variables)
    elif best_weights is not None:
        checkpoints.assign(model.variables, best_weights, state_dir / state.best_file)
    if state.history:
        checkpoints.save_model(model, work_dir / "model.keras")
    return state
