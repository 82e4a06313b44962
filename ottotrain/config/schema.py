"""The config schema: one typed tree, validated completely before TensorFlow is imported.

Every section is a strict pydantic model (unknown keys are errors, no type coercion);
``ottotrain schema`` prints it as JSON Schema and the README's reference is generated
from the ``description`` of each field (tools/config_reference.py).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

# Symbolic sizes a layer argument may use; they come from the data, never a constant.
SYMBOLS = ("n_classes", "n_features")
TRANSFORMS = ("none", "log1p", "sqrt", "anscombe", "power", "quantile")
SCALINGS = ("none", "standard", "minmax", "robust")
SCHEDULES = ("reduce_on_plateau", "cosine", "exponential", "linear_warmup")
METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")  # what a monitor can watch


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class SyntheticConfig(_Strict):
    rows: int = Field(20000, ge=10, le=50_000_000, description="Training rows to generate.")
    test_rows: int = Field(5000, ge=0, le=50_000_000, description="Test rows (0: no test file).")
    seed: int = Field(0, ge=0, description="Seed of the generated data.")


class KnnConfig(_Strict):
    """Nearest-neighbour features (ottotrain/knn.py)."""

    k: list[int] = Field([1, 2, 4, 8, 16], min_length=1, max_length=16, description=(
        "Neighbour counts: for each class and each k, the log mean distance to the row's k "
        "nearest training rows of that class (distances between signed-log1p rows)."))

    @field_validator("k")
    @classmethod
    def _k(cls, v):
        if any(k < 1 or k > 1024 for k in v) or sorted(set(v)) != v:
            raise ValueError("must be increasing integers from 1 to 1024, e.g. [1, 2, 4, 8, 16]")
        return v


class DataConfig(_Strict):
    """Where the CSVs are and how features are preprocessed."""

    train: Optional[str] = Field(None, description="Training CSV (.csv or .csv.gz); relative to "
                                 "the config file. Required unless data.synthetic is set.")
    synthetic: Optional[SyntheticConfig] = Field(
        None, description="Use built-in synthetic Otto-shaped data instead of CSV files "
        "(generated once into the cache folder).")
    test: Optional[str] = Field(None, description="Test CSV; with it, fit also writes submission.csv.")
    id_column: str = Field("id", description="Column holding the row id (copied to the submission).")
    target_column: str = Field("target", description="Column holding the class label.")
    feature_columns: Optional[list[str]] = Field(
        None, description="Columns used as features; default: every column but id and target.")
    transform: Literal[TRANSFORMS] = Field(
        "none", description="Elementwise transform before scaling: none, log1p, sqrt, "
        "anscombe (sqrt(x+3/8)), power (|x|^power), quantile (rank-gauss).")
    power: float = Field(0.5, gt=0, description="Exponent for transform: power.")
    tfidf: bool = Field(False, description="Append TF-IDF features computed from the counts.")
    knn: Optional[KnnConfig] = Field(
        None, description="Append nearest-neighbour distances to each class (true or {} for the "
        "default k); a training row's leave itself out. Costs a brute-force pass over the "
        "training rows.")
    scaling: Literal[SCALINGS] = Field("standard", description="Scaling fitted on training rows.")
    validation_split: float = Field(0.15, gt=0, lt=1, description="Fraction held out for validation.")
    stratify: bool = Field(True, description="Stratify the validation split by class.")

    @field_validator("knn", mode="before")
    @classmethod
    def _knn_flag(cls, v):  # knn: true / false as shorthands for {} / off
        return {} if v is True else None if v is False else v

    @model_validator(mode="after")
    def _source(self):
        if self.train is None and self.synthetic is None:
            raise ValueError("data needs 'train' (a CSV path) or 'synthetic' (built-in data)")
        if self.synthetic is not None and (self.train is not None or self.test is not None):
            raise ValueError("give either data.train/data.test or data.synthetic, not both")
        return self


class ReduceOnPlateau(_Strict):
    """Halve (``factor``) the learning rate when ``monitor`` stalls, as Keras' ReduceLROnPlateau."""

    name: Literal["reduce_on_plateau"]
    monitor: Literal[METRICS] = Field("val_loss", description="Metric watched.")
    factor: float = Field(0.5, gt=0, lt=1, description="Multiplies the learning rate on a plateau.")
    patience: int = Field(2, ge=0, description="Epochs without improvement before reducing.")
    min_lr: float = Field(0.0, ge=0, description="The learning rate never goes below this.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")


class Cosine(_Strict):
    """Cosine decay from the optimizer's learning rate to ``min_lr_ratio`` times it."""

    name: Literal["cosine"]
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final learning rate / initial.")
    warmup_epochs: int = Field(0, ge=0, description="Epochs of linear warm-up first.")


class Exponential(_Strict):
    """The learning rate times ``decay_rate`` every epoch."""

    name: Literal["exponential"]
    decay_rate: float = Field(0.9, gt=0, le=1, description="Factor per epoch.")


