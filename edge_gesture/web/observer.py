"""The live page as one of the daemon's frame observers (observers.FrameObserver).

`LiveFeedObserver` hands each frame's report to a LiveFeed: the frame, the events as published,
and the state only when it changed (which pushes it to the pages). `LivePage` adds what the
daemon wires in: the WebServer's start and stop, and once a second the figures, the MQTT
connection and the effective config, read through callables so a reload's new config and
publisher count."""

from __future__ import annotations

import time
from collections.abc import Callable

from edge_gesture.config import Config, WebConfig
from edge_gesture.observers import FrameObserver, FrameReport
from edge_gesture.web.feed import LiveFeed
from edge_gesture.web.server import WebServer

#: How often the page's figures, MQTT counters and config are refreshed from the frame loop.
FIGURES_EVERY_S = 1.0


class LiveFeedObserver(FrameObserver):
    def __init__(self, feed: LiveFeed):
        self.feed = feed

    def frame_done(self, report: FrameReport) -> None:
        # A report has the hands and observations a FrameResult has.
        self.feed.frame_done(report.frame, report, report.timings, report.end_to_end)
        for ev, payload in zip(report.events, report.published, strict=False):
            self.feed.event_published(ev, payload)
        if report.state_changed:
            self.feed.set_state(report.state, wall=report.frame.wall)

    def tick(self, processed: bool) -> None:
        pass

    def close(self, timeout: float) -> None:
        pass  # the WebServer is stopped by whoever started it


class LivePage(LiveFeedObserver):
    """`[web]`: the server and its feed. `start()` binds the port (StartupError naming web.port
    when it is taken), `close()` stops the server within the shutdown's deadline."""

    def __init__(self, cfg: WebConfig, *, check: Callable[[], list[str]],
                 metrics: Callable[[], bytes], stats: Callable[[], dict],
                 mqtt: Callable[[], dict], config: Callable[[], Config],
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(LiveFeed())
        self.server = WebServer(cfg, self.feed, check, metrics)
        self._stats, self._mqtt, self._config = stats, mqtt, config
        self._clock = clock
        self._next = 0.0
        self._shown_config: Config | None = None

    def start(self) -> str:
        """Serve; the page's address."""
        self._refresh()
        self.server.start()
        return self.server.url

    def tick(self, processed: bool) -> None:
        if self._clock() >= self._next:
            self._refresh()

    def _refresh(self) -> None:
        self._next = self._clock() + FIGURES_EVERY_S
        self.feed.set_stats(self._stats(), self._mqtt())
        cfg = self._config()
        if cfg is not self._shown_config:  # a reload swaps the whole object
            self._shown_config = cfg
            self.feed.set_config(cfg)

    def close(self, timeout: float) -> None:
        self.server.stop(timeout=timeout)
