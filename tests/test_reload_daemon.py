"""SIGHUP on a running `edge-gesture run` (tests/daemon_harness.py) with a real mosquitto: a
reload that cannot be applied whole changes nothing, and a reload that ends the active gesture
says so on the retained state."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import cv2
import pytest

from edge_gesture.config import HandsConfig
from tests.daemon_harness import START_S, Daemons, RunningDaemon, config
from tests.gesture_video import letterbox, write_video
from tests.mqtt_recorder import Recorder

pytestmark = pytest.mark.e2e

OLD_ROOT = "edge_gesture/edge-gesture"
NEW_ROOT = "home/gestures/edge-gesture"


@pytest.fixture
def daemons():
    with Daemons() as start:
        yield start


def reload(d: RunningDaemon, text: str) -> float:
    """Write the daemon's config file, send SIGHUP, wait until the reload is over."""
    d.config.write_text(text.replace("@HEALTH_PORT@", str(d.health_port)))
    t = time.monotonic()
    d.proc.send_signal(signal.SIGHUP)
    d.manager.wait("READY", 30, since=t, value="1")  # READY=1 ends a reload, applied or not
    return t


def with_stats(cfg: str) -> str:
    return cfg.replace("stats_interval_s = 0\n", "stats_interval_s = 0.5\n")


@pytest.mark.parametrize("unusable, setting", [
    ('username = "nuc"\npassword_file = "@TMP@/no-such-password"\n', "mqtt.password_file"),
    ('tls = { enabled = true, ca_file = "@TMP@/no-such-ca.pem" }\n', "mqtt.tls.ca_file"),
])
def test_a_reload_whose_mqtt_files_are_missing_changes_nothing(tmp_path, broker, daemons,
                                                               unusable, setting):
    sub = Recorder(broker.port, "#")
    try:
        running = with_stats(config(broker.port, "testcard"))
        d = daemons(tmp_path / "d", running)
        d.manager.wait("READY", START_S)
        sub.wait_for(lambda m: m.topic == f"{OLD_ROOT}/availability" and m.payload == b"online",
                     20, "online")

        # New topics and thresholds, and a file the new MQTT connection needs that is not there.
        bad = running.replace("[mqtt]\n", '[mqtt]\nbase_topic = "home/gestures"\n'
                              + unusable.replace("@TMP@", str(tmp_path)))
        bad += "[decide]\nenter_threshold = 0.8\n"
        t_bad = reload(d, bad)
        d.wait_log("config reload refused", 20)
        assert d.proc.poll() is None, d.output()
        refusals = [line for line in d.output().splitlines() if "config reload refused" in line]
        assert len(refusals) == 1 and setting in refusals[0], refusals
        assert d.metrics()["edge_gesture_config_reloads_total{result=refused}"] == 1

        # Still on the old topics: stats keep coming there, availability stays online, and the
        # new root never heard of this daemon.
        sub.wait_for(lambda m: m.topic == f"{OLD_ROOT}/stats" and m.at > t_bad + 1.0, 20,
                     "stats on the old root after the refused reload")
        assert [m.payload for m in sub.on(f"{OLD_ROOT}/availability")] == [b"online"]
        assert not [m for m in sub.messages if m.topic.startswith("home/")]
        d.wait_health(200, 20)

        # Nothing was half applied: the next good file is a change of topics and threshold
        # again, and the daemon moves to the new topics.
        good = running.replace("[mqtt]\n", '[mqtt]\nbase_topic = "home/gestures"\n')
        good += "[decide]\nenter_threshold = 0.8\n"
        reload(d, good)
        sub.wait_for(lambda m: m.topic == f"{NEW_ROOT}/availability" and m.payload == b"online",
                     20, "online on the new root")
        sub.wait_for(lambda m: m.topic == f"{OLD_ROOT}/availability" and m.payload == b"offline",
                     20, "offline on the old root")
        d.wait_log('"config reloaded"', 20)
        applied = next(line for line in d.output().splitlines() if '"config reloaded"' in line)
        assert '"mqtt.base_topic"' in applied and '"decide.enter_threshold"' in applied, applied
        assert d.metrics()["edge_gesture_config_reloads_total{result=applied}"] == 1
        assert d.proc.poll() is None
    finally:
        sub.close()


@pytest.fixture(scope="module")
def palm_clip(tmp_path_factory, gesture_data: Path) -> Path:
    """Three seconds of one open-palm photo the classifier reads right, to loop: the hand
    never leaves the view, so only the reload can end its gesture."""
    from edge_gesture.gestures import classify_landmarks
    from edge_gesture.hands import HandTracker

    with HandTracker(HandsConfig(), static_images=True) as tracker:
        for photo in sorted((gesture_data / "open_palm").glob("*.jpg")):
            hands = tracker.detect(letterbox(cv2.imread(str(photo))))
            if len(hands) == 1:
                guess = classify_landmarks(hands[0].landmarks, hands[0].handedness,
                                           aspect=hands[0].aspect)
                if guess.label == "open_palm" and guess.confidence >= 0.9:
                    break
        else:
            raise AssertionError("no open_palm photo the classifier reads right")
    return write_video(tmp_path_factory.mktemp("palm") / "palm.mp4", [(photo, 3.0)], fps=10)


def hands_in(state_msg) -> dict:
    return {h: g for h, g in state_msg.json()["hands"].items() if h in ("left", "right")}


def test_a_reload_that_disables_the_active_gesture_republishes_the_retained_state(
        tmp_path, broker, daemons, palm_clip):
    sub = Recorder(broker.port, f"{OLD_ROOT}/#")
    try:
        running = config(broker.port, str(palm_clip)).replace('at_end = "wait"', 'at_end = "loop"')
        d = daemons(tmp_path / "d", running)
        d.manager.wait("READY", START_S)
        held = sub.wait_for(lambda m: m.topic.endswith("/state")
                            and "open_palm" in hands_in(m).values(), 30, "open_palm in state")
        hand = next(h for h, g in hands_in(held).items() if g == "open_palm")

        t = reload(d, running + '[gestures]\nenabled = ["fist", "thumbs_up"]\n')
        d.wait_log('"config reloaded"', 20)
        ended = sub.wait_for(lambda m: m.topic.endswith("/state") and m.at >= t
                             and hands_in(m)[hand] is None, 20, "the state after the reload")
        assert "open_palm" not in hands_in(ended).values()
        # What Home Assistant (or any subscriber) reads when it connects now: the retained state.
        late = Recorder(broker.port, f"{OLD_ROOT}/state")
        try:
            retained = late.wait_for(lambda m: m.retain, 10, "the retained state")
            assert "open_palm" not in hands_in(retained).values(), retained.payload
        finally:
            late.close()

        # The hand was in view all along: enabling open_palm again brings it straight back.
        t = reload(d, running)
        sub.wait_for(lambda m: m.topic.endswith("/state") and m.at >= t
                     and hands_in(m)[hand] == "open_palm", 30, "open_palm again")
        assert d.proc.poll() is None
    finally:
        sub.close()
