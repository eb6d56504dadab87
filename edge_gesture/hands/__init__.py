"""Hands in a frame: 21 landmarks, handedness and a bounding box per hand.

Two hand stages give the same `Hand`s (`open_hands` picks one by `hands.backend`):
- `finder.OpenVinoHands` (default): MediaPipe's palm and landmark models on OpenVINO, searching
  the full-resolution frame so hands across a room are found (see finder.py);
- `HandTracker` here: MediaPipe's own graph (`mediapipe.solutions.hands`), the reference. In
  tracking mode it runs the palm detector on the whole frame shrunk to 192x192 until it has hands,
  then follows them with the landmark model alone; `static_images=True` detects afresh in every
  image.
Both use the models inside the mediapipe 0.10.21 wheel, so nothing is downloaded.

Handedness: MediaPipe labels hands as if the picture were a mirrored selfie view. A camera frame
or a photograph is not mirrored, so there its "Left" is the person's right hand; `HandsConfig.
mirrored` says which case applies and `Hand.handedness` is always the person's own hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge_gesture.config import HandsConfig
from edge_gesture.native_logs import native_stderr_relogged

_SWAP = {"Left": "right", "Right": "left"}
_SAME = {"Left": "left", "Right": "right"}
_PALM_INPUT = 192  # MediaPipe's palm detector's input side


@dataclass(frozen=True, slots=True, eq=False)
class Hand:
    landmarks: np.ndarray  # (21, 3) float32, MediaPipe normalised: x / width, y / height, z ~ x
    handedness: str  # "left" | "right": the person's own hand
    score: float  # MediaPipe's handedness score for this hand, 0..1
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 pixels around the landmarks, x1/y1 exclusive
    frame_size: tuple[int, int]  # width, height of the frame the landmarks are normalised to
    # Which hand this is across frames (hands.tracks.HandTracks); 0 until a HandTracks assigns it.
    track_id: int = 0

    @property
    def aspect(self) -> float:
        """Frame width / height: what turns the normalised landmarks back into true angles."""
        return self.frame_size[0] / self.frame_size[1]


def box_in_frame(landmarks: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    xs, ys = landmarks[:, 0] * width, landmarks[:, 1] * height
    # Landmarks of a hand partly outside the frame lie outside 0..1; the box stops at the edge.
    x0 = min(max(math.floor(float(xs.min())), 0), width)
    y0 = min(max(math.floor(float(ys.min())), 0), height)
    x1 = min(max(math.floor(float(xs.max())) + 1, 0), width)
    y1 = min(max(math.floor(float(ys.max())) + 1, 0), height)
    return x0, y0, x1, y1


def check_frame(frame_bgr) -> None:
    if not isinstance(frame_bgr, np.ndarray) or frame_bgr.dtype != np.uint8 \
            or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        shape = getattr(frame_bgr, "shape", None)
        dtype = getattr(frame_bgr, "dtype", type(frame_bgr).__name__)
        raise ValueError(f"frame must be an 8-bit BGR image (H, W, 3), got {shape} {dtype}")


def open_hands(cfg: HandsConfig, *, static_images: bool = False, cache_dir: str | None = None):
    """The hand stage `hands.backend` names: OpenVINO's finder, or MediaPipe's own graph."""
    if cfg.backend == "openvino":
        from edge_gesture.hands.finder import OpenVinoHands

        return OpenVinoHands(cfg, static_images=static_images, cache_dir=cache_dir)
    return HandTracker(cfg, static_images=static_images)


class HandTracker:
    """Finds hands in BGR frames. One per thread: MediaPipe's graph is not thread-safe."""

    def __init__(self, cfg: HandsConfig, *, static_images: bool = False):
        # Imported here so modules that only need `Hand` do not pay for loading MediaPipe.
        from mediapipe.python.solutions import hands as mp_hands

        self._labels = _SAME if cfg.mirrored else _SWAP
        self._make = lambda: mp_hands.Hands(
            static_image_mode=static_images,
            max_num_hands=cfg.max_num_hands,
            model_complexity=cfg.model_complexity,
            min_detection_confidence=cfg.min_detection_confidence,
            min_tracking_confidence=cfg.min_tracking_confidence,
        )
        self._mp = self._new_graph()

    def _new_graph(self):
        # A new graph opens its calculators on threads of its own, where TFLite, absl and
        # MediaPipe print start-up lines to stderr ("Created TensorFlow Lite XNNPACK delegate",
        # "Feedback manager requires ..."). A blank frame waits for every calculator to be open,
        # so all of it is printed inside this block: the debug log has it, the journal does not.
        # No hand is in it, so the first real frame is searched whole as without it.
        with native_stderr_relogged("mediapipe hand graph start"):
            graph = self._make()
            graph.process(np.zeros((_PALM_INPUT, _PALM_INPUT, 3), np.uint8))
        return graph

    def detect(self, frame_bgr: np.ndarray) -> list[Hand]:
        """Hands in one frame (8-bit BGR, as OpenCV delivers), at most `max_num_hands`."""
        if self._mp is None:
            raise RuntimeError("HandTracker is closed")
        check_frame(frame_bgr)
        height, width = frame_bgr.shape[:2]
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        # Read-only lets MediaPipe wrap the buffer instead of copying it.
        rgb.flags.writeable = False
        result = self._mp.process(rgb)
        if not result.multi_hand_landmarks:
            return []
        hands = []
        for lms, handedness in zip(result.multi_hand_landmarks, result.multi_handedness, strict=True):
            points = np.array([(p.x, p.y, p.z) for p in lms.landmark], dtype=np.float32)
            best = handedness.classification[0]
            hands.append(Hand(
                landmarks=points,
                handedness=self._labels[best.label],
                score=float(best.score),
                bbox=box_in_frame(points, width, height),
                frame_size=(width, height),
            ))
        # Two hands under one label may well be two people's right hands, so no label is rewritten:
        # hands are told apart by their tracks (tracks.py), each label voted over its track.
        return hands

    #: MediaPipe follows from the second frame on and searches only when it lost a hand.
    frames_to_settle = 2

    def forget(self) -> None:
        """Drop the hands followed so far (a new scene): MediaPipe's graph keeps them, so a new
        graph it is."""
        self.close()
        self._mp = self._new_graph()

    def close(self) -> None:
        if self._mp is not None:
            self._mp.close()
            self._mp = None

    def __enter__(self) -> HandTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
