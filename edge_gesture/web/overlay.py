"""What the daemon saw, drawn on its picture: where the hand finder searched, and each hand's
box, landmarks, track id, left/right, the frame's label with its confidence and source, the
VLM's latest answer for it, and the debounced active gesture."""

from __future__ import annotations

import cv2
import numpy as np

# MediaPipe's 21 hand landmarks: wrist, then four points along each finger, thumb first.
_BONES = (
    (0, 1), (1, 2), (2, 3), (3, 4),
    (0, 5), (5, 6), (6, 7), (7, 8),
    (5, 9), (9, 10), (10, 11), (11, 12),
    (9, 13), (13, 14), (14, 15), (15, 16),
    (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),
)

# BGR; the person's left and right hands apart at a glance, the active gesture loud.
_SIDE_COLOUR = {"left": (255, 160, 0), "right": (0, 200, 255)}
_OTHER = (200, 200, 200)
_ACTIVE = (60, 220, 60)
# Thin and a colour no hand is drawn in: where the finder looked, under the hands.
_SEARCH = (255, 0, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw(image: np.ndarray, view, state: dict[str, str | None]) -> None:
    """Draws `view` (a web.feed.FrameView) in place on `image`, which may be its frame scaled:
    the search squares, boxes and landmarks are mapped to its size."""
    height, width = image.shape[:2]
    frame_h, frame_w = view.frame.image.shape[:2]
    scale = max(width / 640.0, 0.5)
    thick = max(1, round(2 * scale))
    to_image = np.array([width / frame_w, height / frame_h], np.float32)
    for square in view.search_squares:
        corners = (square.corners() * to_image).round().astype(np.int32)
        cv2.polylines(image, [corners], True, _SEARCH, 1, cv2.LINE_AA)
    by_track = {o.track: o for o in view.observations}
    answers = view.vlm_answers or {}
    for hand in view.hands:
        obs = by_track.get(hand.track_id)
        side = obs.hand if obs is not None else hand.handedness
        colour = _SIDE_COLOUR.get(side, _OTHER)
        fw, fh = hand.frame_size
        sx, sy = width / fw, height / fh
        x0, y0, x1, y1 = hand.bbox
        p0, p1 = (round(x0 * sx), round(y0 * sy)), (round(x1 * sx), round(y1 * sy))
        active = state.get(side)
        cv2.rectangle(image, p0, p1, _ACTIVE if active else colour, thick)
        points = np.column_stack([hand.landmarks[:, 0] * width,
                                  hand.landmarks[:, 1] * height]).round().astype(np.int32)
        for a, b in _BONES:
            cv2.line(image, tuple(points[a]), tuple(points[b]), colour, thick, cv2.LINE_AA)
        for p in points:
            cv2.circle(image, tuple(p), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
        lines = [f"#{hand.track_id} {side}"]
        if obs is not None:
            lines.append(f"{obs.label} {obs.confidence:.2f} {obs.source}" if obs.label else "no gesture")
        answer = answers.get(hand.track_id)
        if answer is not None:
            age = max(0.0, view.frame.t - answer.t)
            lines.append(f"vlm {answer.label} {answer.probability:.2f} {age:.1f}s ago")
        if active:
            lines.append(f"ACTIVE {active}")
        _label(image, lines, p0, scale, colour, active)


def _label(image: np.ndarray, lines: list[str], at: tuple[int, int], scale: float, colour,
           active: str | None) -> None:
    size = 0.5 * scale
    step = round(20 * scale)
    x = max(at[0], 0)
    y = max(at[1] - step * len(lines) - 4, step)
    for i, text in enumerate(lines):
        (w, h), base = cv2.getTextSize(text, _FONT, size, 1)
        top = y + i * step
        cv2.rectangle(image, (x, top - h - 3), (x + w + 6, top + base), (0, 0, 0), -1)
        fg = _ACTIVE if active and text.startswith("ACTIVE") else colour
        cv2.putText(image, text, (x + 3, top), _FONT, size, fg, 1, cv2.LINE_AA)
