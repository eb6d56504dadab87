"""The two benches that say whether the classifier generalises (tests/robustness.py and
tests/threshold_cv.py) measure what they claim, on a few real development photos."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_gesture.config import Config
from edge_gesture.gestures import THRESHOLDS
from tests import robustness, threshold_cv

GESTURES = ("thumbs_up", "thumbs_down", "fist", "victory")


@pytest.fixture(scope="module")
def few_photos(gesture_data, tmp_path_factory):
    """Three photos of each of four gestures, linked (not copied) into a folder of their own."""
    folder = tmp_path_factory.mktemp("few")
    for gesture in GESTURES:
        (folder / gesture).mkdir()
        for photo in sorted((gesture_data / gesture).glob("*.jpg"))[:3]:
            (folder / gesture / photo.name).symlink_to(photo)
    return folder


def test_the_robustness_bench_judges_like_eval_and_its_cache_changes_nothing(few_photos):
    """Eval's judge on the daemon's hand stage, twice: the second run answers from the cache and
    gives the same figures."""
    cfg = Config()
    cache: dict = {}
    first = robustness.run(few_photos, cfg, ["original", "flip"], cache)
    assert cache, "the hand stage's answers were not kept"
    again = robustness.run(few_photos, cfg, ["original", "flip"], cache)
    assert again == first
    assert first["original"]["accuracy"] >= 11 / 12, first["original"]["mistakes"]


def test_cross_validation_finds_a_wrong_threshold_and_scores_it_on_unseen_folds(few_photos):
    """A thumb cone of 20 degrees (a thumbs-up must point nearly straight up) loses tilted thumbs;
    tuned on the other folds, the cone opens again and the folds left out read better."""
    cfg = Config()
    hands, photos = threshold_cv.collect(few_photos, cfg, {})
    assert len(photos) == 12
    assert {"photo", "changed", "pose"} <= set(hands.kind)
    fires = cfg.decide.enter_threshold
    strict = dataclasses.replace(THRESHOLDS, thumb_cone=20.0)
    thumbs = np.isin(hands.truth, [threshold_cv.LANDMARK_GESTURES.index(g)
                                   for g in ("thumbs_up", "thumbs_down")])
    right_strict = threshold_cv.judge(hands.m, hands.truth, strict, fires)[0]
    right_today = threshold_cv.judge(hands.m, hands.truth, THRESHOLDS, fires)[0]
    assert right_strict[thumbs].mean() < right_today[thumbs].mean() - 0.2

    tuned = threshold_cv.tune(hands.m, hands.truth, fires, start=strict)
    assert tuned.thumb_cone >= 35.0
    report = threshold_cv.cross_validate(hands, len(photos), fires, folds=3, seed=0, today=strict)
    assert len(report["tuned_per_fold"]) == 3
    assert all(fold["thumb_cone"] > 20.0 for fold in report["tuned_per_fold"])
    assert report["tuned"]["changed"] > report["today"]["changed"], report
