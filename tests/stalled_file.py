"""A file whose reads stall, for tests of loads that take long: a FIFO in its place.

Opening a FIFO for reading blocks until a writer comes, and a read then blocks until the writer
writes or goes: the reader behaves exactly as on storage that does not answer (a hung network
mount, a dying disk), at the system-call edge, with nothing in the code under test replaced.
"""

from __future__ import annotations

import errno
import os
import threading
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


class Answering:
    """From now on, every open of `fifo` for reading gets `content` and then end of file, like
    the file the FIFO stands in for: the storage answers again."""

    def __init__(self, fifo: Path, content: bytes):
        self.fifo, self.content = fifo, content
        self.served = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            fd = os.open(self.fifo, os.O_WRONLY)  # blocks until a reader opens it
            if self._stop:
                os.close(fd)
                return
            try:
                left = memoryview(self.content)
                while left:
                    left = left[os.write(fd, left):]
            except BrokenPipeError:  # the reader went away; serve the next one
                pass
            finally:
                os.close(fd)
            self.served += 1

    def close(self) -> None:
        self._stop = True
        # A reader of our own, so the pending blocking open returns and the thread ends.
        fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        self._thread.join(5)
        os.close(fd)
