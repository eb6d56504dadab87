"""The new user's first hour, played as the README tells it: `script/run` from their own folder,
with their own config and clip named relative to it, against a real broker."""

from __future__ import annotations

import signal
import subprocess
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.logs import json_log_lines
from tests.mosquitto import free_port
from tests.mqtt_recorder import Recorder, wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
ROOT = "edge_gesture/sofa"


def user_config(folder: Path, port: int, page_port: int = 0) -> Path:
    """The shipped config.toml with only the broker changed, as a user would edit it."""
    text = (REPO / "config.toml").read_text()
    text = text.replace('device_id = "edge-gesture"', 'device_id = "sofa"', 1)
    text = text.replace("port = 1883", f"port = {port}", 1).replace('host = "localhost"',
                                                                    'host = "127.0.0.1"', 1)
    text = text.replace("stats_interval_s = 10.0", "stats_interval_s = 2.0", 1)
    text = text.replace("port = 9820", f"port = {page_port}", 1)
    assert f"port = {port}" in text and f"port = {page_port}" in text, "config.toml changed shape"
    path = folder / "mine.toml"
    path.write_text(text)
    return path


def test_script_run_on_the_test_pattern_from_the_users_folder(tmp_path, broker):
    page_port = free_port()
    user_config(tmp_path, broker.port, page_port)
    rec = Recorder(broker.port, [f"{ROOT}/#", "homeassistant/#"])
    # The caller's folder is not the repository, and the config is named relative to it.
    proc = subprocess.Popen([str(REPO / "script" / "run"), "--config", "mine.toml"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: [m.payload for m in rec.on("/availability")] == [b"online"], 120,
                   "availability online")
        discovery = rec.wait_count("homeassistant/device/sofa/config", 1)[0].json()
        assert discovery["device"]["identifiers"], discovery
        assert set(rec.wait_count("/state", 1)[0].json()["hands"]) == {"left", "right"}
        stats = rec.wait_count("/stats", 2, timeout=30)
        # The shipped config watches the test pattern, so frames flow with no camera attached.
        assert stats[-1].json()["frames_processed"] > 0, stats[-1].json()
        # The shipped config turns the live page on, on this machine only, and the log says where.
        with urllib.request.urlopen(f"http://127.0.0.1:{page_port}/", timeout=10) as page:
            assert page.status == 200 and b"edge-gesture" in page.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        rec.close()
    assert proc.returncode == 0, err[-2000:]
    assert out == "", "the daemon's log goes to stderr only"
    events = [e["event"] for e in json_log_lines(err)]
    assert "ready" in events and "mqtt connected" in events, events
    assert [e["url"] for e in json_log_lines(err) if e["event"] == "live page"] == [
        f"http://127.0.0.1:{page_port}/"]


def test_script_run_takes_a_clip_named_relative_to_the_users_folder(tmp_path, broker):
    user_config(tmp_path, broker.port)
    clip = tmp_path / "clips" / "empty-room.mp4"
    clip.parent.mkdir()
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (320, 240))
    for i in range(30):
        writer.write(np.full((240, 320, 3), 40 + i, np.uint8))
    writer.release()
    run = subprocess.run([str(REPO / "script" / "run"), "--config=mine.toml",
                          "--source", "clips/empty-room.mp4"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=180)
    # capture.at_end = "stop": the daemon read the whole clip and ended by itself.
    assert run.returncode == 0, run.stderr[-2000:]
    lines = json_log_lines(run.stderr)
    assert any(e["event"] == "source ended" for e in lines), [e["event"] for e in lines]
    assert not any(e.get("level") == "error" for e in lines), run.stderr[-2000:]
