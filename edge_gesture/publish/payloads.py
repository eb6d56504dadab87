"""The JSON bodies of the public MQTT topics (see README "MQTT topics" and schemas/)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

#: Bumped when a field of a payload changes meaning or goes away (adding one does not bump it).
SCHEMA_VERSION = 1

HANDS = ("left", "right")


def iso_utc(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds and a `Z`, the form Home Assistant and JSON Schema's
    `date-time` both accept."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def event_payload(ev: Any, *, device_id: str, run_id: str, sequence: int, wall: float) -> bytes:
    """`ev` is a decide.GestureEvent; `wall` is the epoch time of the decision."""
    return _dumps({
        "schema_version": SCHEMA_VERSION,
        "device_id": device_id,
        "run_id": run_id,
        "sequence": sequence,
        "gesture": ev.gesture,
        "event_type": ev.gesture,  # what Home Assistant's event entity reads
        "hand": ev.hand,
        "confidence": round(float(ev.confidence), 3),
        "source": ev.source,
        "timestamp": iso_utc(wall),
    })


def state_payload(state: dict[str, str | None], *, device_id: str, wall: float) -> bytes:
    # Both hands are always present so a subscriber's template never meets a missing key.
    hands = {hand: state.get(hand) for hand in HANDS}
    hands.update({h: g for h, g in state.items() if h not in hands})
    return _dumps({
        "schema_version": SCHEMA_VERSION,
        "device_id": device_id,
        "hands": hands,
        "timestamp": iso_utc(wall),
    })


def stats_payload(stats: dict[str, Any], mqtt: dict[str, Any], *, device_id: str,
                  wall: float) -> bytes:
    body = {"schema_version": SCHEMA_VERSION, "device_id": device_id, "timestamp": iso_utc(wall),
            # Home Assistant's sensors read these; null shows as "unknown" there.
            "status": "running", "fps_processed": None, "vlm_latency_ms": None}
    body.update(stats)
    body["mqtt"] = mqtt
    return _dumps(body)
