"""The daemon's figures, counted once: frames, events and per-stage latencies.

`PipelineStats` is a frame observer (edge_gesture/observers.py). It is the one source that the
`.../stats` topic (`snapshot`), `/metrics` (metrics.py reads `figures()` at scrape time),
systemd's Status: line and the benchmark read, so they cannot disagree. It is written on the
frame-loop thread and read from others (the HTTP server's), hence the lock.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from edge_gesture.observers import FrameObserver, FrameReport

STAGES = ("capture", "hands", "classify", "motion", "decide", "publish")

#: Seconds, the histogram bounds `/metrics` reports. Hands inference sits around 10-40 ms on a
#: NUC; the VLM path is 0.1-2 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                   1.0, 2.5)


def percentiles_ms(samples, qs=(50, 95)) -> dict[str, float]:
    if len(samples) == 0:
        return {f"p{q}": None for q in qs}
    arr = np.asarray(samples, dtype=np.float64) * 1000.0
    return {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}


class Histogram:
    """Cumulative-from-start latency counts per bucket, as Prometheus reports them."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound counts in that bound's bucket (Prometheus `le`).
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def copy(self) -> Histogram:
        h = Histogram.__new__(Histogram)
        h.bounds, h.counts, h.sum, h.created = self.bounds, list(self.counts), self.sum, self.created
        return h


@dataclass(frozen=True)
class Figures:
    """Everything counted since start, at one instant (read under one lock)."""

    frames_processed: int
    frames_read: int | None  # None: no source bound (a scrape-time reader that failed)
    frames_dropped: int | None
    events: Mapping[tuple[str, str, str], tuple[int, float]]  # (gesture, hand, source) ->
    #                                                          (count, created epoch s)
    stage_latency: Mapping[str, Histogram]  # stages seen so far
    end_to_end: Histogram
    started: float = field(default=0.0)  # epoch seconds the counting started

    @property
    def events_total(self) -> int:
        return sum(n for n, _ in self.events.values())


def _read(fn: Callable[[], int] | None) -> int | None:
    if fn is None:
        return None
    try:
        return fn()
    except Exception:  # a reader must not fail because its source is mid-teardown
        return None


class PipelineStats(FrameObserver):
    """Counts each processed frame once; `snapshot()` summarises since the previous call,
    `figures()` gives the totals, `latencies()` the recent percentiles.

    `frames_read` and `frames_dropped` read the capture's own counters when asked, so those are
    counted once too, by capture.
    """

    def __init__(self, keep: int = 2048, *, frames_read: Callable[[], int] | None = None,
                 frames_dropped: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self._keep = keep
        self._stages = {s: deque(maxlen=keep) for s in STAGES}
        self._e2e = deque(maxlen=keep)
        self._hist: dict[str, Histogram] = {}
        self._e2e_hist = Histogram()
        self._events: dict[tuple[str, str, str], list] = {}  # key -> [count, created]
        self._events_total = 0
        self._frames_read = frames_read
        self._frames_dropped = frames_dropped
        self.started = time.time()
        self.frames_processed = 0
        #: Clock time of the last processed frame; None before the first.
        self.last_frame_at: float | None = None
        self._last_snapshot = clock()
        self._last_processed = 0
        self._last_read = 0

    # ------------------------------------------------------------ frame-loop side

    def frame_done(self, report: FrameReport) -> None:
        self.record_frame(report.timings, report.end_to_end,
                          ((e.gesture, e.hand, e.source) for e in report.events))

    def record_frame(self, timings: Mapping[str, float], end_to_end: float | None,
                     events: Iterable[tuple[str, str, str]] = ()) -> None:
        """One processed frame: its stage timings (seconds), end-to-end latency, and the
        (gesture, hand, source) of each event it fired."""
        now = self._clock()
        with self._lock:
            self.frames_processed += 1
            self.last_frame_at = now
            for stage, seconds in timings.items():
                q = self._stages.get(stage)
                if q is None:
                    q = self._stages[stage] = deque(maxlen=self._keep)
                q.append(seconds)
                h = self._hist.get(stage)
                if h is None:
                    h = self._hist[stage] = Histogram()
                h.observe(seconds)
            if end_to_end is not None:
                self._e2e.append(end_to_end)
                self._e2e_hist.observe(end_to_end)
            for key in events:
                c = self._events.get(key)
                if c is None:
                    c = self._events[key] = [0, time.time()]
                c[0] += 1
                self._events_total += 1

    # ------------------------------------------------------------ readers, any thread

    @property
    def events(self) -> int:
        """Events fired since start."""
        return self._events_total

    @property
    def frames_read(self) -> int | None:
        return _read(self._frames_read)

    @property
    def frames_dropped(self) -> int | None:
        return _read(self._frames_dropped)

    def figures(self) -> Figures:
        with self._lock:
            events = {k: (c[0], c[1]) for k, c in self._events.items()}
            stages = {s: h.copy() for s, h in self._hist.items()}
            e2e = self._e2e_hist.copy()
            processed = self.frames_processed
        return Figures(processed, self.frames_read, self.frames_dropped, events, stages, e2e,
                       self.started)

    def latencies(self) -> dict:
        """p50 and p95 in ms per stage and end to end, over the latest `keep` frames."""
        with self._lock:
            stages = {stage: list(q) for stage, q in self._stages.items()}
            e2e = list(self._e2e)
        out = {stage: percentiles_ms(q) for stage, q in stages.items()}
        out["end_to_end"] = percentiles_ms(e2e)
        return out

    def totals(self) -> dict:
        """Counts since start and recent latencies: the stats topic's figures less its rates;
        reading them changes nothing (the live page reads them every second)."""
        return {
            "frames_read": self.frames_read or 0,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped or 0,
            "events": self._events_total,
            "latency_ms": self.latencies(),
        }

    def snapshot(self, **extra) -> dict:
        """The stats topic's figures; rates are since the previous call (the frame loop's)."""
        now = self._clock()
        dt = max(now - self._last_snapshot, 1e-6)
        totals = self.totals()
        frames_read, processed = totals["frames_read"], totals["frames_processed"]
        snap = {
            "fps_in": round((frames_read - self._last_read) / dt, 2),
            "fps_processed": round((processed - self._last_processed) / dt, 2),
            **totals,
            **extra,
        }
        self._last_snapshot, self._last_processed, self._last_read = now, processed, frames_read
        return snap


class StatsTopic(FrameObserver):
    """Hands `snapshot()` to `publish` every `interval()` seconds (0: never), on the frame
    loop's tick; the interval is read each turn, so a reloaded `mqtt.stats_interval_s` counts."""

    def __init__(self, interval: Callable[[], float], snapshot: Callable[[], dict],
                 publish: Callable[[dict], None], clock: Callable[[], float] = time.monotonic):
        self._interval = interval
        self._snapshot = snapshot
        self._publish = publish
        self._clock = clock
        self._next: float | None = None

    def tick(self, processed: bool) -> None:
        now = self._clock()
        interval = self._interval()
        if self._next is None:  # the first turn of the loop starts the first interval
            self._next = now + interval
        if interval and now >= self._next:
            self._publish(self._snapshot())
            self._next = now + interval
