"""The public contract: payloads valid against the shipped JSON Schemas, and Home Assistant
device discovery with the keys Home Assistant documents, re-announced on its birth message."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import paho.mqtt.publish as mqtt_publish
import pytest

from edge_gesture.config import parse_config
from edge_gesture.decide import GestureEvent
from edge_gesture.publish import Publisher
from tests.mqtt_recorder import Recorder, wait_until

SCHEMAS = Path(__file__).resolve().parent.parent / "edge_gesture" / "schemas"
ROOT = "edge_gesture/hall"
DISCOVERY = "homeassistant/device/hall/config"

# From Home Assistant's MQTT documentation (integrations/mqtt, event.mqtt, sensor.mqtt).
HA_SHARED = {"device", "origin", "components", "availability", "availability_topic",
             "availability_mode", "availability_template", "payload_available",
             "payload_not_available", "command_topic", "state_topic", "qos", "encoding"}
HA_DEVICE = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer",
             "model", "model_id", "name", "serial_number", "suggested_area", "sw_version",
             "via_device"}
HA_ORIGIN = {"name", "sw_version", "support_url"}
HA_ENTITY_COMMON = {"platform", "unique_id", "name", "icon", "object_id", "enabled_by_default",
                    "entity_category", "encoding", "qos", "availability", "availability_mode",
                    "availability_template", "availability_topic", "payload_available",
                    "payload_not_available", "json_attributes_template",
                    "json_attributes_topic", "device_class", "state_topic", "value_template"}
HA_EVENT = HA_ENTITY_COMMON | {"event_types"}
HA_SENSOR = HA_ENTITY_COMMON | {"entity_picture", "expire_after", "force_update",
                                "last_reset_value_template", "options", "state_class",
                                "suggested_display_precision", "unit_of_measurement"}
HA_REQUIRED = {"event": {"platform", "unique_id", "state_topic", "event_types"},
               "sensor": {"platform", "unique_id", "state_topic"}}


def make_cfg(port: int, **mqtt):
    base = {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.3}
    return parse_config({"device_id": "hall",
                         "gestures": {"enabled": ["thumbs_up", "fist", "victory"]},
                         "mqtt": base | mqtt})


def validator(name):
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_real_payloads_match_the_json_schemas(broker):
    rec = Recorder(broker.port, f"{ROOT}/#")
    pub = Publisher(make_cfg(broker.port)).start()
    try:
        wait_until(lambda: pub.connected, what="connect")
        rec.wait_count("/state", 1)  # the state at connect, before it can fold into the next
        for i, (g, hand, src) in enumerate([("thumbs_up", "right", "landmarks"),
                                            ("fist", "left", "vlm"),
                                            ("victory", "right", "both")]):
            pub.publish_event(GestureEvent(g, 0.5 + i / 10, src, hand, time.monotonic(),
                                           time.time()))
        pub.publish_state({"left": "fist", "right": None})
        events = rec.wait_count("/event", 3)
        states = rec.wait_count("/state", 2)
    finally:
        pub.stop()
        rec.close()
    event_schema, state_schema = validator("event"), validator("state")
    for m in events:
        event_schema.validate(m.json())
    for m in states:
        state_schema.validate(m.json())
    assert [m.json()["event_type"] for m in events] == ["thumbs_up", "fist", "victory"]

    # The schema has teeth: it refuses what a subscriber could not rely on.
    good = events[0].json()
    for broken in ({k: v for k, v in good.items() if k != "sequence"},
                   good | {"hand": "middle"},
                   good | {"confidence": 1.5},
                   good | {"timestamp": "yesterday"},
                   good | {"schema_version": 2}):
        assert not event_schema.is_valid(broken), broken


def check_documented(payload: dict) -> None:
    unknown = set(payload) - HA_SHARED
    assert not unknown, f"root keys Home Assistant does not document: {unknown}"
    assert set(payload["device"]) <= HA_DEVICE and payload["device"]["identifiers"]
    assert set(payload["origin"]) <= HA_ORIGIN and payload["origin"]["name"]
    for cid, comp in payload["components"].items():
        platform = comp["platform"]
        allowed = {"event": HA_EVENT, "sensor": HA_SENSOR}[platform]
        assert set(comp) <= allowed, f"{cid}: undocumented keys {set(comp) - allowed}"
        missing = HA_REQUIRED[platform] - set(comp)
        assert not missing, f"{cid}: missing required {missing}"


def test_discovery_payload_and_reannounce_on_home_assistant_birth(broker):
    rec = Recorder(broker.port, ["homeassistant/#", f"{ROOT}/#"])
    pub = Publisher(make_cfg(broker.port)).start()
    try:
        first = rec.wait_count(DISCOVERY, 1)[0]
        payload = first.json()
        check_documented(payload)

        comps = payload["components"]
        assert comps["gesture"]["platform"] == "event"
        assert comps["gesture"]["event_types"] == ["thumbs_up", "fist", "victory"]
        assert comps["gesture"]["state_topic"] == f"{ROOT}/event"
        assert {c["platform"] for c in comps.values()} == {"event", "sensor"}
        assert {"fps", "vlm_latency", "status"} <= set(comps)
        assert comps["fps"]["state_topic"] == comps["status"]["state_topic"] == f"{ROOT}/stats"
        assert comps["vlm_latency"]["unit_of_measurement"] == "ms"
        # One device, one availability topic for all of it.
        assert payload["availability_topic"] == f"{ROOT}/availability"
        assert len({c["unique_id"] for c in comps.values()}) == len(comps)

        # Home Assistant restarting says "online" on its status topic: the device re-announces.
        mqtt_publish.single("homeassistant/status", "offline", hostname="127.0.0.1",
                            port=broker.port)
        time.sleep(0.5)
        assert len(rec.on(DISCOVERY)) == 1, "only 'online' asks for an announcement"
        mqtt_publish.single("homeassistant/status", "online", hostname="127.0.0.1",
                            port=broker.port)
        again = rec.wait_count(DISCOVERY, 2)[1]
        assert again.json() == payload
    finally:
        pub.stop()
        rec.close()

    # Retained: a Home Assistant that connects later still finds the device.
    late = Recorder(broker.port, DISCOVERY)
    try:
        late_msg = late.wait_count(DISCOVERY, 1)[0]
        assert late_msg.retain and late_msg.json() == payload
    finally:
        late.close()


def test_sensor_templates_render_against_real_payloads(broker):
    jinja2 = pytest.importorskip("jinja2", reason="jinja2 renders Home Assistant templates")
    rec = Recorder(broker.port, ["homeassistant/#", f"{ROOT}/#"])
    pub = Publisher(make_cfg(broker.port)).start()
    try:
        comps = rec.wait_count(DISCOVERY, 1)[0].json()["components"]
        rec.wait_count("/state", 1)  # the state at connect, before it can fold into the next
        pub.publish_state({"left": "fist"})
        pub.publish_stats({"fps_processed": 29.7, "vlm_latency_ms": 512.0, "status": "ok"})
        stats = rec.wait_count("/stats", 1)[0].json()
        state = rec.wait_count("/state", 2)[-1].json()
    finally:
        pub.stop()
        rec.close()
    env = jinja2.Environment()

    def render(cid, body):
        return env.from_string(comps[cid]["value_template"]).render(value_json=body)

    assert render("fps", stats) == "29.7"
    assert render("vlm_latency", stats) == "512.0"
    assert render("status", stats) == "ok"
    assert render("left_hand", state) == "fist" and render("right_hand", state) == "none"


def test_discovery_can_be_turned_off_and_prefix_changed(broker):
    rec = Recorder(broker.port, ["homeassistant/#", "ha-test/#"])
    pub = Publisher(make_cfg(broker.port, discovery={"enabled": False})).start()
    try:
        wait_until(lambda: pub.connected, what="connect")
        time.sleep(0.3)
        assert not rec.messages
    finally:
        pub.stop()
    pub = Publisher(make_cfg(broker.port, discovery={"prefix": "ha-test",
                                                     "status_topic": "ha-test/status"})).start()
    try:
        rec.wait_count("ha-test/device/hall/config", 1)
        mqtt_publish.single("ha-test/status", "online", hostname="127.0.0.1", port=broker.port)
        rec.wait_count("ha-test/device/hall/config", 2)
        assert not rec.on(DISCOVERY)
    finally:
        pub.stop()
        rec.close()


def write_config(tmp_path, port) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(f'device_id = "hall"\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\n')
    return p


def test_discovery_remove_cli_clears_the_device(broker, tmp_path):
    pub = Publisher(make_cfg(broker.port)).start()
    wait_until(lambda: pub.connected, what="connect")
    pub.stop()
    before = Recorder(broker.port, DISCOVERY)
    before.wait_count(DISCOVERY, 1)
    before.close()

    cfg = write_config(tmp_path, broker.port)
    out = subprocess.run([sys.executable, "-m", "edge_gesture", "discovery", "--remove",
                          "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert DISCOVERY in out.stdout

    after = Recorder(broker.port, DISCOVERY)
    time.sleep(0.5)
    after.close()
    assert not after.messages, "the retained announcement is still there"


def test_discovery_remove_cli_with_no_broker_names_the_setting(tmp_path):
    from tests.mosquitto import free_port

    cfg = write_config(tmp_path, free_port())
    out = subprocess.run([sys.executable, "-m", "edge_gesture", "discovery", "--remove",
                          "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "mqtt.host, mqtt.port" in out.stderr and "Traceback" not in out.stderr
