"""plan_reload: which changed settings a SIGHUP applies, which wait for a restart."""

from __future__ import annotations

import pytest

from edge_gesture.config import ConfigError, parse_config
from edge_gesture.reload import changed_paths, plan_reload


def test_identical_configs_change_nothing():
    plan = plan_reload(parse_config({}), parse_config({}))
    assert plan.applied == () and plan.needs_restart == ()
    assert plan.config == parse_config({})


def test_thresholds_gestures_and_topics_apply_live():
    old = parse_config({})
    new = parse_config({
        "device_id": "hall",
        "gestures": {"enabled": ["fist", "ok"], "min_confidence": 0.7},
        "decide": {"enter_threshold": 0.8, "cooldown_s": 3},
        "mqtt": {"base_topic": "home/gestures"},
    })
    plan = plan_reload(old, new)
    assert set(plan.applied) == {
        "device_id", "gestures.enabled", "gestures.min_confidence", "decide.enter_threshold",
        "decide.cooldown_s", "mqtt.base_topic"}
    assert plan.needs_restart == ()
    assert plan.config == new
    assert plan.config.topic_root == "home/gestures/hall"
    assert plan.touches("mqtt") and plan.touches("decide") and not plan.touches("logging")


def test_device_changes_wait_for_a_restart_and_keep_running_values():
    old = parse_config({"capture": {"source": "/dev/video0"}})
    new = parse_config({"capture": {"source": "/dev/video2", "width": 1920},
                        "hands": {"max_num_hands": 1},
                        "decide": {"cooldown_s": 4}})
    plan = plan_reload(old, new)
    assert plan.applied == ("decide.cooldown_s",)
    assert plan.needs_restart == ("capture.source", "capture.width", "hands.max_num_hands")
    assert plan.config.capture == old.capture
    assert plan.config.hands == old.hands
    assert plan.config.decide.cooldown_s == 4


def test_live_part_that_depends_on_a_restart_part_is_refused_with_the_reason():
    old = parse_config({})
    new = parse_config({"gestures": {
        "enabled": ["fist", "crossed_fingers"],
        "custom": [{"name": "crossed_fingers", "description": "index and middle crossed"}],
    }})
    with pytest.raises(ConfigError) as exc:
        plan_reload(old, new)
    msg = str(exc.value)
    assert "crossed_fingers" in msg and "gestures.custom" in msg and "restart" in msg


def test_changed_paths_compares_lists_whole():
    a = parse_config({"gestures": {"enabled": ["fist", "ok"]}})
    b = parse_config({"gestures": {"enabled": ["ok", "fist"]}})
    assert changed_paths(a, b) == ["gestures.enabled"]


def test_with_the_vlm_on_a_new_gesture_list_says_the_vlm_keeps_the_old_one(tmp_path):
    bundle = tmp_path / "bundle"
    old = parse_config({"vlm": {"enabled": True, "bundle": str(bundle)}})
    new = parse_config({"vlm": {"enabled": True, "bundle": str(bundle)},
                        "gestures": {"enabled": ["fist"]}})
    plan = plan_reload(old, new)
    assert plan.applied == ("gestures.enabled",)
    assert plan.notes and "VLM" in plan.notes[0]
    assert plan_reload(parse_config({}), parse_config({"gestures": {"enabled": ["fist"]}})).notes == ()
