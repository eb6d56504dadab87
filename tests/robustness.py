"""How well `edge-gesture eval`'s figures hold when the development photos are changed the way
other cameras, rooms and people change them.

The development photos are one source (HaGRID crops, hand large and centred, mostly upright);
the product is judged on other photographs. Each perturbation below is something a different
photo of the same gesture plausibly does: the other hand (a mirror image), a tilted hand or
camera, a hand smaller in the frame, other exposure or contrast, stronger JPEG, a soft focus,
sensor noise, a 4:3 camera frame around the picture. Every perturbed photo goes through the same
judge as `edge-gesture eval` (MediaPipe in still-image mode, the daemon's per-hand observation,
a fresh Decider held for about a second), so the figures mean the same as eval's.

    python -m tests.robustness [DIR] [--only NAME ...] [--poses] [--json] [--cache FILE]

`--poses` adds a second table: the landmarks of every photo the classifier reads right, changed
the way another person's hand differs (tests/hand_poses.py: straight fingers relaxed, folded ones
looser, the thumb wider or closer, the hand seen from another angle), and how often the gesture
still comes out at the confidence that fires an event.

`--cache FILE` keeps MediaPipe's hands per perturbed image (keyed by the image bytes' hash), so a
second run measures a classifier change in seconds; the file holds landmarks derived from the
photos and belongs in a temporary folder, never in the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge_gesture.config import Config
from edge_gesture.evaluate import (
    FRAME_RATE,
    NONE,
    _config,
    _hold_seconds,
    _judge,
    _per_class,
    find_images,
)
from tests.gesture_video import DEFAULT_SHARED, letterbox


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Turned about its centre (positive = clockwise on screen); the canvas grows so no finger is
    cut off, and the new corners are a flat grey like a letterbox."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), -degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(round(h * sin + w * cos)), int(round(h * cos + w * sin))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(40, 40, 40))


def pad(image: np.ndarray, factor: float) -> np.ndarray:
    """The photo in the middle of a canvas `factor` times its size, filled with the photo's mean
    colour: the same hand, smaller in the frame, as a camera further away sees it."""
    h, w = image.shape[:2]
    nh, nw = int(round(h * factor)), int(round(w * factor))
    out = np.empty((nh, nw, 3), np.uint8)
    out[:] = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    y, x = (nh - h) // 2, (nw - w) // 2
    out[y:y + h, x:x + w] = image
    return out


def gamma(image: np.ndarray, g: float) -> np.ndarray:
    table = (255.0 * (np.arange(256) / 255.0) ** g).round().astype(np.uint8)
    return cv2.LUT(image, table)


def gain(image: np.ndarray, factor: float) -> np.ndarray:
    return cv2.convertScaleAbs(image, alpha=factor)


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    mean = float(image.mean())
    return cv2.convertScaleAbs(image, alpha=factor, beta=mean * (1 - factor))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def noise(image: np.ndarray, sigma: float) -> np.ndarray:
    # Seeded by the picture itself, so a run is repeatable and every photo gets its own noise.
    seed = int.from_bytes(hashlib.sha1(image.tobytes()).digest()[:4], "little")
    n = np.random.default_rng(seed).normal(0.0, sigma, image.shape)
    return np.clip(image.astype(np.float32) + n, 0, 255).astype(np.uint8)


def camera_frame(image: np.ndarray) -> np.ndarray:
    """The photo unscaled in the middle of a 640x480 frame: a 4:3 camera, hand smaller."""
    out = np.full((480, 640, 3), 40, np.uint8)
    h, w = image.shape[:2]
    s = min(1.0, 640 / w, 480 / h)
    if s < 1.0:
        image = cv2.resize(image, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
    y, x = (480 - h) // 2, (640 - w) // 2
    out[y:y + h, x:x + w] = image
    return out


PERTURBATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "original": lambda im: im,
    "flip": lambda im: cv2.flip(im, 1),
    **{f"rotate{d:+d}": (lambda im, d=d: rotate(im, d)) for d in (-30, -20, -10, 10, 20, 30)},
    "flip+rotate-20": lambda im: rotate(cv2.flip(im, 1), -20),
    "flip+rotate+20": lambda im: rotate(cv2.flip(im, 1), 20),
    "pad1.5x": lambda im: pad(im, 1.5),
    "pad2x": lambda im: pad(im, 2.0),
    "pad2x+rotate+20": lambda im: pad(rotate(im, 20), 2.0),
    "letterbox640x480": letterbox,
    "camera640x480": camera_frame,
    "brighter1.5": lambda im: gain(im, 1.5),
    "darker0.5": lambda im: gain(im, 0.5),
    "contrast0.5": lambda im: contrast(im, 0.5),
    "gamma0.6": lambda im: gamma(im, 0.6),
    "gamma1.8": lambda im: gamma(im, 1.8),
    "jpeg30": lambda im: jpeg(im, 30),
    "blur1.5": lambda im: cv2.GaussianBlur(im, (0, 0), 1.5),
    "noise8": lambda im: noise(im, 8.0),
}


class CachedTracker:
    """The hand stage with its answers remembered: per image (the bytes' hash), per hands
    settings and per frame since the last `forget`, with how many frames it then needed to
    settle. Eval's judge shows a photo frame after frame, and the hand stage answers the same
    pixels the same way in the same state, so a replay is the same judge."""

    def __init__(self, tracker, settings: str, cache: dict | None = None):
        self.tracker = tracker
        self.settings = settings
        self.cache = {} if cache is None else cache
        self.frames_to_settle = tracker.frames_to_settle
        self._frame = 0
        self._live = True  # the tracker's own state matches the frames shown since `forget`

    def detect(self, image: np.ndarray):
        key = (hashlib.sha1(image.tobytes() + repr(image.shape).encode()
                            + self.settings.encode()).hexdigest(), self._frame)
        self._frame += 1
        if key not in self.cache:
            if not self._live:
                # An earlier frame of this scene came from the cache: replay the scene up to here
                # so the tracker is in the state the uncached run would have.
                self.tracker.forget()
                for _ in range(self._frame - 1):
                    self.tracker.detect(image)
                self._live = True
            self.cache[key] = (self.tracker.detect(image), self.tracker.frames_to_settle)
        else:
            self._live = False
        hands, self.frames_to_settle = self.cache[key]
        return hands

    def forget(self) -> None:
        self.tracker.forget()
        self.frames_to_settle = self.tracker.frames_to_settle
        self._frame = 0
        self._live = True

    def close(self) -> None:
        self.tracker.close()


def _summary(results, labels: list[str]) -> dict:
    per_class = _per_class(results, labels)
    gestures = [r for r in results if r.truth != NONE]
    return {
        "accuracy": round(sum(r.truth == r.predicted for r in results) / len(results), 4),
        "recall": {label: m["recall"] for label, m in per_class.items()},
        "min_recall": min(m["recall"] for m in per_class.values()),
        "events_on_none": sum(len(r.events) for r in results if r.truth == NONE),
        "no_hand": sum(r.hands == 0 for r in gestures),
        # Accuracy on the gesture photos where MediaPipe found a hand: what the classifier owns.
        "accuracy_with_hand": round(
            sum(r.truth == r.predicted for r in gestures if r.hands)
            / max(1, sum(1 for r in gestures if r.hands)), 4),
        "mistakes": [f"{r.path}: {r.predicted} (classifier {r.classifier} {r.confidence:.2f})"
                     for r in results if r.truth != r.predicted],
    }


def run(folder: Path, cfg: Config, names: list[str], cache: dict | None = None) -> dict:
    """Per perturbation name, the summary of every photo under `folder` judged like eval does."""
    from edge_gesture.daemon import FramePipeline
    from edge_gesture.hands import open_hands

    items = find_images(folder)
    images = [(label, str(p.relative_to(folder)), cv2.imread(str(p), cv2.IMREAD_COLOR))
              for label, p in items]
    images = [x for x in images if x[2] is not None]
    labels = sorted({label for label, _, _ in images})
    hold_frames = int(round(_hold_seconds(cfg) * FRAME_RATE))
    # The hand stage eval uses (hands.backend), shown the photo frame after frame as eval does.
    tracker = CachedTracker(open_hands(cfg.hands, cache_dir=str(cfg.service.cache_path())),
                            repr(cfg.hands), cache)
    pipeline = FramePipeline(cfg, tracker=tracker)
    report = {}
    try:
        for name in names:
            change = PERTURBATIONS[name]
            results = [_judge(pipeline, change(image), rel, label, cfg, hold_frames)
                       for label, rel, image in images]
            report[name] = _summary(results, labels)
    finally:
        pipeline.close()
    return report


def _main_hand(hands):
    # A photo of one gesture may show someone else's hand too; the gesture is the biggest hand.
    return max(hands, key=lambda h: (h.bbox[2] - h.bbox[0]) * (h.bbox[3] - h.bbox[1]), default=None)


def run_poses(folder: Path, cfg: Config, cache: dict | None = None) -> dict:
    """Per pose change, per gesture: the share of its photos still read right (see `--poses`)."""
    from edge_gesture.gestures import classify_landmarks
    from edge_gesture.hands import open_hands
    from tests.hand_poses import variations

    def right(points, truth, hand) -> bool:
        guess = classify_landmarks(points, hand)
        return guess.label == truth and guess.confidence >= cfg.decide.enter_threshold

    tracker = CachedTracker(open_hands(cfg.hands, static_images=True,
                                       cache_dir=str(cfg.service.cache_path())),
                            repr(cfg.hands) + " still", cache)
    kept: dict[str, dict[str, list[bool]]] = {}
    try:
        for label, path in find_images(folder):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if label == NONE or image is None:
                continue
            tracker.forget()
            hand = _main_hand(tracker.detect(image))
            if hand is None:
                continue
            points = hand.landmarks.astype(np.float64) * (hand.aspect, 1.0, hand.aspect)
            if not right(points, label, hand.handedness):
                continue
            for name, changed in variations(label, points, hand.handedness).items():
                kept.setdefault(name, {}).setdefault(label, []).append(
                    right(changed, label, hand.handedness))
    finally:
        tracker.close()
    return {name: {label: round(float(np.mean(v)), 4) for label, v in sorted(per.items())}
            for name, per in kept.items()}


def format_poses(poses: dict) -> str:
    labels = sorted({label for per in poses.values() for label in per})
    lines = [f"{'pose change (landmarks)':<36}" + "".join(f"{label[:11]:>12}" for label in labels)]
    for name, per in poses.items():
        lines.append(f"{name:<36}" + "".join(
            f"{per[label]:>12.0%}" if label in per else f"{'-':>12}" for label in labels))
    return "\n".join(lines)


def format_table(report: dict) -> str:
    labels = list(next(iter(report.values()))["recall"])
    short = {label: label.replace("thumbs_", "t_").replace("pointing_up", "point")
             .replace("open_palm", "palm")[:7] for label in labels}
    head = f"{'perturbation':<17}{'acc':>7}{'w/hand':>7}{'nohand':>7}{'ev@none':>8}" + \
        "".join(f"{short[label]:>8}" for label in labels)
    lines = [head]
    for name, s in report.items():
        lines.append(f"{name:<17}{s['accuracy']:>7.1%}{s['accuracy_with_hand']:>7.1%}{s['no_hand']:>7}"
                     f"{s['events_on_none']:>8}" + "".join(f"{s['recall'][lb]:>8.0%}" for lb in labels))
    perturbed = [s for n, s in report.items() if n != "original"]
    if perturbed:
        lines.append(f"{'mean perturbed':<17}{np.mean([s['accuracy'] for s in perturbed]):>7.1%}"
                     f"{np.mean([s['accuracy_with_hand'] for s in perturbed]):>7.1%}"
                     f"{sum(s['no_hand'] for s in perturbed):>7}"
                     f"{sum(s['events_on_none'] for s in perturbed):>8}"
                     + "".join(f"{np.mean([s['recall'][lb] for s in perturbed]):>8.0%}" for lb in labels))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--only", nargs="+", choices=list(PERTURBATIONS), default=list(PERTURBATIONS))
    ap.add_argument("--config", help="config file, found as `edge-gesture eval` finds it by default")
    ap.add_argument("--poses", action="store_true", help="also change the pose of real landmarks")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--mistakes", action="store_true", help="list every wrong photo per perturbation")
    ap.add_argument("--cache", type=Path, help="pickle of the hand stage's answers per image (a temp path)")
    a = ap.parse_args(argv)

    cache = {}
    if a.cache and a.cache.exists():
        cache = pickle.loads(a.cache.read_bytes())
    started = time.perf_counter()
    cfg = _config(a.config)
    report = run(a.dir, cfg, a.only, cache)
    poses = run_poses(a.dir, cfg, cache) if a.poses else None
    if a.cache:
        a.cache.write_bytes(pickle.dumps(cache))
    if a.json:
        print(json.dumps({"perturbations": report, "poses": poses}, indent=2))
        return 0
    print(format_table(report))
    if poses:
        print()
        print(format_poses(poses))
    print(f"{sum(1 for _ in report)} perturbations, {time.perf_counter() - started:.1f} s")
    if a.mistakes:
        for name, s in report.items():
            for m in s["mistakes"]:
                print(f"  {name}: {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
