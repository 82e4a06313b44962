"""Learning-rate schedules, per epoch; reduce_on_plateau's counters live in the resume state."""

from __future__ import annotations

import math

from ottotrain.config.schema import Cosine, Exponential, LinearWarmup, ReduceOnPlateau
from ottotrain.runs.state import LrPlateau


def monitor_mode(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


def better(value, best, mode, min_delta=0.0) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def schedule_lr(sched, base_lr: float, epoch: int, epochs: int, state: LrPlateau) -> float:
    """The learning rate of ``epoch`` (0-based) under ``train.lr_schedule`` (None: constant)."""
    if sched is None:
        return base_lr
    if isinstance(sched, ReduceOnPlateau):
        return state.lr if state.lr is not None else base_lr
    warm = getattr(sched, "warmup_epochs", 0)
    if warm and epoch < warm:
        return base_lr * (epoch + 1) / warm
    if isinstance(sched, Exponential):
        return base_lr * sched.decay_rate**epoch
    lo = sched.min_lr_ratio
    t = (epoch - warm) / max(1, epochs - warm)
    if isinstance(sched, Cosine):
        return base_lr * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t)))
    if isinstance(sched, LinearWarmup):
        return base_lr * (1 - (1 - lo) * t)
    raise TypeError(f"unknown schedule {sched!r}")


def plateau_update(sched, state: LrPlateau, logs: dict, lr: float):
    """After an epoch: reduce the learning rate when the monitor stalled (as Keras' ReduceLROnPlateau)."""
    if not isinstance(sched, ReduceOnPlateau):
        return
    value = logs.get(sched.monitor)
    if value is None:
        return
    if better(value, state.best, monitor_mode(sched.monitor, "auto"), sched.min_delta):
        state.best, state.wait = value, 0
        if state.lr is None:
            state.lr = lr
        return
    state.wait += 1
    if state.wait >= sched.patience:
        state.lr, state.wait = max(lr * sched.factor, sched.min_lr), 0
