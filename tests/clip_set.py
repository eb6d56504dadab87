"""A set of held-out room clips for `edge-gesture eval`, drawn at random from a seed.

    python -m tests.clip_set /tmp/clips --clips 12 --seed 202
    edge-gesture eval /tmp/clips

Each clip: one room (../shared/backgrounds), one distance (hand box 0.11, 0.055 or 0.037 of a
1280x720 frame's width: about 1, 2 and 3 m), 30 or 15 frames/s, 1 s of empty room, then eight
gestures with 1 s of empty room after each. A gesture is a held pose (a random photo of a random
landmark gesture, held 1.5 s, drifting a pixel a frame) or, six times in ten, a swipe or a wave
(tests/motion_paths.py: realistic speed, blur and scale change) made with an open palm or, for
one swipe in four, with two fingers or the index up (a wave is an open palm's). Every other
clip's swipes come back (the return stroke). Labels beside each clip (`<clip>.labels.csv`). The
choices depend on the seed only, so a seed names a set; the figures in the README come from a
seed not used while tuning.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from tests.gesture_video import DEFAULT_SHARED
from tests.room_video import (
    DEFAULT_BACKGROUNDS,
    MOTIONS,
    Pose,
    has_hand,
    write_labels,
    write_room_video,
)

POSES = ("open_palm", "fist", "thumbs_up", "thumbs_down", "victory", "pointing_up", "call", "ok")
SHARES = (0.11, 0.055, 0.037)
HOLD_S, MOTION_S, BACK_S, GAP_S = 1.5, 1.5, 2.0, 1.0


def clip_poses(data: Path, rng: random.Random, back: bool, share: float) -> list[Pose]:
    poses = [Pose(None, GAP_S)]
    for _ in range(8):
        if rng.random() < 0.6:
            motion = rng.choice(MOTIONS)
            shape = rng.choice(("victory", "pointing_up")) if rng.random() < 0.25 else "open_palm"
            if motion == "wave":  # a wave is an open palm's, by the product's definition
                shape = "open_palm"
            returns = back and motion != "wave"
            poses.append(Pose(_photo(data, shape, rng), BACK_S if returns else MOTION_S, share,
                              motion=motion, back=returns))
        else:
            poses.append(Pose(_photo(data, rng.choice(POSES), rng), HOLD_S, share))
        poses.append(Pose(None, GAP_S))
    return poses


def _photo(data: Path, label: str, rng: random.Random) -> Path:
    photos = sorted((data / label).glob("*.jpg"))
    rng.shuffle(photos)
    # Only photos whose hand MediaPipe finds can be scaled to a distance.
    found = next((p for p in photos if has_hand(p)), None)
    if found is None:
        raise SystemExit(f"no photo in {data / label} with a hand MediaPipe finds")
    return found


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seed", type=int, default=202)
    ap.add_argument("--data", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--background", type=Path, default=DEFAULT_BACKGROUNDS)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    for i in range(a.clips):
        rng = random.Random(a.seed * 1000 + i)
        share, fps = rng.choice(SHARES), rng.choice((30.0, 15.0))
        poses = clip_poses(a.data, rng, back=i % 2 == 1, share=share)
        path = a.out / f"clip{a.seed}_{i:02d}.mp4"
        timeline = write_room_video(path, poses, share=share, background=a.background, fps=fps,
                                    drift_px=1.0, seed=rng.randrange(1 << 30))
        write_labels(path.with_name(path.name + ".labels.csv"), timeline)
        print(f"{path}: share {share}, {fps:g} frames/s, "
              f"{' '.join(e['label'] for e in timeline if e['label'])}")


if __name__ == "__main__":
    main()
