"""Rotated square regions of a frame: where a hand is, and how to cut it out for a model.

MediaPipe's hand pipeline passes a hand from stage to stage as a rotated square ("ROI"): the palm
detector's box, turned so the fingers point up, enlarged to hold the whole hand; later the box
around last frame's landmarks, likewise. Everything here is in the frame's pixels, so a hand is
followed at the camera's own resolution whatever size the models take as input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


def normalize_radians(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


@dataclass(frozen=True, slots=True)
class Region:
    """A square of side `size` pixels centred on (cx, cy), turned by `rotation` radians."""

    cx: float
    cy: float
    size: float
    rotation: float = 0.0

    def corners(self) -> np.ndarray:
        """The four corners in frame pixels, clockwise from the model input's top-left."""
        half = self.size / 2
        local = np.array([[-half, -half], [half, -half], [half, half], [-half, half]], np.float32)
        return local @ self._rot().T + np.array([self.cx, self.cy], np.float32)

    def _rot(self) -> np.ndarray:
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        return np.array([[c, -s], [s, c]], np.float32)

    def crop_matrix(self, side: int) -> np.ndarray:
        """The affine map from frame pixels to a `side` x `side` model input showing this region."""
        src = self.corners()[:3]
        dst = np.array([[0, 0], [side, 0], [side, side]], np.float32)
        return cv2.getAffineTransform(src, dst)

    def crop(self, frame: np.ndarray, side: int) -> np.ndarray:
        """This region resampled to side x side; what lies outside the frame is black."""
        return cv2.warpAffine(frame, self.crop_matrix(side), (side, side), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Points given in the region's own unit square (0..1, x right, y down) to frame pixels."""
        local = (points[:, :2] - 0.5) * self.size
        return local @ self._rot().T + np.array([self.cx, self.cy], np.float32)


def transformed(region: Region, *, scale: float, shift_y: float) -> Region:
    """MediaPipe's RectTransformation for a square: move along the region's own up axis by
    `shift_y` sides (negative = towards the fingers), then grow by `scale`."""
    c, s = math.cos(region.rotation), math.sin(region.rotation)
    dy = region.size * shift_y
    return Region(region.cx - s * dy, region.cy + c * dy, region.size * scale, region.rotation)


def region_from_points(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> Region:
    """The square around `points` (frame pixels) in the frame turned so that start -> end points up."""
    rotation = normalize_radians(math.pi / 2 - math.atan2(-(end[1] - start[1]), end[0] - start[0]))
    c, s = math.cos(-rotation), math.sin(-rotation)
    # Measure the extent in the turned frame, where the hand stands upright.
    rot = np.array([[c, -s], [s, c]], np.float32)
    upright = points[:, :2] @ rot.T
    lo, hi = upright.min(axis=0), upright.max(axis=0)
    centre_upright = (lo + hi) / 2
    centre = centre_upright @ np.linalg.inv(rot).T
    side = float(max(hi - lo))
    return Region(float(centre[0]), float(centre[1]), side, rotation)


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Overlap of two boxes (x0, y0, x1, y1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def overlap_of_smaller(a: tuple[float, float, float, float], b: tuple[float, float, float, float]
                       ) -> float:
    """How much of the smaller box lies inside the other: 1.0 when one contains the other."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 0.0
