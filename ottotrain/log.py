"""Where progress goes: stderr, at a verbosity (0 quiet, 1 normal, 2 verbose)."""

from __future__ import annotations

import sys


class Log:
    """Call it with a message and the verbosity it needs: ``log("Epoch 3/20 ...", 1)``."""

    def __init__(self, verbosity=1, stream=None):
        self.verbosity = verbosity
        self.stream = stream or sys.stderr
        # Asked now, before TensorFlow is imported: the engine then routes fd 2 through a
        # pipe to filter TF's native log lines, and isatty() would say False from then on.
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, msg, level=1):
        if self.verbosity >= level:
            print(msg, file=self.stream, flush=True)

    @property
    def tty(self):
        return self._tty
