"""Static hand gestures from MediaPipe's 21 hand landmarks, by geometry (no trained model).

Each finger gets a soft "extended" probability from two cues that fail differently: the summed bend
of its joints (3-D angles, so a finger pointing at the camera still reads as straight) and how far
its tip reaches from the wrist compared with its middle joint. The thumb, which folds sideways
rather than curling, is "out" when its tip is far from the middle knuckle, clear of the index and
middle fingers, and beyond the index knuckle along the line of the knuckles. A gesture is a
template over these (for example call = thumb out, little finger extended, the other three
curled), scored as the product of how well each part matches, so one clearly wrong finger sinks
the score and a half-closed hand scores low everywhere. Logistic curves turn every measurement
into a probability, which keeps the confidence continuous: it slides down as the hand drifts away
from the gesture instead of jumping.

Invariances:
- size: every distance is divided by the palm length;
- left or right hand: every feature is mirror-symmetric, so a wrongly guessed handedness cannot
  change the answer (`handedness` is validated but does not alter the result);
- in-plane rotation: open_palm, fist, victory, ok and call do not depend on it at all (a victory
  sign held sideways is still one). Three gestures are defined by a direction, measured against
  the image's up, because that is what the user means: thumbs_up when the thumb points within
  about 70 degrees of up, thumbs_down within about 70 degrees of down (a sideways thumb is
  neither), pointing_up when the index points within about 60 degrees of up (pointing
  sideways is not pointing up). The thumb's direction is read from the thumb and the knuckle row
  it continues together (`_thumb_direction`), which keeps a thumbs-up tilted 30 degrees, as
  people and cameras tilt them, inside its cone.

Landmarks are MediaPipe's normalised image coordinates (x / width, y / height, z on x's scale).
Those are stretched unless the frame is square, so callers pass the frame's width / height as
`aspect` to get angles right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNKNOWN = "unknown"

# MediaPipe hand landmark indices.
WRIST = 0
THUMB = (1, 2, 3, 4)  # CMC, MCP, IP, tip
FINGERS = {
    "index": (5, 6, 7, 8),  # MCP, PIP, DIP, tip
    "middle": (9, 10, 11, 12),
    "ring": (13, 14, 15, 16),
    "pinky": (17, 18, 19, 20),
}

# Thresholds sit midway between how clearly extended and clearly folded fingers measure, in
# palm-length units or degrees; the scale is how soft the change is (one scale = 73% / 27%).
_BEND_MID, _BEND_SCALE = 100.0, 12.0  # summed joint bend: straight ~20-45, curled 150-270
_REACH_MID, _REACH_SCALE = 1.10, 0.05  # tip-to-wrist / middle-joint-to-wrist
_THUMB_FAR_MID, _THUMB_FAR_SCALE = 0.85, 0.08  # thumb tip to middle knuckle
_THUMB_CLEAR_MID, _THUMB_CLEAR_SCALE = 0.42, 0.07  # thumb tip to nearest index/middle joint
_THUMB_SIDE_MID, _THUMB_SIDE_SCALE = 0.40, 0.07  # thumb tip beyond the index knuckle, sideways
_PINCH_MID, _PINCH_SCALE = 0.50, 0.08  # thumb tip to index tip, for ok
# Degrees from the image's up / down. The thumb's cone sits between where tilted thumbs-ups point
# (30 degrees of tilt on top of how people hold them: within ~65) and a hand on its side (90, or
# ~73 when only the thumb is sideways and the fist still leans up).
_THUMB_CONE, _INDEX_CONE, _CONE_SCALE = 70.0, 60.0, 8.0
# The thumb's direction is its own (base joint to tip) plus this much of the knuckle row (little to
# index knuckle), each counted at its length in the picture; see _thumb_direction.
_KNUCKLE_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class GestureGuess:
    label: str  # one of LANDMARK_GESTURES, or "unknown"
    confidence: float  # 0..1: for a gesture, how well the hand matches it; for unknown, 1 - best


@dataclass(frozen=True, slots=True)
class HandShape:
    """The soft measurements a gesture template is built from (all probabilities in 0..1)."""

    thumb_out: float
    extended: dict[str, float]  # finger name -> probability it is straight
    pinch: float  # thumb tip touching index tip
    thumb_up: float  # thumb points up in the image
    thumb_down: float
    index_up: float


def _sigmoid(z: float) -> float:
    # Clamped so extreme measurements (a landmark glitch) cannot overflow exp.
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def _angle(u: np.ndarray, v: np.ndarray) -> float:
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu < 1e-9 or nv < 1e-9:
        return 0.0
    return math.degrees(math.acos(max(-1.0, min(1.0, float(u @ v) / (nu * nv)))))


def _degrees_from_up(v: np.ndarray) -> float:
    """Angle in the image plane between v and the image's up (y grows downwards)."""
    return abs(math.degrees(math.atan2(float(v[0]), float(-v[1]))))


def _thumb_direction(p: np.ndarray) -> np.ndarray:
    """Where a thumbs-up or -down points, in the image plane.

    A thumb held out of a fist continues the fist's knuckle row: the knuckles stack up under a
    thumb that points up. The thumb alone is two short bones whose tip MediaPipe places least
    surely, and people bend it at the joints, so on its own it strays 40 degrees and more from
    where the hand points; the knuckle row, four well-found joints, strays about half as much.
    Their sum (each at its length in the picture, so one foreshortened towards the camera counts
    less) strays less: on the development photos at most ~33 degrees against ~45 for the thumb
    alone, which leaves room for 30 degrees of tilt inside the cone.
    """
    return (p[THUMB[3]] - p[THUMB[1]])[:2] + _KNUCKLE_WEIGHT * (p[5] - p[17])[:2]


