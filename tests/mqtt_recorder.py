"""A real MQTT 5 subscriber for tests; it can keep its session across broker restarts.

With `session=True` the broker queues QoS 1 messages for it while it is away, so a test does not
race the publisher to the broker after a restart. Records MQTT 5 properties too.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float
    props: dict = field(default_factory=dict)

    def json(self):
        return json.loads(self.payload)


class Recorder:
    def __init__(self, port: int, topics: str | list[str] = "#", *, session: bool = False,
                 client_id: str = "", **connect):
        self.port = port
        self.topics = [topics] if isinstance(topics, str) else topics
        self.messages: list[Received] = []
        self.redelivered = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=client_id or f"recorder-{id(self):x}")
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.reconnect_delay_set(0.1, 0.5)
        props = None
        if session:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        if connect.get("username"):
            self.client.username_pw_set(connect["username"], connect.get("password"))
        if connect.get("tls_context"):
            self.client.tls_set_context(connect["tls_context"])
        self.client.connect("127.0.0.1", port, clean_start=not session, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("test recorder could not subscribe")

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if flags.session_present:
            self._subscribed.set()  # the broker kept our subscriptions
        else:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg) -> None:
        props = {}
        if msg.properties is not None:
            props = {k: v for k, v in vars(msg.properties).items() if not k.startswith("_")
                     and k not in ("packetType", "names", "types", "properties")}
        with self._lock:
            # The broker's own redelivery to us (dup flag, same bytes) after it lost our PUBACK
            # in a restart is not the publisher's doing; the publisher's resends carry dup=0.
            if msg.dup and any(m.topic == msg.topic and m.payload == msg.payload
                               for m in self.messages):
                self.redelivered += 1
                return
            self.messages.append(Received(msg.topic, msg.payload, bool(msg.retain),
                                          time.monotonic(), props))

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, predicate, timeout: float, what: str = "message") -> Received:
        """The first message (already received or arriving within `timeout`) that matches."""
        found = []

        def match() -> bool:
            with self._lock:
                found[:] = [m for m in self.messages if predicate(m)][:1]
            return bool(found)

        try:
            wait_until(match, timeout, what)
        except AssertionError:
            with self._lock:
                seen = [(m.topic, m.payload[:80]) for m in self.messages]
            raise AssertionError(f"no {what} within {timeout}s; got: {seen}") from None
        return found[0]

    def wait_count(self, suffix: str, n: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.on(suffix)
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError(f"wanted {n} messages on *{suffix}, got {len(self.on(suffix))}: "
                             f"{[m.payload[:60] for m in self.on(suffix)][-5:]}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(cond, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
