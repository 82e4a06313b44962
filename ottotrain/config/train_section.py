"""The ``train`` section: compiling and fitting, the learning-rate schedules, early stopping
and the checkpoint (the optimizer and the loss are in optimizers_losses.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from ottotrain.config.optimizers_losses import (
    LOSSES,
    OPTIMIZERS,
    Loss,
    Optimizer,
    name_or_mapping,
    named_tree,
)
from ottotrain.config.validation import Strict

METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")  # what a monitor can watch


class ReduceOnPlateau(Strict):
    """Halve (``factor``) the learning rate when ``monitor`` stalls, as Keras' ReduceLROnPlateau."""

    name: Literal["reduce_on_plateau"]
    monitor: Literal[METRICS] = Field("val_loss", description="Metric watched.")
    factor: float = Field(0.5, gt=0, lt=1, description="Multiplies the learning rate on a plateau.")
    patience: int = Field(2, ge=0, description="Epochs without improvement before reducing.")
    min_lr: float = Field(0.0, ge=0, description="The learning rate never goes below this.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")


class Cosine(Strict):
    """Cosine decay from the optimizer's learning rate to ``min_lr_ratio`` times it."""

    name: Literal["cosine"]
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final learning rate / initial.")
    warmup_epochs: int = Field(0, ge=0, description="Epochs of linear warm-up first.")


class Exponential(Strict):
    """The learning rate times ``decay_rate`` every epoch."""

    name: Literal["exponential"]
    decay_rate: float = Field(0.9, gt=0, le=1, description="Factor per epoch.")


class LinearWarmup(Strict):
    """Linear warm-up, then linear decay to ``min_lr_ratio`` times the learning rate."""

    name: Literal["linear_warmup"]
    warmup_epochs: int = Field(1, ge=0, description="Epochs of linear warm-up.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final learning rate / initial.")


LrSchedule = Annotated[ReduceOnPlateau | Cosine | Exponential | LinearWarmup, Field(discriminator="name")]


class EarlyStoppingConfig(Strict):
    monitor: Literal[METRICS] = Field(
        "val_loss", description="Metric watched: val_loss, val_accuracy, loss or accuracy."
    )
    patience: int = Field(4, ge=0, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="min or max is better; auto: max for accuracy, else min."
    )
    restore_best_weights: bool = Field(
        True,
        description="Keep the best epoch's model (by train.checkpoint.monitor) in model.keras "
        "and score it; false keeps the last trained epoch's weights instead.",
    )


class CheckpointConfig(Strict):
    monitor: Literal[METRICS] = Field(
        "val_loss", description="Metric that picks the best model kept in model.keras."
    )
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="min or max is better; auto: max for accuracy, else min."
    )


class TrainConfig(Strict):
    """How the model is compiled and fitted."""

    optimizer: Optimizer = Field(
        "sgd",
        json_schema_extra=name_or_mapping(OPTIMIZERS),
        description=(
            "The optimizer: its name (case-insensitive), e.g. `adam`, or {name: ..., its "
            "arguments}, e.g. {name: sgd, learning_rate: 0.01, momentum: 0.9}. Only the arguments "
            "given are passed to Keras; the others keep Keras' defaults (listed below)."
        ),
    )
    loss: Loss = Field(
        "categorical_crossentropy",
        json_schema_extra=name_or_mapping(LOSSES),
        description=(
            "The loss: its Keras name, e.g. `categorical_crossentropy` (the class name works too), "
            "or {name: ..., its arguments}, e.g. {name: categorical_crossentropy, label_smoothing: "
            "0.05}. Only the arguments given are passed to Keras."
        ),
    )
    epochs: int = Field(20, ge=1, le=100000, description="Most epochs to train.")
    batch_size: int = Field(32, ge=1, le=1_000_000, description="Rows per gradient step.")
    early_stopping: EarlyStoppingConfig | None = Field(None, description="Stop when monitor stalls.")
    checkpoint: CheckpointConfig = Field(
        default_factory=CheckpointConfig, description="Which epoch's model is kept."
    )
    lr_schedule: LrSchedule | None = Field(
        None,
        description="Learning rate per epoch: {name: reduce_on_plateau | cosine | exponential | "
        "linear_warmup, ...its settings}.",
    )
    class_weight: Literal["balanced"] | dict[str, float] | None = Field(
        None, description="'balanced' or {class name: weight}."
    )
    gradient_clip_norm: float | None = Field(None, gt=0, description="Clip each gradient's norm.")
    steps_per_execution: int | Literal["auto"] = Field(
        "auto", description="Batches per compiled call; 'auto' picks for speed (same results)."
    )
    jit_compile: bool | Literal["auto"] = Field("auto", description="XLA-compile the train step.")
    deterministic: bool = Field(True, description="Same seed, same result (TF deterministic ops).")
    shuffle: bool = Field(True, description="Shuffle the training rows every epoch (seeded).")
    tensorboard: bool = Field(False, description="Write a TensorBoard log to <run>/tensorboard.")
    train_accuracy: bool = Field(
        False,
        description="Also log the training batches' running accuracy per epoch (history "
        "column 'accuracy'); on automatically when a monitor is 'accuracy'. Off by default: on "
        "small models it costs about a quarter of each epoch. val_accuracy is always logged.",
    )

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_name(cls, v):
        return named_tree(v, "optimizers")

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_name(cls, v):
        return named_tree(v, "losses")

    @field_validator("steps_per_execution")
    @classmethod
    def _spe(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("must be an integer >= 1 or 'auto'")
        return v
