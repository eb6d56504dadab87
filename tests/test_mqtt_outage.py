"""Broker outages: fresh events survive in order, stale ones are dropped and counted, never sent
late; the outbox is bounded; MQTT 5 events carry an expiry; MQTT 3.1.1 works too."""

from __future__ import annotations

import math
import time

from edge_gesture.config import parse_config
from edge_gesture.decide import GestureEvent
from edge_gesture.publish import Publisher
from tests.mosquitto import Mosquitto
from tests.mqtt_recorder import Recorder, wait_until

ROOT = "edge_gesture/garage"


def make_cfg(port: int, **mqtt):
    base = {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.3}
    return parse_config({"device_id": "garage", "mqtt": base | mqtt})


def event(i=0):
    return GestureEvent(("fist", "victory")[i % 2], 0.9, "landmarks", "right", time.monotonic(),
                        time.time())


class StepClock:
    """The publisher's clock for message ages, moved only by the test: which events are too old
    when the broker comes back is then exact, however slow the machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_restart_mid_stream_keeps_fresh_events_in_order_and_drops_stale_ones(tmp_path):
    # While the broker is down the clock moves 10 s per event: the youngest three are still fresh
    # when it comes back, with 5 s or more to live, and the recorder has that long to reconnect.
    max_age, step = 25.0, 10.0
    clock = StepClock()
    b = Mosquitto(tmp_path / "b", persistence=True).start()
    rec = Recorder(b.port, f"{ROOT}/#", session=True)
    pub = Publisher(make_cfg(b.port, max_age_s=max_age), clock=clock).start()
    created: dict[int, float] = {}

    def publish(n: int, advance: float) -> list[int]:
        seqs = []
        for i in range(n):
            clock.now += advance
            seq = pub.publish_event(event(i))
            created[seq] = clock.now
            seqs.append(seq)
        return seqs

    try:
        wait_until(lambda: pub.connected, what="connect")
        live = publish(10, 0.0)
        # Acknowledged, so none is in flight when the broker dies: an event the broker took but
        # never acknowledged would be both delivered and counted stale.
        wait_until(lambda: pub.acked == len(live), what="live events acknowledged")

        b.stop()
        # The stream goes on: 10 events over 100 s of the publisher's clock, the first ones
        # possibly before the publisher has noticed the broker is gone.
        outage = publish(10, step)
        b.start()
        back = clock.now  # frozen from here: the age of each waiting event is now fixed
        during_reconnect = publish(5, 0.0)
        wait_until(lambda: pub.connected, what="reconnect")
        wait_until(lambda: pub.counters()["outbox"] == 0 and pub.acked + pub.counters()[
            "dropped_stale"] == len(created), what="outbox drained")
        after = publish(5, 1.0)
        wait_until(lambda: pub.acked + pub.counters()["dropped_stale"] == len(created),
                   what="events after the outage acknowledged")
        dropped = pub.counters()["dropped_stale"]
        stale = [s for s in outage if back - created[s] > max_age]
        fresh = [s for s in outage if s not in stale]
        # The broker has them all once the publisher is acknowledged, but the recorder reconnects
        # on its own schedule and gets its queued share only then.
        rec.wait_count("/event", len(live + fresh + during_reconnect + after))
        time.sleep(0.3)  # and nothing more (a stale event sent late) comes after them
    finally:
        pub.stop()
        rec.close()
        b.stop()

    assert stale and fresh, "the outage must leave both stale and fresh events"
    received = [m.json()["sequence"] for m in rec.on("/event")]
    # In order, none twice, and exactly the events still young enough when the broker came back.
    assert received == live + fresh + during_reconnect + after
    assert dropped == len(stale), "every event is either delivered or counted as stale"
    # With MQTT 5 the broker is told too: each event expires when it reaches max_age, the time
    # it waited for the broker counted. (mosquitto lowers the figure by the time it held one.)
    expiry = {m.json()["sequence"]: m.props.get("MessageExpiryInterval") for m in rec.on("/event")}
    for s in received:
        left = max_age - (back - created[s] if s in fresh else 0.0)
        assert expiry[s] is not None and 1 <= expiry[s] <= math.ceil(left), (s, expiry[s], left)
    assert all(expiry[s] > max_age - 5 for s in live), "live events expire after about max_age"


def test_outbox_is_bounded_keeping_the_newest(tmp_path):
    b = Mosquitto(tmp_path / "b", persistence=True).start()
    rec = Recorder(b.port, f"{ROOT}/#", session=True)
    b.stop()
    pub = Publisher(make_cfg(b.port, outbox_size=5, max_age_s=30)).start()
    try:
        seqs = [pub.publish_event(event(i)) for i in range(8)]
        assert pub.counters()["dropped_full"] == 3
        b.start()
        # Everything the publisher sent is acknowledged and nothing waits: no more events can come.
        wait_until(lambda: pub.counters()["outbox"] == 0 and 0 < pub.sent == pub.acked,
                   what="outbox sent and acknowledged")
        assert pub.sent == 5
        events = rec.wait_count("/event", 5)
        assert [m.json()["sequence"] for m in events] == seqs[3:]
    finally:
        pub.stop()
        rec.close()
        b.stop()


def test_mqtt_311(broker):
    rec = Recorder(broker.port, f"{ROOT}/#")
    pub = Publisher(make_cfg(broker.port, protocol="3.1.1")).start()
    try:
        wait_until(lambda: pub.connected, what="MQTT 3.1.1 connection")
        pub.publish_state({"right": "fist"})
        pub.publish_event(event())
        ev = rec.wait_count("/event", 1)[0]
        assert ev.json()["gesture"] == "fist"
        assert "MessageExpiryInterval" not in ev.props
        assert rec.wait_count("/availability", 1)[0].payload == b"online"
    finally:
        pub.stop()
    try:
        wait_until(lambda: rec.on("/availability")[-1].payload == b"offline", 5, "offline")
    finally:
        rec.close()
