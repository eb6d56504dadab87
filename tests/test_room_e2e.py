"""End to end at room distance: `edge-gesture run` on a 1280x720 clip of a room where the hand is a
few dozen pixels wide (its box 5.5% of the frame's width, about 2 m; one pose at 3.7%, about 3 m),
to a real mosquitto, with the default hand stage (OpenVINO, searching the full frame).

Each pose is held 1.5 s with the empty room between, and the hand drifts a couple of pixels a frame,
so it is found by the search and then followed. The file is read frame by frame
(`capture.realtime = false`), so the events do not depend on how busy the machine is: exactly one
event per pose, in order, naming the hand that made it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_gesture.config import HandsConfig
from tests.logs import json_log_lines
from tests.mqtt_recorder import Recorder
from tests.room_video import Pose, has_hand, room, still, write_room_video

pytestmark = pytest.mark.e2e

FPS = 15.0
SIZE = (1280, 720)
# (gesture, hand box / frame width, where the hand's centre starts as shares of the frame)
POSES = [
    ("open_palm", 0.055, (0.30, 0.40)),
    ("fist", 0.055, (0.70, 0.60)),
    ("victory", 0.055, (0.45, 0.65)),
    ("thumbs_up", 0.055, (0.25, 0.55)),
    ("ok", 0.037, (0.60, 0.35)),
]
HOLD_S, GAP_S, DRIFT_PX = 1.5, 1.0, 2.0
CANDIDATES = 6  # photos tried per gesture, in name order


@pytest.fixture(scope="module")
def scene(shared_dir: Path) -> tuple[Path, np.ndarray]:
    background = shared_dir / "backgrounds" / "epsrc-office-1.jpg"
    return background, room(background, SIZE)


@pytest.fixture(scope="module")
def room_photos(gesture_data: Path, scene) -> list[tuple[Path, str]]:
    """Per pose, the first photo (in name order) whose hand the daemon's hand stage finds, alone,
    in the pose's first frame and the classifier reads right at high confidence, with the side
    it reads: this test is about finding and following small hands through the daemon, not
    about the classifier's accuracy at a distance (that is `edge-gesture bench range`)."""
    from edge_gesture.gestures import classify_landmarks
    from edge_gesture.hands import open_hands

    _, picture = scene
    chosen = []
    with open_hands(HandsConfig(), static_images=True) as hands:
        for label, share, at in POSES:
            photos = [p for p in sorted((gesture_data / label).glob("*.jpg")) if has_hand(p)]
            for photo in photos[:CANDIDATES]:
                found = hands.detect(still(picture, photo, share, at))
                if len(found) != 1:
                    continue
                guess = classify_landmarks(found[0].landmarks, found[0].handedness,
                                           aspect=found[0].aspect)
                if guess.label == label and guess.confidence >= 0.8:
                    chosen.append((photo, found[0].handedness))
                    break
            else:
                pytest.fail(f"none of the first {CANDIDATES} {label} photos is read right at "
                            f"share {share}: the hand stage no longer finds small hands")
    return chosen


@pytest.fixture(scope="module")
def room_clip(tmp_path_factory, scene, room_photos) -> tuple[Path, list[dict]]:
    background, _ = scene
    poses = [Pose(None, GAP_S)]
    for (photo, _), (_, share, at) in zip(room_photos, POSES, strict=True):
        poses += [Pose(photo, HOLD_S, share, at), Pose(None, GAP_S)]
    path = tmp_path_factory.mktemp("room") / "room.mp4"
    timeline = write_room_video(path, poses, background=background, size=SIZE, fps=FPS,
                                drift_px=DRIFT_PX)
    return path, timeline


