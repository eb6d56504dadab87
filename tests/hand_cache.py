"""MediaPipe's hands in ../shared/gesture-data photos, plain or changed, found once per test session.

MediaPipe takes tens of milliseconds a photo; the classifier and robustness tests ask for the same
photos, so one still-image tracker answers them all and remembers each answer. Registered as a
pytest plugin in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from edge_gesture.config import HandsConfig
from edge_gesture.gestures import classify_landmarks
from edge_gesture.hands import Hand, HandTracker
from tests.robustness import PERTURBATIONS


class PhotoHands:
    def __init__(self, gesture_data: Path):
        self.gesture_data = gesture_data
        self._tracker = None
        self._images: dict[Path, object] = {}
        self._hands: dict[tuple[Path, str], list[Hand]] = {}

    def photos(self, label: str) -> list[Path]:
        return sorted((self.gesture_data / label).glob("*.jpg"))

    def hands(self, photo: Path, change: str = "original") -> list[Hand]:
        """The hand MediaPipe finds (one at most) in the photo after `change` (robustness.PERTURBATIONS)."""
        key = (photo, change)
        if key not in self._hands:
            if self._tracker is None:
                self._tracker = HandTracker(HandsConfig(max_num_hands=1), static_images=True)
            if photo not in self._images:
                image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
                assert image is not None, f"{photo}: not a readable image"
                self._images[photo] = image
            self._hands[key] = self._tracker.detect(PERTURBATIONS[change](self._images[photo]))
        return self._hands[key]

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()


@pytest.fixture(scope="session")
def photo_hands(gesture_data: Path):
    cache = PhotoHands(gesture_data)
    yield cache
    cache.close()


@pytest.fixture(scope="session")
def poses(photo_hands) -> dict[str, Hand]:
    """One photo's hand per gesture, one the classifier reads as that gesture."""
    out = {}
    for gesture in ("thumbs_down", "fist", "victory", "open_palm"):
        for path in photo_hands.photos(gesture):
            hands = photo_hands.hands(path)
            if hands:
                h = hands[0]
                guess = classify_landmarks(h.landmarks, h.handedness, aspect=h.aspect)
                if guess.label == gesture and guess.confidence >= 0.8:
                    out[gesture] = h
                    break
        assert gesture in out, f"no {gesture} photo the classifier reads right"
    return out
