"""Frame-rate and per-stage latency figures for the `.../stats` topic and the benchmark."""

from __future__ import annotations

import time
from collections import deque

import numpy as np

STAGES = ("capture", "hands", "classify", "motion", "decide", "publish")


def percentiles_ms(samples, qs=(50, 95)) -> dict[str, float]:
    if len(samples) == 0:
        return {f"p{q}": None for q in qs}
    arr = np.asarray(samples, dtype=np.float64) * 1000.0
    return {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}


class PipelineStats:
    """Keeps the latest `keep` frames' timings; snapshot() summarises since the previous call."""

    def __init__(self, keep: int = 2048):
        self._stages = {s: deque(maxlen=keep) for s in STAGES}
        self._e2e = deque(maxlen=keep)
        self.frames_processed = 0
        self._last_snapshot = time.monotonic()
        self._last_processed = 0
        self._last_read = 0

    def record_frame(self, timings: dict[str, float], end_to_end: float) -> None:
        self.frames_processed += 1
        for stage, seconds in timings.items():
            q = self._stages.get(stage)
            if q is None:
                q = self._stages[stage] = deque(maxlen=self._e2e.maxlen)
            q.append(seconds)
        self._e2e.append(end_to_end)

    def latencies(self) -> dict:
        out = {stage: percentiles_ms(q) for stage, q in self._stages.items()}
        out["end_to_end"] = percentiles_ms(self._e2e)
        return out

    def snapshot(self, frames_read: int, frames_dropped: int, **extra) -> dict:
        now = time.monotonic()
        dt = max(now - self._last_snapshot, 1e-6)
        snap = {
            "fps_in": round((frames_read - self._last_read) / dt, 2),
            "fps_processed": round((self.frames_processed - self._last_processed) / dt, 2),
            "frames_read": frames_read,
            "frames_processed": self.frames_processed,
            "frames_dropped": frames_dropped,
            "latency_ms": self.latencies(),
            **extra,
        }
        self._last_snapshot, self._last_processed, self._last_read = (
            now, self.frames_processed, frames_read)
        return snap
