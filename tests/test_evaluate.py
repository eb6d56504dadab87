"""`edge-gesture eval` on small folders of symlinks to ../shared/gesture-data photos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_gesture.cli import main as cli_main
from edge_gesture.config import Config, parse_config
from edge_gesture.evaluate import EvalError, evaluate, jpeg_truncated, photo_labels


def link(folder: Path, label: str, photo: Path) -> None:
    (folder / label).mkdir(parents=True, exist_ok=True)
    (folder / label / photo.name).symlink_to(photo)


def photos(gesture_data: Path, label: str, n: int) -> list[Path]:
    return sorted((gesture_data / label).glob("*.jpg"))[:n]


@pytest.fixture
def small_set(tmp_path: Path, gesture_data: Path) -> Path:
    """2 fists, 2 victories, 1 call and 2 no-hand pictures, plus a victory filed under fist."""
    folder = tmp_path / "set"
    for label, n in (("fist", 2), ("victory", 3), ("call", 1), ("none", 2)):
        for photo in photos(gesture_data, label, n):
            link(folder, label, photo)
    misfiled = photos(gesture_data, "victory", 3)[-1]
    (folder / "victory" / misfiled.name).rename(folder / "fist" / misfiled.name)
    (folder / "MANIFEST.csv").write_text("not an image folder, ignored\n")
    return folder


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli_main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_report_counts_every_image(small_set, gesture_data, capsys, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("")  # all defaults
    code, out, _ = run_cli(capsys, "eval", str(small_set), "--json", "--config", str(config))
    assert code == 0
    report = json.loads(out)
    assert report["images"] == 8
    assert report["confusion"] == {
        "call": {"call": 1},
        "fist": {"fist": 2, "victory": 1},
        "none": {"none": 2},
        "victory": {"victory": 2},
    }
    assert report["accuracy"] == pytest.approx(7 / 8, abs=1e-4)
    assert report["per_class"]["fist"] == {"precision": 1.0, "recall": pytest.approx(2 / 3, abs=1e-4),
                                           "support": 3}
    assert report["per_class"]["victory"] == {"precision": pytest.approx(2 / 3, abs=1e-4),
                                              "recall": 1.0, "support": 2}
    assert report["events_on_none"] == 0
    misfiled = photos(gesture_data, "victory", 3)[-1].name
    assert [(m["path"], m["predicted"]) for m in report["mistakes"]] == [
        (f"fist/{misfiled}", "victory")]
    assert report["latency_ms"]["hands_p50"] > 0


def test_the_readable_table_shows_the_figures(small_set, capsys):
    code, out, _ = run_cli(capsys, "eval", str(small_set))
    assert code == 0
    assert "accuracy 87.5% (7/8 images)" in out
    assert "events on 'none' images: 0" in out
    fist_row = next(line for line in out.splitlines() if line.startswith("fist "))
    assert fist_row.split()[1:] == ["3", "100.0%", "66.7%"]


def test_only_what_the_daemon_would_publish_counts(small_set):
    """Gestures that are not enabled, or never reach the decide thresholds, publish nothing."""
    only_fist = parse_config({"gestures": {"enabled": ["fist"]}})
    report = evaluate(small_set, only_fist)
    assert report["confusion"]["victory"] == {"none": 2}
    assert report["confusion"]["call"] == {"none": 1}
    assert report["confusion"]["fist"] == {"fist": 2, "none": 1}
    assert report["classifier_accuracy"] == pytest.approx(7 / 8, abs=1e-4)

    never = parse_config({"decide": {"enter_threshold": 1.0, "exit_threshold": 0.5}})
    report = evaluate(small_set, never)
    assert all(set(row) == {"none"} for row in report["confusion"].values())


def test_an_unreadable_file_is_skipped_and_named(small_set, capsys):
    (small_set / "fist" / "broken.jpg").write_text("this is not a JPEG")
    code, out, err = run_cli(capsys, "eval", str(small_set), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["unreadable"] == ["fist/broken.jpg"]
    assert report["images"] == 8
    assert "fist/broken.jpg" in err


@pytest.mark.parametrize("make", [
    lambda root: root / "missing",
    lambda root: (root / "empty").mkdir() or root / "empty",
    lambda root: (root / "flat").mkdir() or (root / "flat" / "a.jpg").write_bytes(b"") or root / "flat",
], ids=["missing", "empty", "no-label-folders"])
def test_a_folder_without_labelled_images_is_an_error(tmp_path, capsys, make):
    folder = make(tmp_path)
    code, out, err = run_cli(capsys, "eval", str(folder))
    assert code == 2
    assert str(folder) in err and out == ""


def test_default_config_without_a_file(small_set, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGE_GESTURE_CONFIG", raising=False)
    monkeypatch.setattr("edge_gesture.config.DEFAULT_CONFIG_PATHS", (tmp_path / "absent.toml",))
    code, out, err = run_cli(capsys, "eval", str(small_set), "--json")
    assert code == 0
    assert json.loads(out)["model_complexity"] == Config().hands.model_complexity
    assert "default settings" in err


def test_a_truncated_jpeg_is_told_from_a_whole_one_by_its_segments(gesture_data):
    whole = photos(gesture_data, "fist", 1)[0].read_bytes()
    # An APP1 segment holding a thumbnail with its own end-of-image marker, as cameras write EXIF:
    # that marker is not the photo's end.
    thumb = b"\xff\xd8" + bytes(range(16)) + b"\xff\xd9"
    app1 = b"\xff\xe1" + (len(thumb) + 2).to_bytes(2, "big") + thumb
    with_thumb = whole[:2] + app1 + whole[2:]
    assert cv2.imdecode(np.frombuffer(with_thumb, np.uint8), cv2.IMREAD_COLOR) is not None
    assert not jpeg_truncated(whole) and not jpeg_truncated(with_thumb)
    assert not jpeg_truncated(with_thumb + b"bytes some cameras append after the end")
    for cut in (2 + len(app1) + 4, len(with_thumb) // 2, len(with_thumb) - 1):
        assert jpeg_truncated(with_thumb[:cut]), cut
    assert not jpeg_truncated(b"this is not a JPEG")  # for the decoder to judge


def test_label_folders_eval_cannot_judge_are_skipped_and_unknown_ones_refused(tmp_path):
    cfg = parse_config({"gestures": {"custom": [{"name": "shaka", "description": "a shaka sign"}],
                                     "enabled": ["fist", "wave", "shaka"]}})
    items = [(label, tmp_path / label / "a.jpg")
             for label in ("call", "fist", "none", "shaka", "wave", "wave")]
    kept, skipped = photo_labels(items, tmp_path, cfg)
    # `call` is not enabled, so it can never fire: judged all the same, its photos count as misses.
    assert [label for label, _ in kept] == ["call", "fist", "none"]
    assert [(s["folder"], s["images"]) for s in skipped] == [("shaka", 1), ("wave", 2)]
    assert "only the VLM" in skipped[0]["why"] and "motion gesture" in skipped[1]["why"]
    with pytest.raises(EvalError, match=f"^{tmp_path}/thumb_up: unknown label 'thumb_up'; photo "
                       "folders are named call, fist, none, ok, open_palm, pointing_up, "
                       "thumbs_down, thumbs_up, victory$"):
        photo_labels([*items, ("thumb_up", tmp_path / "thumb_up" / "a.jpg")], tmp_path, cfg)
