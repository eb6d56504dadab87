"""Hands as tracks: which hand in this frame is which hand in the last ones.

The debouncer and the VLM keep their state per hand, so they need a key that stays with a hand.
The left/right label cannot be that key: the hand finder's handedness flickers (most of all at the
frame's edge and when a hand turns), and two people each have a right hand. `HandTracks` gives
every hand a track id instead, by where it is and how big it is:

- Each hand is reduced to its palm (wrist and the four knuckles): the palm's centre, and its size
  as its longest side, both in units of the frame's height. The palm keeps its shape whatever the
  fingers do, so a hand that opens or closes stays where it was.
- A hand continues the track whose last palm is closest in palm sizes (the mean of the two) and
  similar in size. Pairs are taken greedily, cheapest first: with at most four hands that gives
  the same answer as an optimal assignment in all but contrived cases. A hand further than
  `MAX_JUMP` palm sizes from every free track, or more than `MAX_SIZE_RATIO` times larger or
  smaller, starts a new track.
- A track unseen for `lost_after_s` of frame time is gone; a hand that comes back near where it
  left before that keeps its id. Ids count up from 1 and are never reused within a run, so a key
  never means two hands.
- The handedness a track reports is its weighted majority (each frame's label counts with its
  score, older frames fading with a half-life of `HANDEDNESS_HALF_LIFE_S`), so a label that flips
  for a few frames does not flip the hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from edge_gesture.hands import Hand

#: Wrist and the four finger knuckles: the rigid part of the hand.
_PALM = (0, 5, 9, 13, 17)
#: Sides of the palm whose longest is the hand's size: long in any pose or turn of the hand.
_PALM_SIDES = ((0, 5), (0, 9), (0, 17), (5, 17))

#: Furthest a hand may be from a track's last palm centre, in palm sizes, and still continue it:
#: a quick wave moves a hand about half a palm per frame at 30 frames/s, and a hand missed for a
#: few frames has moved further; two hands of one person are rarely closer than one palm apart.
MAX_JUMP = 3.0
#: Largest size change between a track's last palm and a hand that continues it (either way):
#: well above what a hand turning or moving towards the camera does between two frames, well
#: below the difference between a near and a far person's hands.
MAX_SIZE_RATIO = 1.8
#: How much a size difference costs against distance: a factor of 1.8 is worth about one palm.
_SIZE_WEIGHT = 1.7
#: Half-life of a frame's handedness vote: long enough that a label flipping for a second does
#: not outvote the seconds before it, short enough to recover from a wrong start.
HANDEDNESS_HALF_LIFE_S = 2.0
#: Smallest palm size (frame heights) counted: landmarks that collapse to a point divide by this.
_MIN_SIZE = 1e-4


@dataclass
class _Track:
    id: int
    centre: np.ndarray  # palm centre, (x * width / height, y): frame heights
    size: float  # longest palm side, frame heights
    last_seen: float
    votes: dict[str, float] = field(default_factory=dict)  # handedness -> decayed, score-weighted
    handedness: str = ""

    def vote(self, label: str, score: float, dt: float) -> None:
        fade = 0.5 ** (max(dt, 0.0) / HANDEDNESS_HALF_LIFE_S)
        for k in self.votes:
            self.votes[k] *= fade
        self.votes[label] = self.votes.get(label, 0.0) + max(score, 0.0)
        # The label already held wins a tie, so equal evidence does not flip it.
        best = max(self.votes, key=lambda k: (self.votes[k], k == self.handedness))
        self.handedness = best


def palm(hand: Hand) -> tuple[np.ndarray, float]:
    """The palm's centre and size in frame heights (x scaled by the aspect), so a frame size that
    changes with the same view (an RTSP stream renegotiated) does not move the hand."""
    pts = hand.landmarks[:, :2].astype(np.float64) * (hand.aspect, 1.0)
    centre = pts[list(_PALM)].mean(axis=0)
    size = max(float(np.linalg.norm(pts[a] - pts[b])) for a, b in _PALM_SIDES)
    return centre, max(size, _MIN_SIZE)


def _cost(track: _Track, centre: np.ndarray, size: float) -> float | None:
    """How unlike the track's last palm this one is; None when it cannot be the same hand."""
    ratio = max(track.size, size) / min(track.size, size)
    if ratio > MAX_SIZE_RATIO:
        return None
    jump = float(np.linalg.norm(track.centre - centre)) / ((track.size + size) / 2)
    if jump > MAX_JUMP:
        return None
    return jump + _SIZE_WEIGHT * math.log(ratio)


class HandTracks:
    """Track ids for the hands of a stream. One per pipeline; not thread-safe (the frame loop
    owns it). `lost_after_s` may be changed between frames (a reload)."""

    def __init__(self, lost_after_s: float):
        self.lost_after_s = lost_after_s
        self._tracks: dict[int, _Track] = {}
        self._next_id = 1

    def __len__(self) -> int:
        """Tracks alive: in view, or missing for less than `lost_after_s`."""
        return len(self._tracks)

    def assign(self, hands: list[Hand], t: float) -> list[Hand]:
        """The same hands, in the same order, each with its `track_id` and its track's
        handedness; `t` is the frame's time (monotonic seconds)."""
        self._tracks = {i: tr for i, tr in self._tracks.items()
                        if t - tr.last_seen < self.lost_after_s - 1e-6}
        palms = [palm(h) for h in hands]
        pairs = []
        for n, (centre, size) in enumerate(palms):
            for tr in self._tracks.values():
                cost = _cost(tr, centre, size)
                if cost is not None:
                    pairs.append((cost, n, tr.id))
        pairs.sort()
        taken: dict[int, _Track] = {}  # hand index -> its track
        used: set[int] = set()
        for _, n, tid in pairs:
            if n not in taken and tid not in used:
                taken[n] = self._tracks[tid]
                used.add(tid)
        out = []
        for n, (hand, (centre, size)) in enumerate(zip(hands, palms, strict=True)):
            tr = taken.get(n)
            if tr is None:
                tr = self._tracks[self._next_id] = _Track(self._next_id, centre, size, t)
                self._next_id += 1
            tr.vote(hand.handedness, hand.score, t - tr.last_seen)
            tr.centre, tr.size, tr.last_seen = centre, size, t
            out.append(replace(hand, track_id=tr.id, handedness=tr.handedness))
        return out
