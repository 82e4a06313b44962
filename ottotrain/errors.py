"""The exceptions ottotrain raises for user errors.

Every user-facing problem (a bad config, bad data, a run directory that cannot be
used) is an ``OttoTrainError``: the CLI prints its message as one line and exits
non-zero. Anything else is a bug and keeps its traceback.
"""

import difflib


class OttoTrainError(Exception):
    """Base class of the errors a user can fix; the message says how."""


class ConfigError(OttoTrainError, ValueError):
    """The YAML config (or a ``--set`` override) is invalid."""


class DataError(OttoTrainError, ValueError):
    """A CSV file cannot be used: missing, malformed, or inconsistent with the run."""


class RunError(OttoTrainError):
    """A run directory cannot be used (unfinished, tampered with, wrong version)."""


class Stopped(Exception):  # noqa: N818 (not an error: a run stopped on purpose)
    """Training was stopped on purpose after a completed epoch (a pruned tune trial).

    The run records ``status`` (e.g. "pruned") and keeps what it had, like an interrupted one.
    """

    def __init__(self, status: str, message: str = ""):
        super().__init__(message or status)
        self.status = status


class TrainingError(OttoTrainError):
    """Training could not go on (for example the loss became NaN)."""


def did_you_mean(word, choices):
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[match[0]]}'?)" if match else ""


def fmt(v) -> str:
    """A received value as a message quotes it: strings in quotes, long values cut."""
    s = repr(v) if not isinstance(v, str) else f"'{v}'"
    return s if len(s) <= 60 else s[:57] + "..."


def first_line(e: Exception) -> str:
    """An exception's message, first line only (its type name when it has none)."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
