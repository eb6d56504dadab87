"""Home Assistant MQTT device discovery: one device, a gesture event entity and a few sensors.

One retained message on `<prefix>/device/<object_id>/config` describes every entity (Home
Assistant's device-based discovery, 2024.11+). It is sent on every connection and again whenever
Home Assistant announces itself on its status topic; an empty retained message removes it.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import paho.mqtt.client as mqtt

from edge_gesture import __version__
from edge_gesture.config import Config
from edge_gesture.errors import StartupError
from edge_gesture.publish.connection import (
    Credentials,
    describe_connack,
    describe_exception,
    make_client,
)


def object_id(device_id: str) -> str:
    """Home Assistant allows only [a-zA-Z0-9_-] in the discovery topic's id level."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", device_id)


def discovery_topic(cfg: Config) -> str:
    return f"{cfg.mqtt.discovery.prefix}/device/{object_id(cfg.device_id)}/config"


def discovery_payload(cfg: Config, topics: Any) -> dict[str, Any]:
    """`topics` is a publisher.Topics."""
    uid = f"edge_gesture_{object_id(cfg.device_id)}"
    components: dict[str, dict[str, Any]] = {
        "gesture": {
            "platform": "event",
            "unique_id": f"{uid}_gesture",
            "name": "Gesture",
            "icon": "mdi:gesture",
            "state_topic": topics.event,
            # The event payload carries `event_type` (= gesture); its other keys (hand,
            # confidence, source, sequence...) become the event's attributes.
            "event_types": list(cfg.gestures.enabled),
        },
    }
    for hand in ("left", "right"):
        components[f"{hand}_hand"] = {
            "platform": "sensor",
            "unique_id": f"{uid}_{hand}_hand",
            "name": f"{hand.capitalize()} hand",
            "icon": f"mdi:hand-back-{hand}",
            "state_topic": topics.state,
            "value_template": f"{{{{ value_json.hands.{hand} or 'none' }}}}",
        }
    if cfg.mqtt.stats_interval_s > 0:
        diagnostic = {"platform": "sensor", "state_topic": topics.stats,
                      "entity_category": "diagnostic"}
        components["fps"] = diagnostic | {
            "unique_id": f"{uid}_fps",
            "name": "Processed frame rate",
            "icon": "mdi:speedometer",
            "value_template": "{{ value_json.fps_processed }}",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
        }
        components["vlm_latency"] = diagnostic | {
            "unique_id": f"{uid}_vlm_latency",
            "name": "VLM latency",
            "value_template": "{{ value_json.vlm_latency_ms }}",
            "unit_of_measurement": "ms",
            "device_class": "duration",
            "state_class": "measurement",
        }
        components["status"] = diagnostic | {
            "unique_id": f"{uid}_status",
            "name": "Pipeline status",
            "icon": "mdi:list-status",
            "value_template": "{{ value_json.status }}",
        }
    return {
        "device": {
            "identifiers": [uid],
            "name": cfg.mqtt.discovery.device_name or cfg.device_id,
            "manufacturer": "edge-gesture",
            "model": "Hand-gesture daemon",
            "sw_version": __version__,
        },
        "origin": {"name": "edge-gesture", "sw_version": __version__},
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": cfg.mqtt.qos,
        "components": components,
    }


def discovery_message(cfg: Config, topics: Any) -> bytes:
    return json.dumps(discovery_payload(cfg, topics), separators=(",", ":")).encode()


def remove_discovery(cfg: Config, timeout: float = 10.0) -> str:
    """Clear the retained announcement, so Home Assistant deletes the device; returns the topic.

    Uses its own client id, so a daemon running under the usual id is not pushed off the broker.
    """
    topic = discovery_topic(cfg)
    client = make_client(cfg, Credentials.resolve(cfg), will_topic=None,
                         client_id_suffix="-discovery-remove")
    answered = threading.Event()
    refusal: list[tuple[str, str]] = []

    def on_connect(c, userdata, flags, reason, properties):
        if reason.is_failure:
            refusal.append(describe_connack(reason, cfg))
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=cfg.mqtt.keepalive_s)
    except Exception as exc:  # noqa: BLE001 - reported as one line naming the setting
        raise StartupError(describe_exception(exc, cfg)[1]) from None
    client.loop_start()
    try:
        if not answered.wait(timeout):
            raise StartupError(f"{cfg.mqtt.host}:{cfg.mqtt.port} did not answer within "
                               f"{timeout:.0f} s (mqtt.host, mqtt.port)")
        if refusal:
            raise StartupError(refusal[0][1])
        info = client.publish(topic, b"", qos=1, retain=True)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            pass  # reported just below, like a timeout
        if not info.is_published():
            raise StartupError(f"the broker did not confirm the removal within {timeout:.0f} s")
        client.disconnect()
    finally:
        client.loop_stop()
    return topic


def is_birth(msg: mqtt.MQTTMessage) -> bool:
    return msg.payload.strip().lower() == b"online"
