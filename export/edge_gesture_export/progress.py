"""Step-by-step progress with timings, on stderr so stdout stays for results."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.t0 = time.perf_counter()
        self.timings: dict[str, float] = {}

    def note(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:7.1f}s] {msg}", file=self.stream, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Announce a long step, then say how long it took (or that it failed, and after how long)."""
        self.note(f"{name} ...")
        t = time.perf_counter()
        try:
            yield
        except BaseException:
            self.note(f"{name}: failed after {time.perf_counter() - t:.1f} s")
            raise
        dt = time.perf_counter() - t
        self.timings[name] = self.timings.get(name, 0.0) + dt
        self.note(f"{name}: done in {dt:.1f} s")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0
