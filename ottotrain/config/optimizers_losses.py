"""``train.optimizer`` and ``train.loss``: one typed section per Keras class, told apart by ``name``.

The sections are made from keras_spec.json, the table tools/gen_keras_spec.py makes from
the installed Keras: its classes, their constructor arguments and Keras' defaults, so the
schema and the table cannot disagree. What the table lacks is written here: a sentence per
class and per argument (the docs and ``ottotrain schema`` show them), the type of an
argument whose default does not tell it, and the classes a config cannot use, with the
reason. Only the arguments a config gives are passed to Keras and saved in a run's
config.yaml, so the defaults document Keras' and never replace them.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, field_validator, model_serializer

from ottotrain.config.keras_checks import NUMERIC_ARGS, keras_spec
from ottotrain.config.validation import Strict, error_below, unknown
from ottotrain.errors import fmt


class KerasPart(Strict):
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


class OptimizerPart(KerasPart):
    @field_validator("learning_rate", check_fields=False)
    @classmethod
    def _lr(cls, v):
        if not 0 < v <= 10:
            raise ValueError("must be a number in (0, 10]")
        return v


class LossPart(KerasPart):
    pass


# The sections, in the order the docs list them (the table's others follow, by name).
DOCS = {
    "optimizers": {
        "SGD": "Stochastic gradient descent, with optional (Nesterov) momentum.",
        "Adam": "Adam.",
        "AdamW": "Adam with decoupled weight decay.",
        "Adamax": "Adamax, Adam with the infinity norm.",
        "Nadam": "Adam with Nesterov momentum.",
        "Lamb": "LAMB: Adam with layer-wise adapted step sizes.",
        "Lion": "Lion: sign-based updates with momentum.",
        "RMSprop": "RMSprop.",
        "Adagrad": "Adagrad.",
        "Adadelta": "Adadelta.",
        "Ftrl": "FTRL-proximal.",
        "Adafactor": "Adafactor: factored second moments.",
        "Muon": "Muon for the 2-D weights (orthogonalised momentum), AdamW for the others.",
        "ScheduleFreeAdamW": "Schedule-free AdamW.",
    },
    "losses": {
        "CategoricalCrossentropy": "Log loss of one-hot labels (the Otto metric).",
        "CategoricalFocalCrossentropy": "Focal loss: log loss weighted towards the badly classified rows.",
        "BinaryCrossentropy": "Log loss of each output as a separate yes/no.",
        "BinaryFocalCrossentropy": "Focal loss of each output as a separate yes/no.",
        "KLDivergence": "Kullback-Leibler divergence.",
        "CategoricalHinge": "Categorical hinge loss.",
        "Hinge": "Hinge loss.",
        "SquaredHinge": "Squared hinge loss.",
        "Poisson": "Poisson loss.",
        "Huber": "Huber loss.",
        "LogCosh": "Logarithm of the hyperbolic cosine of the error.",
        "CosineSimilarity": "Negative cosine similarity.",
        "MeanSquaredError": "Mean squared error.",
        "MeanAbsoluteError": "Mean absolute error.",
        "MeanAbsolutePercentageError": "Mean absolute percentage error.",
        "MeanSquaredLogarithmicError": "Mean squared logarithmic error.",
        "Dice": "Dice loss.",
        "Tversky": "Tversky loss.",
    },
}

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

# What each argument does, in the order a section lists its fields (the table's others follow).
ARGUMENTS = {
    "optimizers": {
        # Every Keras optimizer's (keras.optimizers.Optimizer)
        "learning_rate": "Step size, in (0, 10].",
        "weight_decay": "Decoupled weight decay; null: none.",
        "clipnorm": "Clip each gradient to this norm (train.gradient_clip_norm sets it too).",
        "clipvalue": "Clip each gradient's values to ± this.",
        "global_clipnorm": "Clip all gradients together to this global norm.",
        "use_ema": "Keep an exponential moving average of the weights: each epoch is scored, "
        "checkpointed and kept with the average, training goes on from the weights themselves.",
        "ema_momentum": "Momentum of that average (use_ema).",
        "ema_overwrite_frequency": "Every this many steps, replace the weights by their average (use_ema).",
        "loss_scale_factor": "Scale the loss by this before the gradients (and back after).",
        "gradient_accumulation_steps": "Update the weights every this many batches, with their "
        "gradients' mean.",
        # Some optimizers'
        "rho": "Decay of the mean squared gradient.",
        "momentum": "Momentum, in [0, 1].",
        "nesterov": "Nesterov momentum.",
        "ns_steps": "Newton-Schulz iterations.",
        "muon_a": "Newton-Schulz coefficient a.",
        "muon_b": "Newton-Schulz coefficient b.",
        "muon_c": "Newton-Schulz coefficient c.",
        "rms_rate": "Matches the updates' RMS to AdamW's.",
        "adam_beta_1": "AdamW's beta_1, for the other weights.",
        "adam_beta_2": "AdamW's beta_2, for the other weights.",
        "adam_lr_ratio": "AdamW's learning rate / Muon's.",
        "adam_weight_decay": "AdamW's weight decay.",
        "beta_1": "Decay of the first-moment estimates.",
        "beta_2": "Decay of the second-moment estimates.",
        "learning_rate_power": "How the step size falls, ≤ 0.",
        "initial_accumulator_value": "Start of the accumulators.",
        "l1_regularization_strength": "L1 strength, ≥ 0.",
        "l2_regularization_strength": "L2 strength, ≥ 0.",
        "l2_shrinkage_regularization_strength": "L2 shrinkage strength (on the weights, not the "
        "gradient), ≥ 0.",
        "beta": "The beta of FTRL-proximal.",
        "epsilon": "Small constant for numerical stability.",
        "amsgrad": "The AMSGrad variant.",
        "centered": "Normalise by the gradient's variance, not its second moment.",
        "warmup_steps": "Steps of learning-rate warm-up.",
        "exclude_layers": "Layer names whose weights use AdamW.",
        "exclude_embeddings": "Embeddings use AdamW.",
        "beta_2_decay": "Decay of the second-moment estimates.",
        "epsilon_1": "Small constant for the second moments.",
        "epsilon_2": "Small constant for the step size.",
        "clip_threshold": "Clipping threshold of the update.",
        "relative_step": "Scale the step size by the step number.",
    },
    "losses": {
        # Every Keras loss's (keras.losses.Loss)
        "reduction": "How the rows' losses are combined.",
        "dtype": "Dtype of the loss computation; null: Keras'.",
        # Some losses'
        "apply_class_balancing": "Weight the classes by alpha.",
        "alpha": "Weight of every class.",
        "beta": "Weight of the false negatives.",
        "gamma": "Focusing parameter, ≥ 0.",
        "from_logits": "The outputs are logits, not probabilities.",
        "label_smoothing": "Mix this much of a uniform target into the labels.",
        "delta": "Where the loss turns from quadratic to linear.",
        "axis": "The class axis.",
    },
}

# An argument that means something else in one class.
OWN_MEANING = {
    "AdamW.weight_decay": "Decoupled weight decay.",
    "Muon.weight_decay": "Decoupled weight decay.",
    "Muon.momentum": "Momentum of the Muon updates.",
    "Muon.nesterov": "Nesterov momentum for the Muon updates.",
    "RMSprop.momentum": "Momentum.",
    "Adadelta.rho": "Decay rate.",
    "Adamax.beta_2": "Decay of the weighted infinity norm.",
    "Lion.beta_1": "Decay of the momentum mixed into the update.",
    "Lion.beta_2": "Decay of the momentum kept.",
    "Ftrl.initial_accumulator_value": "Start of the accumulators, ≥ 0.",
    "BinaryFocalCrossentropy.alpha": "Weight of the positive class (apply_class_balancing).",
    "Tversky.alpha": "Weight of the false positives.",
    "CosineSimilarity.axis": "The axis along which the similarity is computed.",
    "Dice.axis": "Axes summed over; null: all.",
    "Tversky.axis": "Axes summed over; null: all.",
}

REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none")

# Types the Keras default does not tell (it is null, or the argument also takes null or only
# some strings); the others are the default's type (any number for keras_checks.NUMERIC_ARGS).
TYPES = {
    "weight_decay": float | None,
    "clipnorm": float | None,
    "clipvalue": float | None,
    "global_clipnorm": float | None,
    "ema_overwrite_frequency": int | None,
    "loss_scale_factor": float | None,
    "gradient_accumulation_steps": int | None,
    "exclude_layers": list[str] | None,
    "reduction": Literal[REDUCTIONS] | None,
    "dtype": str | None,
    "Dice.axis": int | list[int] | None,
    "Tversky.axis": int | list[int] | None,
}


def _key(name: str) -> str:
    """A name with case and underscores aside: the loss `kl_divergence` is KLDivergence."""
    return name.replace("_", "").lower()


def _section(family: str, cls_name: str, base: type) -> type:
    """The typed section of one Keras class of keras_spec.json."""
    params = {k: p for k, p in keras_spec()[family][cls_name].items() if k != "name"}
    order = list(ARGUMENTS[family])
    args = sorted(params, key=lambda a: (order.index(a) if a in order else len(order), a))
    annotations, fields = {"keras_class": ClassVar[str]}, {}
    for arg in args:
        default = params[arg].get("default")
        own = f"{cls_name}.{arg}"
        plain = float if arg in NUMERIC_ARGS else Any if default is None else type(default)
        annotations[arg] = TYPES.get(own) or TYPES.get(arg) or plain
        text = OWN_MEANING.get(own) or ARGUMENTS[family].get(arg)
        fields[arg] = Field(default, description=text)
    aliases = keras_spec()["aliases"][family]  # the names Keras resolves: the sections' tags
    tag = next((a for a in aliases if _key(a) == _key(cls_name)), cls_name.lower())
    annotations["name"] = Literal[tag]
    namespace = {"__module__": __name__, "__qualname__": cls_name, "__doc__": DOCS[family].get(cls_name)}
    namespace |= {"__annotations__": annotations, "keras_class": cls_name, **fields}
    return type(cls_name, (base,), namespace)


def _sections(family: str, base: type) -> tuple:
    usable = [c for c in keras_spec()[family] if c not in UNFIT[family]]
    listed = list(DOCS[family])
    usable.sort(key=lambda c: (listed.index(c) if c in listed else len(listed), c))
    return tuple(_section(family, c, base) for c in usable)


OPTIMIZERS = _sections("optimizers", OptimizerPart)
LOSSES = _sections("losses", LossPart)
# Module attributes, so that a config pickles (to cluster workers) by reference.
globals().update({m.__name__: m for m in OPTIMIZERS + LOSSES})
Optimizer = Annotated[Union[OPTIMIZERS], Field(discriminator="name")]  # noqa: UP007 (of a tuple)
Loss = Annotated[Union[LOSSES], Field(discriminator="name")]  # noqa: UP007 (of a tuple)


def _tag_of(cls) -> str:
    return typing.get_args(cls.model_fields["name"].annotation)[0]


# Optimizer names are case-insensitive (sgd, SGD, RMSprop); a loss is named by its Keras
# function or class (categorical_crossentropy, CategoricalCrossentropy), case and underscores
# aside.
_FAMILIES = {
    "optimizers": ("optimizer", OPTIMIZERS, str.lower, ""),
    "losses": ("loss", LOSSES, _key, "for classification use categorical_crossentropy; "),
}
# Every accepted spelling of a name -> its section's name (the discriminator).
_NAMES = {
    family: {key(n): _tag_of(m) for m in models for n in (_tag_of(m), m.keras_class)}
    for family, (_, models, key, _) in _FAMILIES.items()
}


def named_tree(v, family: str):
    """``'adam'`` or ``{name: Adam, ...}`` -> ``{name: adam, ...}`` (the discriminator's tag).

    A name that is no section's is reported here, with the known names, rather than as
    pydantic's bare 'union tag' error.
    """
    what, _, key, hint = _FAMILIES[family]
    if isinstance(v, str):
        tree, where = {"name": v}, ()
    elif isinstance(v, dict) and isinstance(v.get("name"), str):
        # Located as pydantic locates a section's errors, (tag, key): train.optimizer.name.
        tree, where = dict(v), (v["name"], "name")
    else:
        return v  # not a name: pydantic says what is wrong
    name = tree["name"]
    tag = _NAMES[family].get(key(name))
    if tag is None:
        unfit = next((why for cls, why in UNFIT[family].items() if _key(cls) == _key(name)), None)
        known = sorted(set(_NAMES[family].values()))
        if unfit:
            raise error_below(
                where, f"{what} {fmt(name)} cannot be used: {unfit}; {hint}known: {', '.join(known)}", name
            )
        raise error_below(where, unknown(what, name, known, label=f"{hint}known"), name)
    tree["name"] = tag
    return tree


def name_or_mapping(models):
    """JSON Schema of such a field: a section, or just a name (``optimizer: adam``)."""

    def extra(schema):
        names = [_tag_of(m) for m in models]
        union = {k: schema.pop(k) for k in ("oneOf", "anyOf", "discriminator", "$ref") if k in schema}
        schema["anyOf"] = [{"type": "string", "enum": names}, union]

    return extra
