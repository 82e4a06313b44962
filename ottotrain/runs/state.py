"""Typed state of a run, serialised to the same small JSON files a run directory holds.

``TrainState`` is the epoch loop's resume point (``state/trainer.json``): everything
needed to continue a killed run exactly where an uninterrupted one would be.
``MemberRecord`` is what one trained member scored (a cv run's ``models/<name>.json``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ottotrain.errors import RunError
from ottotrain.io import read_json, write_json

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


@dataclass
class EpochRow:
    """One line of history.csv."""

    epoch: int
    loss: float | None
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float


@dataclass
class Plateau:
    """Early stopping's counters: the best monitored value so far and epochs since."""

    best: float | None = None
    wait: int = 0


@dataclass
class LrPlateau(Plateau):
    """reduce_on_plateau's counters, and the learning rate it has reduced to."""

    lr: float | None = None


@dataclass
class TrainState:
    """The epoch loop's state after a completed epoch (``state/trainer.json``)."""

    base_lr: float
    epoch: int = 0
    history: list[EpochRow] = field(default_factory=list)
    best: float | None = None  # the best train.checkpoint.monitor value so far
    best_epoch: int | None = None
    es: Plateau = field(default_factory=Plateau)
    sched: LrPlateau = field(default_factory=LrPlateau)
    stop: str | None = None  # None (still training), "early_stopping", "epochs" or "nan"
    checkpoint: str | None = None  # state/epoch-NNNNN.npz: weights + optimizer of the last epoch
    best_file: str | None = None  # state/best-NNNNN.npz: the best epoch's weights
    seed_state: dict[str, list] = field(default_factory=dict)  # dropout/noise RNG states per layer
    kept_epoch: int | None = None  # the epoch whose weights end in model.keras

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path, durable=False):
        write_json(path, self.to_dict(), durable=durable)

    @classmethod
    def load(cls, path) -> "TrainState":
        """Read ``trainer.json``; a damaged or foreign file is a ``RunError`` that says so."""
        path = Path(path)
        try:
            d = read_json(path)
        except (OSError, ValueError) as e:
            raise RunError(
                f"{path}: damaged resume state ({e}); the run cannot be resumed, start a new one"
            ) from None
        keys = ("epoch", "history", "best", "best_epoch", "es", "sched", "base_lr", "checkpoint")
        name = d.get("checkpoint") if isinstance(d, dict) else None
        if (
            not isinstance(d, dict)
            or any(k not in d for k in keys)
            or not isinstance(name, str)
            or not re.fullmatch(r"epoch-\d{5,}\.npz", name)
        ):
            raise RunError(
                f"{path}: damaged or foreign resume state (expected the keys "
                f"{', '.join(keys)} and a checkpoint named epoch-NNNNN.npz); "
                "start a new run"
            )
        try:
            known = {f.name for f in dataclasses.fields(cls)}
            d = {k: v for k, v in d.items() if k in known}
            d["history"] = [EpochRow(**r) for r in d["history"]]
            d["es"] = Plateau(**d["es"])
            d["sched"] = LrPlateau(**d["sched"])  # {} in 1.0's files: nothing reduced yet
            return cls(**d)
        except TypeError as e:
            raise RunError(f"{path}: damaged resume state ({e}); start a new run") from None

    @classmethod
    def history_of(cls, path) -> list[EpochRow]:
        """The history in ``trainer.json``, or [] when there is none (never raises)."""
        try:
            return [EpochRow(**r) for r in read_json(path)["history"]]
        except (OSError, ValueError, KeyError, TypeError):
            return []


@dataclass
class MemberRecord:
    """What one trained member scored on its validation rows (``models/<name>.json``).

    ``val_*`` score the rows the member is scored on (a cv member: its fold). A member that
    early-stopped on other rows (``cv.inner_validation``: ``n_stop`` rows taken out of its
    ``n_train + n_stop`` training rows) also records their loss, ``stop_log_loss``.
    """

    name: str
    seed: int
    val_log_loss: float
    val_accuracy: float
    best_epoch: int | None
    kept_epoch: int | None
    epochs_run: int
    stopped_by: str
    n_train: int
    n_val: int
    train_seconds: float
    wall_seconds_this_session: float
    n_stop: int | None = None
    stop_log_loss: float | None = None

    def to_dict(self) -> dict:
        """Its fields, without the optional ones it does not have (so a member that early-stopped
        on its scored rows writes the file it always did)."""
        optional = ("n_stop", "stop_log_loss")
        return {k: v for k, v in asdict(self).items() if v is not None or k not in optional}

    def save(self, path):
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "MemberRecord":
        """Read ``models/<name>.json``; keys this version does not know (a newer file's) are skipped."""
        try:
            d = read_json(path)
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in d.items() if k in known})
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise RunError(
                f"{path}: damaged member record ({e}); delete it and resume the run to retrain that member"
            ) from None
