"""The live page as one of the daemon's frame observers (observers.FrameObserver): each frame's
report goes to the LiveFeed, the state only when it changed (which pushes it to the pages)."""

from __future__ import annotations

from edge_gesture.observers import FrameObserver, FrameReport
from edge_gesture.web.feed import LiveFeed


class LiveFeedObserver(FrameObserver):
    def __init__(self, feed: LiveFeed):
        self.feed = feed

    def frame_done(self, report: FrameReport) -> None:
        # A report has the hands and observations a FrameResult has.
        self.feed.frame_done(report.frame, report, report.timings, report.end_to_end)
        if report.state_changed:
            self.feed.set_state(report.state, wall=report.frame.wall)

    def tick(self, processed: bool) -> None:
        pass

    def close(self, timeout: float) -> None:
        pass  # the WebServer is stopped by whoever started it
