"""The config schema: one typed tree, validated completely before TensorFlow is imported.

Every section is a strict pydantic model (unknown keys are errors, no type coercion);
``ottotrain schema`` prints it as JSON Schema and docs/config.md is generated from the
``description`` of each field (tools/config_reference.py). The sections live in one file
each: data_section.py, model_section.py, train_section.py (its optimizer and loss in
optimizers_losses.py, made from keras_spec.json), cv_section.py, tune_section.py,
stack_section.py and tracking_section.py.
"""

from __future__ import annotations

import re

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ottotrain.config import (
    cv_section,
    data_section,
    model_section,
    optimizers_losses,
    stack_section,
    tracking_section,
    train_section,
    tune_section,
)
from ottotrain.config.cv_section import CvConfig
from ottotrain.config.data_section import DataConfig
from ottotrain.config.model_section import ModelConfig
from ottotrain.config.stack_section import StackConfig
from ottotrain.config.tracking_section import TrackingConfig
from ottotrain.config.train_section import TrainConfig
from ottotrain.config.tune_section import TuneConfig
from ottotrain.config.validation import Strict, error_below

_SECTIONS = (
    data_section,
    model_section,
    train_section,
    optimizers_losses,
    cv_section,
    tune_section,
    stack_section,
    tracking_section,
)


def __getattr__(name: str):
    """Every section's public names, from here too: the engine, the workflows and the tests
    import them as ``from ottotrain.config.schema import OWN_LAYERS`` (PEP 562)."""
    for module in _SECTIONS:
        if not name.startswith("_") and hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Config(Strict):
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
    model: ModelConfig | None = Field(
        None, description="The Keras model (required unless the config has a 'stack')."
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Compiling and fitting.")
    cv: CvConfig = Field(default_factory=CvConfig, description="Cross-validation ('ottotrain cv').")
    tune: TuneConfig | None = Field(None, description="A hyperparameter search ('ottotrain tune').")
    stack: StackConfig | None = Field(None, description="A stacked ensemble ('ottotrain stack').")
    tracking: TrackingConfig | None = Field(
        None, description="MLflow tracking of fit, cv, tune and stack runs (docs/tracking.md)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", v):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-' (it names a directory)")
        return v

    @model_validator(mode="after")
    def _model_or_stack(self):
        if self.model is None and self.stack is None:
            raise error_below(
                ("model",), "required: the layer list (or a 'stack' section, for 'ottotrain stack')", None
            )
        if self.model is not None and self.stack is not None:
            raise ValueError(
                "has both 'model' and 'stack'; a stack's Keras members are configs of their own "
                "(stack.members[].config): move the model into one"
            )
        return self

    @property
    def source(self) -> str:
        """The file this config came from (with the cv variant, if any): errors name it."""
        return self._source

    def with_source(self, source: str) -> "Config":
        out = self.model_copy()
        out._source = source
        return out
