"""The config schema: one typed tree, validated completely before TensorFlow is imported.

Every section is a strict pydantic model (unknown keys are errors, no type coercion);
``ottotrain schema`` prints it as JSON Schema and the README's reference is generated
from the ``description`` of each field (tools/config_reference.py).
"""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ottotrain.errors import did_you_mean, fmt

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

    k: list[int] = Field(
        [1, 2, 4, 8, 16],
        min_length=1,
        max_length=16,
        description=(
            "Neighbour counts: for each class and each k, the log mean distance to the row's k "
            "nearest training rows of that class (distances between signed-log1p rows)."
        ),
    )

    @field_validator("k")
    @classmethod
    def _k(cls, v):
        if any(k < 1 or k > 1024 for k in v) or sorted(set(v)) != v:
            raise ValueError("must be increasing integers from 1 to 1024, e.g. [1, 2, 4, 8, 16]")
        return v


COLUMN_TYPES = ("numeric", "categorical", "drop")


class CategoricalConfig(_Strict):
    """How categorical columns (text, booleans, or declared) become model inputs."""

    one_hot_max: int = Field(
        10,
        ge=0,
        description="A column with at most this many categories (counting the 'other' bucket) is "
        "one-hot encoded; one with more gets a learned embedding.",
    )
    min_count: int = Field(
        5,
        ge=1,
        description="A category seen in fewer training rows is pooled into the 'other' bucket, "
        "where categories never seen at fit also go.",
    )
    embedding_dim: int | None = Field(
        None,
        ge=1,
        description="Width of every embedding; null: fastai's rule, round(1.6 * n ** 0.56) for n "
        "categories, capped at embedding_max.",
    )
    embedding_max: int = Field(100, ge=1, description="Largest embedding width of the size rule.")


class DataConfig(_Strict):
    """Where the data files are and how features are preprocessed."""

    train: str | None = Field(
        None,
        description="Training file (CSV, .csv.gz, Parquet or Feather); relative to "
        "the config file. Required unless data.synthetic is set.",
    )
    synthetic: SyntheticConfig | None = Field(
        None,
        description="Use built-in synthetic Otto-shaped data instead of CSV files "
        "(generated once into the cache folder).",
    )
    test: str | None = Field(
        None, description="Test file (any of those formats); with it, fit also writes submission.csv."
    )
    id_column: str | None = Field(
        "id",
        description="Column holding the row id (copied to the submission); null: the files have "
        "none, and the submission's first column is 'row', the 1-based position in the test file.",
    )
    target_column: str = Field("target", description="Column holding the class label.")
    feature_columns: list[str] | None = Field(
        None, description="Columns used as features; default: every column but id and target."
    )
    columns: dict[str, Literal[COLUMN_TYPES]] = Field(
        {},
        description="Column types that override detection, e.g. {zip: categorical, notes: drop}. "
        "Detected: numbers are numeric, text and booleans categorical; a text column with a "
        "different value on (nearly) every row is dropped with a warning.",
    )
    categorical: CategoricalConfig = Field(
        default_factory=CategoricalConfig, description="Encoding of the categorical columns."
    )
    na_values: list[str] = Field(
        [],
        description="More CSV cell values that mean 'missing' (besides empty, NA, NaN, null...), e.g. ['?'].",
    )
    missing: Literal["none", "auto", "all"] = Field(
        "auto",
        description="Missing feature values: auto: filled with the training median (for a feature "
        "without gaps at fit: of 2,000 evenly spaced rows), plus a 0/1 column per feature that "
        "had gaps at fit; all: that column for every feature; none: a missing value is an error.",
    )
    transform: Literal[TRANSFORMS] = Field(
        "none",
        description="Elementwise transform of the numeric columns before scaling: none, log1p, "
        "sqrt, anscombe (sqrt(x+3/8)), power (|x|^power), quantile (rank-gauss).",
    )
    power: float = Field(0.5, gt=0, description="Exponent for transform: power.")
    tfidf: bool = Field(
        False, description="Append TF-IDF features computed from the numeric columns (counts)."
    )
    knn: KnnConfig | None = Field(
        None,
        description="Append nearest-neighbour distances to each class, between rows' numeric "
        "columns (true or {} for the default k); a training row's leave itself out. Costs a "
        "brute-force pass over the training rows.",
    )
    scaling: Literal[SCALINGS] = Field(
        "standard",
        description="Scaling of the numeric columns and the features made from them, fitted on "
        "training rows (one-hot and embedding inputs are not scaled).",
    )
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
        for key in ("id_column", "target_column"):
            col = getattr(self, key)
            if col is not None and col in self.columns:
                raise ValueError(
                    f"data.columns: {col!r} is data.{key}, not a feature; remove it from data.columns"
                )
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


