"""HandTracker on real photos from ../shared/gesture-data (MediaPipe's bundled models, real runs)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_gesture.config import LANDMARK_GESTURES, HandsConfig
from edge_gesture.hands import Hand, HandTracker


@pytest.fixture(scope="module")
def still():
    with HandTracker(HandsConfig(), static_images=True) as tracker:
        yield tracker


def first_photo(gesture_data: Path, label: str) -> np.ndarray:
    return cv2.imread(str(sorted((gesture_data / label).glob("*.jpg"))[0]))


def pixel_points(hand: Hand) -> np.ndarray:
    return hand.landmarks[:, :2] * hand.frame_size


def persons_hand_from_geometry(hand: Hand) -> str:
    """Which hand it is, from anatomy alone: curled fingers lie on the palm side, and for a right
    hand the palm side is (index knuckle - wrist) x (little knuckle - wrist) in image axes
    (x right, y down, z away from the camera). Independent of MediaPipe's handedness label."""
    p = hand.landmarks.astype(np.float64) * (hand.aspect, 1.0, hand.aspect)
    normal = np.cross(p[5] - p[0], p[17] - p[0])
    curled = p[[6, 7, 8, 10, 11, 12, 14, 15, 16, 18, 19, 20]] - p[[0, 5, 17]].mean(axis=0)
    return "right" if float((curled @ normal).mean()) > 0 else "left"


@pytest.mark.parametrize("gesture", LANDMARK_GESTURES)
def test_finds_the_hand_in_a_photo_of_each_gesture(still, gesture_data, gesture):
    image = first_photo(gesture_data, gesture)
    hands = still.detect(image)
    assert len(hands) == 1
    hand = hands[0]
    height, width = image.shape[:2]
    assert hand.frame_size == (width, height)
    assert hand.landmarks.shape == (21, 3) and hand.landmarks.dtype == np.float32
    assert hand.handedness in ("left", "right")
    assert 0.5 <= hand.score <= 1.0
    x0, y0, x1, y1 = hand.bbox
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    pts = pixel_points(hand)
    assert (pts[:, 0] >= x0).all() and (pts[:, 0] < x1).all()
    assert (pts[:, 1] >= y0).all() and (pts[:, 1] < y1).all()
    # Tight: the box is no bigger than the landmarks' extent plus a pixel.
    assert x1 - x0 <= np.ptp(pts[:, 0]) + 2 and y1 - y0 <= np.ptp(pts[:, 1]) + 2


def test_pictures_without_hands_give_no_hands(still, gesture_data):
    for path in sorted((gesture_data / "none").glob("*.jpg")):
        assert still.detect(cv2.imread(str(path))) == [], path.name


def test_handedness_is_the_persons_own_hand(gesture_data):
    """Fists show which side the palm is on; MediaPipe's label assumes a mirrored picture."""
    photos = [cv2.imread(str(p)) for p in sorted((gesture_data / "fist").glob("*.jpg"))]
    with HandTracker(HandsConfig(), static_images=True) as tracker:
        plain = [tracker.detect(im)[0] for im in photos]
        flipped = [tracker.detect(cv2.flip(im, 1))[0] for im in photos]
    with HandTracker(HandsConfig(mirrored=True), static_images=True) as tracker:
        as_selfie = [tracker.detect(im)[0].handedness for im in photos]
    assert [h.handedness for h in plain] == [persons_hand_from_geometry(h) for h in plain]
    assert {h.handedness for h in plain} == {"left", "right"}, "the set should have both hands"
    other = {"left": "right", "right": "left"}
    assert [h.handedness for h in flipped] == [other[h.handedness] for h in plain]
    assert as_selfie == [other[h.handedness] for h in plain]


def test_tracking_mode_follows_a_hand_held_still(gesture_data):
    photo = first_photo(gesture_data, "victory")
    frame = np.zeros((480, 640, 3), np.uint8)
    scale = min(640 / photo.shape[1], 480 / photo.shape[0])
    small = cv2.resize(photo, None, fx=scale, fy=scale)
    frame[:small.shape[0], :small.shape[1]] = small
    with HandTracker(HandsConfig()) as tracker:
        found = [tracker.detect(frame) for _ in range(10)]
    assert all(len(h) == 1 for h in found)
    boxes = np.array([h[0].bbox for h in found], dtype=float)
    assert np.abs(boxes - boxes[0]).max() < 0.1 * (boxes[0, 2] - boxes[0, 0])
    assert {h[0].handedness for h in found} == {found[0][0].handedness}


def test_a_hand_cut_off_by_the_frame_edge_gets_a_box_inside_the_frame(still, gesture_data):
    image = first_photo(gesture_data, "open_palm")
    x0, y0, x1, y1 = still.detect(image)[0].bbox
    for cut in (image[y0 + (y1 - y0) // 5:], image[:, x0 + (x1 - x0) // 4:]):
        cut = np.ascontiguousarray(cut)
        hands = still.detect(cut)
        assert len(hands) == 1
        hand = hands[0]
        assert hand.landmarks[:, :2].min() < 0, "part of the hand lies outside the picture"
        bx0, by0, bx1, by1 = hand.bbox
        assert 0 <= bx0 < bx1 <= cut.shape[1] and 0 <= by0 < by1 <= cut.shape[0]


@pytest.mark.parametrize("frame", [
    np.zeros((48, 64), np.uint8),
    np.zeros((48, 64, 4), np.uint8),
    np.zeros((48, 64, 3), np.float32),
    None,
], ids=["grey", "bgra", "float", "none"])
def test_frames_that_are_not_8_bit_bgr_are_refused_clearly(still, frame):
    with pytest.raises(ValueError, match="8-bit BGR"):
        still.detect(frame)


def test_a_closed_tracker_says_so():
    tracker = HandTracker(HandsConfig(), static_images=True)
    with tracker:
        assert tracker.detect(np.zeros((48, 64, 3), np.uint8)) == []
    with pytest.raises(RuntimeError, match="closed"):
        tracker.detect(np.zeros((48, 64, 3), np.uint8))
    tracker.close()  # twice is harmless


def test_two_peoples_right_hands_both_stay_right_hands(gesture_data):
    """Two people side by side, each showing a right hand: hands are told apart by their tracks
    (position), so neither label is rewritten to make one of each."""
    photo = first_photo(gesture_data, "open_palm")
    two = np.hstack([photo, photo])
    with HandTracker(HandsConfig(max_num_hands=2), static_images=True) as tracker:
        one = tracker.detect(photo)
        both = tracker.detect(two)
    assert len(one) == 1 and len(both) == 2
    assert [h.handedness for h in both] == [one[0].handedness] * 2
