"""`edge-gesture eval` on labelled video clips built from ../shared/gesture-data photos.

The clips run through the real daemon pipeline (tests/gesture_video.py: each photo letterboxed
into 640x480 close-up frames, grey no-hand gaps); the judging rules are also checked on crafted
event lists, which need no model.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from edge_gesture.cli import main as cli_main
from edge_gesture.config import Config
from edge_gesture.eval_video import GRACE_S, Clip, ClipEvent, ClipRun, Row, format_report, judge, report
from tests.gesture_video import write_video

FPS = 30.0
# Pose rows of the three-pose clip: (label, start, end) in seconds, 0.5 s gaps between.
POSES = [("open_palm", 0.5, 2.0), ("fist", 2.5, 4.0), ("victory", 4.5, 6.0)]
THREE_POSE_LABELS = """start,end,label
0,0.5,none
0.5,2.0,open_palm
2.0,2.5,none
2.5,4.0,fist
4.0,4.5,none
4.5,6.0,victory
6.0,6.5,none
"""


def photo(gesture_data: Path, label: str) -> Path:
    return sorted((gesture_data / label).glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def defaults(tmp_path_factory) -> Path:
    """An empty config file: every setting its default, whatever config the checkout holds."""
    path = tmp_path_factory.mktemp("config") / "config.toml"
    path.write_text("")
    return path


def run_cli(capsys, config: Path, *args: str) -> tuple[int, str, str]:
    code = cli_main(["eval", *args, "--config", str(config)])
    out = capsys.readouterr()
    return code, out.out, out.err


def run_json(capsys, config: Path, path: Path) -> dict:
    code, out, err = run_cli(capsys, config, str(path), "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def three_pose_clip(tmp_path_factory, gesture_data: Path) -> Path:
    """0.5 s gap, open_palm 1.5 s, gap, fist 1.5 s, gap, victory 1.5 s, gap: 195 frames."""
    folder = tmp_path_factory.mktemp("clips")
    segments = [(None, 0.5)]
    for label, _, _ in POSES:
        segments += [(photo(gesture_data, label), 1.5), (None, 0.5)]
    clip = write_video(folder / "poses.mp4", segments, FPS, (640, 480))
    (folder / "poses.mp4.labels.csv").write_text(THREE_POSE_LABELS)
    return clip


@pytest.fixture(scope="module")
def three_pose_report(three_pose_clip: Path, defaults: Path) -> dict:
    """`eval poses.mp4 --json`, run once for the tests that read it (capsys is per test, so the
    CLI's stdout is caught here by hand)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["eval", str(three_pose_clip), "--json", "--config", str(defaults)])
    assert code == 0
    return json.loads(out.getvalue())


def write_fist_clip(path: Path, gesture_data: Path) -> Path:
    """0.5 s gap, fist 1.5 s, 0.5 s gap: 75 frames."""
    return write_video(path, [(None, 0.5), (photo(gesture_data, "fist"), 1.5), (None, 0.5)], FPS, (640, 480))


@pytest.fixture
def fist_clip(tmp_path: Path, gesture_data: Path) -> Path:
    """The fist clip in a folder of its own (labels are up to the test)."""
    folder = tmp_path / "fist"
    folder.mkdir()
    return write_fist_clip(folder / "fist.mp4", gesture_data)


def test_every_pose_is_one_event_in_its_own_stretch(three_pose_report):
    report = three_pose_report
    assert report["clips"] == 1 and report["frames"] == 195
    assert report["per_clip"] == [{"clip": "poses.mp4", "fps": 30.0, "frames": 195, "events": [
        {"frame": 24, "t": 0.8, "gesture": "open_palm", "hand": "left", "judged": "hit"},
        {"frame": 84, "t": 2.8, "gesture": "fist", "hand": "right", "judged": "hit"},
        {"frame": 144, "t": 4.8, "gesture": "victory", "hand": "left", "judged": "hit"},
    ]}]
    assert report["event_precision"] == 1.0 and report["event_recall"] == 1.0
    assert report["accuracy"] == 1.0 and report["mistakes"] == []
    assert report["duplicates"] == 0 and report["false_events"] == []
    assert report["events_on_none"] == 0
    assert report["confusion"] == {"none": {"none": 4}, "open_palm": {"open_palm": 1},
                                   "fist": {"fist": 1}, "victory": {"victory": 1}}
    for label, start, end in POSES:
        m = report["per_class"][label]
        assert (m["precision"], m["recall"], m["support"], m["duplicates"]) == (1.0, 1.0, 1, 0)
        # After the hold (decide.min_hold_s), and within the pose's own stretch.
        assert 0.2 < m["latency_s"]["p50"] == m["latency_s"]["p95"] <= end - start
    assert report["per_class"]["fist"]["latency_s"]["p50"] == pytest.approx(84 / FPS - 2.5, abs=1e-4)
    # A pose fires 9 frames (0.3 s, decide.min_hold_s) after it is found, and each is found in
    # the frame it appears: a cut to a new photo is searched whole, coarse squares first.
    assert report["event_latency_s"] == {"p50": pytest.approx(9 / FPS, abs=1e-4),
                                         "p95": pytest.approx(9 / FPS, abs=1e-4)}
    assert report["unreadable"] == [] and report["model_complexity"] == Config().hands.model_complexity
    assert report["latency_ms"]["hands_p50"] > 0


def test_the_readable_report(three_pose_report):
    text = format_report(three_pose_report)
    assert ("events: precision 100.0%, recall 100.0%, 0 duplicate(s), 0 false, 0 on 'none' "
            "stretches; start to event 0.30 s median (0.30 p95)") in text
    assert "accuracy 100.0% (7/7 labelled stretches); 1 clip(s), 195 frames" in text
    fist_row = next(line for line in text.splitlines() if line.startswith("fist "))
    assert fist_row.split() == ["fist", "1", "1", "100.0%", "100.0%", "0", "0.30/0.30"]


def test_the_same_clip_gives_the_same_events_every_time(three_pose_clip, three_pose_report, tmp_path,
                                                        gesture_data, defaults, capsys):
    """Run again, now after another clip in the same run (a new scene: nothing carried over):
    the same frames, the same times."""
    write_fist_clip(tmp_path / "a_fist.mp4", gesture_data)
    (tmp_path / "a_fist.mp4.labels.csv").write_text("start,end,label\n0.5,2.0,fist\n")
    shutil.copy(three_pose_clip, tmp_path / "b_poses.mp4")
    (tmp_path / "b_poses.mp4.labels.csv").write_text(THREE_POSE_LABELS)
    again = run_json(capsys, defaults, tmp_path)

    def events(clip: dict) -> list[tuple]:
        return [(e["frame"], e["t"], e["gesture"], e["hand"]) for e in clip["events"]]

    first = events(three_pose_report["per_clip"][0])
    assert len(first) == 3
    assert [c["clip"] for c in again["per_clip"]] == ["a_fist.mp4", "b_poses.mp4"]
    assert [e[2] for e in events(again["per_clip"][0])] == ["fist"]
    assert events(again["per_clip"][1]) == first


def test_a_wrongly_labelled_pose_is_a_false_event_and_a_miss(fist_clip, defaults, capsys):
    (fist_clip.parent / "fist.mp4.labels.json").write_text(json.dumps({"labels": [
        {"start": 0, "end": 0.5, "label": "none"},
        {"start": 0.5, "end": 2.0, "label": "thumbs_up"},  # it is a fist
        {"start": 2.0, "end": 2.5, "label": "none"},
    ]}))
    report = run_json(capsys, defaults, fist_clip)
    [fist] = report["per_clip"][0]["events"]
    assert fist["gesture"] == "fist" and fist["judged"] == "false" and 0.5 < fist["t"] <= 2.0
    assert report["false_events"] == [{"clip": "fist.mp4", "t": fist["t"], "frame": fist["frame"],
                                       "gesture": "fist", "during": "thumbs_up"}]
    assert report["per_class"]["fist"] == {
        "precision": 0.0, "recall": None, "support": 0, "events": 1, "hits": 0, "duplicates": 0,
        "false_events": 1, "latency_s": {"p50": None, "p95": None}}
    assert report["per_class"]["thumbs_up"] == {
        "precision": 0.0, "recall": 0.0, "support": 1, "events": 0, "hits": 0, "duplicates": 0,
        "false_events": 0, "latency_s": {"p50": None, "p95": None}}
    assert (report["event_precision"], report["event_recall"]) == (0.0, 0.0)
    assert report["events_on_none"] == 0  # it fell in the (mislabelled) pose's stretch
    assert report["confusion"] == {"none": {"none": 2}, "thumbs_up": {"fist": 1}}
    assert report["mistakes"] == [{"clip": "fist.mp4", "start": 0.5, "end": 2.0, "truth": "thumbs_up",
                                   "published": ["fist"]}]
    assert report["accuracy"] == pytest.approx(2 / 3, abs=1e-4)


def test_an_unreadable_clip_is_skipped_and_named(fist_clip, defaults, capsys):
    folder = fist_clip.parent
    (folder / "fist.mp4.labels.csv").write_text("start,end,label\n0.5,2.0,fist\n")
    (folder / "broken.mp4").write_bytes(b"not a video at all" * 100)
    (folder / "broken.mp4.labels.csv").write_text("start,end,label\n")
    code, out, err = run_cli(capsys, defaults, str(folder))
    assert code == 0
    assert "warning: broken.mp4: not a readable video, skipped" in err
    assert "events: precision 100.0%, recall 100.0%" in out
    assert "; 1 clip(s), 75 frames" in out

    fist_clip.unlink()
    (folder / "fist.mp4.labels.csv").unlink()
    code, out, err = run_cli(capsys, defaults, str(folder))
    assert (code, out) == (2, "")
    assert err.endswith(f"error: {folder}: none of the 1 clip(s) could be read\n")


# Bad input: named before any clip is run.

@pytest.fixture
def blank_clip(tmp_path: Path) -> Path:
    return write_video(tmp_path / "room.mp4", [(None, 0.2)], FPS, (160, 120))


def test_a_clip_without_labels_is_an_error_naming_the_expected_files(blank_clip, defaults, capsys):
    code, out, err = run_cli(capsys, defaults, str(blank_clip.parent))
    assert (code, out) == (2, "")
    assert err == (f"error: {blank_clip}: no labels file (expected {blank_clip}.labels.csv or "
                   f"{blank_clip}.labels.json)\n")


@pytest.mark.parametrize(("name", "text", "problem"), [
    ("csv", "start,end,label\n0,1,none\n2.0,1.5,fist\n", "line 3: end 1.5 is before start 2.0"),
    ("csv", "start,end,label,who\n0,1,fist,me\n",
     "line 1: unknown column 'who' (the header is start,end,label)"),
    ("csv", "start,label\n0,fist\n", "line 1: no 'end' column (the header is start,end,label)"),
    ("csv", "start,end,label\n0,1s,fist\n", "line 2: end '1s' is not a number"),
    ("csv", "start,end,label\nnan,1,fist\n", "line 2: start 'nan' is not a number"),
    ("csv", "start,end,label\n0,1\n", "line 2: 2 values, the header has 3"),
    ("json", '[{"start": 0, "end": 1, "label": "fist"}, {"start": "a", "end": 2, "label": "fist"}]',
     "entry 2: start 'a' is not a number"),
    ("json", '{"labels": [{"start": 1, "end": 0.5, "label": "fist"}]}', "entry 1: end 0.5 is before start 1"),
    ("json", '[{"start": 0, "end": 1, "gesture": "fist"}]',
     "entry 1: unknown key 'gesture' (keys: start, end, label)"),
    ("json", '{"rows": []}', 'expected a list of {"start", "end", "label"} objects or {"labels": [...]}'),
])
def test_a_malformed_labels_file_names_the_file_the_row_and_the_problem(blank_clip, defaults, capsys, name,
                                                                        text, problem):
    labels = blank_clip.with_name(f"room.mp4.labels.{name}")
    labels.write_text(text)
    code, out, err = run_cli(capsys, defaults, str(blank_clip))
    assert (code, out) == (2, "")
    assert err == f"error: {labels}: {problem}\n"


def test_a_label_that_is_not_an_enabled_gesture_is_named(blank_clip, defaults, capsys, tmp_path):
    labels = blank_clip.with_name("room.mp4.labels.csv")
    labels.write_text("start,end,label\n0,1,fist\n1,2,thumbs_sideways\n")
    code, _, err = run_cli(capsys, defaults, str(blank_clip))
    assert code == 2
    assert err.startswith(f"error: {labels}: line 3: label 'thumbs_sideways' is not an enabled "
                          "gesture or 'none' (enabled: call, fist, ")

    only_fist = tmp_path / "config.toml"
    only_fist.write_text('[gestures]\nenabled = ["fist"]\n')
    labels.write_text("start,end,label\n0,1,fist\n1,2,victory\n")
    code, _, err = run_cli(capsys, only_fist, str(blank_clip))
    assert code == 2
    assert err == (f"error: {labels}: line 3: label 'victory' is not an enabled gesture or 'none' "
                   "(enabled: fist)\n")


def test_a_missing_clip_is_named(tmp_path, defaults, capsys):
    code, _, err = run_cli(capsys, defaults, str(tmp_path / "gone.mp4"))
    assert code == 2
    assert err == f"error: {tmp_path / 'gone.mp4'}: no such video file\n"


# The judging rules on crafted events (no model).

def judged(rows: list[tuple[float, float, str]], events: list[tuple[float, str]]) -> dict:
    run = ClipRun(Clip(Path("c.mp4"), "c.mp4", [Row(*r) for r in rows]), FPS, 300)
    run.events = [ClipEvent("c.mp4", round(t * FPS), t, g, "right") for t, g in events]
    judge(run)
    return report([run], [], 0.0, Config())


def test_a_window_runs_to_the_grace_after_its_end_and_later_events_are_duplicates():
    rows = [(0.0, 1.0, "none"), (1.0, 2.0, "fist"), (2.0, 4.0, "none")]
    rep = judged(rows, [(1.5, "fist"), (1.9, "fist"), (2.0 + GRACE_S, "fist"),
                        (2.0 + GRACE_S + 1 / FPS, "fist")])
    assert [e["judged"] for e in rep["per_clip"][0]["events"]] == ["hit", "duplicate", "duplicate", "false"]
    assert rep["per_class"]["fist"]["precision"] == 0.25 and rep["per_class"]["fist"]["recall"] == 1.0
    assert rep["per_class"]["fist"]["latency_s"] == {"p50": 0.5, "p95": 0.5}
    assert rep["duplicates"] == 2
    # Only the one beyond the grace counts against the no-hand stretch it fell in.
    assert rep["events_on_none"] == 1 and rep["false_events"][0]["during"] == "none"

    late = judged(rows, [(2.3, "fist")])  # an event after its hold, within the grace: a hit
    assert late["event_recall"] == 1.0 and late["events_on_none"] == 0 and late["accuracy"] == 1.0


def test_an_event_in_unlabelled_time_is_false_and_a_repeated_pose_is_two_hits():
    rows = [(1.0, 2.0, "fist"), (5.0, 6.0, "fist")]
    rep = judged(rows, [(1.4, "fist"), (3.5, "victory"), (5.2, "fist")])
    assert [e["judged"] for e in rep["per_clip"][0]["events"]] == ["hit", "false", "hit"]
    assert rep["false_events"] == [{"clip": "c.mp4", "t": 3.5, "frame": 105, "gesture": "victory",
                                    "during": None}]
    assert rep["events_on_none"] == 0
    assert rep["event_precision"] == pytest.approx(2 / 3, abs=1e-4) and rep["event_recall"] == 1.0
    assert rep["per_class"]["fist"]["latency_s"] == {"p50": pytest.approx(0.3), "p95": pytest.approx(0.39)}
