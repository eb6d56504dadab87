"""Paths of a hand making a swipe or a wave, and frames of it in a room, for test clips.

Sizes are in palms (the palm's longest side, `palm` pixels; about 9 cm on an adult, whatever the
hand shows): a swipe of 4-6 palms is a 35-55 cm arm movement, made in 0.3-0.6 s (1 m/s and more
at its fastest), and a wave is an open hand swung 0.7-1.2 palms either side at 1.5-2.5 swings a
second. Directions are the person's own as an unmirrored camera sees them: the
person's left is the picture's right. Every random choice comes from the caller's `rng`, so a
seed gives the same clip.

A swipe starts with the hand held for `LEAD_S` (raised, about to move; shorter than any pose's
hold, so no pose fires) and ends held where it stopped, or, with `back`, brought back the way
it came a little slower after a short pause (the return stroke).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import cv2
import numpy as np

from tests.room import paste

LEAD_S = 0.1
#: Sub-frame positions averaged per frame for the blur, over half a frame's time (the exposure).
BLUR_SAMPLES = 5
EXPOSURE_SHARE = 0.5
DIRECTIONS = {"swipe_left": (1, 0), "swipe_right": (-1, 0), "swipe_up": (0, -1), "swipe_down": (0, 1)}

Path = Callable[[float], tuple[float, float, float]]  # t -> hand centre x, y (px), scale


def _ease(u: float) -> float:
    """0..1 with zero speed at both ends (how an arm starts and stops)."""
    u = min(max(u, 0.0), 1.0)
    return u * u * (3 - 2 * u)


def motion_path(name: str, palm: float, size: tuple[int, int], seconds: float, rng: random.Random,
                back: bool = False) -> Path:
    width, height = size
    if name == "wave":
        amplitude = rng.uniform(0.7, 1.2) * palm
        swings = rng.uniform(1.5, 2.5)  # full side-to-side cycles a second
        cx = rng.uniform(0.3, 0.7) * width
        cy = rng.uniform(0.3, 0.6) * height

        def wave(t: float) -> tuple[float, float, float]:
            # A wave starts swinging at once: the first swing is as big and fast as the others.
            moving = max(0.0, t - LEAD_S)
            return cx + amplitude * math.sin(2 * math.pi * swings * moving), cy, 1.0
        return wave

    dx, dy = DIRECTIONS[name]
    along = width if dx else height
    distance = min(rng.uniform(4.0, 6.0) * palm, 0.6 * along)
    duration = rng.uniform(0.3, 0.6)
    grow = rng.uniform(0.85, 1.15)
    # The middle of the movement somewhere it fits, with the hand inside the frame throughout.
    margin_x = 2.5 * palm + (distance / 2 if dx else 0)
    margin_y = 2.5 * palm + (distance / 2 if dy else 0)
    mx = rng.uniform(margin_x, max(margin_x, width - margin_x))
    my = rng.uniform(margin_y, max(margin_y, height - margin_y))
    start = (mx - dx * distance / 2, my - dy * distance / 2)
    pause = rng.uniform(0.15, 0.3)
    back_duration = duration * 1.3

    def swipe(t: float) -> tuple[float, float, float]:
        u = _ease((t - LEAD_S) / duration)
        if back and t > LEAD_S + duration + pause:
            u = 1 - _ease((t - LEAD_S - duration - pause) / back_duration)
        return start[0] + dx * distance * u, start[1] + dy * distance * u, 1 + (grow - 1) * u
    return swipe


def moving_frame(scene: np.ndarray, picture: np.ndarray, cx: float, cy: float, path: Path,
                 t: float, dt: float) -> np.ndarray:
    """The room with the hand picture along `path` during this frame's exposure: the average of
    BLUR_SAMPLES composites, so a fast hand smears as on camera. (cx, cy): the hand's centre in
    `picture`."""
    acc = np.zeros(scene.shape, np.float32)
    for k in range(BLUR_SAMPLES):
        x, y, scale = path(t + dt * EXPOSURE_SHARE * k / BLUR_SAMPLES)
        pic = picture
        if abs(scale - 1) > 1e-3:
            pic = cv2.resize(picture, (max(1, round(picture.shape[1] * scale)),
                                       max(1, round(picture.shape[0] * scale))),
                             interpolation=cv2.INTER_LINEAR)
        acc += paste(scene, pic, round(x - cx * scale), round(y - cy * scale))
    return (acc / BLUR_SAMPLES).round().astype(np.uint8)
