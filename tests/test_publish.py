"""The publisher against a real mosquitto: availability, events, state, outages."""

from __future__ import annotations

import threading
import time

import pytest
from structlog.testing import capture_logs

from edge_gesture.config import parse_config
from edge_gesture.decide import GestureEvent
from edge_gesture.publish import Publisher
from tests.mosquitto import Mosquitto
from tests.mqtt_recorder import Recorder, wait_until

ROOT = "edge_gesture/kitchen"


def make_cfg(port: int, **mqtt):
    base = {"port": port, "host": "127.0.0.1", "reconnect_min_s": 0.1, "reconnect_max_s": 0.4}
    return parse_config({"device_id": "kitchen", "mqtt": base | mqtt})


def event(gesture="thumbs_up", hand="right", confidence=0.91, source="landmarks"):
    return GestureEvent(gesture, confidence, source, hand, time.monotonic(), time.time())


def payloads(sub, suffix):
    return [m.payload for m in sub.on(suffix)]


def test_online_event_state_stats_and_offline_on_stop(broker):
    sub = Recorder(broker.port, f"{ROOT}/#")
    pub = Publisher(make_cfg(broker.port)).start()
    try:
        sub.wait_for(lambda m: m.topic == f"{ROOT}/availability" and m.payload == b"online",
                     10, "online")
        assert pub.connected
        pub.publish_state({"right": "thumbs_up"})
        seq = pub.publish_event(event())
        pub.publish_stats({"fps_processed": 29.5})
        ev = sub.wait_for(lambda m: m.topic.endswith("/event"), 5, "event").json()
        sub.wait_for(lambda m: m.topic.endswith("/stats"), 5, "stats")
        sub.wait_for(lambda m: m.topic.endswith("/state") and b"thumbs_up" in m.payload, 5)
    finally:
        pub.stop()
    assert ev["gesture"] == "thumbs_up" and ev["hand"] == "right" and ev["source"] == "landmarks"
    assert ev["confidence"] == pytest.approx(0.91)
    assert ev["sequence"] == seq == 1
    assert ev["device_id"] == "kitchen" and ev["schema_version"] == 1
    assert ev["timestamp"].endswith("Z") and ev["run_id"] == pub.run_id
    stats = sub.on("/stats")[-1].json()
    assert stats["fps_processed"] == 29.5 and stats["mqtt"]["connected"] is True
    sub.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"offline", 5,
                 "offline after stop")
    sub.close()

    # What a subscriber arriving later sees: the retained offline and the last state.
    late = Recorder(broker.port, f"{ROOT}/#")
    try:
        late.wait_for(lambda m: m.topic.endswith("/state"), 5, "retained state")
        late.wait_for(lambda m: m.topic.endswith("/availability"), 5, "retained availability")
        assert payloads(late, "/availability") == [b"offline"]
        assert all(m.retain for m in late.messages)
        state = late.on("/state")[0].json()
        assert state["hands"] == {"left": None, "right": "thumbs_up"}
        assert not late.on("/event"), "events are not retained"
    finally:
        late.close()


def test_broker_down_at_start_then_up(tmp_path):
    b = Mosquitto(tmp_path / "b", persistence=True).start()
    rec = Recorder(b.port, f"{ROOT}/#", session=True)  # its session outlives the broker restart
    b.stop()
    with capture_logs() as logs:
        pub = Publisher(make_cfg(b.port, max_age_s=30)).start()
        try:
            # The caller never waits for the network, even with no broker at all: every call
            # returns while there is none (one that waited for it would never return here).
            caller = threading.Thread(
                target=lambda: [pub.publish_event(event()) for _ in range(200)], daemon=True)
            caller.start()
            caller.join(30)
            assert not caller.is_alive(), "publish_event waited for the broker"
            time.sleep(1.5)  # an outage long enough for several connect attempts to fail
            assert not pub.connected
            b.start()
            events = rec.wait_count("/event", 200)
            assert [m.json()["sequence"] for m in events] == list(range(1, 201))
            assert [m.payload for m in rec.on("/availability")] == [b"online"]
        finally:
            pub.stop()
            rec.close()
            b.stop()
    failures = [e for e in logs
                if e["event"] == "mqtt connect failed" and e["log_level"] == "warning"]
    # Several attempts failed in 1.5 s, but the log says so once, with the setting to check.
    assert len(failures) == 1, failures
    assert "mqtt.host" in failures[0]["reason"] and str(b.port) in failures[0]["reason"]
    assert [e["event"] for e in logs if e["event"].startswith("mqtt connected")] == [
        "mqtt connected"]


