"""Building a paho client from the config, and turning connection failures into sentences that
name the setting to fix."""

from __future__ import annotations

import socket
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge_gesture.config import Config

#: Failures that say the broker is simply not there (yet); worth retrying quietly.
TRANSIENT = frozenset({"refused", "timeout", "reset", "unreachable", "lost", "no_connack",
                       "unavailable"})


def client_id(cfg: Config) -> str:
    return cfg.mqtt.client_id or f"edge-gesture-{cfg.device_id}"


def make_client(cfg: Config, *, will_topic: str) -> mqtt.Client:
    m = cfg.mqtt
    v5 = m.protocol == "5"
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id(cfg),
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        # A fresh session per connection: what was in flight is ours to resend or drop by age.
        clean_session=None if v5 else True,
        reconnect_on_failure=False,
    )
    client.connect_timeout = 5.0
    client.will_set(will_topic, "offline", qos=1, retain=True)
    return client


def describe_exception(exc: BaseException, cfg: Config) -> tuple[str, str]:
    """(category, message) for an exception raised while connecting."""
    m = cfg.mqtt
    where = f"{m.host}:{m.port} (mqtt.host, mqtt.port)"
    if isinstance(exc, socket.gaierror):
        return "dns", f"cannot resolve mqtt.host {m.host!r}: {exc.strerror}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls_verify", f"TLS: the broker at {where} is not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return "tls", f"TLS handshake with {where} failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", f"nothing accepts connections at {where}; is the broker running?"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout", f"no answer from {where} within 5 s"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "reset", f"{where} closed the connection while connecting"
    if isinstance(exc, OSError):
        return "unreachable", f"cannot reach {where}: {exc.strerror or exc}"
    return "error", f"cannot connect to {where}: {type(exc).__name__}: {exc}"


def describe_connack(reason: ReasonCode, cfg: Config) -> tuple[str, str]:
    """(category, message) for a broker that answered CONNECT with a refusal."""
    name = reason.getName()
    if name == "Bad user name or password":
        return "auth", "the broker refused mqtt.username / password: bad user name or password"
    if name == "Not authorized":
        return "auth", (
            "the broker refused the connection: not authorized "
            "(mqtt.username / password, or the broker's access rules)"
        )
    if name == "Client identifier not valid":
        return "client_id", f"the broker rejected mqtt.client_id {client_id(cfg)!r}"
    if name == "Unsupported protocol version":
        return "protocol", (
            f"the broker does not speak MQTT {cfg.mqtt.protocol}; set mqtt.protocol = \"3.1.1\""
        )
    if name in ("Server unavailable", "Server busy"):
        return "unavailable", f"the broker is {name.lower()}"
    return "refused_connect", f"the broker refused the connection: {name}"
