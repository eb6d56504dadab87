"""Turn per-frame gesture labels into debounced events, one per gesture onset.

Per hand (its track id, see hands.tracks): a gesture's score is its mean per-frame confidence over
a sliding time window (frames where the hand shows something else, or is missing, count as zero).
A gesture becomes active when its score has stayed at or above `enter_threshold` for `min_hold_s`;
it stays active until its score drops below `exit_threshold` (hysteresis, so a flickering frame
does not end it). Becoming active fires one event, unless the same gesture fired from the same
hand within `cooldown_s`. Events and the state name the hand as the person's left or right.

Time comes from the frames, not the wall clock, so a recorded video gives the same events however
fast it is processed; times are compared with a slack of EPS (far below a frame), since a file's
clock is a float sum that rounds differently from run to run. A gesture becomes active only on a
frame where its hand is seen showing it. Motion gestures (swipes, waves: edge_gesture/motion.py)
are decided elsewhere and come here for the same cooldown and event (`motion_event`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from edge_gesture.config import DecideConfig

#: Slack for comparing frame times (seconds).
EPS = 1e-6


@dataclass(frozen=True, slots=True)
class Observation:
    """What one frame says about one hand."""

    track: int  # the hand's track id (Hand.track_id): the key that follows a hand across frames
    hand: str  # "left" / "right": the person's hand, as the track's majority says; for events
    label: str | None  # a gesture name, or None for nothing recognisable
    confidence: float
    source: str = "landmarks"  # "landmarks", "vlm" or "both"


@dataclass(frozen=True, slots=True)
class GestureEvent:
    gesture: str
    confidence: float
    source: str
    hand: str
    t: float  # frame time (monotonic seconds) of the decision
    wall: float  # epoch seconds of the frame's capture


@dataclass
class _HandTrack:
    first_seen: float
    hand: str = ""  # the person's left/right: the latest observation's, held while a gesture is
    #                 active so the state names the hand its event named
    window: deque = field(default_factory=deque)  # (t, label, confidence, source)
    last_seen: float = 0.0
    active: str | None = None
    active_since: float = 0.0
    candidate: str | None = None
    candidate_since: float = 0.0


class Cooldowns:
    """When each (track, gesture) last fired, and from which left/right hand.

    Kept apart from the hand tracks: a track is dropped after `lost_after_s`, and a hand that
    leaves view for longer comes back under a new track id, which must not make its cooldown
    forgotten. So a track also inherits the running cooldowns of tracks of the same left/right
    hand that were gone before it appeared (it may be that hand back); a track that was in view
    at the same time is another hand (another person's), and does not.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[int, str], tuple[float, str]] = {}  # -> (t fired, left/right)
        self._gone: dict[int, float] = {}  # dropped track -> when it was last seen

    def __len__(self) -> int:
        return len(self._last)

    def blocks(self, track: int, hand: str, gesture: str, t: float, cooldown_s: float,
               first_seen: float) -> bool:
        """Whether `gesture` from `track` (the person's `hand`, in view since `first_seen`)
        is still inside the cooldown of an earlier event of the same hand."""
        for (other, g), (last, h) in self._last.items():
            if g != gesture or t - last >= cooldown_s - EPS:
                continue
            if other == track:
                return True
            left_at = self._gone.get(other)
            if h == hand and left_at is not None and left_at < first_seen:
                return True
        return False

    def fired(self, track: int, hand: str, gesture: str, t: float) -> None:
        self._last[(track, gesture)] = (t, hand)

    def gone(self, track: int, last_seen: float) -> None:
        """The Decider dropped this track: a later track may be the same hand back."""
        if any(k == track for k, _ in self._last):
            self._gone[track] = last_seen

    def forget_expired(self, t: float, cooldown_s: float) -> None:
        """Drop entries that can no longer block anything, so hands that come and go under
        fresh track ids do not grow this without bound."""
        if self._last:
            self._last = {k: v for k, v in self._last.items() if t - v[0] < cooldown_s - EPS}
            live = {k for k, _ in self._last}
            self._gone = {k: v for k, v in self._gone.items() if k in live}
        else:
            self._gone.clear()


class Decider:
    """Debounces gestures per hand track. Not thread-safe: the frame loop owns it."""

    def __init__(self, cfg: DecideConfig, enabled: Iterable[str]):
        self.cfg = cfg
        self.enabled = frozenset(enabled)
        self._hands: dict[int, _HandTrack] = {}  # by track id
        self.cooldowns = Cooldowns()
        #: True after an update() that changed which gesture is active on some hand.
        self.state_changed = False

    def reconfigure(self, cfg: DecideConfig, enabled: Iterable[str]) -> None:
        """Apply new thresholds and gesture list (SIGHUP); gestures no longer enabled end now."""
        self.cfg = cfg
        self.enabled = frozenset(enabled)
        for track in self._hands.values():
            if track.active is not None and track.active not in self.enabled:
                track.active = None
                self.state_changed = True

    def state(self) -> dict[str, str | None]:
        """The active gesture per left/right hand in view (None: that hand shows nothing).

        The state's public form names the person's left and right hand. When several tracks
        share a label (two people's right hands), a gesture shown beats none, and of two
        gestures the one that became active last wins: the one whose event went out last.
        """
        out: dict[str, str | None] = {}
        since: dict[str, float] = {}
        for _, track in sorted(self._hands.items()):
            if track.active is None:
                out.setdefault(track.hand, None)
            elif out.get(track.hand) is None or track.active_since > since[track.hand]:
                out[track.hand], since[track.hand] = track.active, track.active_since
        return dict(sorted(out.items()))

    def update(self, t: float, observations: Iterable[Observation], wall: float = 0.0
               ) -> list[GestureEvent]:
        """Feed one frame's observations (one per hand seen) taken at frame time `t`."""
        cfg = self.cfg
        changed = False
        events: list[GestureEvent] = []
        seen: dict[int, str | None] = {}  # track -> the label it shows in this frame
        self.cooldowns.forget_expired(t, cfg.cooldown_s)
        for obs in observations:
            track = self._hands.get(obs.track)
            if track is None:
                track = self._hands[obs.track] = _HandTrack(first_seen=t)
            if track.active is None:
                track.hand = obs.hand
            label = obs.label if obs.label in self.enabled else None
            seen[obs.track] = label
            track.window.append((t, label, obs.confidence if label else 0.0, obs.source))
            track.last_seen = t
        for key, track in list(self._hands.items()):
            if key not in seen:
                if t - track.last_seen >= cfg.lost_after_s - EPS:
                    changed = True
                    del self._hands[key]
                    self.cooldowns.gone(key, track.last_seen)
                    continue
                # A missed detection counts as a frame without the gesture.
                track.window.append((t, None, 0.0, ""))
            while track.window and track.window[0][0] <= t - cfg.window_s + EPS:
                track.window.popleft()
            ev, moved = self._step(key, track, t, wall, showing=seen.get(key))
            changed |= moved
            if ev is not None:
                events.append(ev)
        self.state_changed = changed
        return events

    def motion_event(self, track: int, gesture: str, confidence: float, t: float, wall: float = 0.0
                     ) -> GestureEvent | None:
        """A swipe or wave from `track` (seen in this frame's update): the event, unless the
        gesture is not enabled or the hand's cooldown for it is running."""
        hand = self._hands.get(track)
        if gesture not in self.enabled or hand is None:
            return None
        if self.cooldowns.blocks(track, hand.hand, gesture, t, self.cfg.cooldown_s, hand.first_seen):
            return None
        self.cooldowns.fired(track, hand.hand, gesture, t)
        return GestureEvent(gesture=gesture, confidence=confidence, source="landmarks", hand=hand.hand,
                            t=t, wall=wall)

    def _step(self, key: int, track: _HandTrack, t: float, wall: float, showing: str | None
              ) -> tuple[GestureEvent | None, bool]:
        cfg = self.cfg
        n = len(track.window)
        sums: dict[str, float] = {}
        for _, label, conf, _ in track.window:
            if label is not None:
                sums[label] = sums.get(label, 0.0) + conf
        scores = {g: s / n for g, s in sums.items()}
        changed = False

        if track.active is not None and scores.get(track.active, 0.0) < cfg.exit_threshold:
            track.active = None
            changed = True

        if track.active is not None:
            track.candidate = None
            return None, changed

        best, best_score = None, 0.0
        for g, s in scores.items():
            if s > best_score:
                best, best_score = g, s
        if best is None or best_score < cfg.enter_threshold:
            track.candidate = None
            return None, changed
        if track.candidate != best:
            track.candidate, track.candidate_since = best, t
        if t - track.candidate_since < cfg.min_hold_s - EPS or showing != best:
            # Only on a frame whose hand shows it: not on one where the hand is missed, moving
            # or showing something else for a frame (the window still holds the earlier ones).
            return None, changed

        track.active, track.active_since, track.candidate = best, t, None
        if self.cooldowns.blocks(key, track.hand, best, t, cfg.cooldown_s, track.first_seen):
            return None, True
        self.cooldowns.fired(key, track.hand, best, t)
        sources = {src for _, label, _, src in track.window if label == best}
        source = "both" if "both" in sources or {"landmarks", "vlm"} <= sources else (
            sources.pop() if len(sources) == 1 else "landmarks")
        ev = GestureEvent(gesture=best, confidence=round(best_score, 4), source=source, hand=track.hand,
                          t=t, wall=wall)
        return ev, True