def test_restart_republishes_retained_and_logs_once_each_way(tmp_path):
    b = Mosquitto(tmp_path / "b", persistence=True).start()
    rec = Recorder(b.port, f"{ROOT}/#", session=True)
    with capture_logs() as logs:
        pub = Publisher(make_cfg(b.port, max_age_s=30)).start()
        try:
            wait_until(lambda: pub.connected, what="connect")
            # The state at connect is whatever is current when it goes out: wait for the empty
            # one first, or a busy machine folds it into the fist.
            rec.wait_count("/state", 1)
            pub.publish_state({"left": "fist"})
            pub.publish_event(event("fist", "left"))
            wait_until(lambda: pub.acked == 1, what="first event acked")
            rec.wait_count("/state", 2)  # the empty state at connect, then the fist

            b.stop()
            wait_until(lambda: not pub.connected, what="loss noticed")
            pub.publish_event(event("victory", "left"))
            pub.publish_event(event("ok", "right"))
            time.sleep(1.0)
            b.start()

            events = rec.wait_count("/event", 3)
            states = rec.wait_count("/state", 3)
            wait_until(lambda: [m.payload for m in rec.on("/availability")].count(b"online") == 2,
                       what="online re-published")
            online = rec.on("/availability")
            assert [m.json()["gesture"] for m in events] == ["fist", "victory", "ok"]
            assert states[-1].json()["hands"] == {"left": "fist", "right": None}
            # (mosquitto publishes the will, `offline`, when it shuts down itself)
            assert online[0].payload == online[-1].payload == b"online"
        finally:
            pub.stop()
            rec.close()
            b.stop()
    names = [e["event"] for e in logs if e["log_level"] in ("warning", "info")]
    assert names.count("mqtt broker lost") == 1
    # mosquitto stopping just closes the socket: no MQTT reason code, but still a reason.
    assert [e["reason"] for e in logs if e["event"] == "mqtt broker lost"] == [
        "connection closed by the broker or the network"]
    assert names.count("mqtt broker back") == 1
    assert "mqtt connect failed" not in names, "a plain outage is reported as lost/back only"


def test_stop_sends_what_is_queued_then_offline(broker):
    rec = Recorder(broker.port, f"{ROOT}/#")
    pub = Publisher(make_cfg(broker.port)).start()
    wait_until(lambda: pub.connected, what="connect")
    seqs = [pub.publish_event(event()) for _ in range(300)]
    network = pub._thread
    pub.stop(timeout=3.0)
    # stop() waits at most its timeout; the network thread finished its work inside it.
    assert network is not None and not network.is_alive()
    try:
        events = rec.wait_count("/event", 300)
        offline = rec.wait_count("/availability", 2)[-1]
        assert [m.json()["sequence"] for m in events] == seqs
        assert offline.payload == b"offline" and offline.at >= events[-1].at
    finally:
        rec.close()


def least_time_for(connects: int, cfg) -> float:
    """The shortest time one publisher needs for this many connections: before each new attempt
    it waits at least half the backoff ceiling, which doubles from reconnect_min_s."""
    m = cfg.mqtt
    return sum(min(m.reconnect_max_s, m.reconnect_min_s * 2 ** k) / 2 for k in range(connects - 1))


def test_two_daemons_with_one_client_id_are_reported_once_not_per_flap(broker):
    cfg = make_cfg(broker.port, reconnect_max_s=1.0)
    with capture_logs() as logs:
        t0 = time.monotonic()
        a, b = Publisher(cfg).start(), Publisher(cfg).start()
        try:
            # Each connection pushes the other daemon off; wait for a dozen of them.
            wait_until(lambda: a.connects + b.connects >= 12, 60, "two daemons pushing each other off")
            connects = (a.connects, b.connects)
            elapsed = time.monotonic() - t0
        finally:
            a.stop()
            b.stop()
    flaps = [e for e in logs if e["event"] == "mqtt connection keeps dropping right after "
             "connecting"]
    assert 1 <= len(flaps) <= 2 and flaps[0]["client_id"] == "edge-gesture-kitchen"
    names = [e["event"] for e in logs if e["log_level"] in ("warning", "info")]
    # At most the first loss of each, before the pattern is recognised; then quiet.
    assert names.count("mqtt broker lost") <= 2 and names.count("mqtt broker back") <= 2, names
    # Backing off, not pushing each other off in a tight loop (which would take milliseconds). A
    # busy machine only makes this slower; 0.9 allows for timers that fire a hair early.
    least = least_time_for(max(connects), cfg)
    assert elapsed >= 0.9 * least, (connects, elapsed, least)
