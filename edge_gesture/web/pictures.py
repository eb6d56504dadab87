"""JPEG pictures of the latest frame: a snapshot on request, and the live picture, encoded once
per tick for all its viewers and only while at least one watches.

Encoding runs on the server's worker thread (OpenCV releases the GIL while it resizes and
encodes), never on the frame loop, which only hands over a reference (web/feed.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import Executor

import cv2
import structlog

from edge_gesture.web import overlay
from edge_gesture.web.feed import FrameView, LiveFeed

log = structlog.get_logger("web")

JPEG_QUALITY = 80


def render_jpeg(view: FrameView, state: dict[str, str | None], *, width: int | None,
                with_overlay: bool, quality: int = JPEG_QUALITY) -> bytes:
    """The frame as a JPEG `width` pixels wide (None or wider than the frame: its own size),
    with the hands drawn on it if `with_overlay`. The frame itself is never drawn on."""
    image = view.frame.image
    h, w = image.shape[:2]
    if width is not None and width < w:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    elif with_overlay:
        image = image.copy()
    if with_overlay:
        overlay.draw(image, view, state)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode the frame as JPEG")
    return buf.tobytes()


class LivePicture:
    """The stream's pictures: `fps` a second, `width` wide, with the overlay. Lives on the
    server's event loop."""

    def __init__(self, feed: LiveFeed, fps: float, width: int, executor: Executor):
        self.feed = feed
        self.period = 1.0 / fps
        self.width = width
        self.executor = executor
        self.encoded = 0  # pictures made since start; stays 0 while nobody watches
        self._jpeg: bytes | None = None
        self._version = 0
        self._changed: asyncio.Condition | None = None
        self._watchers = 0
        self._task: asyncio.Task | None = None
        self._closed = False
        self._failed = False  # logged once until a picture is made again

    @contextlib.asynccontextmanager
    async def watching(self):
        """While inside, pictures are made; the last watcher leaving stops that."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        self._watchers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-picture")
        try:
            yield self
        finally:
            self._watchers -= 1
            if self._watchers == 0 and self._task is not None:
                self._task.cancel()
                self._task = None

    async def next_after(self, version: int) -> tuple[int, bytes] | None:
        """The first picture newer than `version`; None once the server closes."""
        assert self._changed is not None, "call inside watching()"
        async with self._changed:
            await self._changed.wait_for(lambda: self._closed or self._version > version)
            if self._closed or self._jpeg is None:
                return None
            return self._version, self._jpeg

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        shown = None
        while True:
            started = time.monotonic()
            view = self.feed.latest_frame()
            if view is not None and view.number != shown:
                shown = view.number
                try:
                    jpeg = await loop.run_in_executor(
                        self.executor, lambda v=view: render_jpeg(
                            v, self.feed.active_gestures(), width=self.width, with_overlay=True))
                except Exception as e:  # one odd frame must not end the stream for everyone
                    if not self._failed:
                        log.error("live picture not made", error=f"{type(e).__name__}: {e}")
                        self._failed = True
                    jpeg = None
                if jpeg is None:
                    await asyncio.sleep(self.period)
                    continue
                self._failed = False
                self.encoded += 1
                async with self._changed:
                    self._jpeg = jpeg
                    self._version += 1
                    self._changed.notify_all()
            await asyncio.sleep(max(0.0, self.period - (time.monotonic() - started)))
