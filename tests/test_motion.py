"""Swipes and waves from crafted hand tracks: real landmarks (MediaPipe's, from shared photos)
moved along scripted paths, through the daemon's own FramePipeline (tracks, classifier, motion,
debouncing). Palms are 60 px (one hand size) in a 1280x720 frame at 30 frames/s."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_gesture.capture import Frame
from edge_gesture.config import parse_config
from edge_gesture.daemon import FramePipeline
from tests.test_tracks import FPS, PALM_PX, SIZE, ScriptedFinder, placed


def run(script, *, mirrored: bool = False, t0: float = 0.0, **motion):
    cfg = parse_config({"motion": motion, "hands": {"mirrored": mirrored}})
    pipeline = FramePipeline(cfg, tracker=ScriptedFinder(script))
    image = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    results = [pipeline.process(Frame(image, i, t0 + i / FPS, 1e9 + i / FPS, i / FPS))
               for i in range(len(script))]
    pipeline.close()
    return results


def gestures(results) -> list[str]:
    return [e.gesture for r in results for e in r.events]


def path(pose, points, label="right"):
    """One frame per (x, y) point."""
    return [[placed(pose, x, y, label)] for x, y in points]


def still(x, y, frames):
    return [(x, y)] * frames


def line(a, b, frames):
    return [(a[0] + (b[0] - a[0]) * k / frames, a[1] + (b[1] - a[1]) * k / frames)
            for k in range(1, frames + 1)]


# A swipe: 5 hand sizes (300 px) in 12 frames (0.4 s), from a fist, so the held pose (fist) is
# a different gesture from anything the motion could be confused with.
SWIPE = 300
SWIPE_FRAMES = 12


def test_swipes_in_each_direction_are_the_persons_own(poses):
    fist = poses["fist"]
    centre = (640, 360)
    cases = {
        # Unmirrored camera: the hand going to the picture's right is going to the person's left.
        ((+1, 0), False): "swipe_left",
        ((-1, 0), False): "swipe_right",
        ((+1, 0), True): "swipe_right",
        ((0, -1), False): "swipe_up",
        ((0, +1), False): "swipe_down",
    }
    for ((dx, dy), mirrored), want in cases.items():
        start = (centre[0] - dx * SWIPE / 2, centre[1] - dy * SWIPE / 2)
        end = (centre[0] + dx * SWIPE / 2, centre[1] + dy * SWIPE / 2)
        pts = line(start, end, SWIPE_FRAMES)
        results = run(path(fist, pts) + [[]] * 20, mirrored=mirrored)
        assert gestures(results) == [want], (dx, dy, mirrored)


def test_a_swipe_fires_as_the_distance_is_reached_and_the_hand_need_not_stop(poses):
    results = run(path(poses["fist"], line((300, 360), (1000, 360), 28)))
    fired = [i for i, r in enumerate(results) if r.events]
    # 2.5 hand sizes = 150 px at 25 px a frame: the 6th frame of motion (index 6, from 300).
    assert gestures(results) == ["swipe_left"] and fired == [6]


def test_a_slow_drift_or_a_short_move_is_no_swipe(poses):
    fist = poses["fist"]
    # 5 hand sizes in 3 s (too slow), and 2 hand sizes quickly (too short).
    slow = run(path(fist, line((300, 360), (600, 360), 90)))
    short = run(path(fist, still(300, 360, 15) + line((300, 360), (420, 360), 6) + still(420, 360, 20)))
    assert "swipe_left" not in gestures(slow) + gestures(short)


def test_a_diagonal_move_is_no_swipe(poses):
    results = run(path(poses["fist"], line((300, 200), (600, 500), SWIPE_FRAMES)))
    assert not [g for g in gestures(results) if g.startswith("swipe")]


def test_the_return_stroke_after_a_swipe_is_not_the_opposite_swipe(poses):
    fist = poses["fist"]
    a, b = (400, 360), (700, 360)
    pts = line(a, b, SWIPE_FRAMES) + still(*b, 6) + line(b, a, SWIPE_FRAMES) + still(*a, 10)
    assert [g for g in gestures(run(path(fist, pts))) if g.startswith("swipe")] == ["swipe_left"]


def test_two_swipes_the_same_way_both_fire(poses):
    fist = poses["fist"]
    a, b = (400, 360), (700, 360)
    # Swipe, bring the hand back slowly (1.5 s), rest, swipe again: past the 1.5 s cooldown.
    pts = line(a, b, SWIPE_FRAMES) + line(b, a, 45) + still(*a, 15) + line(a, b, SWIPE_FRAMES)
    assert [g for g in gestures(run(path(fist, pts))) if g.startswith("swipe")] == ["swipe_left"] * 2


def wave_points(amplitude_px: float, strokes_per_s: float, seconds: float, centre=(640, 360)):
    n = int(seconds * FPS)
    return [(centre[0] + amplitude_px * math.sin(math.pi * strokes_per_s * i / FPS), centre[1])
            for i in range(n)]


@pytest.mark.parametrize("amplitude", [0.6, 1.5])  # hand sizes: from the wrist, and a big one
def test_a_wave_of_an_open_hand_is_one_wave_and_no_swipes(poses, amplitude):
    results = run(path(poses["open_palm"], wave_points(amplitude * PALM_PX, 4, 2.0)) + [[]] * 10)
    assert gestures(results) == ["wave"]


def test_a_fist_moved_side_to_side_is_no_wave(poses):
    results = run(path(poses["fist"], wave_points(1.0 * PALM_PX, 4, 2.0)))
    assert "wave" not in gestures(results)


def test_a_held_pose_fires_only_while_the_hand_is_still(poses):
    palm = poses["open_palm"]
    # An open hand swept across: a swipe, not an open_palm.
    swept = run(path(palm, line((300, 360), (900, 360), 20)) + [[]] * 10)
    assert gestures(swept) == ["swipe_left"]
    # The same hand held still for half a second first: open_palm, then the swipe.
    held = run(path(palm, still(300, 360, 15) + line((300, 360), (900, 360), 20)))
    assert gestures(held) == ["open_palm", "swipe_left"]


def test_a_hand_resting_where_a_swipe_ended_shows_no_pose_until_it_has_settled(poses):
    palm = poses["open_palm"]
    swipe = line((300, 360), (700, 360), SWIPE_FRAMES)
    # Rests 0.4 s at the end, then drops out of view: the swipe only.
    assert gestures(run(path(palm, swipe + still(700, 360, 12)) + [[]] * 10)) == ["swipe_left"]
    # Shows a fist once it stops: that pose fires once the hand has settled (0.5 s) and held it.
    assert gestures(run(path(palm, swipe) + path(poses["fist"], still(700, 360, 45)))) == [
        "swipe_left", "fist"]


def test_the_shape_a_swipe_was_made_with_held_on_after_it_is_no_pose(poses):
    palm, fist = poses["open_palm"], poses["fist"]
    swipe = line((300, 360), (700, 360), SWIPE_FRAMES)
    # The open hand held up for 1.5 s where the swipe ended: the swipe's, not an open_palm.
    assert gestures(run(path(palm, swipe + still(700, 360, 45)))) == ["swipe_left"]
    # Reshaped to a fist for 1.5 s, then opened again: the fist, then the open palm, fire.
    reshaped = path(palm, swipe) + path(fist, still(700, 360, 45)) + path(palm, still(700, 360, 30))
    assert gestures(run(reshaped)) == ["swipe_left", "fist", "open_palm"]
    # Lowered out of view and raised again 1.5 s later: an open_palm like any other.
    again = path(palm, swipe + still(700, 360, 6)) + [[]] * 45 + path(palm, still(500, 360, 30))
    assert gestures(run(again)) == ["swipe_left", "open_palm"]


def test_a_hand_lost_in_its_return_stroke_and_found_back_where_it_swiped_still_shows_the_swipe(poses):
    palm = poses["open_palm"]
    swipe = line((300, 360), (700, 360), SWIPE_FRAMES)
    # Rests, then the return stroke is not seen for 0.7 s (a far hand blurred all the way back,
    # within max_gap_s), then the hand rests where the swipe began: the shape is still the swipe's.
    back = path(palm, swipe + still(700, 360, 8)) + [[]] * 21 + path(palm, still(300, 360, 45))
    assert gestures(run(back)) == ["swipe_left"]


def test_a_hand_brought_back_unseen_after_a_swipe_and_first_read_as_another_shape_is_still_spent(
        poses):
    victory, fist = poses["victory"], poses["fist"]
    swipe = line((300, 360), (700, 360), SWIPE_FRAMES)
    # A two-finger swipe, a short rest, the return stroke lost in its blur; found back where it
    # set off, its first read is another shape, then it shows its two fingers again, held.
    script = path(victory, still(300, 360, 6) + swipe + still(700, 360, 6)) + [[]] * 8
    script += path(fist, still(300, 360, 1)) + path(victory, still(300, 360, 45))
    assert gestures(run(script)) == ["swipe_left"]


def test_a_swipe_through_a_few_lost_frames_is_still_a_swipe(poses):
    fist = poses["fist"]
    pts = line((300, 360), (800, 360), 10)
    # The blurred middle of the swipe is not found (4 frames), as on real recordings.
    script = path(fist, still(300, 360, 10)) + path(fist, pts[:3]) + [[]] * 4 + path(fist, pts[7:])
    script += path(fist, still(800, 360, 10))
    assert [g for g in gestures(run(script)) if g.startswith("swipe")] == ["swipe_left"]


def test_a_swipe_whose_blurred_hand_was_last_read_off_its_line_is_still_a_swipe(poses):
    fist = poses["fist"]
    # Sets off leftwards in the picture, is lost in its blur, read once half a hand below its
    # line at two thirds of its size (the heading turns 32 degrees down), lost again, and found
    # further along the same axis; then it is brought back, unseen, to where it set off.
    script = path(fist, still(800, 360, 10) + line((800, 360), (760, 360), 3)) + [[]] * 2
    script += [[placed(fist, 720, 410, "right", palm_px=40)]] + [[]] * 6
    script += path(fist, still(560, 360, 10)) + [[]] * 5 + path(fist, still(800, 360, 20))
    # The swipe, and its return is no swipe_left.
    assert [g for g in gestures(run(script)) if g.startswith("swipe")] == ["swipe_right"]


def test_a_false_hand_flickering_in_a_corner_does_not_cut_a_swipes_path(poses):
    fist = poses["fist"]
    pts = line((300, 360), (800, 360), 10)
    # Something in the room the landmark model reads as a hand for one frame, far off in a corner,
    # while the swiping hand is lost in its blur: it could not have become the hand found again.
    blurred = [[], [], [placed(fist, 1200, 680, "right")], [], [], []]
    script = path(fist, still(300, 360, 10)) + path(fist, pts[:2]) + blurred + path(fist, pts[8:])
    script += path(fist, still(800, 360, 10))
    assert [g for g in gestures(run(script)) if g.startswith("swipe")] == ["swipe_left"]


def test_a_still_hand_lost_and_one_found_off_every_swipe_axis_is_another_hand(poses):
    palm = poses["open_palm"]
    swipe = line((300, 360), (700, 360), SWIPE_FRAMES)
    # The swipe's hand rests and is gone; 0.4 s later an open hand 250 px left and 250 px up:
    # no swipe could have taken it there, so it is a hand of its own, and its pose counts.
    script = path(palm, swipe + still(700, 360, 8)) + [[]] * 12 + path(palm, still(450, 110, 45))
    assert gestures(run(script)) == ["swipe_left", "open_palm"]


def test_a_hand_raised_above_a_false_hand_that_comes_and_goes_is_no_swipe(poses):
    fist, palm = poses["fist"], poses["open_palm"]
    # Something the landmark model reads as a hand on every third frame for half a second (found
    # by the search now and then, never followed); 0.3 s later an open hand is raised 5 sizes
    # straight above it and held: it did not come from there, so no swipe_up, and its pose counts.
    flicker = [[placed(fist, 640, 600, "right")] if i % 3 == 0 else [] for i in range(13)]
    script = flicker + [[]] * 8 + path(palm, still(640, 300, 45))
    assert gestures(run(script)) == ["open_palm"]


def test_a_pose_gone_and_another_shown_along_an_axis_after_a_gap_is_no_swipe(poses):
    down, palm = poses["thumbs_down"], poses["open_palm"]
    # Clips cut from photo to photo: a thumbs-down held, half a second without a hand, then an
    # open hand held three sizes straight below. Nothing was seen moving and the shape is another:
    # another hand showing its pose, not the first one swiped down.
    gap = [[]] * 15
    script = path(down, still(640, 200, 45)) + gap + path(palm, still(640, 200 + 3 * PALM_PX, 45))
    assert gestures(run(script)) == ["thumbs_down", "open_palm"]
    # The same hand shape found there is the hand lost as it set off, blurred for all of its swipe
    # (a far hand at 15 frames/s): a swipe.
    script = path(down, still(640, 200, 45)) + gap + path(down, still(640, 200 + 3 * PALM_PX, 45))
    assert gestures(run(script)) == ["thumbs_down", "swipe_down"]


def test_a_swipe_whose_track_lags_in_the_blur_is_one_swipe_and_its_return_none(poses):
    fist = poses["fist"]
    # As a fast hand at 3 m blurs, the landmark model's reading of it lags and shrinks (the track
    # stalls for three frames); the hand, read sharp again, is a new track 1.5 sizes further on
    # in the next frame, further than a hand moves in one frame from where the old one stalled.
    script = path(fist, still(640, 150, 10) + line((640, 150), (640, 240), 6))
    script += [[placed(fist, 640, 244 + 2 * k, "right", palm_px=px)]
               for k, px in enumerate((50, 40, 32))]
    # Sharp again (too big a step in size for the stalled track), then it slows to a stop and
    # comes back up after a third of a second.
    script += path(fist, line((640, 340), (640, 360), 2) + still(640, 360, 10)
                   + line((640, 360), (640, 150), 9) + still(640, 150, 10))
    assert [g for g in gestures(run(script)) if g.startswith("swipe")] == ["swipe_down"]


def test_a_swipe_back_after_a_rest_is_a_swipe_though_the_resting_hand_crept(poses):
    fist = poses["fist"]
    # Down, a second and a half at rest (its landmarks creeping on downwards, a third of a pixel
    # a frame, as a resting hand's do), then up on purpose: two swipes, not a swipe and its return.
    rest = [(640, 450 + 0.3 * k) for k in range(45)]
    pts = still(640, 150, 10) + line((640, 150), (640, 450), SWIPE_FRAMES) + rest
    pts += line(rest[-1], (640, 150), SWIPE_FRAMES) + still(640, 150, 10)
    assert [g for g in gestures(run(path(fist, pts))) if g.startswith("swipe")] == [
        "swipe_down", "swipe_up"]


def test_a_swipe_and_its_return_with_a_misread_frame_are_no_wave(poses):
    palm = poses["open_palm"]
    # An open hand swipes and comes back; in the blur one frame is read half a hand size behind
    # (a turn and a turn back within a frame, which no hand makes): two strokes too many for the
    # swipe and its return, but not a wave.
    out = line((400, 360), (700, 360), 8)
    out[5] = (out[4][0] - 35, 360)
    pts = still(400, 360, 10) + out + line((700, 360), (760, 360), 2) + still(760, 360, 8)
    pts += line((760, 360), (400, 360), 10) + still(400, 360, 10)
    assert [g for g in gestures(run(path(palm, pts))) if g.startswith(("swipe", "wave"))] == [
        "swipe_left"]


def test_a_hand_leaving_and_another_appearing_far_away_is_no_swipe(poses):
    fist = poses["fist"]
    # One person's hand leaves; 0.2 s later another person's, much bigger, appears far away.
    script = path(fist, still(200, 360, 20)) + [[]] * 6
    script += [[placed(fist, 1000, 360, "left", palm_px=2 * PALM_PX)] for _ in range(20)]
    assert not [g for g in gestures(run(script)) if g.startswith("swipe")]


def test_a_hand_lowered_out_of_view_and_another_raised_beside_it_is_no_swipe(poses):
    fist = poses["fist"]
    # A right hand drops out of view; 0.2 s later the left hand, same size, rises 4 sizes away.
    script = path(fist, still(500, 360, 15) + line((500, 360), (500, 700), 5)) + [[]] * 6
    script += path(fist, line((740, 700), (740, 400), 5) + still(740, 400, 15), label="left")
    assert not [g for g in gestures(run(script)) if g.startswith("swipe_left") or g.startswith("swipe_r")]


def test_a_hand_gone_and_another_at_once_far_away_is_no_swipe(poses):
    fist, palm = poses["fist"], poses["open_palm"]
    # Two people: one's fist goes out of view as the other's open hand, same size, shows 8 hand
    # sizes away in the next frame: further than a hand can move in a frame.
    script = path(fist, still(300, 360, 20)) + [[]] + path(palm, still(780, 360, 20))
    assert not [g for g in gestures(run(script)) if g.startswith("swipe")]


def test_the_same_track_gives_the_same_event_frames_whatever_the_clock_offset(poses):
    fist, palm = poses["fist"], poses["open_palm"]
    script = (path(fist, still(400, 360, 20) + line((400, 360), (700, 360), SWIPE_FRAMES))
              + path(palm, still(700, 360, 45) + wave_points(PALM_PX, 4, 2.0, (700, 360))))
    frames = []
    for t0 in (0.0, 12345.678901, 98765.4321):  # a monotonic clock's start differs every run
        results = run(script, t0=t0)
        frames.append([(i, e.gesture) for i, r in enumerate(results) for e in r.events])
    assert frames[0] == frames[1] == frames[2]
    assert [g for _, g in frames[0]] == ["fist", "swipe_left", "open_palm", "wave"]
