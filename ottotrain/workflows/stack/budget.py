"""The stack's time budget: ``--time-limit 2h``, what is left, and whether a member still fits.

Each member's cost is estimated from its first finished fold (or first cv model): when
the rest of it would not fit in the time left, less a reserve for level 2 and the top,
the member is stopped (resumable: its finished folds are kept) and left out, and the
stack ends with what finished.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from ottotrain.errors import ConfigError, Stopped
from ottotrain.runs import INTERRUPTED

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Share of the time limit kept for level 2 and the top.
RESERVE_SHARE = 0.15


def parse_time_limit(text: str | int | float | None, where: str = "--time-limit") -> float | None:
    """Seconds from '2h', '45m', '90s', '1.5h' or '3600'; None for None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text).lower())
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{where} {text}: expected a positive duration such as 2h, 45m, 90s or 3600")
    return float(m.group(1)) * _UNITS[m.group(2)]


def format_seconds(seconds: float) -> str:
    """'1h 05m', '4m 10s', '12 s'."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s} s"


class OverBudget(Stopped):
    """A member was stopped because the rest of it would not fit in the time left.

    A ``Stopped``: a cv run it stops is recorded as interrupted, so ``--resume`` continues it.
    """

    def __init__(self, why: str):
        super().__init__(INTERRUPTED, why)
        self.why = why


@dataclass
class Budget:
    """The time limit of one stack session (None: no limit) and the clock it runs on."""

    limit: float | None
    started: float = field(default_factory=time.monotonic)
    enforce: bool = True  # false while no member has finished: the first one always does

    @property
    def reserve(self) -> float:
        return 0.0 if self.limit is None else RESERVE_SHARE * self.limit

    def left(self) -> float | None:
        """Seconds left before the limit (None without one)."""
        return None if self.limit is None else self.limit - (time.monotonic() - self.started)

    def left_text(self) -> str:
        left = self.left()
        return "" if left is None else f"; {format_seconds(left)} left"

    def room(self) -> str | None:
        """Why no member may start any more (None: one may)."""
        left = self.left()
        if self.enforce and left is not None and left <= self.reserve:
            return f"no time left ({format_seconds(max(left, 0))} of the limit, kept for level 2)"
        return None

    def check(self, name: str, done: int, total: int, seconds: list[float], slots: int = 1) -> None:
        """Raise ``OverBudget`` when the ``total - done`` parts of ``name`` left, at the mean
        cost of its finished ones (``seconds``), ``slots`` at a time, do not fit."""
        left = self.left()
        if left is None or not self.enforce or done >= total or not seconds:
            return
        rest = sum(seconds) / len(seconds) * (total - done) / max(1, slots)
        if rest > left - self.reserve:
            raise OverBudget(
                f"{name}: {done}/{total} done; the rest would take about {format_seconds(rest)}, "
                f"{format_seconds(max(left, 0))} were left (with {format_seconds(self.reserve)} "
                "kept for level 2)"
            )
