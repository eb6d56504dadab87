"""The same gesture as other people make it: small changes of pose applied to real landmarks.

Photos of one source show each gesture the way its people made it; other people relax their
straight fingers a little, curl the folded ones less tightly, hold the thumb wider or closer, and
face the camera at another angle. These functions make those changes on MediaPipe landmarks of
real photos (in undistorted units: x and z times the frame's width / height), within what a hand
does without changing the gesture, so a classifier can be checked against them.

A finger bends about an axis parallel to the knuckle row (index to little-finger knuckle), towards
the palm; the palm side comes from the person's handedness.
"""

from __future__ import annotations

import math

import numpy as np

FINGERS = {"index": (5, 6, 7, 8), "middle": (9, 10, 11, 12), "ring": (13, 14, 15, 16),
           "pinky": (17, 18, 19, 20)}

# Per gesture, the fingers that show it (straight) and those folded away; the thumb apart.
SHOWN = {
    "open_palm": ("index", "middle", "ring", "pinky"),
    "fist": (),
    "thumbs_up": (),
    "thumbs_down": (),
    "pointing_up": ("index",),
    "victory": ("index", "middle"),
    "ok": ("middle", "ring", "pinky"),  # the index makes the ring with the thumb: neither
    "call": ("pinky",),
}
FOLDED = {
    "open_palm": (),
    "fist": ("index", "middle", "ring", "pinky"),
    "thumbs_up": ("index", "middle", "ring", "pinky"),
    "thumbs_down": ("index", "middle", "ring", "pinky"),
    "pointing_up": ("middle", "ring", "pinky"),
    "victory": ("ring", "pinky"),
    "ok": (),
    "call": ("index", "middle", "ring"),
}
THUMB_OUT = ("thumbs_up", "thumbs_down", "call")


def _rodrigues(v: np.ndarray, axis: np.ndarray, theta: float) -> np.ndarray:
    return (v * math.cos(theta) + np.cross(axis, v) * math.sin(theta)
            + np.outer(v @ axis, axis) * (1 - math.cos(theta)))


def _palm_side(pts: np.ndarray, handedness: str) -> np.ndarray:
    sign = 1.0 if handedness == "right" else -1.0
    return sign * np.cross(pts[5] - pts[0], pts[17] - pts[0])


def curl(pts: np.ndarray, handedness: str, fingers, degrees: float) -> np.ndarray:
    """Bend each named finger by `degrees` at each of its three joints (negative: straighten)."""
    pts = pts.copy()
    axis = (pts[5] - pts[17]) / np.linalg.norm(pts[5] - pts[17])
    palm = _palm_side(pts, handedness)
    # Which way round the axis turns a finger towards the palm, decided on the middle finger.
    probe = pts[12] - pts[9]
    sign = 1.0 if (_rodrigues(probe[None], axis, 0.1)[0] - probe) @ palm >= 0 else -1.0
    theta = sign * math.radians(degrees)
    for name in fingers:
        chain = FINGERS[name]
        for j in range(3):
            origin, rest = pts[chain[j]], list(chain[j + 1:])
            pts[rest] = origin + _rodrigues(pts[rest] - origin, axis, theta)
    return pts


def swing_thumb(pts: np.ndarray, degrees: float) -> np.ndarray:
    """Turn the thumb about its base joint within the palm's plane, away from the index finger
    (positive) or towards it (negative)."""
    pts = pts.copy()
    normal = np.cross(pts[5] - pts[0], pts[17] - pts[0])
    normal /= np.linalg.norm(normal)
    rest = [2, 3, 4]
    # Which way round is "away" is whichever way moves the tip off the index knuckle.
    probe = pts[1] + _rodrigues(pts[[4]] - pts[1], normal, 0.05)[0]
    sign = 1.0 if np.linalg.norm(probe - pts[5]) >= np.linalg.norm(pts[4] - pts[5]) else -1.0
    pts[rest] = pts[1] + _rodrigues(pts[rest] - pts[1], normal, sign * math.radians(degrees))
    return pts


def rotate(pts: np.ndarray, degrees: float) -> np.ndarray:
    """In-plane rotation about the wrist; positive turns clockwise on screen (y points down)."""
    a = math.radians(degrees)
    r = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0, 0, 1]])
    return (pts - pts[0]) @ r.T + pts[0]


def view(pts: np.ndarray, yaw: float = 0.0, pitch: float = 0.0, depth: float = 0.5) -> np.ndarray:
    """The hand seen from another angle: turned about the wrist around the image's vertical (yaw)
    or horizontal (pitch) axis, projected straight on as MediaPipe's x, y, z are. MediaPipe's depth
    is much less sure than x and y, so the turned depth is scaled by `depth` (a turn alone would
    be seen exactly by 3-D angles and distances)."""
    a, b = math.radians(yaw), math.radians(pitch)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    out = (pts - pts[0]) @ (rx @ ry).T
    out[:, 2] *= depth
    return out + pts[0]


def variations(gesture: str, pts: np.ndarray, handedness: str) -> dict[str, np.ndarray]:
    """Named pose changes of one hand that keep its gesture (see the module docstring)."""
    out = {}
    for deg in (10, 20):
        if SHOWN[gesture]:
            out[f"shown fingers relaxed {deg}deg/joint"] = curl(pts, handedness, SHOWN[gesture], deg)
    for deg in (15, 25):
        if FOLDED[gesture]:
            out[f"folded fingers looser {deg}deg/joint"] = curl(pts, handedness, FOLDED[gesture], -deg)
    if gesture in THUMB_OUT:
        out["thumb 20deg wider"] = swing_thumb(pts, 20)
        for deg in (10, 20):
            out[f"thumb {deg}deg closer"] = swing_thumb(pts, -deg)
    for deg in (-30, 30):
        out[f"seen {deg:+d}deg from the side"] = view(pts, yaw=deg)
        out[f"seen {deg:+d}deg from above"] = view(pts, pitch=deg)
    return out
