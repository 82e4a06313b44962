"""The per-epoch resume point: variable values in plain ``.npz`` files, and the RNG states.

Not a .keras file: the architecture is rebuilt from config.yaml on resume, so only the
numbers need saving. That is 3-7x cheaper than model.save (no zip, no HDF5, no config
JSON) and stays pickle-free (np.load refuses object arrays). model.keras is written
once, when training stops.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ottotrain.engine import keras_compat
from ottotrain.errors import RunError
from ottotrain.io import atomic_path
from ottotrain.runs.rundir import STATE_DIR
from ottotrain.runs.state import TrainState


def write_arrays(path, values, durable=False):
    with atomic_path(path, durable) as tmp, open(tmp, "wb") as f:
        np.savez(f, *values)


def read_arrays(path) -> list:
    with np.load(path, allow_pickle=False) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def read_checkpoint(path) -> list:
    try:
        return read_arrays(path)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise RunError(
            f"{path}: damaged resume checkpoint ({type(e).__name__}: {e}); start a new run"
        ) from None


def assign(variables, values, path):
    """Set ``variables`` to ``values``, checking that they are the same count and shapes."""
    variables = list(variables)
    if len(values) != len(variables) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise RunError(
            f"{path}: the saved weights do not fit the model built from the run's "
            "config (other layers or shapes); the run cannot be resumed, start a new one"
        )
    for v, a in zip(variables, values):
        v.assign(a)


def save_model(model, path, durable=True):
    with atomic_path(path, durable) as tmp:
        model.save(tmp)


def seed_state(model) -> dict:
    """The states of the model's random-number generators (dropout, noise), per layer name.

    Keras does not save them in ``.keras`` files: a loaded model draws fresh seeds, so a
    resumed run would use other dropout masks than an uninterrupted one.
    """
    out = {}
    for layer in keras_compat.layers_of(model):
        gens = keras_compat.seed_generators(layer)
        if gens:
            out[layer.name] = [np.asarray(g.state.numpy()).tolist() for g in gens]
    return out


def restore_seed_state(model, saved: dict):
    for layer in keras_compat.layers_of(model):
        states = saved.get(layer.name)
        if not states:
            continue
        if not isinstance(states[0], list):  # a single generator's state (older resume files)
            states = [states]
        for gen, value in zip(keras_compat.seed_generators(layer), states):
            dtype = getattr(gen.state.dtype, "name", gen.state.dtype)
            gen.state.assign(np.asarray(value, dtype=dtype))


def load_resume_state(work_dir: Path, model) -> TrainState | None:
    """Restore ``model`` (built and compiled from the run's config) to the last completed epoch.

    Returns:
        The loop state saved with it, or None when there is none (nothing to resume).
    """
    path = work_dir / STATE_DIR / "trainer.json"
    if not path.exists():
        return None
    state = TrainState.load(path)
    ckpt = work_dir / STATE_DIR / state.checkpoint
    best = state.best_file
    if not ckpt.is_file() or (best is not None and not (work_dir / STATE_DIR / best).is_file()):
        raise RunError(
            f"{ckpt.parent}: a file named in {path.name} is missing "
            f"({state.checkpoint if not ckpt.is_file() else best}); start a new run"
        )
    values = read_checkpoint(ckpt)
    n = len(model.variables)
    if best is not None and len(read_checkpoint(work_dir / STATE_DIR / best)) != n:
        raise RunError(
            f"{work_dir / STATE_DIR / best}: the saved weights do not fit the model "
            "built from the run's config; start a new run"
        )
    model.optimizer.build(model.trainable_variables)  # create its slots, then fill them
    assign(model.variables, values[:n], ckpt)
    assign(model.optimizer.variables, values[n:], ckpt)
    restore_seed_state(model, state.seed_state)
    return state
