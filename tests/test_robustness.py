"""The gestures still read right when the photo or the hand differs from the development photos.

The product is judged on other photographs and used with other people's hands; these tests change
a few real photos the way other cameras and people do (the other hand, a tilt, a hand small in the
frame, a dark room) and real landmarks the way other hands do (fingers more relaxed, the thumb
wider or closer, another viewing angle), and check the classifier's answer does not change. The
full figures over every photo come from `python -m tests.robustness` (see its docstring).

A reading counts only at the confidence an event needs (decide.enter_threshold): a right label
too weak to fire is, for the user, no gesture.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_gesture.config import LANDMARK_GESTURES, Config
from edge_gesture.gestures import classify_landmarks
from tests.hand_poses import curl, rotate, swing_thumb, variations, view

FIRES = Config().decide.enter_threshold
DIRECTIONAL = ("thumbs_up", "thumbs_down", "pointing_up")
PER_GESTURE = 2  # photos per gesture for the image-level checks: MediaPipe is the slow part


def reading(hand) -> tuple[str, float]:
    guess = classify_landmarks(hand.landmarks, hand.handedness, aspect=hand.aspect)
    return guess.label, guess.confidence


def reading_of(points, handedness) -> tuple[str, float]:
    guess = classify_landmarks(points, handedness)
    return guess.label, guess.confidence


def right(hand, gesture) -> bool:
    label, confidence = reading(hand)
    return label == gesture and confidence >= FIRES


@pytest.fixture(scope="module")
def clear_photos(photo_hands) -> dict:
    """Per gesture, the first photos (name order) read right as they are: what a change does to
    a right reading is the question here, not the photos the classifier already misses."""
    out = {}
    for gesture in LANDMARK_GESTURES:
        chosen = [p for p in photo_hands.photos(gesture)
                  if photo_hands.hands(p) and right(photo_hands.hands(p)[0], gesture)]
        assert len(chosen) >= PER_GESTURE, f"{gesture}: too few photos read right"
        out[gesture] = chosen[:PER_GESTURE]
    return out


def undistorted(hand) -> np.ndarray:
    return hand.landmarks.astype(np.float64) * (hand.aspect, 1.0, hand.aspect)


def check_changes(photo_hands, photos, gesture, changes, min_found) -> None:
    wrong, found = [], 0
    for photo in photos:
        for change in changes:
            hands = photo_hands.hands(photo, change)
            if hands:
                found += 1
                if not right(hands[0], gesture):
                    wrong.append(f"{photo.name} {change}: {reading(hands[0])}")
    assert not wrong, f"{gesture}: {wrong}"
    assert found >= min_found, f"{gesture}: MediaPipe found the hand in {found} changed photos"


@pytest.mark.parametrize("gesture", LANDMARK_GESTURES)
def test_the_other_hand_and_a_20_degree_tilt_read_the_same(photo_hands, clear_photos, gesture):
    """The photo mirrored (the same gesture made with the other hand) and turned 20 degrees
    either way (a tilted hand or camera)."""
    changes = ("flip", "rotate-20", "rotate+20")
    check_changes(photo_hands, clear_photos[gesture], gesture, changes,
                  min_found=len(changes) * PER_GESTURE - 1)


@pytest.mark.parametrize("gesture", DIRECTIONAL)
def test_direction_gestures_survive_a_30_degree_tilt(photo_hands, clear_photos, gesture):
    """Thumbs up / down and pointing up are measured against the image's up: a 30-degree tilt,
    as people hold them, is still the gesture."""
    check_changes(photo_hands, clear_photos[gesture], gesture, ("rotate-30", "rotate+30"),
                  min_found=2 * PER_GESTURE - 1)


@pytest.mark.parametrize("gesture", LANDMARK_GESTURES)
def test_a_small_hand_in_a_big_frame_and_a_dark_photo_read_the_same(photo_hands, clear_photos,
                                                                    gesture):
    """The photo in the middle of a canvas twice its size (the user further from the camera) and
    at half the light. MediaPipe may lose a hand that small or dark; a hand it finds reads right."""
    check_changes(photo_hands, clear_photos[gesture], gesture, ("pad2x", "darker0.5"),
                  min_found=PER_GESTURE)


@pytest.mark.parametrize("gesture", DIRECTIONAL)
def test_every_direction_photo_tilted_30_degrees_still_fires(photo_hands, gesture):
    """All photos, landmarks turned 30 degrees either way: each still reads as its gesture, at a
    confidence that fires an event (a thumb that leans on top of a tilted hand is still a thumb)."""
    wrong = []
    for photo in photo_hands.photos(gesture):
        hands = photo_hands.hands(photo)
        if not hands or not right(hands[0], gesture):
            continue
        for degrees in (-30, 30):
            guess = classify_landmarks(rotate(undistorted(hands[0]), degrees), hands[0].handedness)
            if guess.label != gesture or guess.confidence < FIRES:
                wrong.append((photo.name, degrees, guess))
    assert not wrong, wrong


@pytest.mark.parametrize("gesture", ("thumbs_up", "thumbs_down"))
def test_a_thumbs_up_turned_on_its_side_is_no_thumb_gesture(photo_hands, gesture):
    """Thumb and fist both turned to point sideways (the photo's own lean taken out first)."""
    wrong = []
    for photo in photo_hands.photos(gesture):
        hands = photo_hands.hands(photo)
        if not hands:
            continue
        p = undistorted(hands[0])
        unit = [v[:2] / np.linalg.norm(v[:2]) for v in (p[4] - p[2], p[5] - p[17])]
        axis = unit[0] + unit[1]
        lean = math.degrees(math.atan2(axis[0], -axis[1]))
        for side in (90, -90):
            label, _ = reading_of(rotate(p, side - lean), hands[0].handedness)
            if label in ("thumbs_up", "thumbs_down"):
                wrong.append((photo.name, side, label))
    assert not wrong, wrong


@pytest.mark.parametrize("gesture", LANDMARK_GESTURES)
def test_other_peoples_hands_make_the_same_gesture(photo_hands, gesture):
    """Real landmarks changed within what a hand does without changing the gesture: straight
    fingers relaxed 10 degrees a joint, folded ones 15 degrees looser, the thumb 20 degrees wider
    or 10 closer, the hand seen 30 degrees from the side or from above (tests/hand_poses.py).
    Nine in ten changed hands of each gesture still fire it."""
    kept, misses = [], []
    for photo in photo_hands.photos(gesture):
        hands = photo_hands.hands(photo)
        if not hands or not right(hands[0], gesture):
            continue
        for name, points in variations(gesture, undistorted(hands[0]), hands[0].handedness).items():
            if name.endswith(("20deg/joint", "25deg/joint", "20deg closer")):
                continue  # the stronger changes are for the report: there a gesture may end
            label, confidence = reading_of(points, hands[0].handedness)
            ok = label == gesture and confidence >= FIRES
            kept.append(ok)
            if not ok:
                misses.append((photo.name, name, label, round(confidence, 2)))
    assert kept
    assert np.mean(kept) >= 0.9, misses


@pytest.mark.parametrize("gesture", ("call", "thumbs_up", "thumbs_down"))
def test_a_thumb_held_closer_to_the_hand_still_counts_as_out(photo_hands, gesture):
    """People hold the thumb of a call sign or a thumbs-up/down anywhere from wide open to nearly
    against the fist. Swung 20 degrees closer, a straight thumb is still out: more than five in
    six such hands still fire their gesture (a thumb measured only by how far its tip is from the
    fingers lost one call in three and one thumbs-down in four)."""
    kept, misses = [], []
    for photo in photo_hands.photos(gesture):
        hands = photo_hands.hands(photo)
        if not hands or not right(hands[0], gesture):
            continue
        label, confidence = reading_of(swing_thumb(undistorted(hands[0]), -20), hands[0].handedness)
        kept.append(label == gesture and confidence >= FIRES)
        if not kept[-1]:
            misses.append((photo.name, label, round(confidence, 2)))
    assert len(kept) >= 10
    assert np.mean(kept) >= 0.85, misses


def test_the_pose_changes_are_the_ones_named(photo_hands):
    """The helpers that stand in for other people's hands do what their names say, measured on a
    real open hand and a real thumbs-up: curling bends only the named finger and keeps its bones,
    the thumb swings about its base joint away from or towards the index knuckle, a change of
    view is a turn (lengths kept when depth is kept)."""
    palm = photo_hands.hands(photo_hands.photos("open_palm")[0])[0]
    p = undistorted(palm)
    bent = curl(p, palm.handedness, ("index",), 30)
    assert np.allclose(bent[9:], p[9:]) and np.allclose(bent[:6], p[:6])
    assert np.linalg.norm(bent[8] - p[0]) < np.linalg.norm(p[8] - p[0])  # the tip comes closer
    for a, b in ((5, 6), (6, 7), (7, 8)):  # bones keep their length
        assert np.linalg.norm(bent[b] - bent[a]) == pytest.approx(np.linalg.norm(p[b] - p[a]))

    thumb = photo_hands.hands(photo_hands.photos("thumbs_up")[0])[0]
    t = undistorted(thumb)
    wider, closer = swing_thumb(t, 20), swing_thumb(t, -20)
    assert np.allclose(wider[[0, 1, *range(5, 21)]], t[[0, 1, *range(5, 21)]])
    assert np.linalg.norm(wider[4] - t[5]) > np.linalg.norm(t[4] - t[5]) > \
        np.linalg.norm(closer[4] - t[5])
    assert np.linalg.norm(wider[4] - wider[1]) == pytest.approx(np.linalg.norm(t[4] - t[1]))

    seen = view(p, yaw=30, depth=1.0)
    assert np.linalg.norm(seen[9] - seen[0]) == pytest.approx(np.linalg.norm(p[9] - p[0]))
