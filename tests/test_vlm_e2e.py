"""The daemon end to end with a VLM bundle loaded: events flow with the VLM answering, and still
flow (landmarks only, the outage logged once) when the VLM cannot run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.logs import json_log_lines
from tests.mqtt_recorder import Recorder
from tests.test_e2e import (  # noqa: F401 - the video fixtures are shared
    LABELS,
    clear_photos,
    events_of,
    gesture_video,
    start_daemon,
)

pytestmark = [pytest.mark.e2e, pytest.mark.export]


def write_config(tmp_path: Path, port: int, video: Path, bundle: Path, *, device_id: str = "e2e",
                 tables: str = "", **vlm) -> Path:
    """`vlm` settings go in [vlm]; `tables` (TOML text) after it."""
    extra = "\n".join(f"{k} = {json.dumps(v)}" for k, v in vlm.items())
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
device_id = "{device_id}"
[capture]
source = "{video}"
realtime = true
at_end = "stop"
[mqtt]
host = "127.0.0.1"
port = {port}
stats_interval_s = 1.0
[logging]
format = "json"
level = "info"
[service]
cache_dir = "{tmp_path / 'cache'}"
[vlm]
enabled = true
bundle = "{bundle}"
max_rate_hz = 5.0
backoff_initial_s = 0.5
backoff_max_s = 1.0
{extra}
{tables}
""")
    return cfg


def run(tmp_path, broker, video, bundle, **vlm):
    sub = Recorder(broker.port, "edge_gesture/e2e/#")
    proc = start_daemon(write_config(tmp_path, broker.port, video, bundle, **vlm))
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)
    sub.close()
    assert proc.returncode == 0, err[-3000:]
    lines = json_log_lines(err)
    return sub, lines, err


def test_events_flow_with_the_vlm_answering(tmp_path, broker, gesture_video,  # noqa: F811
                                             tiny_ov_bundle):
    sub, lines, err = run(tmp_path, broker, gesture_video, tiny_ov_bundle)
    events = events_of(sub)
    # assist mode with landmark gestures only: landmarks still decide, the VLM may agree.
    assert [e["gesture"] for e in events] == LABELS, err[-3000:]
    assert {e["source"] for e in events} <= {"landmarks", "both"}
    ready = [x for x in lines if x.get("event") == "vlm ready"]
    assert len(ready) == 1 and ready[0]["devices"] == {"vision": "CPU", "language": "CPU"}
    vlm = [m.json()["vlm"] for m in sub.on("/stats")]
    assert vlm and vlm[-1]["state"] == "ok" and vlm[-1]["decisions"] >= 5, vlm[-1:]
    assert vlm[-1]["failures"] == 0
    assert [m.json()["vlm_latency_ms"] for m in sub.on("/stats")][-1] > 0
    # ~250 frames, at most 5 decisions a second: the VLM never ran per frame.
    assert vlm[-1]["decisions"] <= 5 * 20


def test_events_still_flow_when_the_vlm_cannot_run(tmp_path, broker, gesture_video,  # noqa: F811
                                                    tiny_ov_bundle):
    sub, lines, err = run(tmp_path, broker, gesture_video, tiny_ov_bundle, device="NPU",
                          fusion="confirm")
    events = events_of(sub)
    # confirm mode would hold landmark gestures for the VLM; with the VLM down they pass.
    assert [e["gesture"] for e in events] == LABELS, err[-3000:]
    assert {e["source"] for e in events} == {"landmarks"}
    vlm = [m.json()["vlm"] for m in sub.on("/stats")]
    assert vlm[-1]["state"] == "failed" and "available: CPU" in vlm[-1]["error"]
    assert vlm[-1]["failures"] >= 3  # it kept retrying
    down = [x for x in lines if x.get("event", "").startswith("vlm unavailable")]
    assert len(down) == 1, down  # logged once, not per retry or per frame
    assert "'NPU' is not present" in down[0]["error"]
