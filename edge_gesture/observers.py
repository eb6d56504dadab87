"""Everything that watches the frame loop's results, in one shape.

The daemon's frame loop hands each processed frame, and each turn of the loop, to one
`FrameObservers` list: the figures behind `/metrics` and the stats topic, systemd's readiness,
status and watchdog, the periodic stats message, the dataset writer, and the live page all see
the same `FrameReport`. None of them reaches back into the daemon for it.

Threading contract, for every observer:
- `frame_done`, `tick` and `close` are called on the frame-loop thread (the daemon's main
  thread), one at a time, in the order the observers were added; no lock is needed for state
  only these calls touch.
- They must return at once: a frame loop waiting on an observer is a late gesture for every
  user. Work that can wait (disk, encoding a picture, network) goes to the observer's own
  thread, dropping rather than queueing without bound when that thread falls behind.
- A report and what it holds are shared by all observers and must not be modified; the frame's
  image is never written to by the daemon afterwards, so keeping a reference is safe.
- An observer that raises is logged once (later failures of the same observer are counted, not
  logged) and keeps being called; the frame loop and the other observers carry on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from edge_gesture.deadline import Deadline

if TYPE_CHECKING:
    from edge_gesture.capture import Frame
    from edge_gesture.decide import GestureEvent, Observation
    from edge_gesture.hands import Hand
    from edge_gesture.hands.geometry import Region
    from edge_gesture.vlm.worker import VlmAnswer

log = structlog.get_logger("observers")


@dataclass(frozen=True)
class FrameReport:
    """One frame after the pipeline and the publish calls for its events."""

    frame: Frame  # image (BGR), index (frames read so far), t, wall, read_at
    hands: Sequence[Hand]  # the hands found, with their track ids
    observations: Sequence[Observation]  # per hand: the label this frame counts for it
    events: Sequence[GestureEvent]  # events this frame fired, already handed to the publisher
    state: Mapping[str, str | None]  # the active gesture per hand ("left"/"right") after it
    state_changed: bool  # True if `state` differs from the previous frame's
    timings: Mapping[str, float]  # seconds per stage: capture (waiting in the slot), hands,
    #                               classify, motion, decide, publish
    end_to_end: float  # seconds from the frame's read to the end of its publish calls
    published: Sequence[bytes] = ()  # each event's MQTT payload, while the live page is on
    # Where the hand finder looked for new hands in this frame, in frame pixels: empty when it
    # searched nowhere, and always with hands.backend = "mediapipe", whose graph searches the
    # whole frame and does not say when.
    search_squares: Sequence[Region] = ()
    # Per track id, the VLM's latest answer this frame's fusion saw; None with [vlm] off.
    vlm_answers: Mapping[int, VlmAnswer] | None = None


class FrameObserver(Protocol):
    """What the frame loop calls; subclass it to inherit the do-nothing defaults."""

    def frame_done(self, report: FrameReport) -> None:
        """A frame went through the pipeline; called before this turn's `tick`."""

    def tick(self, processed: bool) -> None:
        """Once per frame-loop turn, frame or not (`processed` says whether one went through):
        about five times a second while no frame comes."""

    def close(self, timeout: float) -> None:
        """The daemon is stopping: release what the observer holds within `timeout` seconds
        (its share of the shutdown deadline); no call follows."""


class FrameObservers:
    """The daemon's observers, fed from one place in the frame loop (`feed`)."""

    def __init__(self, observers: Iterable[FrameObserver] = ()):
        self._observers: list[FrameObserver] = []
        self.failures: dict[str, int] = {}  # observer name -> calls that raised
        for o in observers:
            self.add(o)

    def add(self, observer: FrameObserver) -> None:
        """Called on the frame-loop thread (or before the loop starts)."""
        self._observers.append(observer)

    def __iter__(self):
        return iter(list(self._observers))

    def feed(self, report: FrameReport | None) -> None:
        """One frame-loop turn: `frame_done(report)` to each observer when a frame went
        through (`report` not None), then `tick` to each."""
        if report is not None:
            for o in self._observers:
                self._call(o, "frame_done", report)
        processed = report is not None
        for o in self._observers:
            self._call(o, "tick", processed)

    def close(self, timeout: float) -> None:
        """Close each observer in order; each gets what is left of `timeout`."""
        deadline = Deadline(timeout)
        for o in self._observers:
            self._call(o, "close", deadline.left())

    def _call(self, observer: FrameObserver, what: str, arg) -> None:
        try:
            getattr(observer, what)(arg)
        except Exception as e:  # noqa: BLE001 - one observer must not stop the frame loop
            name = type(observer).__name__
            n = self.failures[name] = self.failures.get(name, 0) + 1
            if n == 1:
                log.error("frame observer failed; it stays on, its later failures are counted "
                          "but not logged", observer=name, call=what,
                          error=f"{type(e).__name__}: {e}", exc_info=True)
