"""Capture: newest frame wins, files paced or complete, streams that drop out come back."""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from structlog.testing import capture_logs

from edge_gesture.capture import (
    CaptureThread,
    Frame,
    LatestFrameSlot,
    SourceError,
    SourceKind,
    source_kind,
)
from edge_gesture.config import CaptureConfig
from tests.mosquitto import free_port
from tests.silent_stream import SilentStream


def frame(i: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), i, float(i), float(i), float(i))


def write_numbered_video(path, n: int, fps: float = 30.0):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 120))
    for i in range(n):
        img = np.full((120, 160, 3), (i * 8) % 256, np.uint8)
        w.write(img)
    w.release()
    return path


def drain(slot: LatestFrameSlot, delay: float = 0.0, limit: float = 20.0) -> list[Frame]:
    got, deadline = [], time.monotonic() + limit
    while time.monotonic() < deadline:
        f = slot.get(timeout=0.5)
        if f is None:
            if slot.closed:
                break
            continue
        got.append(f)
        time.sleep(delay)
    return got


def test_slot_keeps_only_the_newest_frame_and_counts_the_rest():
    slot = LatestFrameSlot()
    for i in range(5):
        slot.put(frame(i))
    assert slot.get(0).index == 4
    assert slot.dropped == 4
    assert slot.get(0.01) is None


@pytest.mark.parametrize("source,kind", [
    ("testcard", SourceKind.TESTCARD), ("0", SourceKind.CAMERA), ("/dev/video2", SourceKind.CAMERA),
    ("/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920-video-index0", SourceKind.CAMERA),
    ("rtsp://cam.local/stream", SourceKind.STREAM), ("https://x/y.mjpg", SourceKind.STREAM),
    ("clip.mp4", SourceKind.FILE),
])
def test_source_kinds(source, kind):
    assert source_kind(source) is kind


def test_file_read_frame_by_frame_delivers_every_frame_on_the_file_clock(tmp_path):
    video = write_numbered_video(tmp_path / "v.mp4", 45)
    slot = LatestFrameSlot()
    cap = CaptureThread(CaptureConfig(source=str(video), realtime=False), slot)
    cap.start()
    got = drain(slot, delay=0.002)
    cap.join(5)
    assert [f.index for f in got] == list(range(45))
    assert slot.dropped == 0 and cap.ended
    steps = np.diff([f.t for f in got])
    assert np.allclose(steps, 1 / 30, atol=1e-6)


def test_file_in_real_time_drops_frames_for_a_slow_consumer_instead_of_queueing(tmp_path):
    video = write_numbered_video(tmp_path / "v.mp4", 60)  # 2 s at 30 fps
    slot = LatestFrameSlot()
    cap = CaptureThread(CaptureConfig(source=str(video), realtime=True), slot)
    t0 = time.monotonic()
    cap.start()
    first = slot.get(timeout=30)
    # The consumer then stalls for the rest of the file, as a slow model would. The thread's end,
    # not a sleep, says when the file is done, so this holds however loaded the machine is.
    cap.join(30)
    assert not cap.is_alive() and cap.ended
    rest = slot.get(0)
    seen = [first] + ([rest] if rest is not None else [])
    # Newest frame wins: after the stall the consumer gets the file's last frame, not a backlog.
    assert seen[-1].index == 59
    assert slot.dropped == 60 - len(seen)
    assert slot.get(0) is None
    # Paced at the file's 30 fps, not read as fast as possible: frame 59 is due 59/30 s in.
    assert seen[-1].t - t0 >= 59 / 30 - 1e-3


def test_missing_file_is_named_at_start_up(tmp_path):
    with pytest.raises(SourceError, match=r"capture\.source: no such video file: .*nope\.mp4"):
        CaptureThread(CaptureConfig(source=str(tmp_path / "nope.mp4")), LatestFrameSlot())


def test_testcard_runs_at_its_frame_rate_and_moves():
    slot = LatestFrameSlot()
    cap = CaptureThread(CaptureConfig(source="testcard", fps=20, width=320, height=240), slot)
    t0 = time.monotonic()
    cap.start()
    seen = []
    deadline = time.monotonic() + 30  # 20 frames take 1 s; the rest is margin for a busy machine
    while cap.frames_read < 20 and time.monotonic() < deadline:
        f = slot.get(0.5)
        if f is not None:
            seen.append(f)
    cap.stop()
    cap.join(5)
    f = slot.get(0)
    if f is not None:
        seen.append(f)
    assert cap.frames_read >= 20
    assert seen[-1].index == cap.frames_read - 1
    # Never faster than 20 fps: frame n is read no earlier than n/20 s after the start.
    assert all(f.t - t0 >= f.index / 20 - 1e-3 for f in seen), [(f.index, f.t - t0) for f in seen]
    assert all(f.image.shape == (240, 320, 3) for f in seen)
    # It moves: the ball and the counter change from frame to frame.
    assert not np.array_equal(seen[0].image, seen[-1].image)


