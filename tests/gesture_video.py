"""Assemble a test video from ../shared/gesture-data photos: each gesture held, gaps with no hand.

Used by the end-to-end tests and the pipeline benchmark; the video is written to a temp path and
never committed. Run as a script to make one by hand:

    python -m tests.gesture_video /tmp/hands.mp4 --hold 1.0 --gap 0.8 --fps 30

Close up, each photo fills the frame (letterboxed, grey gaps). With `--hand-share` the hands are
at room distance instead (tests/room_video.py): each photo scaled so the hand's box is that share
of the frame's width and pasted into a room picture, with the empty room between poses:

    python -m tests.gesture_video /tmp/room.mp4 --size 1280x720 --hand-share 0.055 \
        --background ../shared/backgrounds --hold 1.5 --gap 1 --labels fist,ok@0.037 --drift 2

Swipes and waves at 2 m (tests/motion_paths.py), with the labels `edge-gesture eval` reads:

    python -m tests.gesture_video /tmp/motion.mp4 --hand-share 0.055 --hold 1.5 --gap 1 \
        --labels swipe_left,swipe_up+victory,wave,fist --back --eval-labels

A hand that appears at 3 m after 4 s of empty room (how soon is it found?):

    python -m tests.gesture_video /tmp/appear.mp4 --size 1280x720 --hand-share 0.037 \
        --empty-room 4 --labels open_palm --hold 3 --gap 0 --timeline /tmp/appear.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

SIZE = (640, 480)
DEFAULT_SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "gesture-data"


def letterbox(image: np.ndarray, size: tuple[int, int] = SIZE) -> np.ndarray:
    w, h = size
    scale = min(w / image.shape[1], h / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.full((h, w, 3), 40, np.uint8)
    y, x = (h - resized.shape[0]) // 2, (w - resized.shape[1]) // 2
    out[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return out


def write_video(path: Path, segments: list[tuple[Path | None, float]], fps: float = 30.0,
                size: tuple[int, int] = SIZE) -> Path:
    """segments: (photo, seconds); photo None is an empty grey frame (no hand in view)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    blank = np.full((size[1], size[0], 3), 40, np.uint8)
    try:
        for photo, seconds in segments:
            frame = blank if photo is None else letterbox(cv2.imread(str(photo)), size)
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


def frame_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from None
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f"--size {text!r}: too small")
    return width, height


def hand_share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"--hand-share {text}: a share of the frame's width, 0..1")
    return value


def main(argv: list[str] | None = None) -> None:
    from tests.room_video import (
        DEFAULT_BACKGROUNDS,
        room_sequence,
        write_labels,
        write_room_video,
        write_timeline,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--labels", default="open_palm,fist,thumbs_up,victory,pointing_up,call,ok,thumbs_down",
                    help="gesture folders in order; room clips also take name/photo.jpg and @share")
    ap.add_argument("--hold", type=float, default=1.0)
    ap.add_argument("--gap", type=float, default=0.0, help="seconds of no hand between gestures")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--size", type=frame_size, default=None,
                    help="WIDTHxHEIGHT (default 640x480 close up, 1280x720 with --hand-share)")
    room = ap.add_argument_group("room distance (tests/room_video.py)")
    room.add_argument("--hand-share", type=hand_share, default=None,
                      help="hand box / frame width: 0.11 ~ 1 m, 0.055 ~ 2 m, 0.037 ~ 3 m")
    room.add_argument("--background", type=Path, default=DEFAULT_BACKGROUNDS,
                      help="a room picture or a folder of them (the seed picks one per clip)")
    room.add_argument("--drift", type=float, default=0.0, help="pixels per frame the hand moves")
    room.add_argument("--empty-room", type=float, default=None,
                      help="seconds of empty room before the first pose (default: --gap)")
    room.add_argument("--seed", type=int, default=7, help="picks the room, hand places and drift")
    room.add_argument("--timeline", type=Path, default=None,
                      help="write each pose's frames, photo, share and hand square here (JSON)")
    room.add_argument("--back", action="store_true", help="swipes come back after (the return stroke)")
    room.add_argument("--eval-labels", action="store_true",
                      help="write OUT.labels.csv beside the clip (start,end,label) for edge-gesture eval")
    a = ap.parse_args(argv)
    labels = a.labels.split(",") * a.repeat
    if a.hand_share is None:
        for flag, given in (("--drift", a.drift), ("--empty-room", a.empty_room), ("--timeline", a.timeline),
                            ("--back", a.back), ("--eval-labels", a.eval_labels)):
            if given:
                ap.error(f"{flag} needs --hand-share (a room-distance clip)")
        segs = gesture_sequence(a.data, labels, a.hold, a.gap)
        write_video(a.out, [s for s in segs if s[1] > 0], a.fps, a.size or SIZE)
    else:
        size = a.size or (1280, 720)
        try:
            poses = room_sequence(a.data, labels, a.hold, a.gap, a.empty_room, back=a.back)
            timeline = write_room_video(a.out, poses, share=a.hand_share, background=a.background,
                                        size=size, fps=a.fps, drift_px=a.drift, seed=a.seed)
        except ValueError as e:
            ap.error(str(e))
        if a.timeline:
            write_timeline(a.timeline, timeline, a.fps, size)
        if a.eval_labels:
            write_labels(a.out.with_name(a.out.name + ".labels.csv"), timeline)
    print(a.out)


if __name__ == "__main__":
    main()