class LinearWarmup(_Strict):
    """Linear warm-up, then linear decay to ``min_lr_ratio`` times the learning rate."""

    name: Literal["linear_warmup"]
    warmup_epochs: int = Field(1, ge=0, description="Epochs of linear warm-up.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final learning rate / initial.")


LrSchedule = Annotated[Union[ReduceOnPlateau, Cosine, Exponential, LinearWarmup],
                       Field(discriminator="name")]


class EarlyStoppingConfig(_Strict):
    monitor: Literal[METRICS] = Field("val_loss", description="Metric watched: val_loss, val_accuracy, loss or accuracy.")
    patience: int = Field(4, ge=0, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="min or max is better; auto: max for accuracy, else min.")
    restore_best_weights: bool = Field(
        True, description="Keep the best epoch's model (by train.checkpoint.monitor) in model.keras "
        "and score it; false keeps the last trained epoch's weights instead.")


class CheckpointConfig(_Strict):
    monitor: Literal[METRICS] = Field("val_loss", description="Metric that picks the best model kept in model.keras.")
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="min or max is better; auto: max for accuracy, else min.")


class TrainConfig(_Strict):
    """How the model is compiled and fitted."""

    optimizer: Union[str, dict[str, Any]] = Field(
        "sgd", description="Optimizer name or {name: ..., learning_rate: ..., ...}.")
    loss: Union[str, dict[str, Any]] = Field(
        "categorical_crossentropy", description="Loss name or {name: ..., label_smoothing: ...}.")
    epochs: int = Field(20, ge=1, le=100000, description="Most epochs to train.")
    batch_size: int = Field(32, ge=1, le=1_000_000, description="Rows per gradient step.")
    early_stopping: Optional[EarlyStoppingConfig] = Field(None, description="Stop when monitor stalls.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig,
                                         description="Which epoch's model is kept.")
    lr_schedule: Optional[LrSchedule] = Field(
        None, description="Learning rate per epoch: {name: reduce_on_plateau | cosine | exponential | "
        "linear_warmup, ...its settings}.")
    class_weight: Union[Literal["balanced"], dict[str, float], None] = Field(
        None, description="'balanced' or {class name: weight}.")
    gradient_clip_norm: Optional[float] = Field(None, gt=0, description="Clip each gradient's norm.")
    steps_per_execution: Union[int, Literal["auto"]] = Field(
        "auto", description="Batches per compiled call; 'auto' picks for speed (same results).")
    jit_compile: Union[bool, Literal["auto"]] = Field("auto", description="XLA-compile the train step.")
    deterministic: bool = Field(True, description="Same seed, same result (TF deterministic ops).")
    shuffle: bool = Field(True, description="Shuffle the training rows every epoch (seeded).")
    tensorboard: bool = Field(False, description="Write a TensorBoard log to <run>/tensorboard.")
    train_accuracy: bool = Field(
        False, description="Also log the training batches' running accuracy per epoch (history "
        "column 'accuracy'); on automatically when a monitor is 'accuracy'. Off by default: on "
        "small models it costs about a quarter of each epoch. val_accuracy is always logged.")

    @field_validator("steps_per_execution")
    @classmethod
    def _spe(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("must be an integer >= 1 or 'auto'")
        return v


class ModelConfig(_Strict):
    layers: list[Any] = Field(description="Keras layers in order, each {ClassName: {arg: value}}.")


class CvConfig(_Strict):
    """Settings of 'ottotrain cv' (its --folds and --seeds options win over them)."""

    folds: int = Field(5, ge=2, le=1000, description="Stratified folds K.")
    seeds: Optional[int] = Field(
        None, ge=1, le=1000, description="Models per fold, each with its own seed (bagging); "
        "default: one per variant, else 1.")
    variants: list[dict[str, Any]] = Field(
        default_factory=list, description="A varied bag: model k of every fold (k = 0, 1, ...) "
        "trains with variants[k mod len] applied, each a mapping of overrides like --set, "
        "e.g. {data.tfidf: true, train.batch_size: 512}.")


# What a cv variant may not change: the rows and folds every member shares, its own seed.
VARIANT_FIXED = ("name", "seed", "cv", "data.train", "data.test", "data.synthetic",
                  "data.id_column", "data.target_column")


class Config(_Strict):
    """The whole config file."""

    _source: str = PrivateAttr("<config>")

    name: Optional[str] = Field(None, description="Names the run directory (default: the file name).")
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Seeds the split, the folds, the "
                      "weights' initialisation, dropout and the shuffling.")
    data: DataConfig = Field(description="The data and its preprocessing.")
    model: ModelConfig = Field(description="The Keras model.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Compiling and fitting.")
    cv: CvConfig = Field(default_factory=CvConfig, description="Cross-validation ('ottotrain cv').")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", v):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-' (it names a directory)")
        return v

    @property
    def source(self) -> str:
        """The file this config came from (with the cv variant, if any): errors name it."""
        return self._source

    def with_source(self, source: str) -> "Config":
        out = self.model_copy()
        out._source = source
        return out
