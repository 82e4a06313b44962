"""The ``model`` section: the layer list (checked against Keras in keras_checks.py), ottotrain's
own embedding layers, and the ensemble."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ottotrain.config.validation import Strict

# Symbolic sizes a layer argument may use; they come from the data, never a constant.
SYMBOLS = ("n_classes", "n_features")


class EnsembleConfig(Strict):
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


class PiecewiseLinearEmbedding(Strict):
    """Quantile bins of each numeric input, fitted on the training rows, then a per-feature
    linear map and ReLU (Gorishniy et al. 2022); may only open the layer list."""

    bins: int = Field(
        48, ge=2, le=1024, description="Quantile bins per feature (fewer where a feature has fewer values)."
    )
    d_embedding: int = Field(16, ge=1, le=1024, description="Width of each feature's embedding.")
    activation: str | None = Field("relu", description="After the linear map; null: none.")


class PeriodicEmbedding(Strict):
    """Periodic embeddings (PLR): cos and sin of trained frequencies of each numeric input,
    a per-feature linear map and ReLU; may only open the layer list."""

    frequencies: int = Field(48, ge=1, le=1024, description="Frequencies per feature.")
    d_embedding: int = Field(24, ge=1, le=1024, description="Width of each feature's embedding.")
    sigma: float = Field(0.1, gt=0, description="Standard deviation of the frequencies' initialisation.")
    lite: bool = Field(False, description="One linear map shared by all features (PLR-lite).")
    activation: str | None = Field("relu", description="After the linear map; null: none.")


# ottotrain's own layers a layer list may name (engine/layers.py, engine/numeric_embeddings.py).
OWN_LAYERS = {"PiecewiseLinearEmbedding": PiecewiseLinearEmbedding, "PeriodicEmbedding": PeriodicEmbedding}


class ModelConfig(Strict):
    layers: list[Any] = Field(
        description="Keras layers in order, each {ClassName: {arg: value}}; the list may open "
        "with a PiecewiseLinearEmbedding or PeriodicEmbedding."
    )
    ensemble: EnsembleConfig | None = Field(
        None, description="k members in one network, e.g. {k: 32, kind: batch}; null: one model."
    )
