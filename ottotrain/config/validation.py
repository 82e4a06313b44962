"""What every config section shares: strict validation, and errors placed at a key below a field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError


class Strict(BaseModel):
    """A config section: unknown keys are errors, no type coercion, defaults validated too."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


def error_below(where: tuple, message: str, value):
    """A validation error at ``where`` below the field being validated (``()``: the field itself)."""
    if not where:
        return ValueError(message)
    return ValidationError.from_exception_data(
        "name", [{"type": PydanticCustomError("unknown_name", message), "loc": where, "input": value}]
    )
