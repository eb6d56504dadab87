"""Assemble a test video from ../shared/gesture-data photos: each gesture held, gaps with no hand.

Used by the end-to-end tests and the pipeline benchmark; the video is written to a temp path and
never committed. Run as a script to make one by hand:

    python -m tests.gesture_video /tmp/hands.mp4 --hold 1.0 --gap 0.8 --fps 30
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

SIZE = (640, 480)
DEFAULT_SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "gesture-data"


def letterbox(image: np.ndarray, size=SIZE) -> np.ndarray:
    w, h = size
    scale = min(w / image.shape[1], h / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.full((h, w, 3), 40, np.uint8)
    y, x = (h - resized.shape[0]) // 2, (w - resized.shape[1]) // 2
    out[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return out


def write_video(path: Path, segments: list[tuple[Path | None, float]], fps: float = 30.0) -> Path:
    """segments: (photo, seconds); photo None is an empty grey frame (no hand in view)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    blank = np.full((SIZE[1], SIZE[0], 3), 40, np.uint8)
    try:
        for photo, seconds in segments:
            frame = blank if photo is None else letterbox(cv2.imread(str(photo)))
            for _ in range(round(seconds * fps)):
                writer.write(frame)
    finally:
        writer.release()
    return path


def gesture_sequence(gesture_data: Path, labels: list[str], hold: float, gap: float,
                     pick=lambda label, photos: photos[0]) -> list[tuple[Path | None, float]]:
    segments: list[tuple[Path | None, float]] = [(None, gap)]
    for label in labels:
        photos = sorted((gesture_data / label).glob("*.jpg"))
        segments += [(pick(label, photos), hold), (None, gap)]
    return segments


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--labels", default="open_palm,fist,thumbs_up,victory,pointing_up,call,ok,thumbs_down")
    ap.add_argument("--hold", type=float, default=1.0)
    ap.add_argument("--gap", type=float, default=0.0, help="seconds of no hand between gestures")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    segs = gesture_sequence(a.data, a.labels.split(",") * a.repeat, a.hold, a.gap)
    write_video(a.out, [s for s in segs if s[1] > 0], a.fps)
    print(a.out)


if __name__ == "__main__":
    main()
