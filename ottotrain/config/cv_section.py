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
    variants: list[dict[str, Any]] = Field(
        default_factory=list,
        description="A varied bag: model k of every fold (k = 0, 1, ...) "
        "trains with variants[k mod len] applied, each a mapping of overrides like --set, "
        "e.g. {data.tfidf: true, train.batch_size: 512}.",
    )


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
