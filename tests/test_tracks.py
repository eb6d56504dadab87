"""Hands as tracks: a hand keeps its id (and so its debouncing) whatever its left/right label does.

The hands are real: MediaPipe's landmarks of ../shared/gesture-data photos, moved and scaled to
where a script puts them in a 1280x720 frame. The script stands in for the hand finder, so the
label can flicker exactly as a test needs; everything after the finder is the daemon's own
FramePipeline (track ids, classifier, debouncer).
"""

from __future__ import annotations

import numpy as np

from edge_gesture.capture import Frame
from edge_gesture.config import parse_config
from edge_gesture.daemon import FramePipeline
from edge_gesture.hands import Hand
from edge_gesture.hands.tracks import MAX_JUMP, HandTracks, palm

FPS = 30.0
SIZE = (1280, 720)
PALM_PX = 60.0  # a hand about 1.5 m from a 720p webcam
OTHER = {"left": "right", "right": "left"}


def placed(pose: Hand, x: float, y: float, label: str, score: float = 0.95,
           palm_px: float = PALM_PX, size: tuple[int, int] = SIZE) -> Hand:
    """The pose's hand with its palm centred on pixel (x, y) of a `size` frame, its palm
    `palm_px` long, labelled `label` by the finder with `score`."""
    w0, h0 = pose.frame_size
    px = pose.landmarks.astype(np.float64) * (w0, h0, w0)
    centre, length = palm(pose)
    k = palm_px / (length * h0)
    centre_px = np.array([centre[0] * h0, centre[1] * h0, 0.0])
    moved = (px - centre_px) * k + (x, y, 0.0)
    lm = (moved / (size[0], size[1], size[0])).astype(np.float32)
    xs, ys = moved[:, 0], moved[:, 1]
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Hand(lm, label, score, bbox, size)


class ScriptedFinder:
    """Stands in for the hand finder: each frame's hands as the test's script gives them."""

    def __init__(self, script):
        self.script = iter(script)

    def detect(self, image):
        return next(self.script)

    def close(self):
        pass


def run(script, **decide):
    """The script's frames through the daemon's FramePipeline; returns its results."""
    cfg = parse_config({"decide": decide})
    script = list(script)
    pipeline = FramePipeline(cfg, tracker=ScriptedFinder(script))
    image = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    results = [pipeline.process(Frame(image, i, i / FPS, 1e9 + i / FPS, i / FPS))
               for i in range(len(script))]
    pipeline.close()
    return results


def events(results) -> list[tuple[str, str]]:
    return [(e.gesture, e.hand) for r in results for e in r.events]


def test_a_flickering_handedness_label_gives_one_event_not_two(poses):
    # A right hand shows thumbs-down for 2.1 s while drifting towards the frame's edge (slowly: a
    # hand size a second; faster would be a moving hand, whose pose does not count); the
    # finder's label flips frame to frame for a while, then says "left" until the hand is gone
    # (as seen on clips: the same thumbs-down fired twice, once as the hand left the picture).
    down = poses["thumbs_down"]
    script = []
    for i in range(63):
        x = 1050 + 2 * i
        if i < 18:
            label, score = "right", 0.95
        elif i < 45:
            label, score = ("right", 0.9) if i % 2 else ("left", 0.6)
        else:
            label, score = "left", 0.7
        script.append([placed(down, x, 400, label, score)])
    script += [[]] * 30
    results = run(script)
    assert events(results) == [("thumbs_down", "right")]
    ids = {h.track_id for r in results for h in r.hands}
    assert len(ids) == 1
    assert {h.handedness for r in results for h in r.hands} == {"right"}


def test_two_hands_crossing_with_swapped_labels_are_kept_apart(poses):
    # A right hand's fist moves right, a left hand's victory moves left, passing each other
    # 2.5 palms apart (slowly, a hand size a second, so their poses count); while they are close
    # the finder swaps their labels.
    fist, victory = poses["fist"], poses["victory"]
    script = []
    for i in range(75):
        xa, xb = 565 + 2 * i, 715 - 2 * i
        swapped = 25 <= i < 50
        a = placed(fist, xa, 300, "left" if swapped else "right", 0.7 if swapped else 0.95)
        b = placed(victory, xb, 300 + 2.5 * PALM_PX, "right" if swapped else "left",
                   0.7 if swapped else 0.95)
        script.append([a, b])
    results = run(script)
    assert sorted(events(results)) == [("fist", "right"), ("victory", "left")]
    ids_a = {r.hands[0].track_id for r in results}
    ids_b = {r.hands[1].track_id for r in results}
    assert len(ids_a) == len(ids_b) == 1 and ids_a != ids_b
    assert {r.hands[0].handedness for r in results} == {"right"}
    assert {r.hands[1].handedness for r in results} == {"left"}


