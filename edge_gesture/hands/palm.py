"""MediaPipe's palm detector (the `.tflite` in the mediapipe 0.10.21 wheel) run on OpenVINO.

The model sees a 192x192 RGB square in 0..1 and scores 2,016 SSD anchors (a 24x24 grid with 2
anchors a cell and a 12x12 grid with 6), each with a box and 7 palm keypoints as offsets from the
anchor's centre. The decoding and the weighted non-maximum suppression below are those of
MediaPipe's `palm_detection_cpu` graph, so a square shows the same palms here as there.

A square is any `Region` of the frame: the whole frame letterboxed, or one tile of a search at the
camera's full resolution (see `search.py`), which is what finds a hand a few dozen pixels wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_gesture.hands.geometry import Region, iou, normalize_radians, transformed

INPUT = 192
MIN_SUPPRESSION_IOU = 0.3
# Palm box -> hand region: MediaPipe's palm_detection_detection_to_roi.
PALM_TO_HAND_SCALE = 2.6
PALM_TO_HAND_SHIFT = -0.5


def _anchor_centres() -> np.ndarray:
    """SSD anchor centres (x, y in 0..1) in the model's output order; all anchors are size 1."""
    centres = []
    for cells, per_cell in ((24, 2), (12, 6)):
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


ANCHORS = _anchor_centres()


@dataclass(frozen=True, slots=True)
class Palm:
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 frame pixels
    keypoints: np.ndarray  # (7, 2) frame pixels: wrist, index MCP, middle MCP, ...

    def hand_region(self) -> Region:
        """Where the whole hand is, turned so that the fingers point up (MediaPipe's rule)."""
        x0, y0, x1, y1 = self.box
        (wx, wy), (mx, my) = self.keypoints[0], self.keypoints[2]  # wrist, middle-finger knuckle
        rotation = normalize_radians(math.pi / 2 - math.atan2(-(my - wy), mx - wx))
        box_region = Region((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0), rotation)
        return transformed(box_region, scale=PALM_TO_HAND_SCALE, shift_y=PALM_TO_HAND_SHIFT)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, region: Region, min_score: float
           ) -> list[Palm]:
    """One square's model outputs ((2016, 18), (2016, 1)) to palms in frame pixels, before NMS."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores[:, 0], -100, 100)))
    keep = np.nonzero(scores >= min_score)[0]
    if keep.size == 0:
        return []
    raw = raw_boxes[keep] / INPUT
    centres = ANCHORS[keep]
    unit_centre = raw[:, 0:2] + centres
    half = raw[:, 2:4] / 2
    keypoints = raw[:, 4:18].reshape(-1, 7, 2) + centres[:, None, :]
    palms = []
    for i in range(keep.size):
        corners = np.array([unit_centre[i] - half[i], unit_centre[i] + half[i]], np.float32)
        lo, hi = region.to_frame(corners)
        box = (float(min(lo[0], hi[0])), float(min(lo[1], hi[1])),
               float(max(lo[0], hi[0])), float(max(lo[1], hi[1])))
        palms.append(Palm(float(scores[keep[i]]), box, region.to_frame(keypoints[i])))
    return palms


def weighted_nms(palms: list[Palm], iou_threshold: float = MIN_SUPPRESSION_IOU) -> list[Palm]:
    """MediaPipe's WEIGHTED suppression: overlapping detections of one palm are averaged,
    weighted by score, which steadies the box and keypoints more than keeping the best alone.
    Tiles overlap, so one palm seen by two tiles merges here too."""
    remaining = sorted(palms, key=lambda p: p.score, reverse=True)
    out = []
    while remaining:
        best = remaining[0]
        group = [p for p in remaining if iou(best.box, p.box) > iou_threshold]
        remaining = [p for p in remaining if iou(best.box, p.box) <= iou_threshold]
        w = np.array([p.score for p in group], np.float32)
        w /= w.sum()
        box = tuple(float(v) for v in np.array([p.box for p in group], np.float32).T @ w)
        keypoints = np.tensordot(w, np.stack([p.keypoints for p in group]), axes=1)
        out.append(Palm(best.score, box, keypoints.astype(np.float32)))
    return out


def palms_in_square(model, frame: np.ndarray, region: Region, min_score: float) -> list[Palm]:
    """One square's palms in frame pixels, before merging with other squares'."""
    boxes, scores = model.run(region.crop(frame, INPUT)[None])
    return decode(boxes.reshape(len(ANCHORS), -1), scores.reshape(len(ANCHORS), 1), region, min_score)


def detect_palms(model, frame: np.ndarray, regions: list[Region], min_score: float) -> list[Palm]:
    """Palms in the given squares of one frame, overlapping ones merged."""
    palms: list[Palm] = []
    for region in regions:
        palms += palms_in_square(model, frame, region, min_score)
    return weighted_nms(palms)
