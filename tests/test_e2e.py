"""End to end: `edge-gesture run` on a video of real gesture photos, a real mosquitto, a subscriber.

The video holds each gesture about a second with no-hand gaps between, so the daemon must publish
exactly one event per gesture, in order; then the broker is stopped mid-stream and the daemon must
reconnect and publish after; then SIGTERM must leave `offline` retained and exit 0 within 5 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from edge_gesture.config import LANDMARK_GESTURES, HandsConfig
from tests.gesture_video import gesture_sequence, letterbox, write_video
from tests.logs import json_log_lines
from tests.mqtt_recorder import Recorder

pytestmark = pytest.mark.e2e

LABELS = ["open_palm", "fist", "thumbs_up", "victory", "pointing_up", "call", "ok", "thumbs_down"]
FPS = 15.0


@pytest.fixture(scope="module")
def clear_photos(gesture_data: Path) -> dict[str, Path]:
    """Per gesture, the first photo (in name order) that the classifier reads right at high
    confidence: this test is about the pipeline around the classifier, not its accuracy."""
    from edge_gesture.gestures import classify_landmarks
    from edge_gesture.hands import HandTracker

    chosen = {}
    with HandTracker(HandsConfig(), static_images=True) as tracker:
        for label in LABELS:
            for photo in sorted((gesture_data / label).glob("*.jpg")):
                hands = tracker.detect(letterbox(cv2.imread(str(photo))))
                if len(hands) != 1:
                    continue
                guess = classify_landmarks(hands[0].landmarks, hands[0].handedness)
                if guess.label == label and guess.confidence >= 0.8:
                    chosen[label] = photo
                    break
    assert set(chosen) == set(LABELS), f"no clear photo for {set(LABELS) - set(chosen)}"
    return chosen


@pytest.fixture(scope="module")
def gesture_video(tmp_path_factory, gesture_data, clear_photos) -> Path:
    path = tmp_path_factory.mktemp("video") / "gestures.mp4"
    segments = gesture_sequence(gesture_data, LABELS, hold=1.2, gap=0.8,
                                pick=lambda label, photos: clear_photos[label])
    return write_video(path, segments, FPS)


def write_config(tmp_path: Path, port: int, video: Path, at_end: str) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
device_id = "e2e"
[capture]
source = "{video}"
realtime = true
at_end = "{at_end}"
[mqtt]
host = "127.0.0.1"
port = {port}
stats_interval_s = 1.0
[logging]
format = "json"
level = "info"
""")
    return cfg


def start_daemon(cfg: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "edge_gesture", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def events_of(sub: Recorder) -> list[dict]:
    return [m.json() for m in sub.on("/event")]


def test_video_gives_exactly_one_event_per_gesture_in_order(tmp_path, broker, gesture_video):
    sub = Recorder(broker.port, "edge_gesture/e2e/#")
    proc = start_daemon(write_config(tmp_path, broker.port, gesture_video, at_end="stop"))
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)
    sub.close()
    assert proc.returncode == 0, err[-3000:]

    events = events_of(sub)
    assert [e["gesture"] for e in events] == LABELS, err[-3000:]
    for e in events:
        assert e["device_id"] == "e2e"
        assert e["source"] == "landmarks"
        assert e["hand"] in ("left", "right")
        assert 0.6 <= e["confidence"] <= 1.0
        assert e["timestamp"].endswith("Z") or "+00:00" in e["timestamp"]
    seqs = [e["sequence"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    availability = [m.payload.decode() for m in sub.on("/availability")]
    assert availability[0] == "online" and availability[-1] == "offline"
    states = [m.json() for m in sub.on("/state")]
    assert any(g == "fist" for s in states for g in _hand_states(s).values())
    assert all(g is None for g in _hand_states(states[-1]).values()), states[-1]
    stats = [m.json() for m in sub.on("/stats")]
    assert stats, "no stats published"
    assert any(s["status"] == "ok" and s["fps_processed"] > 5 for s in stats), stats

    # One log line per state change, not one per frame (the video has ~250 frames).
    lines = json_log_lines(err)
    assert len(lines) < 60, f"{len(lines)} log lines"
    assert sum(1 for x in lines if x.get("event") == "gesture") == len(LABELS)


def _hand_states(state: dict) -> dict:
    hands = state.get("hands", state)
    return {k: v for k, v in hands.items() if k in ("left", "right")}


def test_broker_restart_mid_stream_then_sigterm(tmp_path, broker, gesture_video):
    sub = Recorder(broker.port, "edge_gesture/e2e/#")
    proc = start_daemon(write_config(tmp_path, broker.port, gesture_video, at_end="loop"))
    try:
        sub.wait_for(lambda m: m.topic.endswith("/event"), 40, "first event")
        broker.stop()
        time.sleep(3)
        assert proc.poll() is None, "daemon died while the broker was down"
        broker.start()
        up_at = time.monotonic()
        sub.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"online"
                     and m.at > up_at, 30, "availability online after the broker came back")
        sub.wait_for(lambda m: m.topic.endswith("/event") and m.at > up_at + 2.5, 40,
                     "a gesture event published after the reconnect")

        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 5.0
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    sub.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"offline", 5,
                 "offline after SIGTERM")
    sub.close()

    # The retained availability a new subscriber sees is offline.
    late = Recorder(broker.port, "edge_gesture/e2e/availability")
    msg = late.wait_for(lambda m: True, 5, "retained availability")
    late.close()
    assert msg.retain and msg.payload == b"offline"

    events = events_of(sub)
    seqs = [e["sequence"] for e in events]
    assert len(set(seqs)) == len(seqs), "an event was delivered twice"
    assert all(e["gesture"] in LANDMARK_GESTURES for e in events)
    lines = json_log_lines(err)
    outage = [x for x in lines if x.get("level") in ("warning", "error") and "broker" in x.get("event", "")]
    assert len(outage) <= 2, f"broker outage logged {len(outage)} times: {outage}"
