"""What the live page and the API show, handed over by the daemon as it happens.

The daemon calls the `frame_done`, `event_published` and `set_*` methods from its own threads
(the frame loop, the publisher); the web server reads from its thread. The writers only keep
references and counters under a lock held for a few assignments, never for I/O or encoding: a
picture is made from the latest frame only when someone asks for one (web/pictures.py), on the
server's side. Listeners (the server's WebSocket pusher) are told that something changed; they
must not block either.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from edge_gesture.web import figures
from edge_gesture.web.figures import FigureHistory

log = structlog.get_logger("web")

#: Events kept for /api/events and a new page's timeline.
EVENTS_KEPT = 500
#: Seconds of per-second figures kept for the page's plot.
FIGURES_KEPT_S = 300


@dataclass(frozen=True)
class FrameView:
    """The latest processed frame and what was found in it."""

    frame: Any  # capture.Frame: image (BGR), index, t, wall, read_at
    hands: tuple  # hands.Hand, with track ids
    observations: tuple  # decide.Observation, one per hand
    number: int  # frames handed to the feed so far: a new number is a new picture
    search_squares: tuple = ()  # hands.geometry.Region: where the hand finder searched
    vlm_answers: Any = None  # {track id: vlm.worker.VlmAnswer}; None with [vlm] off


class LiveFeed:
    def __init__(self, events_kept: int = EVENTS_KEPT, figures_kept_s: int = FIGURES_KEPT_S,
                 clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self._frame: FrameView | None = None
        self._frames = 0
        self._figures = FigureHistory(figures_kept_s)
        self._events: deque[tuple[int, bytes]] = deque(maxlen=events_kept)
        self._event_seq = 0
        self._state: dict[str, str | None] = {}
        self._state_wall: float | None = None
        self._stats: dict[str, Any] = {}
        self._mqtt: dict[str, Any] = {}
        self._config: dict[str, Any] = {}
        self._listeners: list[Callable[[str], None]] = []

    # ------------------------------------------------------------ the daemon's side

    def frame_done(self, frame, result, timings: dict[str, float], end_to_end: float) -> None:
        """After each processed frame, on the frame-loop thread: `result` is a daemon.FrameResult
        or an observers.FrameReport (hands, observations, search squares, VLM answers). Keeps
        references only."""
        view_hands, view_obs = tuple(result.hands), tuple(result.observations)
        squares = tuple(result.search_squares)
        now = self._clock()
        with self._lock:
            self._frames += 1
            self._frame = FrameView(frame, view_hands, view_obs, self._frames, squares,
                                    result.vlm_answers)
            self._figures.add(now, frame.index, timings, end_to_end)

    def event_published(self, ev, payload_json: bytes | str) -> None:
        """An event as the publisher renders it for MQTT (publish.payloads.event_payload), so
        the API and the page show the same JSON. `ev` is the decide.GestureEvent."""
        body = payload_json.encode() if isinstance(payload_json, str) else bytes(payload_json)
        with self._lock:
            self._event_seq += 1
            self._events.append((self._event_seq, body))
        self._tell("event")

    def set_state(self, state: dict[str, str | None], wall: float | None = None) -> None:
        """The active gesture per left/right hand (Decider.state()), when it changes."""
        with self._lock:
            self._state = dict(state)
            self._state_wall = time.time() if wall is None else wall
        self._tell("state")

    def set_stats(self, stats: dict[str, Any], mqtt: dict[str, Any] | None = None) -> None:
        """The daemon's stats snapshot (what `.../stats` carries) and the publisher's counters
        (Publisher.counters(): connected, outbox, sent...)."""
        with self._lock:
            self._stats = dict(stats)
            if mqtt is not None:
                self._mqtt = dict(mqtt)
        self._tell("stats")

    def set_config(self, cfg) -> None:
        """The effective config, a config.Config or its dict; SecretStr fields show masked."""
        dumped = cfg if isinstance(cfg, dict) else cfg.model_dump(mode="json")
        with self._lock:
            self._config = dumped

    # ------------------------------------------------------------ the server's side

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """`listener(kind)` is called, on the writer's thread, after each "event", "state" and
        "stats" change; it must return at once."""
        with self._lock:
            self._listeners = [*self._listeners, listener]

    def unsubscribe(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            self._listeners = [fn for fn in self._listeners if fn is not listener]

    def latest_frame(self) -> FrameView | None:
        return self._frame

    def events(self, limit: int) -> list[bytes]:
        """The last `limit` events' JSON, oldest first."""
        with self._lock:
            return [body for _, body in list(self._events)[-limit:]] if limit > 0 else []

    def events_after(self, seq: int) -> tuple[list[bytes], int]:
        """Events kept after `seq`, and the sequence to ask after next time."""
        with self._lock:
            return [body for s, body in self._events if s > seq], self._event_seq

    @property
    def event_seq(self) -> int:
        return self._event_seq

    def active_gestures(self) -> dict[str, str | None]:
        with self._lock:
            return dict(self._state)

    def state(self) -> dict[str, Any]:
        with self._lock:
            hands = {"left": None, "right": None, **self._state}
            wall = self._state_wall
            view = self._frame
            backend = self._config.get("hands", {}).get("backend")
        return {"hands": hands, "changed_at": wall, "tracks": _tracks(view, hands),
                "search": _search(view, whole_frame=backend == "mediapipe"),
                "frame": _frame_info(view)}

    def stats(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            taken = self._figures.taken()
            out = {"stats": dict(self._stats), "mqtt": dict(self._mqtt), "frames": self._frames}
        out["figures"], _ = figures.rows(taken, None, now, self._figures.keep_s)
        return out

    def figures_since(self, after_sec: int | None) -> tuple[list[dict], int | None]:
        """Per-second figures of the seconds ended after `after_sec` (see web/figures.py)."""
        now = self._clock()
        with self._lock:
            taken = self._figures.taken()
        return figures.rows(taken, after_sec, now, self._figures.keep_s)

    def config(self) -> dict[str, Any]:
        with self._lock:
            return self._config

    def _tell(self, kind: str) -> None:
        for listener in self._listeners:
            try:
                listener(kind)
            except Exception as e:  # a page's trouble must never reach the frame loop
                log.warning("live page listener failed", error=f"{type(e).__name__}: {e}")


def _tracks(view: FrameView | None, hands: dict[str, str | None]) -> list[dict]:
    if view is None:
        return []
    seen = {o.track: o for o in view.observations}
    answers = view.vlm_answers or {}
    out = []
    for h in view.hands:
        obs = seen.get(h.track_id)
        side = obs.hand if obs is not None else h.handedness
        out.append({
            "track": h.track_id, "hand": side, "box": list(h.bbox),
            "label": obs.label if obs is not None else None,
            "confidence": round(float(obs.confidence), 3) if obs is not None else None,
            "source": obs.source if obs is not None else None,
            "active": hands.get(side),
            "vlm": vlm_answer(answers.get(h.track_id), view.frame.t),
        })
    return out


def vlm_answer(answer, now: float) -> dict | None:
    """A vlm.worker.VlmAnswer as the page shows it; `now`: the frame's time."""
    if answer is None:
        return None
    # The answer's time is the last frame it is known to hold for; a hand that has not moved
    # since keeps it current, so the age is how long the hand has moved without a new answer.
    return {"label": answer.label, "probability": round(float(answer.probability), 3),
            "age_s": round(max(0.0, now - answer.t), 2)}


def square_box(region) -> list[int]:
    """A hands.geometry.Region as [x0, y0, x1, y1] frame pixels around it."""
    corners = region.corners()
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return [round(float(lo[0])), round(float(lo[1])), round(float(hi[0])), round(float(hi[1]))]


def _search(view: FrameView | None, *, whole_frame: bool) -> dict:
    squares = [square_box(r) for r in view.search_squares] if view is not None else []
    return {"whole_frame": whole_frame, "squares": squares}


def _frame_info(view: FrameView | None) -> dict | None:
    if view is None:
        return None
    f = view.frame
    height, width = f.image.shape[:2]
    return {"index": f.index, "wall": f.wall, "width": width, "height": height}


def dumps(obj: Any) -> str:
    """JSON for the API: numpy scalars and other odd values from a stats dict become strings
    rather than a 500."""
    return json.dumps(obj, separators=(",", ":"), default=str, ensure_ascii=False)
