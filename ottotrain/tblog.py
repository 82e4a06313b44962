"""TensorBoard logging for ``train.tensorboard: true``.

The training loop calls ``model.fit`` once per epoch (see ``train.train_loop``),
and Keras' ``TensorBoard`` callback numbers epochs from 0 within each call: every
epoch would land on step 0. ``EpochTensorBoard`` numbers them across the calls,
starting after the epochs a resumed run already has.
"""

from __future__ import annotations

import importlib.util

from ottotrain.errors import ConfigError


def require_tensorboard(cfg) -> None:
    """Refuse ``train.tensorboard: true`` up front when the package is missing.

    ``tf.summary`` is implemented by the ``tensorboard`` package; without it the
    first epoch would crash, after the run directory was created.
    """
    if cfg.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"{cfg._source}: train.tensorboard: true needs the tensorboard package; "
                          "install it (pip install tensorboard) or set train.tensorboard: false")


def tensorboard_callback(keras, log_dir, first_epoch: int = 0):
    """A ``keras.callbacks.TensorBoard`` writing to ``log_dir`` with epochs numbered across fits.

    Args:
        keras: the keras module.
        log_dir: where the ``train`` and ``validation`` event files go.
        first_epoch: epochs already done (a resumed run), so steps continue from there.
    """

    class EpochTensorBoard(keras.callbacks.TensorBoard):
        def __init__(self, **kw):
            super().__init__(**kw)
            # Counted here rather than taken from Keras: each fit call restarts at epoch 0.
            self.epochs_done = first_epoch
            self.graph_written = False

        def set_model(self, model):
            # The graph is the same every epoch: write it once, not once per fit call.
            self.write_graph = not self.graph_written
            self.graph_written = True
            super().set_model(model)

        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(self.epochs_done, logs)

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(self.epochs_done, logs)
            self.epochs_done += 1

    return EpochTensorBoard(log_dir=str(log_dir))
