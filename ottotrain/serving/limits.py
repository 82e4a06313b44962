"""What one server takes before it refuses: sizes, counts and times, each a ``serve`` option."""

from __future__ import annotations

from dataclasses import dataclass

from ottotrain.errors import DataError


@dataclass(frozen=True)
class Limits:
    """A request past one of these gets a 4xx/503 with a JSON body; the server keeps serving."""

    max_body: int = 16 << 20  # bytes of one request body (413)
    max_rows: int = 20_000  # rows of one request (413)
    max_queue: int = 256  # requests waiting for the model (503 past it)
    max_connections: int = 512  # open connections; one more is answered 503 and closed
    header_timeout: float = 10.0  # seconds for a request's line and headers to arrive (408)
    idle_timeout: float = 15.0  # seconds a kept-alive connection may sit idle
    time_budget: float = 30.0  # seconds from a request's headers to its answer (503 past it)
    batch_rows: int = 512  # rows per model call: a big request is computed in such chunks

    def __post_init__(self):
        for name in ("max_body", "max_rows", "max_queue", "max_connections", "batch_rows"):
            if getattr(self, name) < 1:
                raise DataError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("header_timeout", "idle_timeout", "time_budget"):
            if not getattr(self, name) > 0:
                raise DataError(
                    f"--{name.replace('_', '-')} must be over 0 seconds, got {getattr(self, name)}"
                )


DEFAULTS = Limits()
