"""Hands across a room: `edge-gesture eval` (the daemon's own frame pipeline, default config) on
1280x720 composites in which the hand's box is 5.5% (about 2 m) and 3.7% (about 3 m) of the frame's
width, built in the test from the shared photos the way `../shared/tools/make_range.py` builds them.

MediaPipe's own graph shrinks the whole frame to 192x192, where such a hand is a few pixels wide and
is not found (issue 9: 14% accuracy at 3.7%, almost only the no-hand photos right); the OpenVINO
stage searches the frame in squares and must find them.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_gesture.config import Config, HandsConfig
from edge_gesture.evaluate import NONE, evaluate
from tests import room

GESTURES = ["call", "fist", "ok", "open_palm", "pointing_up", "thumbs_down", "thumbs_up", "victory"]
SHARES = (0.055, 0.037)
# Per distance: two photos of each gesture and two without a hand, different photos at each
# distance, so the two sets together cover four photos a class. (About 4 s a photo on this busy
# 2-core machine: eval holds each for a second of frames, searching until the hand stage settles.)
GESTURE_PHOTOS = 2
NONE_PHOTOS = 2


def evenly(items: list, n: int) -> list:
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def with_hand(photo_hands, photos: list[Path], start: Path) -> Path:
    """`start`, or the next photo after it in which MediaPipe finds a hand (make_range skips the
    photos it finds none in: there is no hand box to scale)."""
    i = photos.index(start)
    return next(p for p in photos[i:] + photos[:i] if photo_hands.hands(p))


@pytest.fixture(scope="module")
def room_photos(gesture_data, shared_dir, photo_hands, tmp_path_factory) -> dict[float, Path]:
    """f<share>/<label>/<photo>.jpg for each share, as make_range.py writes them."""
    backgrounds = room.load_backgrounds(shared_dir / "backgrounds")
    root = tmp_path_factory.mktemp("room")
    folders = {}
    for k, share in enumerate(SHARES):
        rng = random.Random(f"room range {share}")
        folder = folders[share] = root / f"f{share:.3f}"
        for label in GESTURES:
            photos = photo_hands.photos(label)
            for start in evenly(photos, GESTURE_PHOTOS * len(SHARES))[k::len(SHARES)]:
                photo = with_hand(photo_hands, photos, start)
                image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
                landmarks = photo_hands.hands(photo)[0].landmarks
                room.save(room.hand_at_distance(image, landmarks, share, rng.choice(backgrounds), rng),
                          folder, label, photo.name)
        for photo in evenly(photo_hands.photos(NONE), NONE_PHOTOS * len(SHARES))[k::len(SHARES)]:
            image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
            room.save(room.scene_at_distance(image, rng.choice(backgrounds), rng), folder, NONE, photo.name)
    return folders


@pytest.fixture(scope="module")
def reports(room_photos):
    """eval's report per (backend, share), each run once for the module."""
    cache = {}

    def report(backend: str, share: float) -> dict:
        if (backend, share) not in cache:
            cache[backend, share] = evaluate(room_photos[share], Config(hands=HandsConfig(backend=backend)))
        return cache[backend, share]

    return report


def hands_found(report: dict) -> float:
    gestures = sum(m["support"] for label, m in report["per_class"].items() if label != NONE)
    return 1 - report["gesture_images_without_hand"] / gestures


def test_each_distance_has_every_gesture_and_no_hand_photos_as_1280x720_frames(room_photos):
    for folder in room_photos.values():
        images = sorted(folder.glob("*/*.jpg"))
        assert sorted({p.parent.name for p in images}) == sorted([*GESTURES, NONE])
        assert len(images) == len(GESTURES) * GESTURE_PHOTOS + NONE_PHOTOS
        assert {cv2.imread(str(p)).shape for p in images} == {(720, 1280, 3)}
    names = [{p.name for p in folder.glob("*/*.jpg")} for folder in room_photos.values()]
    assert not names[0] & names[1], "each distance has photos of its own"


def test_hands_at_2_m_are_found_and_read(reports):
    """Measured here (AMD EPYC, default config): 16 of 16 hands found, 18 of 18 photos right (100%),
    no event on a no-hand photo. (MediaPipe's graph on the same photos: 3 of 16 hands found.)"""
    report = reports("openvino", 0.055)
    assert hands_found(report) >= 0.9, report["mistakes"]
    assert report["accuracy"] >= 0.88, report["mistakes"]
    assert report["events_on_none"] == 0, report["mistakes"]


def test_hands_at_3_m_are_found_and_read(reports):
    """Measured here (AMD EPYC, default config): 15 of 16 hands found, 17 of 18 photos right (94%),
    no event on a no-hand photo."""
    report = reports("openvino", 0.037)
    assert hands_found(report) >= 0.8, report["mistakes"]
    assert report["accuracy"] >= 0.83, report["mistakes"]
    assert report["events_on_none"] == 0, report["mistakes"]


def test_mediapipes_own_graph_misses_most_hands_at_3_m(reports):
    """What the OpenVINO stage is for. Measured here: MediaPipe's graph found 1 of 16 hands and got 3
    of 18 photos right (17%; issue 9: 14% at this distance), OpenVINO 15 of 16 and 17 of 18."""
    ours, theirs = reports("openvino", 0.037), reports("mediapipe", 0.037)
    assert hands_found(theirs) <= 0.3
    assert hands_found(ours) - hands_found(theirs) >= 0.5