def _as_points(landmarks, aspect: float) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] != 21 or pts.shape[1] not in (2, 3):
        raise ValueError(f"landmarks must have shape (21, 3) or (21, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("landmarks contain NaN or infinite values")
    if not (aspect > 0 and math.isfinite(aspect)):
        raise ValueError(f"aspect must be a positive number (frame width / height), got {aspect!r}")
    if pts.shape[1] == 2:
        pts = np.column_stack([pts, np.zeros(21)])
    # Undo the non-square normalisation: x (and z, which MediaPipe puts on x's scale) times w/h.
    return pts * (aspect, 1.0, aspect)


def measure(landmarks, aspect: float = 1.0) -> HandShape:
    """The hand's finger states, pinch and directions; see the module docstring."""
    p = _as_points(landmarks, aspect)
    wrist = p[WRIST]
    palm = float(np.mean([np.linalg.norm(p[j] - wrist) for j in (5, 9, 17)]))
    if palm < 1e-6:
        raise ValueError("landmarks are degenerate (the palm has no size)")

    extended = {}
    for name, (mcp, pip, dip, tip) in FINGERS.items():
        bend = (_angle(p[mcp] - wrist, p[pip] - p[mcp]) + _angle(p[pip] - p[mcp], p[dip] - p[pip])
                + _angle(p[dip] - p[pip], p[tip] - p[dip]))
        reach = np.linalg.norm(p[tip] - wrist) / max(np.linalg.norm(p[pip] - wrist), 1e-9)
        z = ((_BEND_MID - bend) / _BEND_SCALE + (reach - _REACH_MID) / _REACH_SCALE) / 2
        extended[name] = _sigmoid(z)

    tip = p[THUMB[3]]
    far = np.linalg.norm(tip - p[9]) / palm
    clear = min(np.linalg.norm(tip - p[j]) for j in (6, 7, 10, 11)) / palm
    knuckles = p[5] - p[17]
    side = float((tip - p[5]) @ knuckles) / (max(np.linalg.norm(knuckles), 1e-9) * palm)
    thumb_z = ((far - _THUMB_FAR_MID) / _THUMB_FAR_SCALE
               + (clear - _THUMB_CLEAR_MID) / _THUMB_CLEAR_SCALE
               + (side - _THUMB_SIDE_MID) / _THUMB_SIDE_SCALE) / 3

    pinch = _sigmoid((_PINCH_MID - np.linalg.norm(tip - p[8]) / palm) / _PINCH_SCALE)
    thumb_angle = _degrees_from_up(_thumb_direction(p))
    index_angle = _degrees_from_up(p[8][:2] - p[5][:2])
    return HandShape(
        thumb_out=_sigmoid(thumb_z),
        extended=extended,
        pinch=pinch,
        thumb_up=_sigmoid((_THUMB_CONE - thumb_angle) / _CONE_SCALE),
        thumb_down=_sigmoid((_THUMB_CONE - (180.0 - thumb_angle)) / _CONE_SCALE),
        index_up=_sigmoid((_INDEX_CONE - index_angle) / _CONE_SCALE),
    )


def _curled(s: HandShape, *names: str) -> float:
    return math.prod(1.0 - s.extended[n] for n in names)


def _straight(s: HandShape, *names: str) -> float:
    return math.prod(s.extended[n] for n in names)


def gesture_scores(s: HandShape) -> dict[str, float]:
    """How well the hand matches each landmark gesture, 0..1 (not normalised across gestures).

    The thumb is left out of open_palm (a flat "stop" hand keeps it alongside), victory and
    pointing_up (people tuck it or not), where it carries no meaning.
    """
    four_curled = _curled(s, "index", "middle", "ring", "pinky")
    thumb_in = 1.0 - s.thumb_out
    return {
        "open_palm": _straight(s, "index", "middle", "ring", "pinky") * (1.0 - s.pinch),
        "fist": four_curled * thumb_in,
        "thumbs_up": four_curled * s.thumb_out * s.thumb_up,
        "thumbs_down": four_curled * s.thumb_out * s.thumb_down,
        "pointing_up": s.extended["index"] * _curled(s, "middle", "ring", "pinky") * s.index_up,
        "victory": _straight(s, "index", "middle") * _curled(s, "ring", "pinky"),
        "ok": s.pinch * _straight(s, "middle", "ring", "pinky"),
        "call": s.thumb_out * s.extended["pinky"] * _curled(s, "index", "middle", "ring"),
    }


def classify_landmarks(landmarks, handedness: str, *, aspect: float = 1.0,
                       min_confidence: float = 0.5) -> GestureGuess:
    """The best-matching landmark gesture, or unknown when none reaches `min_confidence`.

    landmarks: (21, 3) or (21, 2) MediaPipe normalised coordinates; handedness: "left" or
    "right" (validated; the features are mirror-symmetric); aspect: frame width / height.
    """
    if handedness not in ("left", "right"):
        raise ValueError(f"handedness must be 'left' or 'right', got {handedness!r}")
    scores = gesture_scores(measure(landmarks, aspect))
    label = max(scores, key=scores.__getitem__)
    best = scores[label]
    if best < min_confidence:
        return GestureGuess(UNKNOWN, round(1.0 - best, 4))
    return GestureGuess(label, round(best, 4))
