"""Static hand gestures from MediaPipe's 21 hand landmarks, by geometry (no trained model).

Each finger gets a soft "extended" probability from two cues that fail differently: the summed bend
of its joints (3-D angles, so a finger pointing at the camera still reads as straight) and how far
its tip reaches from the wrist compared with its middle joint. The thumb, which folds sideways
rather than curling, is "out" when its tip is far from the middle knuckle, clear of the index and
middle fingers, beyond the index knuckle along the line of the knuckles, and when the thumb itself
is straight: a thumb folded into a fist bends at both its joints (61-134 degrees together on the
development photos' fists), one held out stays straighter (6-68 on their calls and thumbs) however
close to the hand people hold it, where the three distances alone lose a call sign or a
thumbs-down. A gesture is a
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

# The thumb's direction is its own (base joint to tip) plus this much of the knuckle row (little to
# index knuckle), each counted at its length in the picture; see _thumb_direction.
_KNUCKLE_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where each measurement turns from one state to the other, and how softly.

    Midpoints sit between how clearly extended and clearly folded fingers measure, in palm-length
    units or degrees; a scale is how soft the change is (one scale = 73% / 27%).
    `python -m tests.threshold_cv` checks them against the development photos by cross-validation.
    """

    bend_mid: float = 100.0  # summed joint bend in degrees: straight ~20-45, curled 150-270
    bend_scale: float = 12.0
    reach_mid: float = 1.10  # tip-to-wrist / middle-joint-to-wrist
    reach_scale: float = 0.05
    thumb_far_mid: float = 0.85  # thumb tip to middle knuckle
    thumb_far_scale: float = 0.08
    thumb_clear_mid: float = 0.42  # thumb tip to nearest index/middle joint
    thumb_clear_scale: float = 0.07
    thumb_side_mid: float = 0.40  # thumb tip beyond the index knuckle, sideways
    thumb_side_scale: float = 0.07
    thumb_bend_mid: float = 60.0  # the thumb's two joints' summed bend in degrees
    thumb_bend_scale: float = 10.0
    pinch_mid: float = 0.50  # thumb tip to index tip, for ok
    pinch_scale: float = 0.08
    # Degrees from the image's up / down. The thumb's cone sits between where tilted thumbs-ups
    # point (30 degrees of tilt on top of how people hold them: within ~65) and a hand on its side
    # (90, or ~73 when only the thumb is sideways and the fist still leans up).
    thumb_cone: float = 70.0
    index_cone: float = 60.0
    cone_scale: float = 8.0


THRESHOLDS = Thresholds()


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


def _sigmoid(z):
    # Clamped so extreme measurements (a landmark glitch) cannot overflow exp; numbers or arrays.
    if isinstance(z, np.ndarray):
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, float(z)))))


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


@dataclass(frozen=True, slots=True)
class Measurements:
    """A hand's raw geometry before any threshold: palm lengths and degrees. Each field may also be
    an array (one entry per hand), which `HandShape` and `gesture_scores` carry through."""

    bend: dict[str, float]  # finger -> summed bend of its three joints, degrees
    reach: dict[str, float]  # finger -> tip-to-wrist / middle-joint-to-wrist
    thumb_far: float
    thumb_clear: float
    thumb_side: float
    thumb_bend: float  # degrees at the thumb's base and middle joints together
    pinch_gap: float  # thumb tip to index tip
    thumb_angle: float  # degrees from the image's up
    index_angle: float


def measurements(landmarks, aspect: float = 1.0) -> Measurements:
    """The raw geometry the gesture templates read; see the module docstring."""
    p = _as_points(landmarks, aspect)
    wrist = p[WRIST]
    palm = float(np.mean([np.linalg.norm(p[j] - wrist) for j in (5, 9, 17)]))
    if palm < 1e-6:
        raise ValueError("landmarks are degenerate (the palm has no size)")

    bend, reach = {}, {}
    for name, (mcp, pip, dip, tip) in FINGERS.items():
        bend[name] = (_angle(p[mcp] - wrist, p[pip] - p[mcp]) + _angle(p[pip] - p[mcp], p[dip] - p[pip])
                      + _angle(p[dip] - p[pip], p[tip] - p[dip]))
        reach[name] = float(np.linalg.norm(p[tip] - wrist)
                            / max(np.linalg.norm(p[pip] - wrist), 1e-9))

    tip = p[THUMB[3]]
    knuckles = p[5] - p[17]
    return Measurements(
        bend=bend,
        reach=reach,
        thumb_far=float(np.linalg.norm(tip - p[9]) / palm),
        thumb_clear=float(min(np.linalg.norm(tip - p[j]) for j in (6, 7, 10, 11)) / palm),
        thumb_side=float((tip - p[5]) @ knuckles) / (max(np.linalg.norm(knuckles), 1e-9) * palm),
        thumb_bend=_angle(p[THUMB[1]] - p[THUMB[0]], p[THUMB[2]] - p[THUMB[1]])
        + _angle(p[THUMB[2]] - p[THUMB[1]], p[THUMB[3]] - p[THUMB[2]]),
        pinch_gap=float(np.linalg.norm(tip - p[8]) / palm),
        thumb_angle=_degrees_from_up(_thumb_direction(p)),
        index_angle=_degrees_from_up(p[8][:2] - p[5][:2]),
    )


def shape_of(m: Measurements, t: Thresholds = THRESHOLDS) -> HandShape:
    """The soft finger states, pinch and directions the measurements mean under thresholds `t`."""
    extended = {name: _sigmoid(((t.bend_mid - m.bend[name]) / t.bend_scale
                                + (m.reach[name] - t.reach_mid) / t.reach_scale) / 2)
                for name in FINGERS}
    thumb_z = ((m.thumb_far - t.thumb_far_mid) / t.thumb_far_scale
               + (m.thumb_clear - t.thumb_clear_mid) / t.thumb_clear_scale
               + (m.thumb_side - t.thumb_side_mid) / t.thumb_side_scale
               + (t.thumb_bend_mid - m.thumb_bend) / t.thumb_bend_scale) / 4
    return HandShape(
        thumb_out=_sigmoid(thumb_z),
        extended=extended,
        pinch=_sigmoid((t.pinch_mid - m.pinch_gap) / t.pinch_scale),
        thumb_up=_sigmoid((t.thumb_cone - m.thumb_angle) / t.cone_scale),
        thumb_down=_sigmoid((t.thumb_cone - (180.0 - m.thumb_angle)) / t.cone_scale),
        index_up=_sigmoid((t.index_cone - m.index_angle) / t.cone_scale),
    )


def measure(landmarks, aspect: float = 1.0, thresholds: Thresholds = THRESHOLDS) -> HandShape:
    """The hand's finger states, pinch and directions; see the module docstring."""
    return shape_of(measurements(landmarks, aspect), thresholds)


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
