"""Prometheus metrics of one daemon, in a registry of its own.

Everything is read at scrape time, nothing is counted here: the frame loop's figures (processed
frames, frames read and dropped, events, stage and end-to-end latencies) from the daemon's one
`PipelineStats` (stats.py), which the stats topic reads too, so the two always agree; and what
other parts already count (MQTT connection and outbox, VLM outcomes) through callables bound by
the daemon. Config reloads are the one counter kept here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from edge_gesture.stats import LATENCY_BUCKETS, Histogram, PipelineStats

__all__ = ["LATENCY_BUCKETS", "Metrics"]

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
        self.source_connected: Callable[[], bool] | None = None
        self.mqtt_connected: Callable[[], bool] | None = None
        self.mqtt_outbox: Callable[[], int] | None = None
        self.mqtt_dropped: Callable[[], int] | None = None
        self.vlm: Callable[[], Mapping[str, object] | None] | None = None

    def describe(self) -> list[Metric]:
        return []  # names are dynamic; describing would run the callables at registration

    def collect(self) -> Iterable[Metric]:
        for name, doc, fn in (
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


class _FromFigures:
    """Collector over the daemon's PipelineStats: one consistent read of it per scrape."""

    def __init__(self, stats: PipelineStats) -> None:
        self.stats = stats

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        f = self.stats.figures()
        processed = CounterMetricFamily(f"{_PREFIX}_frames_processed",
                                        "Frames that went through the pipeline.")
        processed.add_metric([], f.frames_processed, created=f.started)
        yield processed
        for name, doc, value in (
            ("frames_read", "Frames read from the video source.", f.frames_read),
            ("frames_dropped", "Frames replaced by a newer one before processing.",
             f.frames_dropped),
        ):
            if value is not None:
                yield CounterMetricFamily(f"{_PREFIX}_{name}", doc, value=value)
        stages = HistogramMetricFamily(f"{_PREFIX}_stage_latency_seconds",
                                       "Time spent in each pipeline stage per frame.",
                                       labels=["stage"])
        for stage, h in f.stage_latency.items():
            _add_histogram(stages, {"stage": stage}, h)
        yield stages
        e2e = HistogramMetricFamily(f"{_PREFIX}_end_to_end_latency_seconds",
                                    "From frame capture to the end of publishing its result.")
        _add_histogram(e2e, {}, f.end_to_end)
        yield e2e
        events = CounterMetricFamily(
            f"{_PREFIX}_events", "Gesture events published, by gesture, hand and source.",
            labels=["gesture", "hand", "source"])
        for key, (n, created) in f.events.items():
            events.add_metric(list(key), n, created=created)
        yield events


def _add_histogram(family: HistogramMetricFamily, labels: dict[str, str], h: Histogram) -> None:
    cumulative, buckets = 0, []
    for bound, n in zip((*h.bounds, float("inf")), h.counts, strict=True):
        cumulative += n
        buckets.append((floatToGoString(bound), cumulative))
    family.add_metric(list(labels.values()), buckets, h.sum)
    # prometheus_client's own Histogram reports when each series began; kept so the exposition
    # stays what it was when these were counted in prometheus_client objects.
    family.add_sample(family.name + "_created", labels, h.created)


class Metrics:
    def __init__(self, stats: PipelineStats | None = None) -> None:
        """`stats`: the daemon's figures (a fresh, empty one when not given)."""
        # Private registry: two daemons in one process (tests) must not collide, and the
        # process-wide default registry would add Python GC metrics nobody asked for.
        self.registry = CollectorRegistry()
        self.stats = stats if stats is not None else PipelineStats()
        self.registry.register(_FromFigures(self.stats))
        self.reloads = Counter(
            f"{_PREFIX}_config_reloads", "SIGHUP config reloads, by result.", ["result"],
            registry=self.registry)
        self.live = _Live()
        self.registry.register(self.live)

    def bind(self, **sources: Callable) -> None:
        """Attach scrape-time readers: source_connected, mqtt_connected, mqtt_outbox,
        mqtt_dropped, vlm (the VLM worker's status(): "state", "decisions", "failures", "slow",
        "skipped_<reason>" counts), each returning None when that part is absent."""
        for name, fn in sources.items():
            if not hasattr(self.live, name) or name.startswith("_"):
                raise TypeError(f"unknown metric source {name!r}")
            setattr(self.live, name, fn)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
