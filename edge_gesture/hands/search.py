"""Where the palm detector looks for new hands: squares over the frame at a few scales.

The palm detector sees a 192x192 square and finds palms best when the hand spans about a fifth to
a third of it. Shrinking a 1280x720 frame into one square makes a hand at 3 m (a box ~5% of the
frame's width) about 9 pixels: never found. So the search covers the frame with squares at a
few sizes: the whole frame (hands near the camera), a middle level, and a fine level whose
squares are small enough that the smallest hand asked for (`hands.min_hand_width`) fills about
a sixth of one. Neighbouring squares overlap by a quarter, more than the smallest hand, so a
hand is always whole inside some square.

A full pass is more squares than one frame can afford. A new scene is searched whole once, a
few squares a frame (`hands.search_squares_per_frame`), and so is a frame that changed over most
of its area (a cut, the lights); after that a new hand has to arrive, and arriving is motion:
the squares where the picture changed are searched first, and a slow sweep
(`hands.sweep_squares_per_frame`) covers the rest in turn, so a still room costs two squares a
frame and a raised hand is looked at in the next frame. The frame rate does not fall with the
camera's resolution. Found hands are followed from their own landmarks (see `finder.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from edge_gesture.hands.geometry import Region

# Smallest hand / square side at which the palm detector still finds most hands (measured on
# room-distance composites of the development photos: ~0.16-0.35 works, below ~0.12 it fails).
HAND_SHARE_OF_FINE_SQUARE = 0.17
MODEL_INPUT = 192
# The smallest hand (pixels) the search looks for with upscaled squares: 24 px hands in 640x480
# composites were read right 89 times in the 94 they were found.
MIN_READABLE_HAND_PX = 20
LEVEL_STEP = 2.2
OVERLAP = 0.25
# Share of the whole frame that must change for the picture to count as a new scene.
NEW_SCENE_SHARE = 0.5


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
    # Finer than the model's own input too, down to half of it: upscaled, a 22 px hand in a
    # 640x480 frame spans the share of the input at which the detector finds hands (its anchors
    # are sized for that share; at its own pixel size most such hands went unfound). Not for a
    # smallest hand the landmark model could not read anyway (a photo's or a small stream's few
    # pixels): there the extra squares only propose parts of the hands that are big.
    smallest = min_hand_width * width
    floor = MODEL_INPUT / 2 if smallest >= MIN_READABLE_HAND_PX else MODEL_INPUT
    side = max(smallest / HAND_SHARE_OF_FINE_SQUARE, float(floor))
    sides = []
    while side < min(width, height) * 0.9 and side * LEVEL_STEP < max(width, height) * 1.1:
        sides.append(side)
        side *= LEVEL_STEP
    if side < max(width, height) * 0.9 and sides:
        sides.append(side)
    for s in reversed(sides):
        levels.append(tile(width, height, s))
    return levels


class MotionMap:
    """Where the picture changed since the last look, per search square, from a small grey copy
    of the frame (1/8 of each side: a few microseconds of work, and below camera noise)."""

    SCALE = 8
    CHANGE = 18  # grey levels: above sensor noise and compression flicker
    MIN_SHARE = 0.004  # of a square's area that must change

    def __init__(self, squares: list[Region], width: int, height: int):
        self._previous: np.ndarray | None = None
        small = (max(1, width // self.SCALE), max(1, height // self.SCALE))
        self._size = small
        self._boxes = []
        for r in squares:
            x0 = int(np.clip((r.cx - r.size / 2) / self.SCALE, 0, small[0]))
            y0 = int(np.clip((r.cy - r.size / 2) / self.SCALE, 0, small[1]))
            x1 = int(np.clip(np.ceil((r.cx + r.size / 2) / self.SCALE), x0 + 1, small[0]))
            y1 = int(np.clip(np.ceil((r.cy + r.size / 2) / self.SCALE), y0 + 1, small[1]))
            self._boxes.append((x0, y0, x1, y1))

    def update(self, frame: np.ndarray, ignore: Sequence[Region] = ()) -> np.ndarray:
        """Per square, the share of its area that changed since the last call (0 on the first),
        not counting changes inside `ignore` (the hands already followed: their own movement
        is not a new hand)."""
        grey = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), self._size,
                          interpolation=cv2.INTER_AREA)
        previous, self._previous = self._previous, grey
        if previous is None:
            return np.zeros(len(self._boxes), np.float32)
        changed = (cv2.absdiff(grey, previous) > self.CHANGE).astype(np.uint8)
        for r in ignore:
            # The turned square's upright bounding box.
            half = r.size / 2 * (abs(math.cos(r.rotation)) + abs(math.sin(r.rotation))) / self.SCALE
            x, y = r.cx / self.SCALE, r.cy / self.SCALE
            changed[max(0, int(y - half)):max(0, int(math.ceil(y + half))),
                    max(0, int(x - half)):max(0, int(math.ceil(x + half)))] = 0
        total = cv2.integral(changed)
        out = np.empty(len(self._boxes), np.float32)
        for i, (x0, y0, x1, y1) in enumerate(self._boxes):
            area = (x1 - x0) * (y1 - y0)
            out[i] = (total[y1, x1] - total[y0, x1] - total[y1, x0] + total[y0, x0]) / area
        return out


class SearchPlan:
    """The search squares for one frame size, and which of them to look at in each frame.

    A new scene (the first frames, a new frame size, eval's next photo) is searched whole once, at
    the full per-frame budget. After that a hand has to get there: squares where the picture
    changed come first (a raised hand is motion), up to the budget, and a slow sweep of
    `sweep_per_frame` squares a frame keeps covering the rest, so a hand that was already there,
    still, is found too, within one sweep."""

    def __init__(self, width: int, height: int, min_hand_width: float, per_frame: int,
                 sweep_per_frame: int = 2):
        self.size = (width, height)
        self.levels = search_levels(width, height, min_hand_width)
        self.cycle = [r for level in self.levels for r in level]
        self.per_frame = max(1, per_frame)
        self.sweep_per_frame = max(1, min(sweep_per_frame, self.per_frame))
        self._motion = MotionMap(self.cycle, width, height)
        self.restart()

    def __len__(self) -> int:
        return len(self.cycle)

    @property
    def frames_per_pass(self) -> int:
        """Frames a whole pass takes at the full budget (a new scene's first search)."""
        return math.ceil(len(self.cycle) / self.per_frame)

    @property
    def first_pass_done(self) -> bool:
        return not self._unsearched

    def look(self, frame: np.ndarray, ignore: Sequence[Region] = ()) -> np.ndarray:
        """Note what changed in this frame outside `ignore` (the followed hands); call once per
        frame, searched or not."""
        moved = self._motion.update(frame, ignore)
        whole_frame = 0  # the cycle starts with the coarsest level, the whole frame
        if moved[whole_frame] >= NEW_SCENE_SHARE:
            # Most of the picture is new (a cut, the lights): search it whole, coarse squares
            # first, as a new scene; by most changed first, the fine squares inside the new
            # picture would come before the coarse ones that frame a big hand whole.
            self.restart()
        self._moved = np.maximum(self._moved, moved)
        return moved

    def next_squares(self, budget: int | None = None, sweep: int | None = None,
                     near: Sequence[Region] = ()) -> list[Region]:
        """The squares to search now, at most `budget` (default: the per-frame budget): the
        scene's unsearched ones; then, for each region in `near` (where hands were just lost),
        the squares that frame it best; after those, the squares where something moved since
        they were last searched (most first), keeping room for the sweep's share (`sweep`,
        default the plan's). Squares a search did not get to go back with `give_back`."""
        budget = self.per_frame if budget is None else max(1, budget)
        sweep = self.sweep_per_frame if sweep is None else max(1, sweep)
        picks = sorted(self._unsearched)[:budget]
        for i in self._framing(near):
            if len(picks) >= budget:
                break
            if i not in picks:
                picks.append(i)
        if len(picks) < budget:
            sweep = min(sweep, budget - len(picks))
            order = np.argsort(-self._moved, kind="stable")
            moving = [int(i) for i in order
                      if self._moved[i] >= MotionMap.MIN_SHARE and int(i) not in picks]
            picks += moving[:budget - len(picks) - sweep]
            # The sweep's next squares in turn, past those already picked.
            wanted = min(len(picks) + sweep, len(self.cycle))
            for _ in range(len(self.cycle)):
                if len(picks) >= wanted:
                    break
                i, self._next = self._next, (self._next + 1) % len(self.cycle)
                if i not in picks:
                    picks.append(i)
        self._given = {}
        for i in picks:
            self._given[self.cycle[i]] = (i, i in self._unsearched, float(self._moved[i]))
            self._unsearched.discard(i)
            self._moved[i] = 0.0
        return [self.cycle[i] for i in picks]

    def give_back(self, squares: Sequence[Region]) -> None:
        """Squares from the last `next_squares` that were not searched after all (the hands
        wanted were found first): still unsearched, and still moved, for a later frame."""
        for square in squares:
            i, unsearched, moved = self._given[square]
            if unsearched:
                self._unsearched.add(i)
            self._moved[i] = max(self._moved[i], moved)

    def _framing(self, regions: Sequence[Region]) -> list[int]:
        """For each hand region (the landmark model's square, about twice the hand), the squares
        holding its centre, best scale first: the palm detector sees a hand best at about a
        quarter of the square's side, so the ideal square is about twice the region. At most
        two squares a region, from the two best-fitting levels."""
        picks: list[int] = []
        for region in regions:
            ideal = 2.0 * region.size
            ranked = []
            start = 0
            for level in self.levels:
                nearest = min(range(len(level)), key=lambda k: math.hypot(
                    level[k].cx - region.cx, level[k].cy - region.cy))
                square = level[nearest]
                if abs(square.cx - region.cx) <= square.size / 2 and \
                        abs(square.cy - region.cy) <= square.size / 2:
                    ranked.append((abs(math.log(square.size / ideal)), start + nearest))
                start += len(level)
            picks += [i for _, i in sorted(ranked)[:2] if i not in picks]
        return picks

    def restart(self) -> None:
        """A new scene: search it whole again."""
        self._next = 0
        self._unsearched = set(range(len(self.cycle)))
        self._moved = np.zeros(len(self.cycle), np.float32)
        self._given: dict[Region, tuple[int, bool, float]] = {}
