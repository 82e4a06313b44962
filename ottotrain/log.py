"""Where progress goes: stderr, at a verbosity (0 quiet, 1 normal, 2 verbose).

Besides its lines, a ``Log`` shows the phases of a command (reading, preprocessing,
nearest-neighbour features, epochs, predicting) as they run::

    with log.phase("Nearest-neighbour features", total=len(x)) as p:
        for chunk in chunks:
            ...
            p.advance(len(chunk))

On a terminal a phase is a live tqdm line with its rate and the time left; in a log
file (not a terminal) it is a line once it has run ``first_line_after`` seconds and one
every ``LOG_EVERY`` seconds after, formatted by tqdm the same way; a phase that took a
while ends with one line saying so. Library code that is not handed a log (the CSV
readers, the preprocessing) calls the module's ``phase``, which goes to the command's log
(``use``) or nowhere. stdout is never written: it carries the results.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time

# Seconds between a long phase's lines in a log file (OTTOTRAIN_PROGRESS_SECONDS: how often).
LOG_EVERY = float(os.environ.get("OTTOTRAIN_PROGRESS_SECONDS") or 10.0)
SHOW_AFTER = 0.5  # a terminal line appears once a phase has run this long
SUMMARY_AFTER = min(2.0, LOG_EVERY)  # a phase that took this long says so when it ends
_TICK = min(0.5, LOG_EVERY / 2)

_WITH_TOTAL = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
_LINE_WITH_TOTAL = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}]"
_NO_COUNT = "{desc} [{elapsed}]"


def _tqdm():
    """tqdm, imported on a phase's first line: its import (it reads its own package metadata)
    is a third of ``ottotrain --help``'s time, and most commands that stop early draw no phase."""
    from tqdm import tqdm  # noqa: PLC0415 (start-up time, as the CLI's imports)

    return tqdm


class Log:
    """Call it with a message and the verbosity it needs: ``log("Epoch 3/20 ...", 1)``."""

    def __init__(self, verbosity=1, stream=None):
        self.verbosity = verbosity
        self.stream = stream or sys.stderr
        # Asked now, before TensorFlow is imported: the engine then routes fd 2 through a
        # pipe to filter TF's native log lines, and isatty() would say False from then on.
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        # Asked once, with shutil's fallback for a terminal that reports no size (0 x 0):
        # tqdm would then draw nothing at all.
        self.size = shutil.get_terminal_size() if self._tty else None
        self._phases: list[Phase] = []  # the open ones, innermost last
        self._lock = threading.RLock()
        self._ticker: threading.Thread | None = None
        self.interrupted_in: str | None = None  # the innermost phase Ctrl-C stopped
        self.said_interrupted = False

    def __call__(self, msg, level=1):
        if self.verbosity >= level:
            self.said_interrupted |= str(msg).startswith("Interrupted")
            with self._lock:
                bars = [p.bar for p in self._phases if p.bar is not None]
                for b in bars:
                    b.clear()
                print(msg, file=self.stream, flush=True)
                for b in bars:
                    b.refresh()

    @property
    def tty(self):
        return self._tty

    def phase(self, name, total=None, unit="rows", first_line_after=None, summary=True, bar=True) -> Phase:
        """A context manager showing ``name``'s progress; ``advance(n)`` counts ``n`` more ``unit``.

        ``total`` (if known) gives the percentage and the time left; ``summary`` ends a
        phase that took over ``SUMMARY_AFTER`` seconds with a line (the epochs say
        their own); ``first_line_after``: when a log file first hears of it (default
        ``SUMMARY_AFTER``); ``bar``:
        False where something else draws it on a terminal (Keras' bar, the epochs).
        """
        return Phase(self, name, total, unit, first_line_after, summary, bar)

    def interrupted(self) -> None:
        """After Ctrl-C: one line, unless the run already said what it kept."""
        if not self.said_interrupted:
            where = f" during {self.interrupted_in.lower()}" if self.interrupted_in else ""
            self(f"Interrupted{where}; nothing was written", 0)

    def _start(self, p: Phase) -> None:
        with self._lock:
            self._phases.append(p)
            if self._ticker is None or not self._ticker.is_alive():
                self._ticker = threading.Thread(target=self._tick, name="ottotrain-progress", daemon=True)
                self._ticker.start()

    def _end(self, p: Phase) -> None:
        with self._lock:
            if p in self._phases:
                self._phases.remove(p)

    def _tick(self) -> None:
        # Keeps a terminal line's clock running (and a log file hearing) while one long
        # call (a CSV read, a matrix product) advances nothing.
        while True:
            time.sleep(_TICK)
            with self._lock:
                if not self._phases:
                    self._ticker = None
                    return
                self._phases[-1].tick()


