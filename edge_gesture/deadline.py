"""One time limit shared by several waits, so that together they cannot overrun it.

Shutdown joins several threads in turn; giving each its own timeout lets the sum exceed what
systemd allows. Each wait instead takes what is left of one deadline, minus what it must leave
for the steps after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Deadline:
    def __init__(self, seconds: float, *, start: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        """`seconds` after `start` (a reading of `clock`; default: now)."""
        self._clock = clock
        self.at = (clock() if start is None else start) + seconds

    def left(self, keep: float = 0.0) -> float:
        """Seconds to the deadline, less `keep` reserved for later steps; never below 0."""
        return max(0.0, self.at - self._clock() - keep)

    @property
    def passed(self) -> bool:
        return self._clock() >= self.at
