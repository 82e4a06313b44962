"""The ``data`` section: the files, their columns, and how features are preprocessed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ottotrain.config.validation import Strict

TRANSFORMS = ("none", "log1p", "sqrt", "anscombe", "power", "quantile")
SCALINGS = ("none", "standard", "minmax", "robust")
KNN_SPACES = ("raw", "log1p", "tfidf")  # data.knn.space: see ottotrain.features.knn.space


class SyntheticConfig(Strict):
    rows: int = Field(20000, ge=10, le=50_000_000, description="Training rows to generate.")
    test_rows: int = Field(5000, ge=0, le=50_000_000, description="Test rows (0: no test file).")
    seed: int = Field(0, ge=0, description="Seed of the generated data.")


class KnnConfig(Strict):
    """Nearest-neighbour features (ottotrain/knn.py)."""

    k: list[int] = Field(
        [1, 2, 4, 8, 16],
        min_length=1,
        max_length=16,
        description=(
            "Neighbour counts: for each class and each k, the log mean distance to the row's k "
            "nearest training rows of that class (distances measured in data.knn.space)."
        ),
    )
    space: Literal[KNN_SPACES] = Field(
        "log1p",
        description="Where the distances are measured, whatever data.transform is: log1p "
        "(log(1 + x) of the counts, mirrored for negative values), raw (the numbers as they "
        "are: large counts dominate), tfidf (TF-IDF rows scaled to length 1, the inverse document "
        "frequencies from the training rows: a cosine distance, blind to a row's total count).",
    )

    @field_validator("k")
    @classmethod
    def _k(cls, v):
        if any(k < 1 or k > 1024 for k in v) or sorted(set(v)) != v:
            raise ValueError("must be increasing integers from 1 to 1024, e.g. [1, 2, 4, 8, 16]")
        return v


COLUMN_TYPES = ("numeric", "categorical", "drop")


class CategoricalConfig(Strict):
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


class DataConfig(Strict):
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
    nonzero_count: bool = Field(
        False,
        description="Append one column: how many of a row's numeric features are non-zero (before "
        "data.transform; a missing value counts as its filled value).",
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
