"""A built-in moving test pattern, so the daemon runs on a machine with no camera.

It quacks like `cv2.VideoCapture` (isOpened/read/release) and paces itself at the requested rate,
like GStreamer's videotestsrc: colour bars, a bouncing ball and a frame counter, so a stalled
pipeline is visible in any saved frame.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

_BARS = np.array(
    [(192, 192, 192), (0, 192, 192), (192, 192, 0), (0, 192, 0),
     (192, 0, 192), (0, 0, 192), (192, 0, 0), (16, 16, 16)], dtype=np.uint8)


class TestCard:
    __test__ = False  # not a pytest test class despite its name

    def __init__(self, width: int, height: int, fps: float):
        self.width, self.height, self.period = width, height, 1.0 / fps
        cols = np.arange(width) * len(_BARS) // width
        self._background = np.repeat(_BARS[cols][None, :, :], height, axis=0)
        self._n = 0
        self._next = time.monotonic()

    def isOpened(self) -> bool:  # noqa: N802 - cv2.VideoCapture's name
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        wait = self._next - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._next = max(self._next + self.period, time.monotonic() - self.period)
        frame = self._background.copy()
        r = max(8, self.height // 12)
        span_x, span_y = self.width - 2 * r, self.height - 2 * r
        px, py = (self._n * 7) % (2 * span_x), (self._n * 5) % (2 * span_y)
        x = r + (px if px < span_x else 2 * span_x - px)
        y = r + (py if py < span_y else 2 * span_y - py)
        cv2.circle(frame, (x, y), r, (255, 255, 255), -1)
        cv2.putText(frame, f"edge-gesture {self._n:06d}", (10, self.height - 12),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
        self._n += 1
        return True, frame

    def release(self) -> None:
        pass
