"""Room-distance test clips: gesture photos shrunk until the hand is as small as at 2-4 m, in a room.

The method of ../shared/tools/make_range.py, frame by frame: MediaPipe (still-image mode) finds the
hand's box in the original photo; the whole photo is scaled so that the box's longer side is
`share` of the frame's width (0.11 is about 1 m, 0.055 2 m, 0.037 3 m with a 78-degree webcam) and
pasted with the hand's centre at a chosen point of a room picture (../shared/backgrounds, resized
to the frame and blurred a little, as make_range does). Between poses the clip shows the empty
room. The hand may drift a few pixels a frame, so the daemon has to follow it rather than see one
still picture.

Motion poses move the hand along a swipe or a wave (tests/motion_paths.py): realistic speeds, an
ease-in-out speed profile, motion blur (each frame averages sub-frame positions over half the
frame time, as a camera's exposure does) and a change of scale (the hand coming nearer or going
away a little as the arm swings).

The command line is `tests/gesture_video.py` with `--hand-share`; the functions here are for tests.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from tests.motion_paths import motion_path, moving_frame
from tests.room import paste

ROOM_SIZE = (1280, 720)
DEFAULT_BACKGROUNDS = Path(__file__).resolve().parent.parent.parent / "shared" / "backgrounds"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Where a hand's centre may be placed, as shares of the frame (make_range.py's ranges).
X_RANGE, Y_RANGE = (0.15, 0.85), (0.2, 0.8)
MOTIONS = ("swipe_left", "swipe_right", "swipe_up", "swipe_down", "wave")


@dataclass(frozen=True)
class Pose:
    """`seconds` of one photo in the room, or of the empty room when `photo` is None."""

    photo: Path | None
    seconds: float
    share: float | None = None  # hand box / frame width; None: the clip's default
    # Where the hand's centre starts, as shares of the frame's width and height; None: random.
    at: tuple[float, float] | None = None
    # "swipe_left/right/up/down" or "wave" (the person's own directions, unmirrored camera): the
    # hand moves along that path (tests/motion_paths.py); None: held.
    motion: str | None = None
    back: bool = False  # after a swipe the hand comes back (the return stroke)


class NoHandInPhoto(ValueError):
    """MediaPipe finds no hand in the original photo, so it cannot be scaled to a distance."""


@cache
def _mediapipe_hands():
    import mediapipe as mp

    # make_range.py's settings, so a share here means what it means in the range folders.
    return mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=1, model_complexity=1)


@cache
def hand_box(photo: Path) -> tuple[float, float, float]:
    """(centre x, centre y, longer side) of the hand in the photo, pixels: make_range.py's box."""
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{photo}: not a readable image")
    found = _mediapipe_hands().process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if not found.multi_hand_landmarks:
        raise NoHandInPhoto(f"{photo}: MediaPipe finds no hand in the original photo")
    h, w = image.shape[:2]
    xs = [p.x * w for p in found.multi_hand_landmarks[0].landmark]
    ys = [p.y * h for p in found.multi_hand_landmarks[0].landmark]
    side = max(max(xs) - min(xs), max(ys) - min(ys))
    return (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, side


@cache
def palm_share(photo: Path) -> float:
    """The palm's longest side (the daemon's hand size, hands/tracks.py) over the hand box's side:
    about 0.45 for an open hand, more for a fist. Motion paths are measured in palms, which are
    the same physical size (about 9 cm) whatever the hand shows."""
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    found = _mediapipe_hands().process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if not found.multi_hand_landmarks:
        raise NoHandInPhoto(f"{photo}: MediaPipe finds no hand in the original photo")
    h, w = image.shape[:2]
    pts = np.array([(p.x * w, p.y * h) for p in found.multi_hand_landmarks[0].landmark])
    palm = max(float(np.linalg.norm(pts[a] - pts[b])) for a, b in ((0, 5), (0, 9), (0, 17), (5, 17)))
    return palm / hand_box(photo)[2]


def has_hand(photo: Path) -> bool:
    try:
        hand_box(photo)
    except NoHandInPhoto:
        return False
    return True


def background_files(background: Path) -> list[Path]:
    """The room pictures a file or folder names, in name order."""
    background = Path(background)
    if background.is_dir():
        files = sorted(p for p in background.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{background}: no pictures ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not background.is_file():
        raise ValueError(f"{background}: no such background picture or folder")
    return [background]


def room(background: Path, size: tuple[int, int] = ROOM_SIZE) -> np.ndarray:
    """The room picture at the frame's size, blurred a little like make_range.py's."""
    image = cv2.imread(str(background), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{background}: not a readable image")
    image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(image, (0, 0), 1.0)


def scaled_photo(photo: Path, share: float, frame_width: int) -> tuple[np.ndarray, float, float]:
    """The whole photo scaled so the hand's box is `share` of the frame's width, and the hand's
    centre in the scaled photo."""
    cx, cy, side = hand_box(photo)
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    s = share * frame_width / side
    size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    return small, cx * s, cy * s


def still(scene: np.ndarray, photo: Path, share: float, at: tuple[float, float]) -> np.ndarray:
    """The photo in the room with the hand's centre at `at` (shares of the frame): a pose's first
    frame, for choosing photos the hand stage reads before they go into a clip."""
    picture, cx, cy = scaled_photo(photo, share, scene.shape[1])
    return paste(scene, picture, round(at[0] * scene.shape[1] - cx), round(at[1] * scene.shape[0] - cy))


def _bounce(start: float, travelled: float, lo: float, hi: float) -> float:
    """A point moving from `start` by `travelled`, turning back at lo and hi."""
    span = hi - lo
    if span <= 0:
        return start
    p = (start - lo + travelled) % (2 * span)
    return lo + (p if p <= span else 2 * span - p)


def _person_sized(photo: Path, size: tuple[int, int], rng: random.Random) -> tuple[np.ndarray, float, float]:
    """A no-hand photo at a person-like size (make_range.py's `none` case), centred on its middle."""
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{photo}: not a readable image")
    s = min(size[0] / image.shape[1], size[1] / image.shape[0]) * rng.uniform(0.4, 0.9)
    small = cv2.resize(image, (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s))),
                       interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    return small, small.shape[1] / 2, small.shape[0] / 2


def write_room_video(path: Path, poses: list[Pose], *, share: float = 0.055,
                     background: Path = DEFAULT_BACKGROUNDS, size: tuple[int, int] = ROOM_SIZE,
                     fps: float = 30.0, drift_px: float = 0.0, seed: int = 7) -> list[dict]:
    """Write the clip; returns its timeline: per pose the first and last frame, the photo, the
    hand's share and, in the pose's first frame, the square of the hand box's longer side around
    the hand's centre (pixels, x0 y0 x1 y1).

    One room per clip (the seed picks it from a folder). `drift_px`: the hand moves this many
    pixels a frame in a direction the seed picks per pose, turning back near the frame's edges.
    Photos in a folder named `none` (no hand) are pasted at a person-like size instead."""
    rng = random.Random(seed)
    width, height = size
    scene = room(rng.choice(background_files(background)), size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    timeline, frame_no = [], 0
    try:
        for pose in poses:
            frames = round(pose.seconds * fps)
            entry = {"first_frame": frame_no, "last_frame": frame_no + frames - 1,
                     "start_s": round(frame_no / fps, 4), "end_s": round((frame_no + frames) / fps, 4),
                     "photo": None, "label": None, "share": None, "hand_square": None}
            timeline.append(entry)
            if pose.photo is None:
                for _ in range(frames):
                    writer.write(scene)
                frame_no += frames
                continue
            label = pose.photo.parent.name
            entry.update(photo=str(pose.photo), label=label)
            if label == "none":
                picture, cx, cy = _person_sized(pose.photo, size, rng)
            else:
                entry["share"] = pose.share or share
                picture, cx, cy = scaled_photo(pose.photo, entry["share"], width)
            if pose.motion is not None:
                entry["label"] = pose.motion
                palm_px = (pose.share or share) * width * palm_share(pose.photo)
                motion = motion_path(pose.motion, palm_px, size, frames / fps, rng, back=pose.back)
                entry["hand_square"] = None
                for n in range(frames):
                    writer.write(moving_frame(scene, picture, cx, cy, motion, n / fps, 1 / fps))
                frame_no += frames
                continue
            fx, fy = pose.at if pose.at else (rng.uniform(*X_RANGE), rng.uniform(*Y_RANGE))
            angle = rng.uniform(0, 2 * math.pi)
            vx, vy = drift_px * math.cos(angle), drift_px * math.sin(angle)
            for n in range(frames):
                hx = _bounce(fx * width, vx * n, X_RANGE[0] * width, X_RANGE[1] * width)
                hy = _bounce(fy * height, vy * n, Y_RANGE[0] * height, Y_RANGE[1] * height)
                if n == 0 and entry["share"] is not None:
                    half = entry["share"] * width / 2
                    entry["hand_square"] = [round(hx - half), round(hy - half), round(hx + half),
                                         round(hy + half)]
                writer.write(paste(scene, picture, round(hx - cx), round(hy - cy)))
            frame_no += frames
    finally:
        writer.release()
    return timeline


def room_sequence(gesture_data: Path, labels: list[str], hold: float, gap: float,
                  empty_room: float | None = None, back: bool = False) -> list[Pose]:
    """Poses for `labels`, each `hold` seconds with `gap` seconds of empty room between; the clip
    starts with `empty_room` seconds of empty room (default: `gap`).

    A label is `name`, `name/photo.jpg` or either with `@share` (`ok@0.037`: that pose's hand at
    3 m). Plain `name` takes the first photo in name order in which MediaPipe finds a hand (the
    others cannot be scaled to a distance); `none` takes its first photo. A motion gesture
    (`swipe_left`, ..., `wave`) moves a hand photo along its path: an open palm, or the pose after
    a `+` (`swipe_up+victory`); `back`: swipes come back after (the return stroke)."""
    poses = [Pose(None, gap if empty_room is None else empty_room)]
    for spec in labels:
        name, _, share = spec.partition("@")
        motion = None
        if name.split("+")[0] in MOTIONS:
            motion, _, name = name.partition("+")
            name = name or "open_palm"
        label, _, filename = name.partition("/")
        folder = Path(gesture_data) / label
        if not folder.is_dir():
            raise ValueError(f"--labels {spec}: no folder {folder}")
        if filename:
            photo = folder / filename
            if not photo.is_file():
                raise ValueError(f"--labels {spec}: no such photo {photo}")
        else:
            photos = sorted(folder.glob("*.jpg"))
            photo = next((p for p in photos if label == "none" or has_hand(p)), None)
            if photo is None:
                raise ValueError(f"--labels {spec}: no photo in {folder} with a hand MediaPipe finds")
        poses.append(Pose(photo, hold, float(share) if share else None, motion=motion,
                          back=back and motion is not None and motion != "wave"))
        if gap > 0:
            poses.append(Pose(None, gap))
    return [p for p in poses if p.seconds > 0]


def write_timeline(path: Path, timeline: list[dict], fps: float, size: tuple[int, int]) -> None:
    Path(path).write_text(json.dumps({"fps": fps, "size": list(size), "poses": timeline}, indent=1))


def write_labels(path: Path, timeline: list[dict]) -> None:
    """The clip's labels for `edge-gesture eval`: start,end,label per pose (seconds), `none`
    for the empty room."""
    rows = ["start,end,label"] + [f"{e['start_s']},{e['end_s']},{e['label'] or 'none'}" for e in timeline]
    Path(path).write_text("\n".join(rows) + "\n")
