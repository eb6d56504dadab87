"""What `/healthz` judges (served by the web server, edge_gesture/web/routes.py).

`/healthz` answers 200 while frames flow from a connected source, the publisher is connected
and the VLM (when enabled) is answering, else 503 with the reasons, one per line, so `curl`
output or a probe's log says what is wrong. The stats topic's `status` and systemd's Status:
line are made from the same reasons. `/metrics` is the
Prometheus text format of the daemon's own registry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PipelineView:
    """What /healthz judges, read from the running daemon at request time."""

    now: float  # monotonic seconds
    last_frame_at: float | None  # monotonic time of the last processed frame, None before one
    started_at: float
    source_connected: bool
    source_ended: bool
    source_error: str | None
    publisher_connected: bool
    stale_after_s: float
    vlm_state: str | None = None  # VlmWorker.state; None while [vlm] is off
    vlm_error: str | None = None


def problems(v: PipelineView) -> list[str]:
    """Why the daemon is unhealthy; empty when it is fine."""
    out = []
    if v.source_error:
        out.append(f"video source failed: {v.source_error}")
    elif v.source_ended:
        out.append("video source ended")
    elif v.last_frame_at is None:
        waited = v.now - v.started_at
        out.append(f"no frame processed yet ({waited:.1f} s since start)"
                   + ("" if v.source_connected else "; source not connected"))
    elif v.now - v.last_frame_at > v.stale_after_s:
        out.append(f"no frame processed for {v.now - v.last_frame_at:.1f} s"
                   + ("" if v.source_connected else "; source not connected"))
    elif not v.source_connected:
        # Lost a moment ago and being reopened; after stale_after_s the line above says it.
        out.append("video source lost; reopening")
    if v.vlm_state == "failed":
        out.append(f"VLM failed, landmarks only: {v.vlm_error or 'see the log'}")
    elif v.vlm_state == "slow":
        out.append("VLM slower than vlm.timeout_s, landmarks only")
    elif v.vlm_state == "loading":
        out.append("VLM still loading, landmarks only")
    if not v.publisher_connected:
        out.append("MQTT broker not connected")
    return out
