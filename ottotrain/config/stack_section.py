"""The ``stack`` section: ``ottotrain stack``'s level-1 members, level-2 learners and the top.

A stack config is a config with a ``stack`` section and no ``model``: its ``data``, ``seed``
and ``cv.folds`` apply to every member, so that every member is scored on the same rows and
folds. Each level-1 member is one of: a Keras config (``config``, with ``set`` overrides),
a finished cv run to reuse (``run``), LightGBM (``lightgbm``) or a nearest-neighbour vote
(``knn``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ottotrain.config.model_section import ModelConfig
from ottotrain.config.train_section import TrainConfig
from ottotrain.config.validation import Strict

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
MEMBER_KINDS = ("config", "run", "lightgbm", "knn")
LEVEL2_KINDS = ("logistic", "net", "lightgbm")


def _given(model, kinds: tuple[str, ...], what: str) -> str:
    """The one of ``kinds`` that ``model`` sets; a ValueError naming ``what`` unless exactly one is."""
    given = [k for k in kinds if getattr(model, k) is not None]
    if len(given) != 1:
        raise ValueError(
            f"{what} '{model.name}' needs exactly one of {', '.join(kinds)}, got {', '.join(given) or 'none'}"
        )
    return given[0]


def _check_name(v: str) -> str:
    if not re.fullmatch(_NAME, v):
        raise ValueError("must be 1-64 letters, digits, '.', '_' or '-' (it names a directory)")
    return v


class LightGBMMember(Strict):
    """Gradient-boosted trees (LightGBM, multiclass), early-stopped on rows of the training folds."""

    learning_rate: float = Field(0.05, gt=0, le=1, description="Shrinkage of each tree.")
    num_leaves: int = Field(63, ge=2, le=131072, description="Leaves per tree.")
    min_child_samples: int = Field(20, ge=1, description="Fewest rows in a leaf.")
    feature_fraction: float = Field(0.5, gt=0, le=1, description="Share of the features each tree sees.")
    bagging_fraction: float = Field(0.8, gt=0, le=1, description="Share of the rows each tree sees.")
    lambda_l2: float = Field(1.0, ge=0, description="L2 penalty on the leaf values.")
    max_rounds: int = Field(5000, ge=1, description="Most boosting rounds.")
    early_stopping_rounds: int = Field(
        100, ge=1, description="Stop after this many rounds without a better early-stopping loss."
    )


class KnnMember(Strict):
    """Class probabilities from the votes of the k nearest training rows (one member per k)."""

    k: int | list[int] = Field(
        64, description="Neighbours that vote; a list makes one member per k, named <name>-k<k>."
    )
    space: Literal["raw", "log1p", "tfidf"] = Field(
        "log1p", description="Where distances are measured: the counts, log(1 + x), or TF-IDF rows."
    )
    weights: Literal["uniform", "distance"] = Field(
        "uniform", description="uniform: one vote each; distance: votes weighted by 1/distance."
    )

    @field_validator("k")
    @classmethod
    def _k(cls, v):
        ks = v if isinstance(v, list) else [v]
        if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
            raise ValueError("must be a positive integer or a list of them, e.g. [2, 8, 32, 128]")
        return v


class MemberSpec(Strict):
    """One level-1 member: exactly one of config, run, lightgbm, knn."""

    name: str = Field(description="Names its folder under members/ and its line in the leaderboard.")
    config: str | None = Field(None, description="A Keras config file (relative to the stack config).")
    set: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of that config, as --set gives them: {train.epochs: 30}."
    )
    run: str | None = Field(None, description="A finished cv run on the same rows and folds, reused.")
    lightgbm: LightGBMMember | None = Field(None, description="A LightGBM member.")
    knn: KnnMember | None = Field(None, description="A nearest-neighbour vote member.")

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @model_validator(mode="after")
    def _one_kind(self):
        _given(self, MEMBER_KINDS, "member")
        if self.set and self.config is None:
            raise ValueError(f"member '{self.name}': 'set' overrides a 'config'; it has none")
        return self

    @property
    def kind(self) -> str:
        return _given(self, MEMBER_KINDS, "member")


class LogisticLevel2(Strict):
    """A regularised multinomial logistic regression (scikit-learn)."""

    C: float = Field(1.0, gt=0, description="Inverse regularisation strength.")  # noqa: N815
    max_iter: int = Field(1000, ge=1, description="Most solver iterations.")


class NetLevel2(Strict):
    """A Keras net, as in any config: its layer list and its training."""

    model: ModelConfig = Field(description="The layers (the 'model' section of a config).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Its 'train' section.")


class LightGBMLevel2(LightGBMMember):
    """LightGBM at level 2 (the level-1 member's settings), early-stopped on rows of the
    training folds. The defaults are small, well-regularised trees on a few strong columns, as
    published level-2 boosters use (learning rate 0.05, 15 leaves, at least 100 rows a leaf,
    half the columns a tree); they were not tuned on the folds that score the stack."""

    num_leaves: int = Field(15, ge=2, le=131072, description="Leaves per tree.")
    min_child_samples: int = Field(100, ge=1, description="Fewest rows in a leaf.")
    early_stopping_rounds: int = Field(
        50, ge=1, description="Stop after this many rounds without a better early-stopping loss."
    )


class Level2Spec(Strict):
    """One level-2 learner (exactly one of logistic, net, lightgbm), trained fold by fold on the
    level-1 OOF log-probabilities."""

    name: str = Field(description="Names its folder under level2/.")
    logistic: LogisticLevel2 | None = Field(None, description="A logistic regression.")
    net: NetLevel2 | None = Field(None, description="A Keras net.")
    lightgbm: LightGBMLevel2 | None = Field(None, description="Gradient-boosted trees (LightGBM).")
    features: list[str] = Field(
        default_factory=list,
        description="Input columns joined to the level-1 predictions (log1p, standard-scaled); "
        "['all'] for every input column.",
    )

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @model_validator(mode="after")
    def _one_kind(self):
        _given(self, LEVEL2_KINDS, "level-2 learner")
        return self

    @property
    def kind(self) -> str:
        return _given(self, LEVEL2_KINDS, "level-2 learner")


class TopSpec(Strict):
    """How the level-2 (and level-1) models are combined into the submission."""

    method: Literal["greedy", "blend"] = Field(
        "greedy",
        description="greedy: Caruana ensemble selection with replacement; blend: simplex weights "
        "minimising OOF log loss (as 'ottotrain blend').",
    )
    rounds: int = Field(100, ge=1, le=10000, description="Greedy selection steps.")
    level1: bool = Field(True, description="Offer the level-1 members to the top as well as level 2.")


class StackConfig(Strict):
    """Settings of 'ottotrain stack'."""

    members: list[MemberSpec] = Field(min_length=1, description="Level-1 members, in priority order.")
    level2: list[Level2Spec] = Field(
        # Plain data, validated into a Level2Spec, so that the reference docs can show it.
        default_factory=lambda: [{"name": "logistic", "logistic": {}}],
        validate_default=True,
        description="Level-2 learners (default: one logistic regression).",
    )
    top: TopSpec = Field(default_factory=TopSpec, description="The top of the stack.")
    inner_validation: float = Field(
        0.1,
        gt=0,
        lt=0.5,
        description="Share of each member's training rows held out for its early stopping, so "
        "that no choice is made on the fold it is scored on.",
    )
    time_limit: str | None = Field(
        None, description="Time budget, e.g. '2h', '45m', '900s' (the --time-limit option wins)."
    )

    @model_validator(mode="after")
    def _unique(self):
        names = [m.name for m in self.members] + [s.name for s in self.level2]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"names must be unique across members and level2; repeated: {', '.join(dup)}")
        return self
