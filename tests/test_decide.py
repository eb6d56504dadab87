"""Debouncing on crafted label sequences: what a user sees as events and state."""

from __future__ import annotations

from edge_gesture.config import LANDMARK_GESTURES, DecideConfig
from edge_gesture.decide import Decider, Observation

FPS = 30.0
CFG = DecideConfig(window_s=0.4, enter_threshold=0.6, exit_threshold=0.3, min_hold_s=0.3,
                   cooldown_s=1.5, lost_after_s=0.5)


def run(sequence, cfg=CFG, enabled=LANDMARK_GESTURES, hand="right", track=1):
    """sequence: list of (seconds, label or None, confidence); label "-" means no hand in view.
    The hand keeps its track id throughout."""
    d = Decider(cfg, enabled)
    t = 0.0
    events, states = [], []
    for seconds, label, conf in sequence:
        for _ in range(round(seconds * FPS)):
            obs = [] if label == "-" else [Observation(track, hand, label, conf)]
            for ev in d.update(t, obs):
                events.append((round(ev.t, 2), ev.gesture, ev.hand))
            if d.state_changed:
                states.append(dict(d.state()))
            t += 1 / FPS
    return events, states


def test_a_gesture_held_for_a_minute_is_one_event():
    events, _ = run([(60, "fist", 0.9)])
    assert [e[1] for e in events] == ["fist"]


def test_event_waits_for_the_minimum_hold():
    events, _ = run([(2, "thumbs_up", 0.95)])
    # Score reaches 0.6 after ~0.24 s of a full window, then must hold 0.3 s more.
    assert len(events) == 1
    assert 0.3 <= events[0][0] <= 0.7


def test_a_flash_shorter_than_the_hold_fires_nothing():
    events, _ = run([(1, None, 0.0), (0.2, "victory", 0.95), (1, None, 0.0)])
    assert events == []


def test_hysteresis_keeps_a_gesture_through_flicker():
    # Every 4th frame misreads: the score dips but stays above the exit threshold.
    seq = [(1, "open_palm", 0.9)]
    for _ in range(30):
        seq += [(3 / FPS, "open_palm", 0.9), (1 / FPS, None, 0.0)]
    events, states = run(seq)
    assert [e[1] for e in events] == ["open_palm"]
    assert states == [{"right": "open_palm"}]


def test_low_confidence_never_enters():
    events, _ = run([(3, "ok", 0.5)])
    assert events == []


def test_release_and_repeat_after_cooldown_fires_again():
    events, _ = run([(1, "fist", 0.9), (1, None, 0.0), (1, "fist", 0.9)])
    assert [e[1] for e in events] == ["fist", "fist"]


def test_repeat_within_cooldown_is_suppressed_but_state_follows():
    cfg = CFG.model_copy(update={"cooldown_s": 5.0})
    events, states = run([(1, "fist", 0.9), (1, None, 0.0), (1, "fist", 0.9)], cfg=cfg)
    assert [e[1] for e in events] == ["fist"]
    assert states == [{"right": "fist"}, {"right": None}, {"right": "fist"}]


def test_cooldown_is_per_gesture():
    cfg = CFG.model_copy(update={"cooldown_s": 5.0})
    events, _ = run([(1, "fist", 0.9), (1, "open_palm", 0.9)], cfg=cfg)
    assert [e[1] for e in events] == ["fist", "open_palm"]


def test_hand_leaving_view_clears_state():
    events, states = run([(1, "call", 0.9), (1, "-", 0.0)])
    assert [e[1] for e in events] == ["call"]
    assert states[-1] == {}


def test_disabled_gestures_never_fire():
    events, _ = run([(2, "ok", 0.95)], enabled=["fist"])
    assert events == []


def test_two_hands_are_debounced_independently():
    d = Decider(CFG, LANDMARK_GESTURES)
    fired = []
    for i in range(60):
        t = i / FPS
        obs = [Observation(1, "left", "fist", 0.9), Observation(2, "right", "victory", 0.9)]
        fired += [(e.hand, e.gesture) for e in d.update(t, obs)]
    assert sorted(fired) == [("left", "fist"), ("right", "victory")]
    assert d.state() == {"left": "fist", "right": "victory"}


def test_reconfigure_ends_a_gesture_that_is_no_longer_enabled():
    d = Decider(CFG, LANDMARK_GESTURES)
    for i in range(30):
        d.update(i / FPS, [Observation(1, "right", "fist", 0.9)])
    assert d.state() == {"right": "fist"}
    d.reconfigure(CFG, ["open_palm"])
    assert d.state_changed and d.state() == {"right": None}


def test_a_hand_that_leaves_briefly_does_not_refire_inside_the_cooldown():
    # Out of view for 0.6 s (> lost_after_s 0.5, so its track is dropped), back 1.6 s after the
    # first event with the same gesture: still inside the 5 s cooldown, so one event only.
    cfg = CFG.model_copy(update={"cooldown_s": 5.0})
    events, states = run([(1, "fist", 0.9), (0.6, "-", 0.0), (1, "fist", 0.9)], cfg=cfg)
    assert [e[1] for e in events] == ["fist"]
    # The state still follows the hand: gesture ends, hand gone, back with its gesture active.
    assert states == [{"right": "fist"}, {"right": None}, {}, {"right": "fist"}]


