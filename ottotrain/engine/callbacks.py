"""The Keras callbacks of the epoch loop: progress bar, validation pass, TensorBoard."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np

from ottotrain.engine import keras_compat
from ottotrain.engine.env import keras, tf
from ottotrain.log import Log, Phase
from ottotrain.metrics import log_loss


class Progress(keras.callbacks.Callback):
    """A progress bar on a terminal; the epoch's phase (``Log.phase``) counts the batches."""

    def __init__(self, log: Log, epoch: int, epochs: int, steps: int, phase: Phase | None = None):
        super().__init__()
        self.log, self.epoch, self.epochs, self.steps = log, epoch, epochs, steps
        self.phase = phase
        self.bar = None

    def on_epoch_begin(self, e, logs=None):
        if self.log.tty and self.log.verbosity >= 1:
            print(f"Epoch {self.epoch + 1}/{self.epochs}", file=self.log.stream, flush=True)
            # Keras' logs are running means already: show them, don't average them again.
            self.bar = keras_compat.dynamic_progbar(self.steps, ["loss", "accuracy"])
        else:
            self.bar = None

    def on_train_batch_end(self, batch, logs=None):
        if self.phase is not None:
            self.phase.advance(1)
        if self.bar is not None:
            with contextlib.redirect_stdout(self.log.stream):
                self.bar.update(batch + 1, [(k, v) for k, v in (logs or {}).items()])


class AveragedWeights(keras.callbacks.Callback):
    """With the optimizer's ``use_ema``: each epoch is scored (and kept) with the weights'
    moving average, while training goes on from the weights themselves.

    Keras replaces the weights by their average at the end of every ``fit`` call, which
    in a loop of one-epoch calls would restart each epoch from the average. So at the
    epoch's end this keeps the trained weights, puts the average in for the callbacks after
    it (validation, TensorBoard), and ``restore`` puts the trained weights back before the
    next epoch. It must come first in the callback list.
    """

    def __init__(self):
        super().__init__()
        self.trained = None

    def on_epoch_end(self, epoch, logs=None):
        weights = self.model.trainable_variables
        self.trained = [v.numpy() for v in weights]
        self.model.optimizer.finalize_variable_values(weights)

    def restore(self):
        for v, a in zip(self.model.trainable_variables, self.trained):
            v.assign(a)


class Validation(keras.callbacks.Callback):
    """Scores the validation rows at the end of every epoch.

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

    def __init__(self, x_val, y_val, chunk=16384):
        super().__init__()
        self.x = tf.convert_to_tensor(x_val)
        self.y = y_val
        self.chunk = chunk
        self.spec = [tf.TensorSpec([None, self.x.shape[1]], self.x.dtype)]
        self.forward = None

    def on_epoch_end(self, epoch, logs=None):
        if self.forward is None:  # traced once: fit gives the callback the same model
            model = self.model
            self.forward = tf.function(lambda b: model(b, training=False), input_signature=self.spec)
        x, chunk = self.x, self.chunk
        p = np.concatenate([self.forward(x[i : i + chunk]).numpy() for i in range(0, int(x.shape[0]), chunk)])
        if logs is not None:
            logs["val_loss"] = log_loss(self.y, p) if np.isfinite(p).all() else math.nan
            logs["val_accuracy"] = float((p.argmax(axis=1) == self.y).mean())


class EpochTensorBoard(keras.callbacks.Callback):
    """Each epoch's metrics and learning rate, as TensorBoard scalars, on ``tf.summary`` only.

    Keras' own ``TensorBoard`` callback does not fit a loop that calls ``model.fit`` once
    per epoch: it numbers epochs from 0 within each call (every epoch lands on step 0) and
    opens a new event file per call, which TensorBoard reads in file-name order, not in
    the order they were written. Here one writer per folder (``train``, ``validation``)
    lives for the whole loop and the step is the epoch counted across calls, starting
    after the ``first_epoch`` epochs a resumed run already has. Tags are Keras' own
    (``epoch_loss``, ``epoch_accuracy``, ``epoch_learning_rate``), so TensorBoard shows
    the train and validation curves of one metric on one chart.
    """

    def __init__(self, log_dir, first_epoch: int = 0):
        super().__init__()
        self.writers = {
            "train": tf.summary.create_file_writer(str(Path(log_dir) / "train")),
            "validation": tf.summary.create_file_writer(str(Path(log_dir) / "validation")),
        }
        self.step = first_epoch

    def on_epoch_end(self, epoch, logs=None):
        values = dict(logs or {})
        values["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        for key, value in values.items():
            folder, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self.writers[folder].as_default():
                tf.summary.scalar(f"epoch_{name}", value, step=self.step)
        for w in self.writers.values():
            w.flush()
        self.step += 1

    def close(self):
        for w in self.writers.values():
            w.close()
