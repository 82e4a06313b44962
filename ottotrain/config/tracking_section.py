"""The ``tracking`` section: where fit, cv, tune and stack record their runs in MLflow."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from ottotrain.config.validation import SECRET_VALUE, Strict

_TAG_KEY = re.compile(r"[A-Za-z0-9_.\-/ ]{1,250}")


class TrackingConfig(Strict):
    """MLflow tracking (off unless a URI is given here, by --track or by MLFLOW_TRACKING_URI)."""

    uri: str | None = Field(
        None,
        description="The tracking URI: http(s)://HOST:PORT of an 'mlflow server', sqlite:///PATH, "
        "or a folder (a file store); --track and MLFLOW_TRACKING_URI win over it. No password "
        "here (the run directory keeps the config): MLFLOW_TRACKING_USERNAME/PASSWORD.",
    )
    experiment: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="The MLflow experiment (created if missing); default: the config's name.",
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Tags set on every run this config records, e.g. {team: tabular}."
    )
    log_model: bool = Field(
        True,
        description="Log a fit's or cv's model as an MLflow model (its SavedModel export, a "
        "pyfunc): 'mlflow models serve' and the model registry take it.",
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, v):
        if v is None:
            return v
        if not v.strip():
            raise ValueError("is empty; give a tracking URI such as http://127.0.0.1:5000, or leave it out")
        if urlsplit(v).password:
            raise PydanticCustomError(
                SECRET_VALUE,
                "holds a password, which would be kept in the run directory's config.yaml; "
                "give the URI without it and the password in MLFLOW_TRACKING_PASSWORD",
            )
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v):
        for key in v:
            if not _TAG_KEY.fullmatch(key):
                raise ValueError(
                    f"tag name {key!r}: 1-250 letters, digits, '_', '-', '.', '/' or spaces (MLflow's rule)"
                )
        return v
