"""Room-distance photos made in the test from close-up gesture photos, as `../shared/tools/make_range.py`
makes them: the photo scaled so that the hand's box (its longer side) is a given share of the frame's
width, pasted at a random place on a blurred room background of the camera's size. A no-hand photo is
pasted whole at a person-like size. Saved as JPEG (quality 90) in the `<label>/<image>` layout that
`edge-gesture eval` reads.

Reimplemented here with OpenCV rather than imported, so the tests do not depend on a script outside
the repository; INTER_AREA stands in for Pillow's anti-aliased LANCZOS when shrinking.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np

FRAME = (1280, 720)


def load_backgrounds(folder: Path, size: tuple[int, int] = FRAME) -> list[np.ndarray]:
    """Every room picture in `folder`, resized to the frame and blurred a little (make_range's
    Pillow GaussianBlur(1)), so the pasted photo is not sharper than the room around it."""
    out = []
    for path in sorted(folder.glob("*.jpg")):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None, f"{path}: not a readable image"
        image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
        out.append(cv2.GaussianBlur(image, (0, 0), 1.0))
    assert out, f"{folder}: no .jpg backgrounds"
    return out


def paste(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> np.ndarray:
    """`image` over a copy of `canvas` with its top-left at (x, y); what falls outside is cut off."""
    out = canvas.copy()
    h, w = image.shape[:2]
    H, W = out.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 < x1 and y0 < y1:
        out[y0:y1, x0:x1] = image[y0 - y:y1 - y, x0 - x:x1 - x]
    return out


def resized(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LANCZOS4)


def hand_box(landmarks: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """Centre x, y and longer side (pixels) of the box around normalised landmarks."""
    xs, ys = landmarks[:, 0] * width, landmarks[:, 1] * height
    side = float(max(xs.max() - xs.min(), ys.max() - ys.min()))
    return float(xs.min() + xs.max()) / 2, float(ys.min() + ys.max()) / 2, side


def hand_in_frame(photo: np.ndarray, landmarks: np.ndarray, share: float, background: np.ndarray,
                  centre: tuple[float, float]) -> np.ndarray:
    """The photo scaled so the hand's box is `share` of the frame's width, pasted on the background
    with the hand's centre at `centre` (frame pixels)."""
    cx, cy, side = hand_box(landmarks, photo.shape[1], photo.shape[0])
    scale = share * background.shape[1] / side
    return paste(background, resized(photo, scale), round(centre[0] - cx * scale),
                 round(centre[1] - cy * scale))


def hand_at_distance(photo: np.ndarray, landmarks: np.ndarray, share: float, background: np.ndarray,
                     rng: random.Random) -> np.ndarray:
    """make_range's placement: the hand's centre at a random place in the middle of the frame
    (15-85% across, 20-80% down)."""
    H, W = background.shape[:2]
    centre = rng.uniform(0.15, 0.85) * W, rng.uniform(0.2, 0.8) * H
    return hand_in_frame(photo, landmarks, share, background, centre)


def scene_at_distance(photo: np.ndarray, background: np.ndarray, rng: random.Random) -> np.ndarray:
    """A no-hand photo pasted whole at 40-90% of the largest size that fits the frame."""
    H, W = background.shape[:2]
    small = resized(photo, min(W / photo.shape[1], H / photo.shape[0]) * rng.uniform(0.4, 0.9))
    h, w = small.shape[:2]
    return paste(background, small, rng.randint(0, W - w), rng.randint(0, H - h))


def save(image: np.ndarray, root: Path, label: str, name: str) -> Path:
    folder = root / label
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (Path(name).stem + ".jpg")
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90]), f"{path}: not written"
    return path
