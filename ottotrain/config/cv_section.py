"""The ``cv`` section, and what a cv variant may not change."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ottotrain.config.validation import Strict


class CvConfig(Strict):
    """Settings of 'ottotrain cv' (its --folds and --seeds options win over them)."""

    folds: int = Field(5, ge=2, le=1000, description="Stratified folds K.")
    seeds: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Models per fold, each with its own seed (bagging); default: one per variant, else 1.",
    )
    inner_validation: float | None = Field(
        None,
        gt=0,
        lt=0.5,
        description="Share of each member's training rows held out for its early stopping (and "
        "learning-rate schedule), so that the fold that scores a member chose nothing; default "
        "(none): members early-stop on the fold they are scored on, which flatters the OOF score.",
    )
    variants: list[dict[str, Any]] = Field(
        default_factory=list,
        description="A varied bag: model k of every fold (k = 0, 1, ...) "
        "trains with variants[k mod len] applied, each a mapping of overrides like --set, "
        "e.g. {data.tfidf: true, train.batch_size: 512}.",
    )


VARIANT_FIXED = (
    "name",
    "stack",
    "seed",
    "cv",
    "tune",
    "tracking",
    "data.train",
    "data.test",
    "data.synthetic",
    "data.id_column",
    "data.target_column",
)
