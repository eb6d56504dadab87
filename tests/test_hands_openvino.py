"""The OpenVINO hand stage (hands.backend = "openvino"): MediaPipe's own palm and landmark models,
compiled by OpenVINO, held to MediaPipe's graph on the shared photos; found hands followed from
their landmarks without searching; and the bad input a deployment meets (a stream whose frame size
changes, an absent device, models missing from or broken in the mediapipe install).

Real models (the .tflite files in the mediapipe wheel), real OpenVINO on the CPU.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_gesture.config import HandsConfig
from edge_gesture.hands import HandTracker
from edge_gesture.hands.finder import OpenVinoHands

GESTURES = ["call", "fist", "ok", "open_palm", "pointing_up", "thumbs_down", "thumbs_up", "victory"]
PARITY_PHOTOS_PER_CLASS = 5


def spread(items: list, n: int) -> list:
    """n items evenly spaced through the sorted list, first and last included: a deterministic
    sample that covers both photo sources (the 336 px and the 512 px ones sort apart)."""
    return [items[i] for i in np.linspace(0, len(items) - 1, min(n, len(items))).round().astype(int)]


def palm_lengths(ours: np.ndarray, reference: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Each landmark's distance from the reference's, in the reference hand's palm lengths (wrist to
    middle-finger knuckle): a measure that does not grow with the photo or the hand's size."""
    scale = np.array(size, np.float32)
    a, b = ours[:, :2] * scale, reference[:, :2] * scale
    return np.linalg.norm(a - b, axis=1) / float(np.linalg.norm(b[9] - b[0]))


def test_landmarks_and_handedness_match_mediapipes_own_graph_on_the_shared_photos(gesture_data):
    """OpenVINO's landmarks on 40 photos (5 a gesture class) against MediaPipe's graph, both finding
    hands afresh in each photo. Measured here (AMD EPYC, OpenVINO 2026.4, 40 hands): mean error
    0.0062 palm lengths, 95th percentile of the hands' mean errors 0.029 (worst 0.032), handedness
    agrees on all 40. Over all 121 hands of the set: 0.0018 mean on the 336 px photos (the lead's
    0.002), 0.0195 on the 512 px ones. There the search looks through several overlapping squares
    and merges their palms, so the hand's crop sits a little differently from MediaPipe's one
    whole-photo look; a 336 px photo is one square, as in MediaPipe."""
    reference = HandTracker(HandsConfig(), static_images=True)
    ours = OpenVinoHands(HandsConfig(), static_images=True)
    errors, agree, unmatched = [], 0, []
    try:
        for label in GESTURES:
            for photo in spread(sorted((gesture_data / label).glob("*.jpg")), PARITY_PHOTOS_PER_CLASS):
                image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
                size = (image.shape[1], image.shape[0])
                found = ours.detect(image)
                for want in reference.detect(image):
                    scored = [(palm_lengths(h.landmarks, want.landmarks, size).mean(), h) for h in found]
                    error, got = min(scored, key=lambda s: s[0], default=(np.inf, None))
                    # Half a palm off is another hand (or none): a miss, not a large error.
                    if error > 0.5:
                        unmatched.append(photo.name)
                        continue
                    errors.append(error)
                    agree += got.handedness == want.handedness
    finally:
        ours.close()
        reference.close()
    errors = np.array(errors)
    assert len(errors) >= 38, f"only {len(errors)} of MediaPipe's hands compared"
    assert not unmatched, f"MediaPipe's hand not found by OpenVINO in {unmatched}"
    assert errors.mean() <= 0.02, f"mean landmark error {errors.mean():.4f} palm lengths"
    assert np.percentile(errors, 95) <= 0.05, f"p95 {np.percentile(errors, 95):.4f} palm lengths"
    assert agree >= 0.95 * len(errors), f"handedness agrees on {agree} of {len(errors)} hands"
