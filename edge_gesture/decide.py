"""Turn per-frame gesture labels into debounced events, one per gesture onset.

Per hand: a gesture's score is its mean per-frame confidence over a sliding time window (frames
where the hand shows something else, or is missing, count as zero). A gesture becomes active when
its score has stayed at or above `enter_threshold` for `min_hold_s`; it stays active until its score
drops below `exit_threshold` (hysteresis, so a flickering frame does not end it). Becoming active
fires one event, unless the same gesture fired from the same hand within `cooldown_s`.

Time comes from the frames, not the wall clock, so a recorded video gives the same events however
fast it is processed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from edge_gesture.config import DecideConfig


@dataclass(frozen=True, slots=True)
class Observation:
    """What one frame says about one hand."""

    hand: str  # "left" / "right": the key that tracks a hand across frames
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
    window: deque = field(default_factory=deque)  # (t, label, confidence, source)
    last_seen: float = 0.0
    active: str | None = None
    candidate: str | None = None
    candidate_since: float = 0.0


class Cooldowns:
    """When each (hand key, gesture) last fired.

    Kept apart from the hand tracks: a track is dropped after `lost_after_s`, and a hand that
    leaves view for a moment must not come back with its cooldown forgotten. Keyed by whatever
    key an Observation carries for its hand, so the key's meaning can change without touching this.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], float] = {}

    def __len__(self) -> int:
        return len(self._last)

    def blocks(self, hand: str, gesture: str, t: float, cooldown_s: float) -> bool:
        last = self._last.get((hand, gesture))
        return last is not None and t - last < cooldown_s

    def fired(self, hand: str, gesture: str, t: float) -> None:
        self._last[(hand, gesture)] = t

    def forget_expired(self, t: float, cooldown_s: float) -> None:
        """Drop entries that can no longer block anything, so hands that come and go under
        fresh keys do not grow this without bound."""
        if self._last:
            self._last = {k: last for k, last in self._last.items() if t - last < cooldown_s}


class Decider:
    """Debounces gestures per hand. Not thread-safe: the frame loop owns it."""

    def __init__(self, cfg: DecideConfig, enabled: Iterable[str]):
        self.cfg = cfg
        self.enabled = frozenset(enabled)
        self._hands: dict[str, _HandTrack] = {}
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
        """The active gesture per hand currently in view."""
        return {hand: track.active for hand, track in sorted(self._hands.items())}

    def update(self, t: float, observations: Iterable[Observation], wall: float = 0.0
               ) -> list[GestureEvent]:
        """Feed one frame's observations (one per hand seen) taken at frame time `t`."""
        cfg = self.cfg
        changed = False
        events: list[GestureEvent] = []
        seen = set()
        self.cooldowns.forget_expired(t, cfg.cooldown_s)
        for obs in observations:
            seen.add(obs.hand)
            track = self._hands.get(obs.hand)
            if track is None:
                track = self._hands[obs.hand] = _HandTrack()
            label = obs.label if obs.label in self.enabled else None
            track.window.append((t, label, obs.confidence if label else 0.0, obs.source))
            track.last_seen = t
        for hand, track in list(self._hands.items()):
            if hand not in seen:
                if t - track.last_seen >= cfg.lost_after_s:
                    changed = True
                    del self._hands[hand]
                    continue
                # A missed detection counts as a frame without the gesture.
                track.window.append((t, None, 0.0, ""))
            while track.window and track.window[0][0] <= t - cfg.window_s:
                track.window.popleft()
            ev, moved = self._step(hand, track, t, wall)
            changed |= moved
            if ev is not None:
                events.append(ev)
        self.state_changed = changed
        return events

    def _step(self, hand: str, track: _HandTrack, t: float, wall: float
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
        if t - track.candidate_since < cfg.min_hold_s:
            return None, changed

        track.active, track.candidate = best, None
        if self.cooldowns.blocks(hand, best, t, cfg.cooldown_s):
            return None, True
        self.cooldowns.fired(hand, best, t)
        sources = {src for _, label, _, src in track.window if label == best}
        source = "both" if "both" in sources or {"landmarks", "vlm"} <= sources else (
            sources.pop() if len(sources) == 1 else "landmarks")
        ev = GestureEvent(gesture=best, confidence=round(best_score, 4), source=source, hand=hand,
                          t=t, wall=wall)
        return ev, True