LrSchedule = Annotated[ReduceOnPlateau | Cosine | Exponential | LinearWarmup, Field(discriminator="name")]


class EarlyStoppingConfig(_Strict):
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


class CheckpointConfig(_Strict):
    monitor: Literal[METRICS] = Field(
        "val_loss", description="Metric that picks the best model kept in model.keras."
    )
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="min or max is better; auto: max for accuracy, else min."
    )


# --------------------------------------------------------------------------------------
# The optimizer and the loss: one typed section per Keras class, told apart by ``name``.
#
# Each section's fields are the Keras constructor's arguments with Keras' defaults
# (tests/test_keras_spec.py holds them to keras_spec.json, the table made from the
# installed Keras). Only the arguments a config gives are passed to Keras and saved in a
# run's config.yaml, so the defaults here document Keras' and never replace them.


def _name_error(where: tuple, message: str, name):
    """A validation error at ``where`` below the field (``()``: the field itself)."""
    if not where:
        return ValueError(message)
    return ValidationError.from_exception_data(
        "name", [{"type": PydanticCustomError("unknown_name", message), "loc": where, "input": name}]
    )


class _KerasPart(_Strict):
    """A Keras object given by name and arguments: saved (and passed on) as it was written."""

    name: str
    keras_class: ClassVar[str]

    def given(self) -> dict:
        """``name`` and the arguments the config sets (the ones passed to Keras)."""
        return {
            k: getattr(self, k) for k in type(self).model_fields if k == "name" or k in self.model_fields_set
        }

    def arguments(self) -> dict:
        """The Keras constructor's keyword arguments: those the config sets, nothing more."""
        return {k: v for k, v in self.given().items() if k != "name"}

    @model_serializer(mode="wrap")
    def _as_written(self, handler):
        data = handler(self)
        if not self.arguments():
            return self.name  # `optimizer: sgd`, as a config writes it
        return {k: v for k, v in data.items() if k == "name" or k in self.model_fields_set}


class _Optimizer(_KerasPart):
    # Arguments every Keras optimizer takes (keras.optimizers.Optimizer).
    learning_rate: float = Field(0.001, description="Step size, in (0, 10].")
    weight_decay: float | None = Field(None, description="Decoupled weight decay; null: none.")
    clipnorm: float | None = Field(
        None, description="Clip each gradient to this norm (train.gradient_clip_norm sets it too)."
    )
    clipvalue: float | None = Field(None, description="Clip each gradient's values to ± this.")
    global_clipnorm: float | None = Field(
        None, description="Clip all gradients together to this global norm."
    )
    use_ema: bool = Field(
        False,
        description="Keep an exponential moving average of the weights: each epoch is scored, "
        "checkpointed and kept with the average, training goes on from the weights themselves.",
    )
    ema_momentum: float = Field(0.99, description="Momentum of that average (use_ema).")
    ema_overwrite_frequency: int | None = Field(
        None, description="Every this many steps, replace the weights by their average (use_ema)."
    )
    loss_scale_factor: float | None = Field(
        None, description="Scale the loss by this before the gradients (and back after)."
    )
    gradient_accumulation_steps: int | None = Field(
        None, description="Update the weights every this many batches, with their gradients' mean."
    )

    @field_validator("learning_rate")
    @classmethod
    def _lr(cls, v):
        if not 0 < v <= 10:
            raise ValueError("must be a number in (0, 10]")
        return v


_BETA_1 = Field(0.9, description="Decay of the first-moment estimates.")
_BETA_2 = Field(0.999, description="Decay of the second-moment estimates.")
_EPSILON = Field(1e-07, description="Small constant for numerical stability.")


