"""MediaPipe's hand-landmark model on OpenVINO: 21 points, presence and handedness for a region.

The model sees a 224x224 square cut from the frame around the hand, turned so the fingers point
up, and answers 21 landmarks in that square's pixels, a hand-presence score and a handedness
score. The square comes from a palm detection (a new hand) or from the hand's own landmarks in
the previous frame (tracking, MediaPipe's `hand_landmark_landmarks_to_roi`): either way it is cut
at the frame's full resolution, so a distant hand is read from all the pixels the camera has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_gesture.hands.geometry import Region, region_from_points, transformed

# The landmarks MediaPipe frames a tracked hand with: wrist, thumb base, and the two lower joints
# of each finger (the fingertips move too much to steady the box).
_FRAME_POINTS = [0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18]
TRACK_SCALE = 2.0
TRACK_SHIFT = -0.1


@dataclass(frozen=True, slots=True)
class HandReading:
    """What the landmark model says about one region."""

    region: Region
    points: np.ndarray  # (21, 3) x, y in frame pixels; z in the same units as x
    presence: float  # 0..1: is there a hand in the region at all
    left_label: float  # 0..1: how sure the model is of MediaPipe's label "Left" (a selfie-view label)

    def next_region(self) -> Region:
        """Where to look for this hand in the next frame."""
        return region_for_points(self.points)

    @property
    def size(self) -> float:
        """The hand's size in pixels: its landmarks' longer extent."""
        span = self.points[:, :2].max(axis=0) - self.points[:, :2].min(axis=0)
        return float(max(span))


def region_for_points(points: np.ndarray) -> Region:
    partial = points[_FRAME_POINTS, :2]
    wrist = points[0, :2]
    # Towards the middle of the knuckles: the mean of index and ring, averaged with middle.
    knuckles = ((points[5, :2] + points[13, :2]) / 2 + points[9, :2]) / 2
    upright = region_from_points(partial, wrist, knuckles)
    return transformed(upright, scale=TRACK_SCALE, shift_y=TRACK_SHIFT)


def read_hands(model, frame: np.ndarray, regions: list[Region]) -> list[HandReading]:
    """The landmark model over every region of one frame, in one batch."""
    if not regions:
        return []
    side = model.side
    squares = np.stack([r.crop(frame, side) for r in regions])
    points, presence, handedness, _world = model.run(squares)
    out = []
    for i, region in enumerate(regions):
        raw = points[i].reshape(21, 3) / side
        xy = region.to_frame(raw)
        # z comes relative to the square; scale it like x so it stays comparable in the frame.
        z = raw[:, 2:3] * region.size
        out.append(HandReading(region, np.hstack([xy, z]).astype(np.float32),
                               _probability(float(presence[i].ravel()[0])),
                               _probability(float(handedness[i].ravel()[0]))))
    return out


def _probability(value: float) -> float:
    """The bundled models end in a sigmoid; a raw logit (another build) is squashed here."""
    if 0.0 <= value <= 1.0:
        return value
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, value))))
