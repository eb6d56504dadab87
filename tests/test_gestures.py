"""The landmark classifier on hands MediaPipe finds in ../shared/gesture-data photos.

The landmarks are computed here from the photos (nothing derived from them is committed). The
photos are a development set: these tests check behaviour a user would notice (each gesture is
recognised, the answer survives mirroring, scaling and a tilted hand, a half-closed hand is not
mistaken for a gesture), not the figures `edge-gesture eval` reports.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from edge_gesture.config import LANDMARK_GESTURES
from edge_gesture.gestures import (
    FINGERS,
    UNKNOWN,
    GestureGuess,
    classify_landmarks,
    gesture_scores,
    measure,
)
from tests.hand_poses import curl, rotate

ROTATION_FREE = ("open_palm", "fist", "victory", "ok", "call")


@pytest.fixture(scope="module")
def photos(photo_hands) -> dict[str, list[tuple[str, np.ndarray, str]]]:
    """label -> [(file name, landmarks in square pixel-like units, handedness)] per gesture photo.

    x and z are scaled by the photo's width / height so the points are undistorted and the tests
    can rotate them; the classifier is then called with aspect=1.
    """
    out = defaultdict(list)
    for label in LANDMARK_GESTURES:
        for path in photo_hands.photos(label):
            hands = photo_hands.hands(path)
            if hands:
                h = hands[0]
                pts = h.landmarks.astype(np.float64) * (h.aspect, 1.0, h.aspect)
                out[label].append((path.name, pts, h.handedness))
    assert all(out[g] for g in LANDMARK_GESTURES), "every gesture folder should have hands"
    return out


def mirror(pts: np.ndarray) -> np.ndarray:
    """The same pose made by the other hand, as a left-right flipped photo shows it."""
    return pts * (-1.0, 1.0, 1.0)


def bend_fingers(pts: np.ndarray, handedness: str, degrees: float) -> np.ndarray:
    """Curl the four fingers by `degrees` at each of their three joints, towards the palm."""
    return curl(pts, handedness, FINGERS, degrees)


def labels_of(items, transform=lambda p: p, hand=None) -> list[str]:
    return [classify_landmarks(transform(p), hand or h).label for _, p, h in items]


def misses(items, expected, transform=lambda p: p) -> list[str]:
    return [f"{name}: {g}" for (name, _, _), g in zip(items, labels_of(items, transform),
                                                       strict=True) if g != expected]


@pytest.mark.parametrize("gesture", LANDMARK_GESTURES)
def test_each_gesture_is_recognised_on_its_photos(photos, gesture):
    items = photos[gesture]
    wrong = misses(items, gesture)
    assert len(wrong) <= 0.1 * len(items), f"{gesture}: {len(wrong)}/{len(items)} wrong: {wrong}"


def test_recognised_gestures_come_with_high_confidence(photos):
    confident = [classify_landmarks(p, h).confidence
                 for g, items in photos.items() for _, p, h in items
                 if classify_landmarks(p, h).label == g]
    assert np.median(confident) > 0.9
    assert all(0.5 <= c <= 1.0 for c in confident)


@pytest.mark.parametrize("gesture", LANDMARK_GESTURES)
def test_the_other_hand_and_any_handedness_label_give_the_same_answer(photos, gesture):
    for name, p, hand in photos[gesture]:
        original = classify_landmarks(p, hand)
        for other in ("left", "right"):
            flipped = classify_landmarks(mirror(p), other)
            assert flipped.label == original.label, name
            assert flipped.confidence == pytest.approx(original.confidence, abs=1e-3), name


@pytest.mark.parametrize("gesture", LANDMARK_GESTURES)
def test_hand_size_and_position_do_not_matter(photos, gesture):
    for name, p, hand in photos[gesture]:
        original = classify_landmarks(p, hand)
        for scale, shift in ((0.2, (5.0, -3.0, 1.0)), (7.5, (-0.4, 0.9, 0.0))):
            moved = classify_landmarks(p * scale + shift, hand)
            assert moved.label == original.label, name
            assert moved.confidence == pytest.approx(original.confidence, abs=1e-3), name


@pytest.mark.parametrize("gesture", LANDMARK_GESTURES)
@pytest.mark.parametrize("degrees", (-20, 20))
def test_a_hand_tilted_by_20_degrees_is_still_recognised(photos, gesture, degrees):
    items = photos[gesture]
    wrong = misses(items, gesture, lambda p: rotate(p, degrees))
    assert len(wrong) <= 0.1 * len(items), f"{gesture} at {degrees} deg: {wrong}"


@pytest.mark.parametrize("gesture", ROTATION_FREE)
def test_gestures_without_a_direction_survive_any_rotation(photos, gesture):
    items = photos[gesture]
    for degrees in (90, 180, -90):
        wrong = misses(items, gesture, lambda p, d=degrees: rotate(p, d))
        assert len(wrong) <= 0.1 * len(items), f"{gesture} at {degrees} deg: {wrong}"


def test_turning_a_thumbs_up_upside_down_makes_it_thumbs_down(photos):
    for up, down in (("thumbs_up", "thumbs_down"), ("thumbs_down", "thumbs_up")):
        items = photos[up]
        wrong = misses(items, down, lambda p: rotate(p, 180))
        assert len(wrong) <= 0.1 * len(items), f"{up} turned over: {wrong}"


def test_a_sideways_thumb_is_neither_up_nor_down(photos):
    for name, p, hand in photos["thumbs_up"]:
        thumb = p[4] - p[2]
        angle = math.degrees(math.atan2(thumb[0], -thumb[1]))  # clockwise from up, like rotate()
        for target in (90, -90):
            sideways = rotate(p, target - angle)
            label = classify_landmarks(sideways, hand).label
            assert label not in ("thumbs_up", "thumbs_down"), (name, target, label)


def test_a_finger_pointing_down_is_not_pointing_up(photos):
    labels = labels_of(photos["pointing_up"], lambda p: rotate(p, 180))
    assert labels.count("pointing_up") == 0, labels


def test_a_half_closed_hand_is_not_taken_for_a_gesture(photos):
    for name, p, hand in photos["open_palm"]:
        half = classify_landmarks(bend_fingers(p, hand, 35), hand)
        assert half.label == UNKNOWN, f"{name}: half-closed hand read as {half}"


def test_confidence_falls_smoothly_as_an_open_hand_closes(photos):
    for name, p, hand in photos["open_palm"]:
        scores = [gesture_scores(measure(bend_fingers(p, hand, d)))["open_palm"]
                  for d in range(0, 41, 5)]
        assert scores[0] > 0.9, name
        steps = np.diff(scores)
        assert (steps <= 0.02).all(), (name, scores)
        assert np.abs(steps).max() < 0.35, (name, scores)
        assert scores[-1] < 0.5, (name, scores)


def test_non_square_frames_need_the_aspect_to_read_the_same(photos):
    """Landmarks normalised to a 16:9 frame give the same answer when the aspect is passed."""
    aspect = 16 / 9
    for gesture in ("thumbs_up", "pointing_up", "victory"):
        for name, p, hand in photos[gesture]:
            normalised = p / (aspect, 1.0, aspect)
            assert classify_landmarks(normalised, hand, aspect=aspect) == \
                classify_landmarks(p, hand), name


def test_two_dimensional_landmarks_are_accepted(photos):
    name, p, hand = photos["victory"][0]
    assert classify_landmarks(p[:, :2], hand).label == "victory"


def test_below_min_confidence_the_answer_is_unknown(photos):
    _, p, hand = photos["fist"][0]
    sure = classify_landmarks(p, hand)
    strict = classify_landmarks(p, hand, min_confidence=1.0)
    assert strict == GestureGuess(UNKNOWN, pytest.approx(1 - sure.confidence, abs=1e-3))


def test_every_landmark_gesture_has_a_template():
    shape = measure(np.random.default_rng(1).normal(size=(21, 3)))
    assert set(gesture_scores(shape)) == set(LANDMARK_GESTURES)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((20, 3)), "shape"),
    (np.zeros((21, 4)), "shape"),
    (np.full((21, 3), np.nan), "NaN"),
    (np.zeros((21, 3)), "degenerate"),
])
def test_bad_landmarks_are_refused_with_the_reason(bad, message):
    with pytest.raises(ValueError, match=message):
        classify_landmarks(bad, "left")


def test_bad_handedness_and_aspect_are_refused():
    pts = np.random.default_rng(0).normal(size=(21, 3))
    with pytest.raises(ValueError, match="handedness"):
        classify_landmarks(pts, "Left")
    with pytest.raises(ValueError, match="aspect"):
        classify_landmarks(pts, "left", aspect=0)
