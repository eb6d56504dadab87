"""Combine one hand's landmark label with the VLM's latest answer into the frame's observation.

Rules (config `vlm.fusion`):
- A gesture only the VLM knows (a `[[gestures.custom]]` one) fires on a fresh VLM answer alone.
- `assist`: landmark gestures fire on landmarks; a fresh VLM answer that agrees marks the
  observation `both` and raises its confidence (either being right: 1 - (1-a)(1-b)).
- `confirm`: a landmark gesture counts only while a fresh VLM answer agrees; until the VLM has
  answered, or when it says something else, the hand shows nothing.
- The VLM never fires a landmark gesture on its own: landmarks see those every frame.
- With the VLM down (failed, too slow, not configured) landmark labels pass through unchanged.
A VLM answer is fresh when it is at most `vlm.max_age_s` old and at least `vlm.min_probability`.
"""

from __future__ import annotations

from dataclasses import replace

from edge_gesture.config import LANDMARK_GESTURES, VlmConfig
from edge_gesture.decide import Observation
from edge_gesture.vlm.worker import VlmAnswer


def fuse(
    landmark: Observation,
    vlm: VlmAnswer | None,
    now: float,
    cfg: VlmConfig,
    *,
    vlm_up: bool = True,
) -> Observation:
    """landmark: the landmark classifier's observation for this hand (label None: nothing);
    vlm: the worker's latest answer for the same hand (its track); now: the frame's time."""
    if not vlm_up:
        return landmark
    fresh = (
        vlm is not None
        and now - vlm.t <= cfg.max_age_s
        and vlm.probability >= cfg.min_probability
    )
    said = vlm.label if fresh else None
    if said is not None and said != "none" and said not in LANDMARK_GESTURES:
        return replace(landmark, label=said, confidence=vlm.probability, source="vlm")
    if landmark.label is not None and said == landmark.label:
        both = 1.0 - (1.0 - landmark.confidence) * (1.0 - vlm.probability)
        return replace(landmark, confidence=both, source="both")
    if cfg.fusion == "confirm" and landmark.label is not None:
        return replace(landmark, label=None, confidence=0.0, source="landmarks")
    return landmark
