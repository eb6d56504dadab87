"""How landmark labels and VLM answers combine into what the decider sees."""

from __future__ import annotations

import pytest

from edge_gesture.config import VlmConfig
from edge_gesture.decide import Observation
from edge_gesture.fuse import fuse
from edge_gesture.vlm.worker import VlmAnswer

ASSIST = VlmConfig(fusion="assist", max_age_s=1.0, min_probability=0.5)
CONFIRM = VlmConfig(fusion="confirm", max_age_s=1.0, min_probability=0.5)
FIST = Observation(3, "right", "fist", 0.8, "landmarks")
NOTHING = Observation(3, "right", None, 0.0, "landmarks")


def vlm(label: str, p: float = 0.9, t: float = 10.0) -> VlmAnswer:
    return VlmAnswer(3, label, p, t, 0.3)


@pytest.mark.parametrize("cfg", [ASSIST, CONFIRM])
def test_agreement_is_both_and_more_confident(cfg):
    got = fuse(FIST, vlm("fist"), 10.5, cfg)
    assert (got.label, got.source) == ("fist", "both")
    assert got.confidence == pytest.approx(1 - 0.2 * 0.1)


@pytest.mark.parametrize("cfg", [ASSIST, CONFIRM])
def test_a_gesture_only_the_vlm_knows_fires_on_the_vlm(cfg):
    got = fuse(FIST, vlm("crossed_fingers", 0.7), 10.2, cfg)
    assert got == Observation(3, "right", "crossed_fingers", 0.7, "vlm")
    assert fuse(NOTHING, vlm("crossed_fingers", 0.7), 10.2, cfg).label == "crossed_fingers"


@pytest.mark.parametrize("cfg", [ASSIST, CONFIRM])
def test_the_vlm_alone_never_fires_a_landmark_gesture(cfg):
    assert fuse(NOTHING, vlm("fist"), 10.2, cfg) == NOTHING


def test_assist_lets_landmarks_fire_without_or_against_the_vlm():
    assert fuse(FIST, None, 10.0, ASSIST) == FIST
    assert fuse(FIST, vlm("thumbs_up"), 10.2, ASSIST) == FIST
    assert fuse(FIST, vlm("none"), 10.2, ASSIST) == FIST


def test_confirm_holds_landmark_gestures_until_the_vlm_agrees():
    assert fuse(FIST, None, 10.0, CONFIRM).label is None
    assert fuse(FIST, vlm("thumbs_up"), 10.2, CONFIRM).label is None
    assert fuse(FIST, vlm("none"), 10.2, CONFIRM).label is None
    assert fuse(FIST, vlm("fist"), 10.2, CONFIRM).label == "fist"


@pytest.mark.parametrize("cfg", [ASSIST, CONFIRM])
def test_stale_or_unsure_answers_count_as_no_answer(cfg):
    for answer in (vlm("crossed_fingers", 0.9, t=8.0), vlm("crossed_fingers", 0.3, t=10.0)):
        assert fuse(NOTHING, answer, 10.0, cfg).label is None
    for answer in (vlm("fist", 0.9, t=8.0), vlm("fist", 0.3, t=10.0)):
        assert fuse(FIST, answer, 10.0, cfg).source == "landmarks"  # never "both"


@pytest.mark.parametrize("cfg", [ASSIST, CONFIRM])
def test_with_the_vlm_down_landmarks_pass_unchanged(cfg):
    assert fuse(FIST, None, 10.0, cfg, vlm_up=False) == FIST
    assert fuse(FIST, vlm("thumbs_up"), 10.0, cfg, vlm_up=False) == FIST