class _FlakyMjpegCamera:
    """An IP camera on loopback: refuses the first `refuse` requests, then streams `frames`
    MJPEG frames per connection and hangs up, as a camera does when it reboots; or, with
    `then_stall`, keeps the connection open and sends nothing more, as a hung one does."""

    def __init__(self, refuse: int, frames: int, then_stall: bool = False):
        ok, jpg = cv2.imencode(".jpg", np.full((120, 160, 3), 128, np.uint8))
        self.requests = 0
        self.closed = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                if outer.requests <= refuse:
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for _ in range(frames):
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(jpg))
                    self.wfile.write(jpg.tobytes() + b"\r\n")
                    time.sleep(0.02)
                while then_stall and not outer.closed.wait(0.1):
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.closed.set()
        self.server.shutdown()


def test_stream_that_drops_out_is_reopened_and_logged_once_per_change():
    camera = _FlakyMjpegCamera(refuse=3, frames=15)
    cfg = CaptureConfig(source=camera.url, reconnect_initial_s=0.05, reconnect_max_s=0.2,
                        read_timeout_s=0.3)
    slot = LatestFrameSlot()
    with capture_logs() as logs:
        cap = CaptureThread(cfg, slot)
        cap.start()
        deadline = time.monotonic() + 20
        while cap.reconnects < 2 and time.monotonic() < deadline:
            slot.get(0.2)
        cap.stop()
        cap.join(5)
    camera.close()
    events = [e["event"] for e in logs]
    assert cap.reconnects >= 2, events
    assert cap.frames_read > 15  # a connection serves 15 frames: these came from two or more
    assert events.count("source unavailable, retrying") == 1  # three refusals, one line
    assert events.count("source lost, reopening") == cap.reconnects
    assert events.count("source back") >= 2


class _V4l2Camera:
    """Stands in for `cv2.VideoCapture(device, cv2.CAP_V4L2)`, the system edge a camera is: it
    records the mode it is asked for, gives `gives`-sized frames whatever was asked (as a webcam
    with no such mode does), and is unplugged after `frames` reads."""

    def __init__(self, gives: tuple[int, int], frames: int = 4):
        self.gives, self.frames = gives, frames
        self.opened: list[dict] = []  # per open: what was asked, property -> value

    def __call__(self, target, api=None):
        asked: dict = {}
        self.opened.append(asked)
        reads = iter(range(self.frames))
        camera = self

        class Opened:
            def isOpened(self):  # noqa: N802 - cv2.VideoCapture's name
                return True

            def set(self, prop, value):
                asked[prop] = value
                return True

            def get(self, prop):
                return {cv2.CAP_PROP_FRAME_WIDTH: camera.gives[0],
                        cv2.CAP_PROP_FRAME_HEIGHT: camera.gives[1]}.get(prop, 0.0)

            def read(self):
                if next(reads, None) is None:
                    return False, None
                return True, np.zeros((camera.gives[1], camera.gives[0], 3), np.uint8)

            def release(self):
                pass

        return Opened()


def _run_camera_until_reopened(camera: _V4l2Camera, cfg: CaptureConfig, times: int, monkeypatch):
    monkeypatch.setattr("edge_gesture.capture.cv2.VideoCapture", camera)
    slot = LatestFrameSlot()
    seen = []
    with capture_logs() as logs:
        cap = CaptureThread(cfg, slot)
        cap.start()
        deadline = time.monotonic() + 20
        while cap.reconnects < times and time.monotonic() < deadline:
            f = slot.get(0.1)
            if f is not None:
                seen.append(f)
        cap.stop()
        cap.join(5)
    assert cap.reconnects >= times
    return seen, [e["event"] for e in logs]


def test_camera_is_asked_for_720p_and_a_smaller_mode_is_used_and_said_once(monkeypatch):
    camera = _V4l2Camera(gives=(640, 480))
    cfg = CaptureConfig(source="/dev/video0", reconnect_initial_s=0.01, reconnect_max_s=0.02)
    seen, events = _run_camera_until_reopened(camera, cfg, 3, monkeypatch)
    asked = [(a[cv2.CAP_PROP_FRAME_WIDTH], a[cv2.CAP_PROP_FRAME_HEIGHT]) for a in camera.opened]
    assert asked == [(1280, 720)] * len(camera.opened)
    assert seen and all(f.image.shape == (480, 640, 3) for f in seen)
    # Once, though the camera was reopened three times and gave 640x480 each time.
    assert [e for e in events if e.startswith("camera gives")] == [
        "camera gives 640x480, not the 1280x720 asked for"], events


def test_camera_that_gives_the_size_asked_for_says_nothing_about_it(monkeypatch):
    camera = _V4l2Camera(gives=(800, 600))
    cfg = CaptureConfig(source="2", width=800, height=600, reconnect_initial_s=0.01,
                        reconnect_max_s=0.02)
    seen, events = _run_camera_until_reopened(camera, cfg, 2, monkeypatch)
    assert camera.opened[0][cv2.CAP_PROP_FRAME_WIDTH] == 800
    assert seen and all(f.image.shape == (600, 800, 3) for f in seen)
    assert not [e for e in events if e.startswith("camera gives")], events


