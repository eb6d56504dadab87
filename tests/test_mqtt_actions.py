"""Actions without a hub: a gesture (and hand) mapped to a topic and payload, published with the
event, and held to the same age limit."""

from __future__ import annotations

import time

from edge_gesture.config import parse_config
from edge_gesture.decide import GestureEvent
from edge_gesture.publish import Publisher
from tests.mosquitto import Mosquitto
from tests.mqtt_recorder import Recorder, wait_until

ACTIONS = [
    {"gesture": "thumbs_up", "topic": "home/livingroom/light/set", "payload": "ON"},
    {"gesture": "thumbs_down", "topic": "home/livingroom/light/set", "payload": "OFF"},
    {"gesture": "fist", "hand": "left", "topic": "home/blinds/set", "payload": "CLOSE",
     "qos": 0, "retain": True},
]


def make_cfg(port: int, **mqtt):
    base = {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.3,
            "actions": ACTIONS}
    return parse_config({"device_id": "den", "mqtt": base | mqtt})


def event(gesture, hand):
    return GestureEvent(gesture, 0.9, "landmarks", hand, time.monotonic(), time.time())


def test_actions_follow_gesture_and_hand(broker):
    rec = Recorder(broker.port, ["home/#", "edge_gesture/den/event"])
    pub = Publisher(make_cfg(broker.port)).start()
    try:
        wait_until(lambda: pub.connected, what="connect")
        pub.publish_event(event("thumbs_up", "right"))
        pub.publish_event(event("fist", "right"))  # the blinds want the left hand
        pub.publish_event(event("victory", "left"))  # no action mapped
        pub.publish_event(event("fist", "left"))
        pub.publish_event(event("thumbs_down", "left"))
        rec.wait_count("/event", 5)
        rec.wait_count("home/blinds/set", 1)
        rec.wait_count("home/livingroom/light/set", 2)
        time.sleep(0.3)
    finally:
        pub.stop()
        rec.close()
    home = [(m.topic, m.payload) for m in rec.messages if m.topic.startswith("home/")]
    assert home == [("home/livingroom/light/set", b"ON"), ("home/blinds/set", b"CLOSE"),
                    ("home/livingroom/light/set", b"OFF")]

    # retain = true on the blinds action: a late subscriber (the blinds after a reboot) sees it.
    late = Recorder(broker.port, "home/#")
    try:
        late.wait_count("home/blinds/set", 1)
        time.sleep(0.3)
        assert [(m.topic, m.payload, m.retain) for m in late.messages] == [
            ("home/blinds/set", b"CLOSE", True)]
    finally:
        late.close()


def test_stale_actions_are_dropped_not_replayed(tmp_path):
    b = Mosquitto(tmp_path / "b", persistence=True).start()
    rec = Recorder(b.port, ["home/#", "edge_gesture/den/event"], session=True)
    b.stop()
    pub = Publisher(make_cfg(b.port, max_age_s=1.0)).start()
    try:
        pub.publish_event(event("thumbs_up", "right"))  # made while the broker is away...
        time.sleep(1.5)  # ...and too old by the time it is back
        pub.publish_event(event("thumbs_down", "right"))
        b.start()
        rec.wait_count("home/livingroom/light/set", 1)
        time.sleep(0.5)
        assert [m.payload for m in rec.on("home/livingroom/light/set")] == [b"OFF"]
        assert [m.json()["gesture"] for m in rec.on("/event")] == ["thumbs_down"]
        assert pub.counters()["dropped_stale"] == 2  # the old event and its action
    finally:
        pub.stop()
        rec.close()
        b.stop()
