"""Building a paho client from the config, and turning connection failures into sentences that
name the setting to fix."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge_gesture.config import Config
from edge_gesture.publish.security import resolve_password, tls_context

CONNECT_TIMEOUT_S = 5.0
# X509_V_ERR_HOSTNAME_MISMATCH, _EMAIL_MISMATCH, _IP_ADDRESS_MISMATCH
X509_NAME_MISMATCH = frozenset({62, 63, 64})

#: Failures that say the broker is simply not there (yet); worth retrying quietly.
TRANSIENT = frozenset({"refused", "timeout", "reset", "unreachable", "lost", "no_connack",
                       "unavailable"})


def client_id(cfg: Config) -> str:
    return cfg.mqtt.client_id or f"edge-gesture-{cfg.device_id}"


@dataclass(frozen=True)
class Credentials:
    """What a connection needs beyond the config, resolved once at start (files, environment)."""

    password: str | None
    tls: ssl.SSLContext | None

    @classmethod
    def resolve(cls, cfg: Config) -> Credentials:
        return cls(resolve_password(cfg.mqtt), tls_context(cfg.mqtt))

    def __repr__(self) -> str:  # never show the password, even in a traceback
        return f"Credentials(password={'***' if self.password else None}, tls={bool(self.tls)})"


def make_client(cfg: Config, creds: Credentials, *, will_topic: str | None,
                client_id_suffix: str = "") -> mqtt.Client:
    m = cfg.mqtt
    v5 = m.protocol == "5"
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id(cfg) + client_id_suffix,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        # A fresh session per connection: what was in flight is ours to resend or drop by age.
        clean_session=None if v5 else True,
        reconnect_on_failure=False,
    )
    client.connect_timeout = CONNECT_TIMEOUT_S
    if will_topic:
        client.will_set(will_topic, "offline", qos=1, retain=True)
    if m.username:
        client.username_pw_set(m.username, creds.password)
    if creds.tls is not None:
        client.tls_set_context(creds.tls)
    return client


def describe_exception(exc: BaseException, cfg: Config) -> tuple[str, str]:
    """(category, message) for an exception raised while connecting."""
    m = cfg.mqtt
    where = f"{m.host}:{m.port} (mqtt.host, mqtt.port)"
    if isinstance(exc, socket.gaierror):
        return "dns", f"cannot resolve mqtt.host {m.host!r}: {exc.strerror}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in X509_NAME_MISMATCH:
            return "tls_verify", (
                f"TLS: the broker's certificate does not name mqtt.host {m.host!r} "
                f"({exc.verify_message}); connect by a name the certificate carries"
            )
        trusted_by = (f"the CA in mqtt.tls.ca_file {m.tls.ca_file}" if m.tls.ca_file
                      else "the system's CAs (set mqtt.tls.ca_file)")
        return "tls_verify", (
            f"TLS: the broker at {m.host}:{m.port} presented a certificate not trusted by "
            f"{trusted_by}: {exc.verify_message}"
        )
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if reason in ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING") or isinstance(
                exc, ssl.SSLEOFError):
            return "tls", f"{where} is not a TLS listener; check mqtt.tls.enabled and mqtt.port"
        if "CERTIFICATE_REQUIRED" in reason.upper():
            return "tls", (f"the broker at {where} wants a client certificate: set "
                           "mqtt.tls.cert_file and mqtt.tls.key_file")
        return "tls", f"TLS handshake with {where} failed: {reason} (mqtt.tls.*)"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", f"nothing accepts connections at {where}; is the broker running?"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout", f"no answer from {where} within {CONNECT_TIMEOUT_S:.0f} s"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        if m.tls.enabled:
            return "tls", (f"{where} hung up during the TLS handshake: it is probably not a TLS "
                           "listener; check mqtt.tls.enabled and mqtt.port")
        return "reset", f"{where} closed the connection while connecting"
    if isinstance(exc, OSError):
        return "unreachable", f"cannot reach {where}: {exc.strerror or exc}"
    return "error", f"cannot connect to {where}: {type(exc).__name__}: {exc}"


def describe_silent_close(cfg: Config) -> tuple[str, str]:
    """The broker hung up after CONNECT without a CONNACK."""
    m = cfg.mqtt
    if not m.tls.enabled:
        hint = "is it a TLS listener? then set mqtt.tls.enabled = true"
    elif not m.tls.cert_file:
        hint = ("does the broker require a client certificate (mqtt.tls.cert_file, "
                "mqtt.tls.key_file)? Else see the broker's log")
    else:
        hint = "the broker may not accept mqtt.tls.cert_file; see the broker's log"
    return "closed", (f"{m.host}:{m.port} closed the connection without answering the MQTT "
                      f"CONNECT; {hint}")


def describe_connack(reason: ReasonCode, cfg: Config) -> tuple[str, str]:
    """(category, message) for a broker that answered CONNECT with a refusal."""
    name = reason.getName()
    if name == "Bad user name or password":
        return "auth", "the broker refused mqtt.username / password: bad user name or password"
    if name == "Not authorized":
        return "auth", (
            "the broker refused mqtt.username / password: not authorized (a wrong password, "
            "an unknown user, or a user the broker does not let connect)"
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
