"""The health endpoint and metrics: a real HTTP server on a free loopback port, real scrapes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_gesture.config import WebConfig
from edge_gesture.health import PipelineView, problems
from edge_gesture.metrics import Metrics
from edge_gesture.stats import PipelineStats
from edge_gesture.web import LiveFeed, WebServer


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def view(**kw) -> PipelineView:
    base = dict(now=100.0, last_frame_at=99.9, started_at=90.0, source_connected=True,
                source_ended=False, source_error=None, publisher_connected=True,
                stale_after_s=5.0)
    base.update(kw)
    return PipelineView(**base)


def test_healthy_when_frames_flow_and_broker_connected():
    assert problems(view()) == []
    assert problems(view(vlm_state="ok")) == []  # the VLM answering is no news either


@pytest.mark.parametrize("kw, expected", [
    ({"last_frame_at": 94.0}, "no frame processed for 6.0 s"),
    ({"last_frame_at": 94.0, "source_connected": False}, "source not connected"),
    ({"last_frame_at": None}, "no frame processed yet (10.0 s since start)"),
    ({"source_ended": True}, "video source ended"),
    ({"source_error": "OSError: gone"}, "video source failed: OSError: gone"),
    ({"publisher_connected": False}, "MQTT broker not connected"),
    # Frames came a moment ago, but the source dropped and is being reopened.
    ({"source_connected": False}, "video source lost; reopening"),
    # The daemon runs on landmarks alone: custom gestures and "confirm" fusion are off.
    ({"vlm_state": "failed", "vlm_error": "cannot load the VLM: /x: not a directory"},
     "VLM failed, landmarks only: cannot load the VLM: /x: not a directory"),
    ({"vlm_state": "slow"}, "VLM slower than vlm.timeout_s, landmarks only"),
    ({"vlm_state": "loading"}, "VLM still loading, landmarks only"),
])
def test_each_problem_is_named(kw, expected):
    found = problems(view(**kw))
    assert len(found) == 1 and expected in found[0]


def test_both_problems_reported_together():
    assert problems(view(source_ended=True, publisher_connected=False)) == [
        "video source ended", "MQTT broker not connected"]


def web_server(check, metrics) -> WebServer:
    return WebServer(WebConfig(enabled=True, port=0), LiveFeed(), check, metrics).start()


@pytest.fixture
def served():
    state = {"reasons": []}
    metrics = Metrics()
    server = web_server(lambda: list(state["reasons"]), metrics.exposition)
    yield f"http://127.0.0.1:{server.port}", state, metrics
    server.stop()


@pytest.fixture
def served_figures():
    """/metrics over the figures of a daemon whose capture has read 120 frames, dropped 7."""
    read, dropped = [120], [7]
    stats = PipelineStats(frames_read=lambda: read[0], frames_dropped=lambda: dropped[0])
    metrics = Metrics(stats)
    server = web_server(lambda: [], metrics.exposition)
    yield f"http://127.0.0.1:{server.port}", stats, metrics, read, dropped
    server.stop()


def test_healthz_flips_between_200_and_503_with_reasons(served):
    url, state, _ = served
    code, ctype, body = get(url + "/healthz")
    assert (code, body) == (200, "ok\n")
    state["reasons"] = ["video source ended", "MQTT broker not connected"]
    code, _, body = get(url + "/healthz")
    assert code == 503
    assert body.splitlines() == ["video source ended", "MQTT broker not connected"]
    code, ctype, body = get(url + "/healthz", accept="application/json")
    assert code == 503 and ctype == "application/json"
    assert json.loads(body) == {"ok": False, "problems": state["reasons"]}


def test_a_check_that_raises_answers_503_not_a_dropped_connection():
    def broken():
        raise RuntimeError("publisher gone")

    server = web_server(broken, lambda: b"")
    try:
        code, _, body = get(f"http://127.0.0.1:{server.port}/healthz")
    finally:
        server.stop()
    assert code == 503 and "RuntimeError: publisher gone" in body


def test_unknown_path_is_404(served):
    url, _, _ = served
    assert get(url + "/nothing-here")[0] == 404


def test_metrics_parse_and_carry_the_pipeline_figures(served_figures):
    url, stats, m, read, dropped = served_figures
    m.bind(source_connected=lambda: True, mqtt_connected=lambda: False,
           mqtt_outbox=lambda: 3, mqtt_dropped=lambda: 1,
           vlm=lambda: {"state": "ok", "error": None, "decisions": 5, "failures": 2,
                        "slow": 1, "skipped_unchanged": 50, "skipped_busy": 9})
    events = [[("fist", "right", "landmarks")], [("fist", "right", "landmarks")],
              [("ok", "left", "both")], [], []]
    for fired in events:
        stats.record_frame({"hands": 0.020, "classify": 0.0004, "decide": 0.0001}, 0.031, fired)

    code, ctype, text = get(url + "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    f = families(text)

    def value(name, **labels):
        for s in f[name].samples:
            if s.name in (name, name + "_total") and s.labels == labels:
                return s.value
        raise KeyError((name, labels))

    assert value("edge_gesture_frames_read") == 120
    assert value("edge_gesture_frames_dropped") == 7
    assert value("edge_gesture_frames_processed") == 5
    assert value("edge_gesture_mqtt_connected") == 0
    assert value("edge_gesture_source_connected") == 1
    assert value("edge_gesture_mqtt_outbox_size") == 3
    assert value("edge_gesture_mqtt_events_dropped") == 1
    assert value("edge_gesture_events", gesture="fist", hand="right", source="landmarks") == 2
    assert value("edge_gesture_events", gesture="ok", hand="left", source="both") == 1
    assert value("edge_gesture_vlm_available") == 1
    assert value("edge_gesture_vlm_decisions") == 5
    assert value("edge_gesture_vlm_skips", reason="unchanged") == 50
    assert value("edge_gesture_vlm_skips", reason="busy") == 9
    assert value("edge_gesture_vlm_failures") == 2
    assert value("edge_gesture_vlm_slow") == 1
    hist = {(s.name, s.labels.get("stage"), s.labels.get("le")): s.value
            for s in f["edge_gesture_stage_latency_seconds"].samples}
    assert hist[("edge_gesture_stage_latency_seconds_count", "hands", None)] == 5
    assert hist[("edge_gesture_stage_latency_seconds_bucket", "hands", "0.02")] == 5
    assert hist[("edge_gesture_stage_latency_seconds_bucket", "hands", "0.01")] == 0
    e2e = {s.labels.get("le"): s.value for s in f["edge_gesture_end_to_end_latency_seconds"].samples
           if s.name.endswith("_bucket")}
    assert e2e["0.035"] == 5 and e2e["0.02"] == 0

    # Live values are read at scrape time, not copied at bind time.
    read[0], dropped[0] = 300, 9
    f = families(get(url + "/metrics")[2])
    assert value("edge_gesture_frames_read") == 300


def test_two_daemons_in_one_process_keep_separate_metrics():
    a, b = Metrics(), Metrics()
    a.stats.record_frame({"hands": 0.01}, 0.02, [("fist", "left", "landmarks")])
    fb = families(b.exposition().decode())
    assert not [s for s in fb["edge_gesture_events"].samples if s.name == "edge_gesture_events_total"]


def test_a_source_that_raises_at_scrape_time_is_left_out_not_fatal():
    m = Metrics()

    def gone():
        raise AttributeError("publisher torn down")

    m.bind(mqtt_connected=gone, source_connected=lambda: True)
    f = families(m.exposition().decode())
    assert "edge_gesture_mqtt_connected" not in f
    assert "edge_gesture_source_connected" in f

    # The capture's counters too: a capture torn down mid-scrape costs its line, not the scrape.
    m = Metrics(PipelineStats(frames_read=gone, frames_dropped=lambda: 2))
    f = families(m.exposition().decode())
    assert "edge_gesture_frames_read" not in f
    assert "edge_gesture_frames_dropped" in f


def test_bind_refuses_unknown_names():
    with pytest.raises(TypeError, match="frames_eaten"):
        Metrics().bind(frames_eaten=lambda: 1)