def test_file_keeps_its_own_size_whatever_the_camera_size(tmp_path):
    video = write_numbered_video(tmp_path / "v.mp4", 10)  # 160x120
    slot = LatestFrameSlot()
    with capture_logs() as logs:
        cap = CaptureThread(CaptureConfig(source=str(video), realtime=False), slot)
        cap.start()
        got = drain(slot)
        cap.join(5)
    assert len(got) == 10 and all(f.image.shape == (120, 160, 3) for f in got)
    assert not [e for e in logs if e["event"].startswith("camera gives")]


# ---------------------------------------------------------------- why a source is unavailable


def _reasons_over_retries(cfg: CaptureConfig, opened: Callable[[], int], at_least: int) -> list:
    """Runs a source that never opens until `opened()` says it was tried `at_least` times;
    returns the warnings logged meanwhile."""
    with capture_logs() as logs:
        cap = CaptureThread(cfg, LatestFrameSlot())
        cap.start()
        deadline = time.monotonic() + 60  # only bounds a failing test
        while opened() < at_least and time.monotonic() < deadline:
            time.sleep(0.02)
        cap.stop()
        cap.join(10)
    assert opened() >= at_least, f"tried {opened()} times; {logs}"
    assert not cap.connected
    return [e for e in logs if e["log_level"] == "warning"]


def _counting_opens(monkeypatch) -> Callable[[], int]:
    """How often the capture thread called cv2.VideoCapture (the real one)."""
    real, calls = cv2.VideoCapture, []

    def counted(*args):
        cap = real(*args)
        calls.append(args[0])  # after the open: the attempt is over when it counts
        return cap

    monkeypatch.setattr("edge_gesture.capture.cv2.VideoCapture", counted)
    return lambda: len(calls)


def test_missing_camera_says_no_such_device_once_then_retries_quietly(monkeypatch):
    device = "/dev/v4l/by-id/usb-edge-gesture-test-no-such-camera-video-index0"
    cfg = CaptureConfig(source=device, reconnect_initial_s=0.01, reconnect_max_s=0.02)
    warnings = _reasons_over_retries(cfg, _counting_opens(monkeypatch), at_least=5)
    assert [(w["event"], w["reason"].split(" (")[0]) for w in warnings] == [
        ("source unavailable, retrying", f"no such device: {device}")], warnings


def test_a_camera_index_is_named_by_its_device_node(monkeypatch):
    index = next(str(i) for i in range(90, 200) if not os.path.exists(f"/dev/video{i}"))
    cfg = CaptureConfig(source=index, reconnect_initial_s=0.01, reconnect_max_s=0.02)
    warnings = _reasons_over_retries(cfg, _counting_opens(monkeypatch), at_least=2)
    assert [w["reason"].split(" (")[0] for w in warnings] == [f"no such device: /dev/video{index}"]


def test_refused_stream_says_connection_refused_once(monkeypatch):
    port = free_port()
    cfg = CaptureConfig(source=f"rtsp://127.0.0.1:{port}/stream", reconnect_initial_s=0.01,
                        reconnect_max_s=0.02, read_timeout_s=2.0)
    warnings = _reasons_over_retries(cfg, _counting_opens(monkeypatch), at_least=4)
    assert [(w["event"], w["reason"]) for w in warnings] == [
        ("source unavailable, retrying", f"connection refused by 127.0.0.1:{port}")]


def test_stream_that_accepts_and_never_sends_says_so_within_the_read_timeout():
    server = SilentStream()
    cfg = CaptureConfig(source=server.url, reconnect_initial_s=0.01, reconnect_max_s=0.02,
                        read_timeout_s=0.5)
    try:
        # Each attempt is the stream's connection, then the check that names the reason: four
        # attempts, not OpenCV's 30 s wait for the first one.
        warnings = _reasons_over_retries(cfg, lambda: len(server.held), at_least=8)
    finally:
        server.close()
    assert [w["event"] for w in warnings] == ["source unavailable, retrying"], warnings
    assert warnings[0]["reason"].startswith("no frames within capture.read_timeout_s (0.5 s)")


def test_stream_that_stalls_after_frames_is_lost_after_the_read_timeout():
    camera = _FlakyMjpegCamera(refuse=0, frames=5, then_stall=True)
    cfg = CaptureConfig(source=camera.url, reconnect_initial_s=0.05, reconnect_max_s=0.1,
                        read_timeout_s=0.5)
    slot = LatestFrameSlot()
    with capture_logs() as logs:
        cap = CaptureThread(cfg, slot)
        cap.start()
        deadline = time.monotonic() + 60  # only bounds a failing test
        while cap.reconnects < 1 and time.monotonic() < deadline:
            slot.get(0.1)
        cap.stop()
        cap.join(10)
    camera.close()
    lost = [e for e in logs if e["event"] == "source lost, reopening"]
    assert lost and lost[0]["reason"] == "no frames within capture.read_timeout_s (0.5 s)", logs
