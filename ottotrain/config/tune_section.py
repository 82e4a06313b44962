"""The ``tune`` section: the search space, its sampler and pruner, and what a trial scores."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_serializer, model_validator

from ottotrain.config.validation import Strict


class SearchRange(Strict):
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


class SamplerConfig(Strict):
    name: Literal["tpe", "random", "cmaes", "grid"] = Field(
        "tpe", description="Optuna's sampler (grid: every combination of choices)."
    )
    seed: int | None = Field(
        0, description="Its seed: a fixed seed repeats the trials in one process, or on as many workers."
    )


class PrunerConfig(Strict):
    name: Literal["median", "hyperband", "wilcoxon", "none"] = Field(
        "median",
        description="Optuna's pruner: stop trials whose validation loss lags "
        "(wilcoxon: fold by fold, for a cv objective).",
    )
    warmup_epochs: int = Field(3, ge=0, description="Epochs a trial always trains before it can be pruned.")
    startup_trials: int = Field(5, ge=0, description="Trials that run whole before pruning starts (median).")


class CvFolds(Strict):
    folds: int = Field(5, ge=2, le=100, description="Stratified folds of a trial's cv run.")


class CvObjective(Strict):
    cv: CvFolds = Field(description="Score a trial by a cv run's mean fold log loss.")


class TuneConfig(Strict):
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
