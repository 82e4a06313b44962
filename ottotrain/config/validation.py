"""What every config section shares: strict validation, and errors placed at a key below a field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from ottotrain.errors import did_you_mean, fmt


class Strict(BaseModel):
    """A config section: unknown keys are errors, no type coercion, defaults validated too."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


# A validation error whose value is never shown (it holds a password).
SECRET_VALUE = "secret_value"


def error_below(where: tuple, message: str, value):
    """A validation error at ``where`` below the field being validated (``()``: the field itself)."""
    if not where:
        return ValueError(message)
    return ValidationError.from_exception_data(
        "name", [{"type": PydanticCustomError("unknown_name", message), "loc": where, "input": value}]
    )


def unknown(what: str, value, choices, listed=None, label: str = "known") -> str:
    """``unknown <what> 'x' (did you mean 'y'?); known: a, b`` for a name not among ``choices``."""
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    return f"unknown {what} {fmt(value)}{hint}; {label}: {', '.join(choices if listed is None else listed)}"
