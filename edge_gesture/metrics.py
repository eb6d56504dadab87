"""Prometheus metrics of one daemon, in a registry of its own.

Two kinds: what the frame loop records as it goes (stage latencies, processed frames, events),
and what other parts already count, read at scrape time through callables bound by the daemon
(frames read and dropped by capture, MQTT connection and outbox, VLM outcomes), so nothing is
counted twice and the frame loop pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# Seconds. Hands inference sits around 10-40 ms on a NUC; the VLM path is 0.1-2 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                   1.0, 2.5)

_PREFIX = "edge_gesture"


def _read(fn: Callable[[], float | int | bool | None] | None) -> float | None:
    if fn is None:
        return None
    try:
        value = fn()
    except Exception:  # a scrape must not fail because one source is mid-teardown
        return None
    return None if value is None else float(value)


class _Live:
    """Collector over the bound callables; each is read once per scrape."""

    def __init__(self) -> None:
        self.frames_read: Callable[[], int] | None = None
        self.frames_dropped: Callable[[], int] | None = None
        self.source_connected: Callable[[], bool] | None = None
        self.mqtt_connected: Callable[[], bool] | None = None
        self.mqtt_outbox: Callable[[], int] | None = None
        self.mqtt_dropped: Callable[[], int] | None = None
        self.vlm: Callable[[], Mapping[str, object] | None] | None = None

    def describe(self) -> list[Metric]:
        return []  # names are dynamic; describing would run the callables at registration

    def collect(self) -> Iterable[Metric]:
        for name, doc, fn in (
            ("frames_read", "Frames read from the video source.", self.frames_read),
            ("frames_dropped", "Frames replaced by a newer one before processing.",
             self.frames_dropped),
            ("mqtt_events_dropped", "Events dropped unsent (outbox full or older than the "
             "maximum age).", self.mqtt_dropped),
        ):
            value = _read(fn)
            if value is not None:
                yield CounterMetricFamily(f"{_PREFIX}_{name}", doc, value=value)
        for name, doc, fn in (
            ("source_connected", "1 while the video source delivers frames.",
             self.source_connected),
            ("mqtt_connected", "1 while connected to the MQTT broker.", self.mqtt_connected),
            ("mqtt_outbox_size", "Events waiting to be sent to the broker.", self.mqtt_outbox),
        ):
            value = _read(fn)
            if value is not None:
                yield GaugeMetricFamily(f"{_PREFIX}_{name}", doc, value=value)
        yield from self._vlm()

    def _vlm(self) -> Iterable[Metric]:
        # `vlm` returns the VLM worker's status(): state plus running counts; "skipped_<why>"
        # keys become the reason label, so new skip reasons need no change here.
        if self.vlm is None:
            return
        try:
            status = self.vlm()
        except Exception:
            return
        if not status:
            return
        yield GaugeMetricFamily(f"{_PREFIX}_vlm_available",
                                "1 while the VLM is loaded and answering in time.",
                                value=1.0 if status.get("state") == "ok" else 0.0)
        yield CounterMetricFamily(f"{_PREFIX}_vlm_decisions", "VLM answers made.",
                                  value=status.get("decisions", 0))
        skips = CounterMetricFamily(
            f"{_PREFIX}_vlm_skips", "Hands not sent to the VLM, by reason.", labels=["reason"])
        for key, n in sorted(status.items()):
            if key.startswith("skipped_"):
                skips.add_metric([key.removeprefix("skipped_")], n)
        yield skips
        yield CounterMetricFamily(f"{_PREFIX}_vlm_failures",
                                  "VLM loads or runs that raised an error.",
                                  value=status.get("failures", 0))
        yield CounterMetricFamily(f"{_PREFIX}_vlm_slow",
                                  "VLM answers slower than vlm.timeout_s (dropped).",
                                  value=status.get("slow", 0))


class Metrics:
    def __init__(self) -> None:
        # Private registry: two daemons in one process (tests) must not collide, and the
        # process-wide default registry would add Python GC metrics nobody asked for.
        self.registry = CollectorRegistry()
        self.frames_processed = Counter(
            f"{_PREFIX}_frames_processed", "Frames that went through the pipeline.",
            registry=self.registry)
        self.stage_seconds = Histogram(
            f"{_PREFIX}_stage_latency_seconds", "Time spent in each pipeline stage per frame.",
            ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.end_to_end_seconds = Histogram(
            f"{_PREFIX}_end_to_end_latency_seconds",
            "From frame capture to the end of publishing its result.",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.events = Counter(
            f"{_PREFIX}_events", "Gesture events published, by gesture, hand and source.",
            ["gesture", "hand", "source"], registry=self.registry)
        self.reloads = Counter(
            f"{_PREFIX}_config_reloads", "SIGHUP config reloads, by result.", ["result"],
            registry=self.registry)
        self.live = _Live()
        self.registry.register(self.live)

    def bind(self, **sources: Callable) -> None:
        """Attach scrape-time readers: frames_read, frames_dropped, source_connected,
        mqtt_connected, mqtt_outbox, mqtt_dropped, vlm (the VLM worker's status(): "state",
        "decisions", "failures", "slow", "skipped_<reason>" counts), each returning None when
        that part is absent."""
        for name, fn in sources.items():
            if not hasattr(self.live, name) or name.startswith("_"):
                raise TypeError(f"unknown metric source {name!r}")
            setattr(self.live, name, fn)

    def observe_frame(self, timings: Mapping[str, float], end_to_end: float | None) -> None:
        self.frames_processed.inc()
        for stage, seconds in timings.items():
            self.stage_seconds.labels(stage).observe(seconds)
        if end_to_end is not None:
            self.end_to_end_seconds.observe(end_to_end)

    def count_event(self, gesture: str, hand: str, source: str) -> None:
        self.events.labels(gesture, hand, source).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
