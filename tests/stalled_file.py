"""A file whose reads stall, for tests of loads that take long: a FIFO in its place.

Opening a FIFO for reading blocks until a writer comes, and a read then blocks until the writer
writes or goes: the reader behaves exactly as on storage that does not answer (a hung network
mount, a dying disk), at the system-call edge, with nothing in the code under test replaced.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path


def stall(path: Path) -> Path:
    """Replace the file at `path` (if any) by a FIFO; reads of it stall from now on."""
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def wait_for_reader(fifo: Path, timeout: float) -> int:
    """Block until someone opens `fifo` to read it; returns our write end, which keeps its
    read waiting (no bytes, no end of file) until closed. Opening the write end without
    blocking fails with ENXIO exactly while nobody has the FIFO open for reading."""
    end = time.monotonic() + timeout
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            if time.monotonic() > end:
                raise AssertionError(f"nobody opened {fifo} to read it within {timeout} s") from None
        time.sleep(0.02)


def answer(writer: int, content: bytes) -> None:
    """The storage answers after all: the stalled read gets `content`, then end of file."""
    try:
        left = memoryview(content)
        while left:
            left = left[os.write(writer, left):]
    finally:
        os.close(writer)
