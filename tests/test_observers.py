"""The frame observers: one list fed from the frame loop, one count of the figures.

The daemon runs in this process on a video of real gesture photos (read frame by frame, so
every frame is processed) with a real mosquitto, with two observers of the test's own added:
one that records what it is told, one that raises on every call.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from edge_gesture.config import parse_config
from edge_gesture.hands.geometry import Region
from edge_gesture.metrics import Metrics
from edge_gesture.observers import FrameObserver, FrameObservers, FrameReport
from edge_gesture.stats import STAGES, PipelineStats
from tests.gesture_video import write_video
from tests.mqtt_recorder import Recorder

FPS = 15.0


class Recording(FrameObserver):
    def __init__(self, calls: list | None = None, name: str = "recording"):
        self.calls = calls if calls is not None else []
        self.name = name
        self.reports: list[FrameReport] = []
        self.closed_with: float | None = None

    def frame_done(self, report: FrameReport) -> None:
        self.calls.append((self.name, "frame_done"))
        self.reports.append(report)

    def tick(self, processed: bool) -> None:
        self.calls.append((self.name, "tick", processed))

    def close(self, timeout: float) -> None:
        self.calls.append((self.name, "close"))
        self.closed_with = timeout


class Broken(FrameObserver):
    def __init__(self):
        self.calls = 0

    def frame_done(self, report: FrameReport) -> None:
        self.calls += 1
        raise RuntimeError("page encoder gone")

    def tick(self, processed: bool) -> None:
        self.calls += 1
        raise RuntimeError("page encoder gone")

    def close(self, timeout: float) -> None:
        raise RuntimeError("page encoder gone")


def fake_report(events=()) -> FrameReport:
    return FrameReport(frame=None, hands=[], observations=[], events=list(events), state={},
                       state_changed=False, timings={s: 0.001 for s in STAGES}, end_to_end=0.01)


def test_each_turn_tells_every_observer_the_frame_then_the_tick_in_their_order():
    calls: list = []
    observers = FrameObservers([Recording(calls, "a"), Recording(calls, "b")])
    observers.feed(fake_report())
    observers.feed(None)  # a turn without a frame: ticks only
    assert calls == [("a", "frame_done"), ("b", "frame_done"), ("a", "tick", True),
                     ("b", "tick", True), ("a", "tick", False), ("b", "tick", False)]


def test_an_observer_that_raises_is_logged_once_and_the_others_carry_on():
    calls: list = []
    before, after, broken = Recording(calls, "before"), Recording(calls, "after"), Broken()
    observers = FrameObservers([before, broken, after])
    with capture_logs() as logs:
        for _ in range(50):
            observers.feed(fake_report())
        observers.close(1.0)
    assert len(before.reports) == len(after.reports) == 50
    assert calls.count(("after", "tick", True)) == 50 and ("after", "close") in calls
    assert broken.calls == 100  # still called: a passing fault does not switch it off for good
    assert observers.failures == {"Broken": 101}
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1, errors
    assert errors[0]["observer"] == "Broken" and "page encoder gone" in errors[0]["error"]


def test_close_gives_each_observer_what_is_left_of_one_timeout():
    class Slow(Recording):
        def close(self, timeout: float) -> None:
            super().close(timeout)
            threading.Event().wait(0.3)  # a writer thread finishing its queue

    first, second = Slow(), Recording()
    FrameObservers([first, second]).close(1.0)
    assert 0 < first.closed_with <= 1.0
    assert second.closed_with <= first.closed_with - 0.3  # the 0.3 s the first one took are gone


def samples(text: str) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            le = f",le={s.labels['le']}" if "le" in s.labels else ""
            out[s.name + (f"{{{labels}{le}}}" if labels or le else "")] = s.value
    return out


def test_a_scrape_during_frames_sees_one_consistent_count():
    # The frame loop records while the HTTP server's thread scrapes: every scrape must show
    # each stage's histogram, the end-to-end one and the processed frames at the same frame.
    stats = PipelineStats()
    metrics = Metrics(stats)
    stop = threading.Event()

    def frames():
        while not stop.is_set():
            stats.record_frame({s: 0.004 for s in STAGES}, 0.03, [("fist", "left", "landmarks")])

    feeder = threading.Thread(target=frames)
    feeder.start()
    try:
        for _ in range(300):
            m = samples(metrics.exposition().decode())
            n = m["edge_gesture_frames_processed_total"]
            for stage in STAGES:
                assert m.get(f"edge_gesture_stage_latency_seconds_count{{stage={stage}}}", 0) == n
                assert m.get(f"edge_gesture_stage_latency_seconds_bucket{{stage={stage},le=+Inf}}",
                             0) == n
            assert m["edge_gesture_end_to_end_latency_seconds_count"] == n
            assert m.get("edge_gesture_events_total{gesture=fist,hand=left,source=landmarks}",
                         0) == n
    finally:
        stop.set()
        feeder.join()
    assert stats.frames_processed > 0


# ------------------------------------------------------------------ the real daemon


@pytest.fixture(scope="module")
def palm_and_fist_video(tmp_path_factory, gesture_data) -> Path:
    def first(label: str) -> Path:
        return sorted((gesture_data / label).glob("*.jpg"))[0]

    segments = [(None, 0.4), (first("open_palm"), 1.5), (None, 0.8), (first("fist"), 1.5),
                (None, 0.6)]
    return write_video(tmp_path_factory.mktemp("video") / "palm_fist.mp4", segments, FPS)


def frames_in(video: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.e2e
def test_metrics_stats_topic_and_observers_count_the_same_frames_and_events(
        tmp_path, broker, palm_and_fist_video):
    from edge_gesture.daemon import Daemon

    cfg = parse_config({
        "device_id": "obs",
        "capture": {"source": str(palm_and_fist_video), "realtime": False, "at_end": "stop"},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "stats_interval_s": 0.2},
        "service": {"state_dir": str(tmp_path / "state"), "cache_dir": str(tmp_path / "cache")},
    })
    sub = Recorder(broker.port, "edge_gesture/obs/#")
    try:
        daemon = Daemon(cfg)
        seen, broken = Recording(), Broken()
        daemon.observers.add(broken)
        daemon.observers.add(seen)
        with capture_logs() as logs:
            assert daemon.run() == 0
        snapshot = daemon.stats_snapshot()
        m = samples(daemon.metrics.exposition().decode())
        published = sub.wait_count("/event", snapshot["events"], 10) if snapshot["events"] else []
        stats_msgs = [msg.json() for msg in sub.on("/stats")]
    finally:
        sub.close()

    frames = frames_in(palm_and_fist_video)
    assert snapshot["frames_processed"] == m["edge_gesture_frames_processed_total"] == frames
    assert len(seen.reports) == frames  # the failing observer before it cost it nothing
    for stage in STAGES:
        assert m[f"edge_gesture_stage_latency_seconds_count{{stage={stage}}}"] == frames
    events_metric = sum(v for k, v in m.items() if k.startswith("edge_gesture_events_total{"))
    fired = [e for r in seen.reports for e in r.events]
    assert snapshot["events"] == events_metric == len(fired) == len(published) >= 1
    assert [e.gesture for e in fired] == [msg.json()["gesture"] for msg in published]
    # The stats topic carries the same count (the last message may predate the last frames).
    assert stats_msgs and all("events" in s for s in stats_msgs)
    assert stats_msgs[-1]["frames_processed"] <= frames
    errors = [e for e in logs if e.get("event", "").startswith("frame observer failed")]
    assert len(errors) == 1 and errors[0]["observer"] == "Broken"
    # Each report carries the state after its frame: a held gesture shows while it lasts.
    assert any(g == "open_palm" for r in seen.reports for g in r.state.values())
    # ...and where the hand finder searched: a new scene's first frame at the full budget (the
    # live page draws these), and without a VLM no answers.
    assert len(seen.reports[0].search_squares) == cfg.hands.search_squares_per_frame
    assert all(isinstance(sq, Region) for r in seen.reports for sq in r.search_squares)
    assert all(r.vlm_answers is None for r in seen.reports)
