"""What the running daemon says about itself when it runs degraded: the stats topic's `status`
(Home Assistant's "Pipeline status"), /healthz and systemd's Status: line, from a real
`edge-gesture run` (tests/daemon_harness.py) and a real mosquitto."""

from __future__ import annotations

import http.server
import threading
import time

import cv2
import numpy as np
import pytest

from tests.daemon_harness import START_S, Daemons, config
from tests.mqtt_recorder import Recorder

pytestmark = pytest.mark.e2e

STATS = "edge_gesture/edge-gesture/stats"


@pytest.fixture
def daemons():
    with Daemons() as start:
        yield start


def with_stats(cfg: str, extra: str = "") -> str:
    return cfg.replace("stats_interval_s = 0\n", "stats_interval_s = 0.5\n") + extra


def test_a_failed_vlm_shows_in_the_stats_status_and_healthz(tmp_path, broker, daemons):
    # A bundle that is not there: the daemon runs on landmarks and must say so. The long name
    # makes the reason longer than Home Assistant takes as a sensor state.
    bundle = tmp_path / ("missing-bundle-" + "x" * 240)
    sub = Recorder(broker.port, STATS)
    try:
        d = daemons(tmp_path / "d", with_stats(config(broker.port, "testcard"),
                                               f'[vlm]\nenabled = true\nbundle = "{bundle}"\n'))
        d.manager.wait("READY", START_S)
        msg = sub.wait_for(lambda m: m.json()["status"] != "ok", 20, "a status other than ok")
        status = msg.json()["status"]
        assert status.startswith("VLM failed, landmarks only: cannot load the VLM"), status
        assert len(status) <= 255, len(status)
        # /healthz gives the whole reason, path and all.
        body = d.wait_health(503, 20, "VLM failed")
        assert f"VLM failed, landmarks only: cannot load the VLM: {bundle}" in body
        # Frames flow and the broker is there: the VLM is the only problem.
        assert body.count("\n") == 1
        assert msg.json()["vlm"]["state"] == "failed"
    finally:
        sub.close()


class SwitchableMjpegCamera:
    """An IP camera on loopback that streams MJPEG while on; switched off it hangs up and
    answers 503, as a camera does while it reboots."""

    def __init__(self):
        ok, jpg = cv2.imencode(".jpg", np.full((240, 320, 3), 90, np.uint8))
        assert ok
        self.on = threading.Event()
        self.on.set()
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if not camera.on.is_set():
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while camera.on.is_set():
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: %d\r\n\r\n" % len(jpg))
                        self.wfile.write(jpg.tobytes() + b"\r\n")
                        time.sleep(1 / 15)
                except OSError:  # the daemon hung up first
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.on.clear()
        self.server.shutdown()
        self.server.server_close()


def test_a_source_being_reopened_shows_in_the_stats_status_and_healthz(tmp_path, broker, daemons):
    camera = SwitchableMjpegCamera()
    sub = Recorder(broker.port, STATS)
    try:
        # stale_after_s far beyond the test's waits: the report must come from the source
        # being reopened, not from frames having stopped long enough.
        cfg = with_stats(config(broker.port, camera.url)).replace(
            "stale_after_s = 1.0", "stale_after_s = 120.0").replace(
            "[capture]\n", "[capture]\nread_timeout_s = 0.5\n")
        d = daemons(tmp_path, cfg)
        d.manager.wait("READY", START_S)
        sub.wait_for(lambda m: m.json()["status"] == "ok", 20, "status ok while streaming")

        camera.on.clear()
        t_off = time.monotonic()
        sub.wait_for(lambda m: m.at >= t_off and m.json()["status"] == "video source lost; "
                     "reopening", 30, "status saying the source is being reopened")
        assert "video source lost; reopening" in d.wait_health(503, 20, "reopening")
        d.manager.wait("STATUS", 30, since=t_off, value="video source lost; reopening")

        camera.on.set()
        t_on = time.monotonic()
        sub.wait_for(lambda m: m.at >= t_on and m.json()["status"] == "ok", 30,
                     "status ok once the camera is back")
        d.wait_health(200, 20)
        assert d.proc.poll() is None
    finally:
        sub.close()
        camera.close()