class Phase:
    """One phase's progress: see ``Log.phase``. Silent when the log is quiet."""

    def __init__(self, log: Log | None, name, total, unit, first_line_after, summary, bar=True):
        self.log = log if log is not None and log.verbosity >= 1 else None
        self.name, self.total, self.unit = name, total, unit
        self.first_line_after = SUMMARY_AFTER if first_line_after is None else first_line_after
        self.summary, self.draws = summary, bar
        self.n = 0
        self.bar = None
        self.t0 = time.perf_counter()
        self._last_line = None  # when a log file last heard of it

    def __enter__(self) -> Phase:
        self.t0 = time.perf_counter()
        if self.log is not None:
            self.log._start(self)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if self.log is None:
            return
        log = self.log
        with log._lock:
            log._end(self)
            if self.bar is not None:
                self.bar.close()
                self.bar = None
        if kind is KeyboardInterrupt and log.interrupted_in is None:
            log.interrupted_in = self.name
        elif kind is None and self.summary and self.elapsed >= SUMMARY_AFTER:
            counted = f"{self.n:,} {self.unit} in " if self.n else ""
            rate = f" ({self.n / self.elapsed:,.0f} {self.unit}/s)" if self.n else ""
            log(f"{self.name}: {counted}{self.elapsed:.1f}s{rate}", 1)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def advance(self, n=1) -> None:
        self.n += n
        if self.log is not None:
            with self.log._lock:
                if self.bar is not None:
                    self.bar.update(n)

    def tick(self) -> None:
        """Called by the log's clock (every half second), under its lock."""
        elapsed = self.elapsed
        if self.log.tty:
            if self.bar is None and self.draws and elapsed >= SHOW_AFTER:
                self.bar = self._bar()
            if self.bar is not None:
                self.bar.refresh()
        elif elapsed >= self.first_line_after and (
            self._last_line is None or elapsed - self._last_line >= LOG_EVERY
        ):
            self._last_line = elapsed
            print(self.line(elapsed), file=self.log.stream, flush=True)

    def line(self, elapsed: float) -> str:
        return _tqdm().format_meter(
            self.n,
            self.total,
            elapsed,
            prefix=self.name,
            unit=f" {self.unit}",
            bar_format=_LINE_WITH_TOTAL if self.total else _NO_TOTAL if self.n else _NO_COUNT,
        )

    def _bar(self):
        bar = _tqdm()(
            total=self.total,
            initial=self.n,
            desc=self.name,
            unit=f" {self.unit}",
            file=self.log.stream,
            ncols=self.log.size.columns,
            nrows=self.log.size.lines,
            leave=False,
            mininterval=0.2,
            bar_format=_WITH_TOTAL if self.total else _NO_TOTAL if self.n else _NO_COUNT,
        )
        bar.start_t = time.time() - self.elapsed  # its clock from the phase's start
        return bar


_current: Log | None = None


def use(log: Log | None) -> Log | None:
    """Make ``log`` the one that ``phase`` reports to (a command's log); None: nowhere."""
    global _current
    _current = log
    return log


def phase(name, total=None, unit="rows", first_line_after=None, summary=True, bar=True) -> Phase:
    """``Log.phase`` on the command's log (see ``use``), or a silent phase."""
    return Phase(_current, name, total, unit, first_line_after, summary, bar)


def current() -> Log | None:
    """The log that ``use`` set, if any."""
    return _current
