"""`/healthz` and `/metrics` over HTTP, from a daemon thread (stdlib http.server).

`/healthz` answers 200 while frames flow from a connected source, the publisher is connected
and the VLM (when enabled) is answering, else 503 with the reasons, one per line, so `curl`
output or a probe's log says what is wrong. The stats topic's `status` and systemd's Status:
line are made from the same reasons. `/metrics` is the
Prometheus text format of the daemon's own registry.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

log = structlog.get_logger("health")


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


class HealthServer:
    """Serves the two endpoints until `stop()`; `port` is the bound port (useful with port 0)."""

    def __init__(self, host: str, port: int, check: Callable[[], list[str]],
                 metrics: Callable[[], bytes]):
        handler = _handler(check, metrics)
        # Binding here, not in the thread, so a taken port is reported to the caller at start.
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health",
                                        kwargs={"poll_interval": 0.2}, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health endpoint listening", url=f"http://{self.host}:{self.port}/healthz")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _handler(check: Callable[[], list[str]], metrics: Callable[[], bytes]):
    class Handler(BaseHTTPRequestHandler):
        server_version = "edge-gesture"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                try:
                    reasons = check()
                except Exception as e:  # the check itself failing is a health problem
                    reasons = [f"health check failed: {type(e).__name__}: {e}"]
                if self.headers.get("Accept", "").startswith("application/json"):
                    body = json.dumps({"ok": not reasons, "problems": reasons}).encode()
                    ctype = "application/json"
                else:
                    body = ("ok\n" if not reasons else "".join(r + "\n" for r in reasons)).encode()
                    ctype = "text/plain; charset=utf-8"
                self._send(200 if not reasons else 503, body, ctype)
            elif path == "/metrics":
                self._send(200, metrics(), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found: try /healthz or /metrics\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            # A scrape every 15 s would otherwise fill the journal.
            pass

    return Handler
