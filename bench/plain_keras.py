"""The hand-written reference: what the Keras Otto tutorial does, with Keras defaults.

pandas read -> numpy float32 -> StandardScaler (fit on all training rows, as the
tutorial's ``preprocess_data``) -> one-hot labels -> train_test_split(15 %,
random_state=42) -> ``model.fit(X, Y, validation_data=..., batch_size, epochs)``
with the tutorial's ``ModelCheckpoint(save_best_only=True)`` callback (its
``best_model.h5``; ``.keras`` in Keras 3). Nothing else: Keras' default
``shuffle=True``, ``steps_per_execution=1`` and ``jit_compile="auto"`` (which
Keras 3 resolves to XLA off on CPU-only machines). The tutorial's
``EarlyStopping(patience=4)`` is left out so that both sides train the same
number of epochs. ``--no-checkpoint``: a bare ``model.fit`` without any callback.

    python bench/plain_keras.py --train ../shared/otto/train.csv.gz --model mlp \
        --batch-size 128 --epochs 5 --seed 42 --json out.json
    python bench/plain_keras.py --smoke   # each model, 2 epochs, small generated data

Prints/writes one JSON object: seconds of each epoch (incl. validation), the wall
time of ``model.fit``, the final validation log loss (Kaggle's metric).
"""

import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import common
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder, StandardScaler

MODELS = ("logreg", "mlp", "mlp3x512")


def build(keras, name, dims, nb_classes):
    from keras.layers import Activation, BatchNormalization, Dense, Dropout, Input, PReLU

    model = keras.Sequential()
    model.add(Input(shape=(dims,)))
    if name == "mlp":
        model.add(Dense(100))
    elif name == "mlp3x512":
        for _ in range(3):
            model.add(Dense(512))
            model.add(PReLU())
            model.add(BatchNormalization())
            model.add(Dropout(0.5))
    model.add(Dense(nb_classes))
    model.add(Activation("softmax"))
    return model


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("--train", help="training CSV (required unless --smoke)")
    ap.add_argument("--model", choices=MODELS)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--optimizer", default=None, help="default: sgd (adam for mlp3x512)")
    ap.add_argument("--json", help="write the result here too")
    ap.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="leave out the tutorial's ModelCheckpoint (a bare model.fit)",
    )
    a = ap.parse_args(argv)
    if not a.smoke:
        if not (a.train and a.model):
            ap.error("--train and --model are required (or --smoke)")
        return train(a)
    with common.scratch() as work:  # each model once with the tutorial's checkpoint, one bare
        a.train, a.epochs = common.synthetic(work, 1_500, 0).train, 1
        for a.model, a.no_checkpoint in [(m, False) for m in MODELS] + [("logreg", True)]:
            train(a)


def train(a):
    t0 = time.perf_counter()
    df = pd.read_csv(a.train)
    X = df.drop(columns=["id", "target"]).values.astype(np.float32)
    labels = df["target"].values
    scaler = StandardScaler()
    X = scaler.fit_transform(X)
    encoder = LabelEncoder()
    y = encoder.fit_transform(labels)
    t_data = time.perf_counter() - t0

    import keras

    keras.utils.set_random_seed(a.seed)
    Y = keras.utils.to_categorical(y)
    X_train, X_val, Y_train, Y_val = train_test_split(X, Y, test_size=0.15, random_state=42)
    model = build(keras, a.model, X.shape[1], Y.shape[1])
    opt = a.optimizer or ("adam" if a.model == "mlp3x512" else "sgd")
    model.compile(optimizer=opt, loss="categorical_crossentropy")

    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # after the validation pass
            times.append(time.perf_counter() - self.t)

    callbacks = [Timer()]
    tmp = tempfile.TemporaryDirectory()
    if not a.no_checkpoint:  # the tutorial's: best_model = ModelCheckpoint(fBestModel, save_best_only=True)
        # Before the timer: the timed epoch includes the save, as the tutorial's epochs do.
        callbacks.insert(
            0,
            keras.callbacks.ModelCheckpoint(
                os.path.join(tmp.name, "best_model.keras"), verbose=0, save_best_only=True
            ),
        )
    t1 = time.perf_counter()
    h = model.fit(
        X_train,
        Y_train,
        validation_data=(X_val, Y_val),
        batch_size=a.batch_size,
        epochs=a.epochs,
        verbose=0,
        callbacks=callbacks,
    )
    t_fit = time.perf_counter() - t1
    tmp.cleanup()
    p = np.clip(model.predict(X_val, verbose=0).astype(np.float64), 1e-15, 1 - 1e-15)
    p /= p.sum(axis=1, keepdims=True)
    val_log_loss = float(-np.mean(np.log(p[np.arange(len(p)), Y_val.argmax(1)])))
    out = {
        "model": a.model,
        "batch_size": a.batch_size,
        "epochs": a.epochs,
        "seed": a.seed,
        "optimizer": opt,
        "n_train": len(X_train),
        "n_val": len(X_val),
        "jit_compile": bool(model.jit_compile),
        "checkpoint": not a.no_checkpoint,
        "data_seconds": t_data,
        "fit_seconds": t_fit,
        "epoch_seconds": times,
        "val_loss_history": [float(v) for v in h.history["val_loss"]],
        "val_log_loss": val_log_loss,
    }
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
