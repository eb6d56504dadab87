"""The MQTT publisher: the frame loop hands over events, one network thread does the rest.

The frame loop's side (`publish_*`) only appends to an in-memory outbox and writes one byte to
a wake-up socket, so it never waits for the network. The network thread owns the paho client
outright: it selects on the broker socket and the wake-up socket and drives paho's
`loop_read`/`loop_write`/`loop_misc` itself. Owning the loop is what lets it decide, after a
reconnect, which unacknowledged events are still young enough to resend; paho's own reconnect
would replay them however old they are. Each connection gets a fresh client and a clean session.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_gesture.config import Config
from edge_gesture.publish import payloads
from edge_gesture.publish.connection import (
    TRANSIENT,
    Credentials,
    client_id,
    describe_connack,
    describe_exception,
    describe_silent_close,
    make_client,
)
from edge_gesture.publish.discovery import discovery_message, discovery_topic, is_birth
from edge_gesture.publish.outbox import Outbox, Pending

log = structlog.get_logger("edge_gesture.publish")

#: Messages handed to paho but not yet acknowledged; the rest wait in the outbox, where the age
#: limit still applies.
INFLIGHT_WINDOW = 64
#: Messages built per pass before the thread goes back to select(): building one costs tens of
#: microseconds of interpreter time, and each select() hands the interpreter lock back, so a
#: burst never keeps the frame loop waiting for it long.
PUMP_BATCH = 16

#: A connection that drops sooner than this after connecting is flapping (typically two daemons
#: sharing a client id, pushing each other off): reported once, and the backoff keeps growing.
STABLE_AFTER_S = 10.0

#: Why a connection ended when nothing more is known: the socket simply closed (a broker that
#: stops, restarts or drops us without an MQTT 5 DISCONNECT, a cable or Wi-Fi gone).
CLOSED = "connection closed by the broker or the network"


def why_disconnected(from_broker: bool, name: str, cfg: Config) -> str:
    """The reason for a lost connection, from paho's disconnect reason code's name."""
    if from_broker:  # an MQTT 5 DISCONNECT: the broker says why
        return f"the broker disconnected us: {name}"
    if name == "Keep alive timeout":
        return (f"the broker stopped answering (no reply to a keep-alive ping; "
                f"mqtt.keepalive_s = {cfg.mqtt.keepalive_s})")
    if name == "Protocol error":
        return "the broker sent something that is not valid MQTT"
    return CLOSED  # paho's "Unspecified error" for a socket that closed or failed


@dataclass(frozen=True)
class Topics:
    availability: str
    event: str
    state: str
    stats: str

    @classmethod
    def for_config(cls, cfg: Config) -> Topics:
        root = cfg.topic_root
        return cls(f"{root}/availability", f"{root}/event", f"{root}/state", f"{root}/stats")


class Publisher:
    """Publishes gesture events, state and stats; survives broker outages.

    `publish_event`, `publish_state` and `publish_stats` may be called from any one thread (the
    frame loop) and return at once; `start` and `stop` from the owner.
    """

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.monotonic):
        """Raises errors.StartupError naming the setting when a password file or certificate
        cannot be used; everything about the broker itself is retried instead.

        `clock` (monotonic seconds) dates queued messages and decides when they are too old to
        send; a test passes its own to make those ages exact."""
        self.cfg = cfg
        self._clock = clock
        m = cfg.mqtt
        self.topics = Topics.for_config(cfg)
        self._creds = Credentials.resolve(cfg)
        self._actions: dict[str, list] = {}
        for action in m.actions:
            self._actions.setdefault(action.gesture, []).append(action)
        #: Changes every start, so a subscriber can de-duplicate on (run_id, sequence).
        self.run_id = secrets.token_hex(4)
        self._outbox = Outbox(m.outbox_size, m.max_age_s)
        self._seq = itertools.count(1)
        self._v5 = m.protocol == "5"

        self._state: tuple[dict, float] = ({}, time.time())
        self._state_dirty = True
        self._stats: tuple[dict, float] | None = None

        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False

        self._stopping = threading.Event()
        self._stop_deadline = 0.0
        self._thread: threading.Thread | None = None

        # Network-thread state.
        self._connected = False
        self._unacked: dict[int, Pending] = {}
        self._offline_mid: int | None = None
        self._connack_error: tuple[str, str] | None = None
        self._ever_connected = False
        self._down_since: float | None = None
        self._logged_reason: str | None = None
        self._stale_at_loss = 0
        self._connected_this_time = False
        self._rejected_topics: set[str] = set()
        self._disconnect_reason: str | None = None  # as the broker gave it (MQTT 5)
        self._up_since = 0.0
        self._ever_lost = False
        self._flapping = False  # reported; quiet until a connection holds

        self.sent = 0  # events and actions handed to the broker
        self.acked = 0  # of those, acknowledged (QoS 1/2)
        self.rejected = 0  # acknowledged with an error reason (MQTT 5, e.g. ACL)
        self.connects = 0

    # ------------------------------------------------------------------ frame-loop side

    @property
    def connected(self) -> bool:
        return self._connected

    def publish_event(self, ev: Any) -> int:
        """Queue one gesture event (a decide.GestureEvent); returns its sequence number."""
        now = self._clock()
        wall = ev.wall if ev.wall > 0 else time.time()
        seq = next(self._seq)
        render = functools.partial(self.event_json, ev, seq, wall)
        self._outbox.put(Pending("event", now, self.topics.event, self.cfg.mqtt.qos, False, render))
        for action in self._actions.get(ev.gesture, ()):
            if action.hand in ("any", ev.hand):
                self._outbox.put(Pending("action", now, action.topic, action.qos, action.retain,
                                         action.payload.encode))
        self._poke()
        return seq

    def event_json(self, ev: Any, sequence: int, wall: float | None = None) -> bytes:
        """Event `sequence`'s MQTT payload (rendered on the publisher's thread when sent); the
        live page shows these same bytes."""
        if wall is None:
            wall = ev.wall if ev.wall > 0 else time.time()
        return payloads.event_payload(ev, device_id=self.cfg.device_id, run_id=self.run_id,
                                      sequence=sequence, wall=wall)

    def publish_state(self, state: dict[str, str | None]) -> None:
        """The active gesture per hand; retained, and re-published on every reconnect."""
        self._state = (dict(state), time.time())
        self._state_dirty = True
        self._poke()

    def publish_stats(self, stats: dict[str, Any]) -> None:
        """Periodic figures; dropped while the broker is away (old figures are worth nothing)."""
        if self._connected:
            self._stats = (dict(stats), time.time())
            self._poke()

    def counters(self) -> dict[str, int | bool]:
        return {
            "connected": self._connected,
            "outbox": len(self._outbox),
            "sent": self.sent,
            "acked": self.acked,
            "rejected": self.rejected,
            "dropped_stale": self._outbox.dropped_stale,
            "dropped_full": self._outbox.dropped_full,
            "connects": self.connects,
        }

    def _poke(self) -> None:
        # One byte per wake-up, not per message, so a burst costs the frame loop one send();
        # `_drain_wakeups` explains why no wake-up is lost.
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._wake_w.send(b"\0")
            except (BlockingIOError, OSError):
                pass

    # ------------------------------------------------------------------ owner side

    def start(self) -> Publisher:
        if self._thread is not None:
            raise RuntimeError("Publisher already started")
        if self.cfg.mqtt.tls.enabled and self.cfg.mqtt.tls.insecure_skip_verify:
            log.warning("MQTT TLS CERTIFICATE CHECKS ARE OFF",
                        setting="mqtt.tls.insecure_skip_verify = true",
                        risk="anyone on the network can pose as the broker and read the "
                             "credentials; use mqtt.tls.ca_file instead")
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        """Send what is still fresh, publish `offline`, disconnect; at most `timeout` seconds."""
        if self._thread is None:
            return
        self._stop_deadline = time.monotonic() + max(0.1, timeout - 0.2)
        self._stopping.set()
        self._wake_pending = False
        self._poke()
        self._thread.join(timeout)
        self._thread = None
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ network thread

    def _run(self) -> None:
        m = self.cfg.mqtt
        attempt = 0
        while not self._stopping.is_set():
            client = make_client(self.cfg, self._creds, will_topic=self.topics.availability)
            client.on_connect = self._on_connect
            client.on_publish = self._on_publish
            client.on_message = self._on_message
            client.on_disconnect = self._on_disconnect
            self._connack_error = None
            try:
                client.connect(m.host, m.port, keepalive=m.keepalive_s)
            except Exception as exc:  # noqa: BLE001 - every failure is reported and retried
                self._connect_failed(*describe_exception(exc, self.cfg))
            else:
                self._serve(client)
                # Only a connection that held counts as success: one that drops at once (another
                # client with our id, say) keeps the backoff growing instead of a tight loop.
                if self._connected_this_time and \
                        time.monotonic() - self._up_since >= STABLE_AFTER_S:
                    attempt = 0
            if self._stopping.is_set():
                break
            ceiling = min(m.reconnect_max_s, m.reconnect_min_s * 2 ** attempt)
            attempt += 1
            # Full jitter keeps a fleet of devices from reconnecting in lock step.
            delay = random.uniform(ceiling / 2, ceiling)
            self._stopping.wait(delay)
            self._outbox.expire(self._clock())

    def _serve(self, client: mqtt.Client) -> None:
        """Run one connection until it is lost, refused, or closed by stop()."""
        self._connected_this_time = False
        self._disconnect_reason = None
        connack_deadline = time.monotonic() + max(5.0, client.connect_timeout)
        offline_sent = False
        while True:
            if self._stopping.is_set():
                if not self._connected:
                    break
                # Stopping: what is still fresh goes out first, then `offline`, then DISCONNECT
                # (a clean disconnect does not fire the will, so `offline` is sent by hand).
                self._pump(client)
                overdue = time.monotonic() > self._stop_deadline
                if not offline_sent and (overdue or not (len(self._outbox) or self._unacked)):
                    info = client.publish(self.topics.availability, "offline", qos=1,
                                          retain=True)
                    self._offline_mid = info.mid
                    offline_sent = True
                if offline_sent and (self._offline_mid is None or overdue):
                    client.disconnect()
                    break
            if not self._connected and self._connack_error is None \
                    and time.monotonic() > connack_deadline:
                self._connack_error = ("no_connack", (
                    f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port} accepted the connection but did "
                    "not answer the MQTT CONNECT; is mqtt.port an MQTT listener (TLS?)"))
                break
            sock = client.socket()
            if sock is None:
                break
            # TLS may hold decrypted bytes select() cannot see.
            tls_pending = bool(getattr(sock, "pending", lambda: 0)())
            more = self._connected and len(self._outbox) and len(self._unacked) < INFLIGHT_WINDOW
            timeout = 0.0 if more or tls_pending else 0.5
            wlist = [sock] if client.want_write() else []
            try:
                readable, _, _ = select.select([sock, self._wake_r], wlist, [], timeout)
            except (OSError, ValueError):
                break
            if self._wake_r in readable:
                self._drain_wakeups()
            if sock in readable or tls_pending:
                if client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                    break
            if self._connected:
                self._pump(client)
                if self._flapping and time.monotonic() - self._up_since >= STABLE_AFTER_S:
                    self._flapping = False
                    log.info("mqtt connection stable again")
            if client.want_write() and client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                break
            if client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                break
        self._connection_ended(client)

    def _drain_wakeups(self) -> None:
        """Empty the wake-up socket and let the next poke write again; the pass that follows
        sends whatever was queued before the flag was cleared."""
        # Drain first, then clear. A poke landing before the clear finds the flag still set and
        # writes nothing, but its message is already queued and this pass sends it; a poke after
        # the clear writes a byte that stays for the next select(). Clearing first would let the
        # drain swallow the byte of a poke landing in between, leaving the flag set with nothing
        # to read: no later poke would write again and every event would wait for select()'s
        # timeout. (Always writing would also be correct, but costs the frame loop a send() per
        # message and can fill the socket during a burst.)
        try:
            self._wake_r.recv(4096)
        except (BlockingIOError, OSError):
            pass
        self._wake_pending = False

    def _pump(self, client: mqtt.Client) -> None:
        """Hand paho what is due: state, stats, and events up to the in-flight window."""
        if self._state_dirty:
            self._state_dirty = False
            state, wall = self._state
            client.publish(self.topics.state,
                           payloads.state_payload(state, device_id=self.cfg.device_id, wall=wall),
                           qos=1, retain=True)
        if self._stats is not None:
            stats, wall = self._stats
            self._stats = None
            client.publish(self.topics.stats, payloads.stats_payload(
                stats, self.counters(), device_id=self.cfg.device_id, wall=wall), qos=0)
        room = min(PUMP_BATCH, INFLIGHT_WINDOW - len(self._unacked))
        if room <= 0 or not len(self._outbox):
            return
        now = self._clock()
        for p in self._outbox.take(now, room):
            if p.payload is None:
                p.payload = p.render()
            props = None
            if self._v5:
                props = Properties(PacketTypes.PUBLISH)
                # Whole seconds only; rounding up never lets the broker keep it much past max age.
                left = self.cfg.mqtt.max_age_s - (now - p.created)
                props.MessageExpiryInterval = max(1, math.ceil(left))
            info = client.publish(p.topic, p.payload, qos=p.qos, retain=p.retain,
                                  properties=props)
            self.sent += 1
            if p.qos > 0:
                self._unacked[info.mid] = p

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._connack_error = describe_connack(reason, self.cfg)
            return
        self.connects += 1
        self._connected = True
        self._connected_this_time = True
        disc = self.cfg.mqtt.discovery
        if disc.enabled:
            client.subscribe(disc.status_topic, qos=1)
        self._announce(client)
        stale = self._outbox.dropped_stale - self._stale_at_loss
        self._up_since = time.monotonic()
        if self._flapping:
            log.debug("mqtt reconnected", dropped_stale=stale)
        elif not self._ever_connected:
            log.info("mqtt connected", broker=f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}",
                     protocol=self.cfg.mqtt.protocol)
        else:
            log.info("mqtt broker back", down_s=round(time.monotonic() - self._down_since, 1),
                     waiting=len(self._outbox), dropped_stale=stale)
        self._ever_connected = True
        self._down_since = None
        self._logged_reason = None

    def _announce(self, client: mqtt.Client) -> None:
        """Discovery first, so Home Assistant already knows the entities when the retained
        availability and state arrive."""
        if self.cfg.mqtt.discovery.enabled:
            client.publish(discovery_topic(self.cfg), discovery_message(self.cfg, self.topics),
                           qos=1, retain=True)
        client.publish(self.topics.availability, "online", qos=1, retain=True)
        self._state_dirty = True

    def _on_message(self, client, userdata, msg) -> None:
        disc = self.cfg.mqtt.discovery
        if disc.enabled and msg.topic == disc.status_topic and is_birth(msg):
            log.info("home assistant is online; announcing the device again")
            self._announce(client)

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self._disconnect_reason = why_disconnected(flags.is_disconnect_packet_from_server,
                                                   reason.getName(), self.cfg)

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        if mid == self._offline_mid:
            self._offline_mid = None
            return
        p = self._unacked.pop(mid, None)
        if p is None:
            return
        self.acked += 1
        if reason.is_failure:
            self.rejected += 1
            if p.topic not in self._rejected_topics:
                self._rejected_topics.add(p.topic)
                log.warning("mqtt broker refused a message", topic=p.topic,
                            reason=reason.getName(),
                            hint="check the broker's access rules for mqtt.username")

    def _connection_ended(self, client: mqtt.Client) -> None:
        was_connected = self._connected
        self._connected = False
        client.on_connect = client.on_publish = None
        try:
            client.socket() and client.socket().close()  # type: ignore[union-attr]
        except OSError:
            pass
        # Unacknowledged events go back to the front of the outbox; the age limit decides at the
        # next connection whether they are still worth sending.
        if self._unacked:
            self._outbox.requeue(list(self._unacked.values()))
            self._unacked.clear()
        self._offline_mid = None
        if self._stopping.is_set():
            return
        if not was_connected:
            self._connect_failed(*(self._connack_error or describe_silent_close(self.cfg)))
            return
        lasted = time.monotonic() - self._up_since
        flap = lasted < STABLE_AFTER_S and self._ever_lost
        self._ever_lost = True
        self._down_since = time.monotonic()
        self._stale_at_loss = self._outbox.dropped_stale
        self._logged_reason = "lost"
        if not flap:
            self._flapping = False
            log.warning("mqtt broker lost", broker=f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}",
                        reason=self._disconnect_reason or CLOSED,
                        action="keeps running; events wait up to mqtt.max_age_s")
        elif not self._flapping:
            self._flapping = True
            log.warning("mqtt connection keeps dropping right after connecting",
                        lasted_s=round(lasted, 1), reason=self._disconnect_reason or CLOSED,
                        client_id=client_id(self.cfg),
                        hint="another client uses this client id (two daemons with one "
                             "device_id? set device_id or mqtt.client_id), or see the "
                             "broker's log")

    def _connect_failed(self, category: str, message: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._stale_at_loss = self._outbox.dropped_stale
        # Once per outage for "broker not there"; again whenever the cause changes to something
        # the user has to fix (credentials, certificates, names).
        quiet = self._logged_reason is not None and (
            category in TRANSIENT or category == self._logged_reason)
        if quiet:
            log.debug("mqtt connect failed", reason=message)
            return
        self._logged_reason = category
        log.warning("mqtt connect failed", reason=message, retrying=True)