def test_four_hands_of_two_people_keep_their_ids_and_hands(poses):
    # max_num_hands = 4: a person near the camera (big hands) and one further back (small
    # hands), all moving; every hand keeps its id, and its side however its label flickers.
    pose = poses["open_palm"]
    people = [  # x, y, palm size, side, dx per frame
        (350, 300, 90, "right", 3), (650, 300, 90, "left", 3),
        (800, 500, 35, "right", 2), (950, 500, 35, "left", 2),
    ]
    tracks = HandTracks(lost_after_s=0.5)
    seen = []
    for i in range(90):
        hands = []
        for n, (x, y, size, side, dx) in enumerate(people):
            label = OTHER[side] if (i + n) % 5 == 0 else side  # one frame in five is wrong
            hands.append(placed(pose, x + dx * i, y, label, 0.6 if label != side else 0.9,
                                palm_px=size))
        seen.append(tracks.assign(hands, i / FPS))
    for n, (*_, side, _) in enumerate(people):
        assert {frame[n].track_id for frame in seen} == {n + 1}
        assert {frame[n].handedness for frame in seen[1:]} == {side}


def test_a_hand_back_within_lost_after_s_keeps_its_id_later_gets_a_new_one(poses):
    fist = poses["fist"]
    tracks = HandTracks(lost_after_s=0.5)
    assert tracks.assign([placed(fist, 600, 400, "right")], 0.0)[0].track_id == 1
    assert tracks.assign([placed(fist, 610, 400, "right")], 0.1)[0].track_id == 1
    assert tracks.assign([], 0.3) == []
    # Back after 0.4 s unseen, a palm from where it left: still track 1.
    assert tracks.assign([placed(fist, 660, 400, "right")], 0.5)[0].track_id == 1
    assert tracks.assign([], 0.8) == [] and len(tracks) == 1
    # Back after 0.5 s unseen (lost_after_s): a new hand, with a new id.
    assert len(tracks.assign([], 1.0)) == 0 and len(tracks) == 0
    assert tracks.assign([placed(fist, 660, 400, "right")], 1.05)[0].track_id == 2


def test_a_far_jump_or_a_much_bigger_hand_starts_a_new_track(poses):
    fist = poses["fist"]
    tracks = HandTracks(lost_after_s=0.5)
    assert tracks.assign([placed(fist, 400, 400, "right")], 0.0)[0].track_id == 1
    near = 400 + (MAX_JUMP - 0.5) * PALM_PX
    assert tracks.assign([placed(fist, near, 400, "right")], 1 / FPS)[0].track_id == 1
    far = near + (MAX_JUMP + 0.5) * PALM_PX
    assert tracks.assign([placed(fist, far, 400, "right")], 2 / FPS)[0].track_id == 2
    # Same place, a hand 2.5 times larger: someone nearer the camera, not this hand.
    big = placed(fist, far, 400, "right", palm_px=2.5 * PALM_PX)
    assert tracks.assign([big], 3 / FPS)[0].track_id == 3
    # Ids are never reused, even once every track is gone.
    assert tracks.assign([placed(fist, 400, 400, "right")], 10.0)[0].track_id == 4


def test_a_changed_frame_size_with_the_same_view_keeps_the_track(poses):
    # An RTSP stream renegotiated from 720p to 1080p: the same hand, at the same place in view.
    fist = poses["fist"]
    tracks = HandTracks(lost_after_s=0.5)
    first = tracks.assign([placed(fist, 640, 360, "right")], 0.0)[0]
    bigger = placed(fist, 960, 540, "right", palm_px=PALM_PX * 1.5, size=(1920, 1080))
    assert tracks.assign([bigger], 1 / FPS)[0].track_id == first.track_id


def test_the_label_follows_the_score_weighted_majority(poses):
    fist = poses["fist"]
    tracks = HandTracks(lost_after_s=0.5)
    labels = []
    for i in range(30):  # right at 0.95, with a left at 0.55 every other frame
        label, score = ("left", 0.55) if i % 2 else ("right", 0.95)
        labels.append(tracks.assign([placed(fist, 600, 400, label, score)], i / FPS)[0].handedness)
    assert set(labels) == {"right"}
    for i in range(30, 150):  # then only "left", and sure of it: the track comes round
        labels.append(tracks.assign([placed(fist, 600, 400, "left", 0.95)], i / FPS)[0].handedness)
    assert labels[-1] == "left"
    switched = labels.index("left")
    assert labels[switched:] == ["left"] * (150 - switched)  # once, not back and forth
    assert switched > 31  # not on the first frame that says so


def test_a_hand_back_under_a_new_id_does_not_fire_again_inside_the_cooldown(poses):
    # Out of view for 0.7 s (longer than lost_after_s) and back with the same fist 1.6 s after
    # its event: a new track, but the hand's cooldown (5 s) still holds.
    fist = poses["fist"]
    script = [[placed(fist, 600, 400, "right")]] * 30 + [[]] * 21
    script += [[placed(fist, 610, 400, "right")]] * 30
    results = run(script, cooldown_s=5.0)
    assert events(results) == [("fist", "right")]
    assert len({h.track_id for r in results for h in r.hands}) == 2


def test_reconfigure_keeps_the_tracks(poses):
    fist = poses["fist"]
    cfg = parse_config({})
    script = [[placed(fist, 600, 400, "right")]] * 40
    pipeline = FramePipeline(cfg, tracker=ScriptedFinder(script))
    image = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    ids = []
    for i in range(40):
        if i == 20:
            pipeline.reconfigure(parse_config({"decide": {"lost_after_s": 1.0}}))
        ids += [h.track_id for h in pipeline.process(Frame(image, i, i / FPS, 0.0, 0.0)).hands]
    assert set(ids) == {1}
    assert pipeline.tracks.lost_after_s == 1.0
