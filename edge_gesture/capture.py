"""Video sources and the hand-off to the frame loop.

One thread per source reads frames and puts them in a `LatestFrameSlot`, which holds only the
newest frame: when processing lags, older frames are dropped and counted rather than queued, so
the daemon always reacts to what the camera sees now. Live sources that fail are reopened with
a doubling backoff; the log says once that the source is lost and once that it is back, and why
it is unavailable (no such device, permission denied, connection refused, no frames within
`capture.read_timeout_s`: see source_reason.py) once per reason, not at every retry.

A camera is asked for `capture.width` x `capture.height`; one that has no such mode gives another,
which is used as it comes (the hand stage works at any size) and named once in the log, not at
every reopen. Files and streams come at their own size.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
import structlog

from edge_gesture.config import CaptureConfig
from edge_gesture.errors import StartupError, UsageError
from edge_gesture.source_reason import camera_reason, stream_reason
from edge_gesture.testcard import TestCard

log = structlog.get_logger("capture")

_URL = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Frame:
    image: np.ndarray  # BGR, HxWx3 uint8
    index: int  # frames read from the source so far, dropped ones included
    t: float  # the timeline decisions use: monotonic capture time, or the file's clock when a
    #           file is read as fast as possible, so events do not depend on processing speed
    wall: float  # epoch seconds at capture
    read_at: float  # monotonic seconds when the frame was read: the start of end-to-end latency


class LatestFrameSlot:
    """A one-frame mailbox: `put` replaces an unread frame (counting it dropped), `get` waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.dropped = 0
        self.delivered = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify()

    def put_blocking(self, frame: Frame, stop: threading.Event) -> None:
        """Wait until the last frame was taken: reading a file frame by frame, none dropped."""
        with self._cond:
            while self._frame is not None and not self._closed and not stop.is_set():
                self._cond.wait(0.1)
            self._frame = frame
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame, or None on timeout or when the source has ended and nothing is left."""
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            if frame is not None:
                self.delivered += 1
                self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed and self._frame is None


class SourceKind(StrEnum):
    CAMERA = "camera"
    STREAM = "stream"
    FILE = "file"
    TESTCARD = "testcard"


def source_kind(source: str) -> SourceKind:
    if source == "testcard":
        return SourceKind.TESTCARD
    # /dev/video2, or a stable name such as /dev/v4l/by-id/usb-046d_C920-video-index0
    if source.isdigit() or source.startswith("/dev/"):
        return SourceKind.CAMERA
    if _URL.match(source):
        return SourceKind.STREAM
    return SourceKind.FILE


class SourceError(StartupError, UsageError):
    """A source that cannot be opened at all (wrong path, unsupported file): bad input, so the
    CLI exits 2 as for a bad config."""


def _open(source: str, kind: SourceKind, cfg: CaptureConfig):
    if kind is SourceKind.TESTCARD:
        return TestCard(cfg.width, cfg.height, cfg.fps)
    if kind is SourceKind.CAMERA:
        target = int(source) if source.isdigit() else source
        cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        if cap.isOpened():
            # MJPG lets USB cameras deliver 1280x720@30 over USB 2 (raw YUYV manages about 10 fps).
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap
    if kind is SourceKind.STREAM:
        # TCP for RTSP: UDP loses packets on busy Wi-Fi and gives smeared frames.
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        # A server that accepts and never answers is given read_timeout_s, to open as to read
        # (OpenCV's own 30 s would leave it unexplained for half a minute at every attempt).
        ms = max(1, round(cfg.read_timeout_s * 1000))
        return cv2.VideoCapture(source, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
                                                         cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    if not os.path.isfile(source):
        raise SourceError(f"capture.source: no such video file: {source}")
    cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise SourceError(f"capture.source: cannot decode video file: {source}")
    return cap


class CameraSizeCheck:
    """Says once per size that a camera gives frames of another size than asked for."""

    def __init__(self, asked: tuple[int, int], source: str):
        self.asked = asked
        self.source = source
        self._said: set[tuple[int, int]] = set()

    def check(self, image: np.ndarray) -> None:
        given = (image.shape[1], image.shape[0])
        if given != self.asked and given not in self._said:
            self._said.add(given)
            log.warning(f"camera gives {given[0]}x{given[1]}, not the {self.asked[0]}x{self.asked[1]} "
                        "asked for", source=self.source, width=given[0], height=given[1])


class CaptureThread(threading.Thread):
    """Reads a source into a slot until stopped; see the module docstring for the policy."""

    def __init__(self, cfg: CaptureConfig, slot: LatestFrameSlot, source: str | None = None):
        super().__init__(name="capture", daemon=True)
        self.cfg = cfg
        self.slot = slot
        self.source = source if source is not None else cfg.source
        self.kind = source_kind(self.source)
        self.stop_event = threading.Event()
        self.frames_read = 0
        self.connected = False
        self.ended = False  # a file source reached its end (and at_end is not "loop")
        self.error: str | None = None
        self.reconnects = 0
        self._camera_size = (CameraSizeCheck((cfg.width, cfg.height), self.source)
                             if self.kind is SourceKind.CAMERA else None)
        if self.kind is SourceKind.FILE:
            _open(self.source, self.kind, cfg).release()  # fail at start-up, not in the thread

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        try:
            if self.kind is SourceKind.FILE:
                self._run_file()
            else:
                self._run_live()
        except Exception as e:  # a crash here would silently freeze the daemon
            self.error = f"{type(e).__name__}: {e}"
            log.exception("capture failed", source=self.source)
        finally:
            self.connected = False
            self.slot.close()

    # Live sources: cameras, streams, the test pattern.
    def _run_live(self) -> None:
        delay = self.cfg.reconnect_initial_s
        said: str | None = None  # the reason last logged, None while the source works
        while not self.stop_event.is_set():
            began = time.monotonic()
            cap = _open(self.source, self.kind, self.cfg)
            if not cap.isOpened():
                cap.release()
                reason = self._why_unavailable(time.monotonic() - began)
                # Once per reason: the retries that follow say nothing new.
                if reason != said:
                    log.warning("source unavailable, retrying", source=self.source,
                                reason=reason, retry_s=delay)
                    said = reason
                else:
                    log.debug("source still unavailable", source=self.source, reason=reason,
                              retry_s=delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_s)
                continue
            if said is not None or self.reconnects:
                log.info("source back", source=self.source)
            else:
                log.info("source open", source=self.source, kind=self.kind.value)
            self.connected = True
            said = None
            delivered, why = self._pump_live(cap)
            cap.release()
            self.connected = False
            if self.stop_event.is_set():
                break
            if delivered:
                delay = self.cfg.reconnect_initial_s
            self.reconnects += 1
            log.warning("source lost, reopening", source=self.source, reason=why, retry_s=delay)
            said = why
            self.stop_event.wait(delay)
            delay = min(delay * 2, self.cfg.reconnect_max_s)

    def _why_unavailable(self, open_s: float) -> str:
        if self.kind is SourceKind.CAMERA:
            return camera_reason(self.source)
        return stream_reason(self.source, self.cfg.read_timeout_s, open_s)

    def _pump_live(self, cap) -> tuple[bool, str]:
        """Read until the source fails or stalls: whether it delivered any frame, and why it
        stopped."""
        delivered = False
        last_ok = time.monotonic()
        while not self.stop_event.is_set():
            ok, image = cap.read()
            now = time.monotonic()
            if not ok or image is None:
                if self.kind is not SourceKind.STREAM:
                    return delivered, "the camera stopped delivering frames"
                if now - last_ok > self.cfg.read_timeout_s:
                    return delivered, (f"no frames within capture.read_timeout_s "
                                       f"({self.cfg.read_timeout_s:g} s)")
                time.sleep(0.01)
                continue
            last_ok = now
            if not delivered and self._camera_size is not None:
                self._camera_size.check(image)  # the first frame shows the mode the camera chose
            delivered = True
            self.frames_read += 1
            self.slot.put(Frame(image, self.frames_read - 1, now, time.time(), now))
        return delivered, "stopped"

    # Files: paced like a camera, or every frame for evaluation.
    def _run_file(self) -> None:
        log.info("source open", source=self.source, kind="file", realtime=self.cfg.realtime)
        self.connected = True
        while not self.stop_event.is_set():
            cap = _open(self.source, self.kind, self.cfg)
            fps = cap.get(cv2.CAP_PROP_FPS) or self.cfg.fps
            if not 1 <= fps <= 240:
                fps = self.cfg.fps
            self._pump_file(cap, 1.0 / fps)
            cap.release()
            if self.cfg.at_end != "loop":
                break
        self.connected = False
        if self.stop_event.is_set():
            return  # stopped before the end: the daemon logs why it stops
        self.ended = True
        log.info("source ended", source=self.source, frames=self.frames_read)
        if self.cfg.at_end == "wait":
            self.stop_event.wait()

    def _pump_file(self, cap, period: float) -> None:
        start = time.monotonic()
        start_wall = time.time()
        n = 0
        while not self.stop_event.is_set():
            ok, image = cap.read()
            if not ok:
                return
            self.frames_read += 1
            if self.cfg.realtime:
                due = start + n * period
                wait = due - time.monotonic()
                if wait > 0:
                    self.stop_event.wait(wait)
                now = time.monotonic()
                self.slot.put(Frame(image, self.frames_read - 1, now, time.time(), now))
            else:
                # The file's own clock: events come out the same however fast we process.
                t = start + n * period
                frame = Frame(image, self.frames_read - 1, t, start_wall + n * period,
                              time.monotonic())
                self.slot.put_blocking(frame, self.stop_event)
            n += 1


def list_cameras(max_index: int = 10) -> list[dict]:
    """Video capture devices that open, with the mode they open in."""
    found = []
    paths = sorted(p for p in os.listdir("/dev") if p.startswith("video")) if os.path.isdir("/dev") else []
    for name in paths[:max_index]:
        path = f"/dev/{name}"
        cap = cv2.VideoCapture(path, cv2.CAP_V4L2)
        try:
            if cap.isOpened():
                found.append({
                    "device": path,
                    "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                    "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                    "fps": cap.get(cv2.CAP_PROP_FPS),
                })
        finally:
            cap.release()
    return found