class SGD(_Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum."""

    keras_class: ClassVar[str] = "SGD"
    name: Literal["sgd"]
    learning_rate: float = Field(0.01, description="Step size, in (0, 10].")
    momentum: float = Field(0.0, description="Momentum, in [0, 1].")
    nesterov: bool = Field(False, description="Nesterov momentum.")


class Adam(_Optimizer):
    """Adam."""

    keras_class: ClassVar[str] = "Adam"
    name: Literal["adam"]
    beta_1: float = _BETA_1
    beta_2: float = _BETA_2
    epsilon: float = _EPSILON
    amsgrad: bool = Field(False, description="The AMSGrad variant.")


class AdamW(_Optimizer):
    """Adam with decoupled weight decay."""

    keras_class: ClassVar[str] = "AdamW"
    name: Literal["adamw"]
    weight_decay: float | None = Field(0.004, description="Decoupled weight decay.")
    beta_1: float = _BETA_1
    beta_2: float = _BETA_2
    epsilon: float = _EPSILON
    amsgrad: bool = Field(False, description="The AMSGrad variant.")


class Adamax(_Optimizer):
    """Adamax, Adam with the infinity norm."""

    keras_class: ClassVar[str] = "Adamax"
    name: Literal["adamax"]
    beta_1: float = _BETA_1
    beta_2: float = Field(0.999, description="Decay of the weighted infinity norm.")
    epsilon: float = _EPSILON


class Nadam(_Optimizer):
    """Adam with Nesterov momentum."""

    keras_class: ClassVar[str] = "Nadam"
    name: Literal["nadam"]
    beta_1: float = _BETA_1
    beta_2: float = _BETA_2
    epsilon: float = _EPSILON


class Lamb(_Optimizer):
    """LAMB: Adam with layer-wise adapted step sizes."""

    keras_class: ClassVar[str] = "Lamb"
    name: Literal["lamb"]
    beta_1: float = _BETA_1
    beta_2: float = _BETA_2
    epsilon: float = _EPSILON


class Lion(_Optimizer):
    """Lion: sign-based updates with momentum."""

    keras_class: ClassVar[str] = "Lion"
    name: Literal["lion"]
    beta_1: float = Field(0.9, description="Decay of the momentum mixed into the update.")
    beta_2: float = Field(0.99, description="Decay of the momentum kept.")


class RMSprop(_Optimizer):
    """RMSprop."""

    keras_class: ClassVar[str] = "RMSprop"
    name: Literal["rmsprop"]
    rho: float = Field(0.9, description="Decay of the mean squared gradient.")
    momentum: float = Field(0.0, description="Momentum.")
    epsilon: float = _EPSILON
    centered: bool = Field(False, description="Normalise by the gradient's variance, not its second moment.")


class Adagrad(_Optimizer):
    """Adagrad."""

    keras_class: ClassVar[str] = "Adagrad"
    name: Literal["adagrad"]
    initial_accumulator_value: float = Field(0.1, description="Start of the accumulators.")
    epsilon: float = _EPSILON


class Adadelta(_Optimizer):
    """Adadelta."""

    keras_class: ClassVar[str] = "Adadelta"
    name: Literal["adadelta"]
    rho: float = Field(0.95, description="Decay rate.")
    epsilon: float = _EPSILON


class Ftrl(_Optimizer):
    """FTRL-proximal."""

    keras_class: ClassVar[str] = "Ftrl"
    name: Literal["ftrl"]
    learning_rate_power: float = Field(-0.5, description="How the step size falls, ≤ 0.")
    initial_accumulator_value: float = Field(0.1, description="Start of the accumulators, ≥ 0.")
    l1_regularization_strength: float = Field(0.0, description="L1 strength, ≥ 0.")
    l2_regularization_strength: float = Field(0.0, description="L2 strength, ≥ 0.")
    l2_shrinkage_regularization_strength: float = Field(
        0.0, description="L2 shrinkage strength (on the weights, not the gradient), ≥ 0."
    )
    beta: float = Field(0.0, description="The beta of FTRL-proximal.")


class Adafactor(_Optimizer):
    """Adafactor: factored second moments."""

    keras_class: ClassVar[str] = "Adafactor"
    name: Literal["adafactor"]
    beta_2_decay: float = Field(-0.8, description="Decay of the second-moment estimates.")
    epsilon_1: float = Field(1e-30, description="Small constant for the second moments.")
    epsilon_2: float = Field(0.001, description="Small constant for the step size.")
    clip_threshold: float = Field(1.0, description="Clipping threshold of the update.")
    relative_step: bool = Field(True, description="Scale the step size by the step number.")


class Muon(_Optimizer):
    """Muon for the 2-D weights (orthogonalised momentum), AdamW for the others."""

    keras_class: ClassVar[str] = "Muon"
    name: Literal["muon"]
    weight_decay: float | None = Field(0.004, description="Decoupled weight decay.")
    momentum: float = Field(0.95, description="Momentum of the Muon updates.")
    nesterov: bool = Field(True, description="Nesterov momentum for the Muon updates.")
    ns_steps: int = Field(5, description="Newton-Schulz iterations.")
    muon_a: float = Field(3.4445, description="Newton-Schulz coefficient a.")
    muon_b: float = Field(-4.775, description="Newton-Schulz coefficient b.")
    muon_c: float = Field(2.0315, description="Newton-Schulz coefficient c.")
    rms_rate: float = Field(0.2, description="Matches the updates' RMS to AdamW's.")
    adam_beta_1: float = Field(0.9, description="AdamW's beta_1, for the other weights.")
    adam_beta_2: float = Field(0.999, description="AdamW's beta_2, for the other weights.")
    adam_lr_ratio: float = Field(1, description="AdamW's learning rate / Muon's.")
    adam_weight_decay: float = Field(0.004, description="AdamW's weight decay.")
    epsilon: float = _EPSILON
    exclude_layers: list[str] | None = Field(None, description="Layer names whose weights use AdamW.")
    exclude_embeddings: bool = Field(True, description="Embeddings use AdamW.")


class ScheduleFreeAdamW(_Optimizer):
    """Schedule-free AdamW."""

    keras_class: ClassVar[str] = "ScheduleFreeAdamW"
    name: Literal["schedulefreeadamw"]
    learning_rate: float = Field(0.0025, description="Step size, in (0, 10].")
    beta_1: float = _BETA_1
    beta_2: float = _BETA_2
    epsilon: float = Field(1e-08, description="Small constant for numerical stability.")
    warmup_steps: int = Field(0, description="Steps of learning-rate warm-up.")


OPTIMIZERS = (
    SGD,
    Adam,
    AdamW,
    Adamax,
    Nadam,
    Lamb,
    Lion,
    RMSprop,
    Adagrad,
    Adadelta,
    Ftrl,
    Adafactor,
    Muon,
    ScheduleFreeAdamW,
)
Optimizer = Annotated[Union[OPTIMIZERS], Field(discriminator="name")]  # noqa: UP007 (of a tuple)


REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none")


class _Loss(_KerasPart):
    # Arguments every Keras loss takes (keras.losses.Loss).
    reduction: Literal[REDUCTIONS] | None = Field(
        "sum_over_batch_size", description="How the rows' losses are combined."
    )
    dtype: str | None = Field(None, description="Dtype of the loss computation; null: Keras'.")


_FROM_LOGITS = Field(False, description="The outputs are logits, not probabilities.")
_LABEL_SMOOTHING = Field(0.0, description="Mix this much of a uniform target into the labels.")
_AXIS = Field(-1, description="The class axis.")


class CategoricalCrossentropy(_Loss):
    """Log loss of one-hot labels (the Otto metric)."""

    keras_class: ClassVar[str] = "CategoricalCrossentropy"
    name: Literal["categorical_crossentropy"]
    from_logits: bool = _FROM_LOGITS
    label_smoothing: float = _LABEL_SMOOTHING
    axis: int = _AXIS


class CategoricalFocalCrossentropy(_Loss):
    """Focal loss: log loss weighted towards the badly classified rows."""

    keras_class: ClassVar[str] = "CategoricalFocalCrossentropy"
    name: Literal["categorical_focal_crossentropy"]
    alpha: float = Field(0.25, description="Weight of every class.")
    gamma: float = Field(2.0, description="Focusing parameter, ≥ 0.")
    from_logits: bool = _FROM_LOGITS
    label_smoothing: float = _LABEL_SMOOTHING
    axis: int = _AXIS


class BinaryCrossentropy(_Loss):
    """Log loss of each output as a separate yes/no."""

    keras_class: ClassVar[str] = "BinaryCrossentropy"
    name: Literal["binary_crossentropy"]
    from_logits: bool = _FROM_LOGITS
    label_smoothing: float = _LABEL_SMOOTHING
    axis: int = _AXIS


class BinaryFocalCrossentropy(_Loss):
    """Focal loss of each output as a separate yes/no."""

    keras_class: ClassVar[str] = "BinaryFocalCrossentropy"
    name: Literal["binary_focal_crossentropy"]
    apply_class_balancing: bool = Field(False, description="Weight the classes by alpha.")
    alpha: float = Field(0.25, description="Weight of the positive class (apply_class_balancing).")
    gamma: float = Field(2.0, description="Focusing parameter, ≥ 0.")
    from_logits: bool = _FROM_LOGITS
    label_smoothing: float = _LABEL_SMOOTHING
    axis: int = _AXIS


class Huber(_Loss):
    """Huber loss."""

    keras_class: ClassVar[str] = "Huber"
    name: Literal["huber"]
    delta: float = Field(1.0, description="Where the loss turns from quadratic to linear.")


class CosineSimilarity(_Loss):
    """Negative cosine similarity."""

    keras_class: ClassVar[str] = "CosineSimilarity"
    name: Literal["cosine_similarity"]
    axis: int = Field(-1, description="The axis along which the similarity is computed.")


class Dice(_Loss):
    """Dice loss."""

    keras_class: ClassVar[str] = "Dice"
    name: Literal["dice"]
    axis: int | list[int] | None = Field(None, description="Axes summed over; null: all.")


class Tversky(_Loss):
    """Tversky loss."""

    keras_class: ClassVar[str] = "Tversky"
    name: Literal["tversky"]
    alpha: float = Field(0.5, description="Weight of the false positives.")
    beta: float = Field(0.5, description="Weight of the false negatives.")
    axis: int | list[int] | None = Field(None, description="Axes summed over; null: all.")


def _plain_loss(cls_name: str, name: str, doc: str):
    """A loss with no arguments of its own."""
    ns = {
        "__doc__": doc,
        "__module__": __name__,
        "__qualname__": cls_name,
        "__annotations__": {"name": Literal[name], "keras_class": ClassVar[str]},
        "keras_class": cls_name,
    }
    return type(cls_name, (_Loss,), ns)


KLDivergence = _plain_loss("KLDivergence", "kl_divergence", "Kullback-Leibler divergence.")
CategoricalHinge = _plain_loss("CategoricalHinge", "categorical_hinge", "Categorical hinge loss.")
Hinge = _plain_loss("Hinge", "hinge", "Hinge loss.")
SquaredHinge = _plain_loss("SquaredHinge", "squared_hinge", "Squared hinge loss.")
Poisson = _plain_loss("Poisson", "poisson", "Poisson loss.")
LogCosh = _plain_loss("LogCosh", "log_cosh", "Logarithm of the hyperbolic cosine of the error.")
MeanSquaredError = _plain_loss("MeanSquaredError", "mean_squared_error", "Mean squared error.")
MeanAbsoluteError = _plain_loss("MeanAbsoluteError", "mean_absolute_error", "Mean absolute error.")
MeanAbsolutePercentageError = _plain_loss(
    "MeanAbsolutePercentageError", "mean_absolute_percentage_error", "Mean absolute percentage error."
)
MeanSquaredLogarithmicError = _plain_loss(
    "MeanSquaredLogarithmicError", "mean_squared_logarithmic_error", "Mean squared logarithmic error."
)

LOSSES = (
    CategoricalCrossentropy,
    CategoricalFocalCrossentropy,
    BinaryCrossentropy,
    BinaryFocalCrossentropy,
    KLDivergence,
    CategoricalHinge,
    Hinge,
    SquaredHinge,
    Poisson,
    Huber,
    LogCosh,
    CosineSimilarity,
    MeanSquaredError,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredLogarithmicError,
    Dice,
    Tversky,
)
Loss = Annotated[Union[LOSSES], Field(discriminator="name")]  # noqa: UP007 (of a tuple)

# Keras classes a config cannot use, and why (keras_spec.json lists them; the schema does not).
UNFIT = {
    "optimizers": {"MultiOptimizer": "it takes other optimizer objects, which a config cannot write"},
    "losses": {
        "SparseCategoricalCrossentropy": "it wants integer labels; ottotrain trains on one-hot labels",
        "CategoricalGeneralizedCrossEntropy": "it wants integer labels; ottotrain trains on one-hot labels",
        "Circle": "it wants integer labels and embeddings, not class probabilities",
        "CTC": "it wants sequences, not one row of class probabilities",
    },
}


def _tag_of(cls) -> str:
    return typing.get_args(cls.model_fields["name"].annotation)[0]


# Optimizer names are case-insensitive (sgd, SGD, RMSprop); a loss is named by its Keras
# function or class (categorical_crossentropy, CategoricalCrossentropy), case and underscores
# aside.
_optimizer_key = str.lower
_loss_key = lambda s: s.replace("_", "").lower()  # noqa: E731


def _names(models, key) -> dict:
    """Every accepted spelling of a name -> its section's name (the discriminator)."""
    return {key(n): _tag_of(m) for m in models for n in (_tag_of(m), m.keras_class)}


_OPTIMIZER_NAMES = _names(OPTIMIZERS, _optimizer_key)
_LOSS_NAMES = _names(LOSSES, _loss_key)


def _named_tree(v, names: dict, key, family: str, what: str, hint: str):
    """``'adam'`` or ``{name: Adam, ...}`` -> ``{name: adam, ...}`` (the discriminator's tag).

    A name that is no section's is reported here, with the known names, rather than as
    pydantic's bare 'union tag' error.
    """
    if isinstance(v, str):
        tree, where = {"name": v}, ()
    elif isinstance(v, dict) and isinstance(v.get("name"), str):
        # Located as pydantic locates a section's errors, (tag, key): train.optimizer.name.
        tree, where = dict(v), (v["name"], "name")
    else:
        return v  # not a name: pydantic says what is wrong
    name = tree["name"]
    tag = names.get(key(name))
    if tag is None:
        unfit = next((why for cls, why in UNFIT[family].items() if _loss_key(cls) == _loss_key(name)), None)
        known = sorted(set(names.values()))
        if unfit:
            raise _name_error(
                where, f"{what} {fmt(name)} cannot be used: {unfit}; {hint}known: {', '.join(known)}", name
            )
        raise _name_error(
            where,
            f"unknown {what} {fmt(name)}{did_you_mean(name, known)}; {hint}known: {', '.join(known)}",
            name,
        )
    tree["name"] = tag
    return tree


def _name_or_mapping(models):
    """JSON Schema of such a field: a section, or just a name (``optimizer: adam``)."""

    def extra(schema):
        names = [_tag_of(m) for m in models]
        union = {k: schema.pop(k) for k in ("oneOf", "anyOf", "discriminator", "$ref") if k in schema}
        schema["anyOf"] = [{"type": "string", "enum": names}, union]

    return extra


class TrainConfig(_Strict):
    """How the model is compiled and fitted."""

    optimizer: Optimizer = Field(
        "sgd",
        json_schema_extra=_name_or_mapping(OPTIMIZERS),
        description=(
            "The optimizer: its name (case-insensitive), e.g. `adam`, or {name: ..., its "
            "arguments}, e.g. {name: sgd, learning_rate: 0.01, momentum: 0.9}. Only the arguments "
            "given are passed to Keras; the others keep Keras' defaults (listed below)."
        ),
    )
    loss: Loss = Field(
        "categorical_crossentropy",
        json_schema_extra=_name_or_mapping(LOSSES),
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
        return _named_tree(v, _OPTIMIZER_NAMES, _optimizer_key, "optimizers", "optimizer", "")

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_name(cls, v):
        return _named_tree(
            v, _LOSS_NAMES, _loss_key, "losses", "loss", "for classification use categorical_crossentropy; "
        )

    @field_validator("steps_per_execution")
    @classmethod
    def _spe(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("must be an integer >= 1 or 'auto'")
        return v


class EnsembleConfig(_Strict):
    """k members in one network (TabM, Gorishniy et al. 2025; BatchEnsemble): applied to the layer list."""

    k: int = Field(ge=1, le=256, description="Members; 1 is the plain model.")
    kind: Literal["batch", "mini", "packed"] = Field(
        "batch",
        description="batch: every Dense shares its kernel, each member has its own scales before "
        "and after it and its own bias (TabM); mini: one per-member scale at the input, shared "
        "Dense layers (TabM-mini); packed: k independent nets in one. The last Dense is k heads.",
    )
    shared_batches: bool = Field(
        False,
        description="Every member trains on the same batches; default: each member its own "
        "shuffle of the epoch (better in TabM's ablation).",
    )


class PiecewiseLinearEmbedding(_Strict):
    """Quantile bins of each numeric input, fitted on the training rows, then a per-feature
    linear map and ReLU (Gorishniy et al. 2022); may only open the layer list."""

    bins: int = Field(
        48, ge=2, le=1024, description="Quantile bins per feature (fewer where a feature has fewer values)."
    )
    d_embedding: int = Field(16, ge=1, le=1024, description="Width of each feature's embedding.")
    activation: str | None = Field("relu", description="After the linear map; null: none.")


class PeriodicEmbedding(_Strict):
    """Periodic embeddings (PLR): cos and sin of trained frequencies of each numeric input,
    a per-feature linear map and ReLU; may only open the layer list."""

    frequencies: int = Field(48, ge=1, le=1024, description="Frequencies per feature.")
    d_embedding: int = Field(24, ge=1, le=1024, description="Width of each feature's embedding.")
    sigma: float = Field(0.1, gt=0, description="Standard deviation of the frequencies' initialisation.")
    lite: bool = Field(False, description="One linear map shared by all features (PLR-lite).")
    activation: str | None = Field("relu", description="After the linear map; null: none.")


# ottotrain's own layers a layer list may name (engine/layers.py, engine/numeric_embeddings.py).
OWN_LAYERS = {"PiecewiseLinearEmbedding": PiecewiseLinearEmbedding, "PeriodicEmbedding": PeriodicEmbedding}


class ModelConfig(_Strict):
    layers: list[Any] = Field(
        description="Keras layers in order, each {ClassName: {arg: value}}; the list may open "
        "with a PiecewiseLinearEmbedding or PeriodicEmbedding."
    )
    ensemble: EnsembleConfig | None = Field(
        None, description="k members in one network, e.g. {k: 32, kind: batch}; null: one model."
    )


class CvConfig(_Strict):
    """Settings of 'ottotrain cv' (its --folds and --seeds options win over them)."""

    folds: int = Field(5, ge=2, le=1000, description="Stratified folds K.")
    seeds: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Models per fold, each with its own seed (bagging); default: one per variant, else 1.",
    )
    variants: list[dict[str, Any]] = Field(
        default_factory=list,
        description="A varied bag: model k of every fold (k = 0, 1, ...) "
        "trains with variants[k mod len] applied, each a mapping of overrides like --set, "
        "e.g. {data.tfidf: true, train.batch_size: 512}.",
    )


class SearchRange(_Strict):
    """One key's search range in ``tune.space``: ``{int: [low, high]}``, ``{float: [low, high]}``
    or ``{choice: [value, ...]}`` (any YAML values, whole layer lists included)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, serialize_by_alias=True)

    int_range: list[int] | None = Field(
        None, alias="int", min_length=2, max_length=2, description="Integers from low to high, both included."
    )
    float_range: list[float] | None = Field(
        None, alias="float", min_length=2, max_length=2, description="Numbers from low to high."
    )
    choice: list[Any] | None = Field(None, min_length=1, description="One of these values.")
    log: bool = Field(False, description="Sample int or float ranges on a log scale (low > 0).")

    @model_validator(mode="after")
    def _one_kind(self):
        given = [
            k
            for k, v in (("int", self.int_range), ("float", self.float_range), ("choice", self.choice))
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of int: [low, high], float: [low, high] or choice: [...]"
                + (f" (got {' and '.join(given)})" if given else "")
            )
        bounds = self.int_range or self.float_range
        if bounds is not None and bounds[0] > bounds[1]:
            raise ValueError(f"low {bounds[0]} is above high {bounds[1]}; write [low, high]")
        if self.log and (bounds is None or bounds[0] <= 0):
            raise ValueError("log: true needs an int or float range with low > 0")
        return self

    @model_serializer(mode="wrap")
    def _as_written(self, handler):
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None and (k != "log" or v)}

    @property
    def kind(self) -> str:
        return "int" if self.int_range is not None else "float" if self.float_range is not None else "choice"

    def values_to_check(self) -> list:
        """The values that must each make a valid config: the range's ends, or every choice."""
        return list(self.int_range or self.float_range or self.choice)


class SamplerConfig(_Strict):
    name: Literal["tpe", "random", "cmaes", "grid"] = Field(
        "tpe", description="Optuna's sampler (grid: every combination of choices)."
    )
    seed: int | None = Field(0, description="Its seed: one worker with a fixed seed repeats its trials.")


class PrunerConfig(_Strict):
    name: Literal["median", "hyperband", "wilcoxon", "none"] = Field(
        "median",
        description="Optuna's pruner: stop trials whose validation loss lags "
        "(wilcoxon: fold by fold, for a cv objective).",
    )
    warmup_epochs: int = Field(3, ge=0, description="Epochs a trial always trains before it can be pruned.")
    startup_trials: int = Field(5, ge=0, description="Trials that run whole before pruning starts (median).")


class CvFolds(_Strict):
    folds: int = Field(5, ge=2, le=100, description="Stratified folds of a trial's cv run.")


class CvObjective(_Strict):
    cv: CvFolds = Field(description="Score a trial by a cv run's mean fold log loss.")


class TuneConfig(_Strict):
    """The search of 'ottotrain tune' (the tutorial's "your turn"): Optuna over the config's own keys."""

    trials: int = Field(20, ge=1, le=100_000, description="Trials in the study, in all.")
    timeout: float | None = Field(None, gt=0, description="Stop starting trials after this many seconds.")
    objective: Literal["val_log_loss"] | CvObjective = Field(
        "val_log_loss",
        description="What a trial scores (lower is better): fit's validation log loss, or "
        "{cv: {folds: K}}: the mean fold log loss of a K-fold cv run, one seed.",
    )
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="How trials are chosen.")
    pruner: PrunerConfig = Field(default_factory=PrunerConfig, description="Which trials stop early.")
    space: dict[str, SearchRange] = Field(
        min_length=1,
        description="Key path (as --set takes it, e.g. model.layers[0].Dense.units) -> its search range.",
    )
    heartbeat: int = Field(
        60,
        ge=1,
        description="On a database (--storage): seconds between a running trial's heartbeats; "
        "a trial silent for two is failed and queued again.",
    )

    @model_validator(mode="after")
    def _pruner_fits_objective(self):
        if self.pruner.name == "wilcoxon" and self.objective == "val_log_loss":
            raise ValueError(
                "pruner wilcoxon compares trials fold by fold; it needs objective: {cv: {folds: 5}} "
                "(for val_log_loss use median or hyperband)"
            )
        return self

    @property
    def cv_folds(self) -> int | None:
        """K of a cv objective, or None for val_log_loss."""
        return None if self.objective == "val_log_loss" else self.objective.cv.folds


# What a cv variant may not change: the rows and folds every member shares, its own seed.
VARIANT_FIXED = (
    "name",
    "seed",
    "cv",
    "tune",
    "data.train",
    "data.test",
    "data.synthetic",
    "data.id_column",
    "data.target_column",
)


class Config(_Strict):
    """The whole config file."""

    _source: str = PrivateAttr("<config>")

    name: str | None = Field(None, description="Names the run directory (default: the file name).")
    seed: int = Field(
        42,
        ge=0,
        le=2**31 - 1,
        description="Seeds the split, the folds, the weights' initialisation, dropout and the shuffling.",
    )
    data: DataConfig = Field(description="The data and its preprocessing.")
    model: ModelConfig = Field(description="The Keras model.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Compiling and fitting.")
    cv: CvConfig = Field(default_factory=CvConfig, description="Cross-validation ('ottotrain cv').")
    tune: TuneConfig | None = Field(None, description="A hyperparameter search ('ottotrain tune').")

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