def test_a_hand_that_leaves_fires_again_once_the_cooldown_has_passed():
    cfg = CFG.model_copy(update={"cooldown_s": 2.0})
    events, _ = run([(1, "fist", 0.9), (2, "-", 0.0), (1, "fist", 0.9)], cfg=cfg)
    assert [e[1] for e in events] == ["fist", "fist"]
    assert events[1][0] - events[0][0] >= 2.0


def test_cooldowns_of_hands_long_gone_are_forgotten():
    # Hands come and go under fresh track ids: the remembered cooldowns must
    # not grow with every hand ever seen, or a week-long run leaks memory.
    d = Decider(CFG, LANDMARK_GESTURES)
    t = 0.0
    fired = 0
    for n in range(200):
        for _ in range(int(FPS)):  # 1 s of a fist from hand n, then 1 s with nobody in view
            fired += len(d.update(t, [Observation(n + 1, "right", "fist", 0.9)]))
            t += 1 / FPS
        for _ in range(int(FPS)):
            d.update(t, [])
            t += 1 / FPS
    assert fired == 200
    assert len(d.cooldowns) <= 2  # only hands whose cooldown (1.5 s) is still running


def frames(d, seconds, t0, per_frame):
    """Run `per_frame(t)` -> observations through `d` for `seconds` from t0; returns (events, t)."""
    events, t = [], t0
    for _ in range(round(seconds * FPS)):
        events += [(e.hand, e.gesture) for e in d.update(t, per_frame(t))]
        t += 1 / FPS
    return events, t


def test_two_peoples_right_hands_are_debounced_apart_and_both_fire():
    # Two tracks with one label: each its own gesture, the same gesture from both fires twice.
    cfg = CFG.model_copy(update={"cooldown_s": 5.0})
    d = Decider(cfg, LANDMARK_GESTURES)
    events, _ = frames(d, 2, 0.0, lambda t: [Observation(1, "right", "fist", 0.9),
                                              Observation(2, "right", "fist", 0.9)])
    assert events == [("right", "fist"), ("right", "fist")]


def test_state_shows_per_label_the_newest_active_gesture_of_its_tracks():
    d = Decider(CFG, LANDMARK_GESTURES)
    _, t = frames(d, 1, 0.0, lambda t: [Observation(1, "right", "fist", 0.9),
                                         Observation(2, "right", None, 0.0)])
    assert d.state() == {"right": "fist"}  # a gesture shown beats none
    _, t = frames(d, 1, t, lambda t: [Observation(1, "right", "fist", 0.9),
                                       Observation(2, "right", "victory", 0.9)])
    assert d.state() == {"right": "victory"}  # the one that became active last
    _, t = frames(d, 1, t, lambda t: [Observation(1, "right", "fist", 0.9),
                                       Observation(2, "right", None, 0.0)])
    assert d.state() == {"right": "fist"}  # and the other again when that one ends
    _, t = frames(d, 1, t, lambda t: [Observation(1, "right", None, 0.0),
                                       Observation(3, "left", "ok", 0.9)])
    assert d.state() == {"left": "ok", "right": None}


def test_a_hand_back_under_a_new_track_keeps_its_cooldown():
    # Gone for longer than lost_after_s, the hand comes back as track 2: its fist is still inside
    # the cooldown of track 1's; the other hand's is not, nor is a fist once the cooldown is over.
    cfg = CFG.model_copy(update={"cooldown_s": 3.0})
    d = Decider(cfg, LANDMARK_GESTURES)
    first, t = frames(d, 1, 0.0, lambda t: [Observation(1, "right", "fist", 0.9)])
    _, t = frames(d, 0.7, t, lambda t: [])
    back, t = frames(d, 1, t, lambda t: [Observation(2, "right", "fist", 0.9),
                                          Observation(3, "left", "fist", 0.9)])
    assert first == [("right", "fist")] and back == [("left", "fist")]
    _, t = frames(d, 1, t, lambda t: [])
    later, t = frames(d, 1, t, lambda t: [Observation(4, "right", "fist", 0.9)])
    assert later == [("right", "fist")]


def test_a_hand_in_view_alongside_does_not_inherit_the_cooldown_of_one_that_left():
    cfg = CFG.model_copy(update={"cooldown_s": 5.0})
    d = Decider(cfg, LANDMARK_GESTURES)
    first, t = frames(d, 1, 0.0, lambda t: [Observation(1, "right", "fist", 0.9),
                                             Observation(2, "right", None, 0.0)])
    _, t = frames(d, 1, t, lambda t: [Observation(2, "right", None, 0.0)])  # track 1 leaves
    second, t = frames(d, 1, t, lambda t: [Observation(2, "right", "fist", 0.9)])
    assert first == second == [("right", "fist")]


def test_while_a_gesture_lasts_the_state_names_the_hand_its_event_named():
    # The track's label turns over while the fist is held: the state keeps saying the right
    # hand shows it (as the event said), and follows the new label once the fist ends.
    d = Decider(CFG, LANDMARK_GESTURES)
    fired, t = frames(d, 1, 0.0, lambda t: [Observation(1, "right", "fist", 0.9)])
    more, t = frames(d, 1, t, lambda t: [Observation(1, "left", "fist", 0.9)])
    assert fired == [("right", "fist")] and more == []
    assert d.state() == {"right": "fist"}
    frames(d, 1, t, lambda t: [Observation(1, "left", None, 0.0)])
    assert d.state() == {"left": None}
