"""Where the palm detector looks for new hands: squares over the frame at a few scales.

The palm detector sees a 192x192 square and finds palms best when the hand spans about a fifth to
a third of it. Shrinking a 1280x720 frame into one square makes a hand at 3 m (a box ~5% of the
frame's width) about 9 pixels: never found. So the search covers the frame with squares at a
few sizes: the whole frame (hands near the camera), a middle level, and a fine level whose
squares are small enough that the smallest hand asked for (`hands.min_hand_width`) fills about
a sixth of one. Neighbouring squares overlap by a quarter, more than the smallest hand, so a
hand is always whole inside some square.

A full pass is more squares than one frame can afford, so each frame runs the next few in a
fixed cycle (`hands.search_squares_per_frame`): new hands are found within one cycle, and the
frame rate does not fall with the camera's resolution. Found hands are followed from their own
landmarks (see `finder.py`) and cost no search at all.
"""

from __future__ import annotations

import math

import numpy as np

from edge_gesture.hands.geometry import Region

# Smallest hand / square side at which the palm detector still finds most hands (measured on
# room-distance composites of the development photos: ~0.16-0.35 works, below ~0.12 it fails).
HAND_SHARE_OF_FINE_SQUARE = 0.17
MODEL_INPUT = 192
LEVEL_STEP = 2.2
OVERLAP = 0.25


def tile(width: int, height: int, side: float) -> list[Region]:
    """Squares of `side` pixels covering the frame, overlapping by at least OVERLAP."""
    side = min(side, float(max(width, height)))
    step = side * (1 - OVERLAP)

    def centres(length: int) -> list[float]:
        if side >= length:
            return [length / 2]
        n = math.ceil((length - side) / step) + 1
        return [float(c) for c in np.linspace(side / 2, length - side / 2, n)]

    return [Region(x, y, side) for y in centres(height) for x in centres(width)]


def search_levels(width: int, height: int, min_hand_width: float) -> list[list[Region]]:
    """The squares of each level, coarsest (the whole frame) first."""
    whole = Region(width / 2, height / 2, float(max(width, height)))
    levels = [[whole]]
    # Never finer than the model's own input: enlarging a square beyond it adds no detail,
    # only squares (on a small picture the smallest hand asked for is a few pixels anyway).
    side = max(min_hand_width * width / HAND_SHARE_OF_FINE_SQUARE, float(MODEL_INPUT))
    sides = []
    while side < min(width, height) * 0.9 and side * LEVEL_STEP < max(width, height) * 1.1:
        sides.append(side)
        side *= LEVEL_STEP
    if side < max(width, height) * 0.9 and sides:
        sides.append(side)
    for s in reversed(sides):
        levels.append(tile(width, height, s))
    return levels


class SearchPlan:
    """The search squares for one frame size, handed out a few per frame in a fixed cycle."""

    def __init__(self, width: int, height: int, min_hand_width: float, per_frame: int):
        self.size = (width, height)
        self.levels = search_levels(width, height, min_hand_width)
        self.cycle = [r for level in self.levels for r in level]
        self.per_frame = max(1, per_frame)
        self._next = 0

    def __len__(self) -> int:
        return len(self.cycle)

    @property
    def frames_per_pass(self) -> int:
        return math.ceil(len(self.cycle) / self.per_frame)

    def next_squares(self) -> list[Region]:
        """The next squares in the cycle (wrapping round), at most `per_frame` of them."""
        n = min(self.per_frame, len(self.cycle))
        out = [self.cycle[(self._next + i) % len(self.cycle)] for i in range(n)]
        self._next = (self._next + n) % len(self.cycle)
        return out

    def restart(self) -> None:
        self._next = 0