def write_config(tmp_path: Path, port: int, video: Path) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
device_id = "room"
[capture]
source = "{video}"
realtime = false
at_end = "stop"
[mqtt]
host = "127.0.0.1"
port = {port}
[logging]
format = "json"
level = "info"
[service]
cache_dir = "{tmp_path / 'cache'}"
""")
    return cfg


def test_small_hands_across_a_room_give_exactly_one_event_per_pose(tmp_path, broker, room_clip,
                                                                   room_photos):
    video, _ = room_clip
    sub = Recorder(broker.port, "edge_gesture/room/#")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_gesture", "run", "--config",
         str(write_config(tmp_path, broker.port, video))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    sub.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"offline", 10,
                 "offline after the clip ended")
    sub.close()
    assert proc.returncode == 0, err[-3000:]

    events = [m.json() for m in sub.on("/event")]
    got = [(e["gesture"], e["hand"]) for e in events]
    expected = [(label, side) for (label, _, _), (_, side) in zip(POSES, room_photos, strict=True)]
    assert got == expected, err[-3000:]
    assert all(e["source"] == "landmarks" and e["device_id"] == "room" for e in events)
    seqs = [e["sequence"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    lines = json_log_lines(err)
    assert sum(1 for x in lines if x.get("event") == "gesture") == len(POSES)
    states = [m.json() for m in sub.on("/state")]
    assert all(v is None for k, v in states[-1].get("hands", states[-1]).items()
               if k in ("left", "right")), states[-1]


def test_appearing_hand_clip_is_the_empty_room_until_the_hand_comes(tmp_path, gesture_data,
                                                                    shared_dir):
    """The clip `bench pipeline` times "a hand that appears at 3 m is found within" on: the
    command line's --empty-room seconds of the room alone, then the hand, where the timeline says."""
    out, timeline = tmp_path / "appear.mp4", tmp_path / "appear.json"
    subprocess.run(
        [sys.executable, "-m", "tests.gesture_video", str(out), "--size", "1280x720",
         "--hand-share", "0.037", "--background", str(shared_dir / "backgrounds"),
         "--empty-room", "2", "--labels", "open_palm", "--hold", "1", "--gap", "0", "--fps", "10",
         "--timeline", str(timeline)],
        check=True, capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parent.parent)
    poses = json.loads(timeline.read_text())["poses"]
    assert [(p["label"], p["first_frame"], p["last_frame"]) for p in poses] == [
        (None, 0, 19), ("open_palm", 20, 29)]
    x0, y0, x1, y1 = poses[1]["hand_square"]
    assert x1 - x0 == pytest.approx(0.037 * 1280, abs=1)

    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame.astype(np.int16))
    cap.release()
    assert len(frames) == 30 and frames[0].shape == (720, 1280, 3)

    def change(a, b, box=None):
        if box is not None:
            a, b = a[box[1]:box[3], box[0]:box[2]], b[box[1]:box[3], box[0]:box[2]]
        return float(np.abs(a - b).mean())

    # The empty room does not change (only the codec's noise); the hand's square does when the
    # hand comes, while the room as a whole barely does: a small hand, not a new picture.
    assert max(change(frames[0], f) for f in frames[1:20]) < 2
    assert change(frames[19], frames[20], (x0, y0, x1, y1)) > 20
    assert change(frames[19], frames[20]) < 2


def test_swipes_and_waves_across_a_room_give_the_same_exact_events_every_run(tmp_path, broker, scene,
                                                                              room_photos):
    """Motion at 2 m, through the daemon to mosquitto: swipes with an open hand (coming back
    after), a fist and two fingers, a wave, and a held fist among them; each exactly once, no
    pose fired by a moving hand, no swipe by a return stroke. The clip is read frame by frame,
    so three runs give the same events at the same frames."""
    background, _ = scene
    (palm, palm_side), (fist, fist_side), (victory, victory_side) = room_photos[:3]
    motions = [(palm, "swipe_left", True), (palm, "wave", False), (victory, "swipe_up", False),
               (fist, None, False), (fist, "swipe_right", True)]
    poses = [Pose(None, GAP_S)]
    for photo, motion, back in motions:
        poses += [Pose(photo, HOLD_S, 0.055, (0.5, 0.5) if motion is None else None, motion=motion,
                       back=back), Pose(None, GAP_S)]
    video = tmp_path / "motion.mp4"
    write_room_video(video, poses, background=background, size=SIZE, fps=FPS, seed=11)
    expected = [("swipe_left", palm_side), ("wave", palm_side), ("swipe_up", victory_side),
                ("fist", fist_side), ("swipe_right", fist_side)]
    runs = []
    for run in range(3):
        (tmp_path / f"run{run}").mkdir()
        sub = Recorder(broker.port, "edge_gesture/room/#")
        proc = subprocess.run(
            [sys.executable, "-m", "edge_gesture", "run", "--config",
             str(write_config(tmp_path / f"run{run}", broker.port, video))],
            capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        sub.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"offline", 10,
                     "offline after the clip ended")
        sub.close()
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = [(e["gesture"], e["hand"]) for e in (m.json() for m in sub.on("/event"))]
        assert got == expected, proc.stderr[-3000:]
        runs.append([(x["frame"], x["gesture"]) for x in json_log_lines(proc.stderr)
                     if x.get("event") == "gesture"])
    assert runs[0] == runs[1] == runs[2]
