"""Dataset saving: what is kept, where, and that the folder stays within its quota and age."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_gesture.capture import Frame
from edge_gesture.config import parse_config
from edge_gesture.dataset import DatasetWriter, dataset_dir
from edge_gesture.decide import GestureEvent
from edge_gesture.hands import Hand


def frame(i: int, seed: int | None = None) -> Frame:
    # Noise does not compress, so each JPEG is about the same, predictable size.
    img = np.random.default_rng(seed if seed is not None else i).integers(
        0, 255, (120, 160, 3), dtype=np.uint8)
    return Frame(img, i, float(i), 1_700_000_000.0 + i, float(i))


def hand(side: str = "right", track: int = 1) -> Hand:
    lm = np.random.default_rng(1).random((21, 3), dtype=np.float32)
    return Hand(lm, side, 0.93, (40, 30, 100, 90), (160, 120), track)


def event(g: str = "fist", side: str = "right") -> GestureEvent:
    return GestureEvent(g, 0.88, "landmarks", side, 1.0, 1_700_000_000.0)


def writer(tmp_path: Path, clock=time.time, **cfg) -> DatasetWriter:
    c = parse_config({"dataset": {"enabled": True, **cfg}}).dataset
    return DatasetWriter(c, tmp_path / "ds", rng=random.Random(0), clock=clock)


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_event_frame_crop_and_metadata_are_saved_in_the_eval_layout(tmp_path):
    w = writer(tmp_path, no_gesture_sample_rate=0)
    assert w.offer(frame(7), [hand("right", 1), hand("left", 2)], [event("ok")]) == "ok"
    w.close()
    root = tmp_path / "ds"
    imgs = list((root / "frames" / "ok").glob("*.jpg"))
    assert len(imgs) == 1
    assert cv2.imread(str(imgs[0])).shape == (120, 160, 3)
    meta = json.loads(imgs[0].with_suffix(".json").read_text())
    assert meta["label"] == "ok" and meta["reason"] == "event" and meta["frame_index"] == 7
    assert meta["events"] == [{"gesture": "ok", "hand": "right", "confidence": 0.88,
                               "source": "landmarks"}]
    assert len(meta["hands"][0]["landmarks"]) == 21 and meta["hands"][0]["bbox"] == [40, 30, 100, 90]
    crops = sorted(p.name.rsplit("-", 1)[1] for p in (root / "crops" / "ok").glob("*.jpg"))
    assert crops == ["left.jpg", "right.jpg"]
    crop = cv2.imread(str(next((root / "crops" / "ok").glob("*right.jpg"))))
    assert crop.shape == (84, 84, 3)  # the 60x60 box plus 20% on each side


def test_two_hands_with_one_label_get_a_crop_each(tmp_path):
    # Two people's right hands: their track ids tell the crops (and the sidecar's hands) apart.
    w = writer(tmp_path, no_gesture_sample_rate=0)
    assert w.offer(frame(3), [hand("right", 4), hand("right", 9)], [event("fist")]) == "fist"
    w.close()
    crops = sorted(p.name.split("-", 2)[2] for p in (tmp_path / "ds" / "crops" / "fist").glob("*"))
    assert crops == ["4-right.jpg", "9-right.jpg"]
    meta = json.loads(next((tmp_path / "ds" / "frames" / "fist").glob("*.json")).read_text())
    assert [(h["track"], h["handedness"]) for h in meta["hands"]] == [(4, "right"), (9, "right")]


def test_frames_without_events_are_sampled_at_the_configured_rate(tmp_path):
    w = writer(tmp_path, no_gesture_sample_rate=0.1)
    labels = [w.offer(frame(i), [hand()] if i % 2 else [], []) for i in range(1000)]
    w.close()
    kept = [x for x in labels if x]
    assert 60 <= len(kept) <= 140  # 10% of 1000, with a seeded generator
    assert set(kept) == {"none"}
    frames = tmp_path / "ds" / "frames" / "none"
    assert len(list(frames.glob("*.jpg"))) == len(kept)
    with_hands = [p for p in frames.glob("*.json") if json.loads(p.read_text())["hands"]]
    assert 0 < len(with_hands) < len(kept)  # the sidecar tells the two kinds apart


def test_held_gesture_frames_are_not_negatives(tmp_path):
    w = writer(tmp_path, no_gesture_sample_rate=1.0)
    assert w.offer(frame(1), [hand()], [], active=True) is None
    assert w.offer(frame(2), [hand()], []) == "none"
    w.close()


def test_folder_stays_under_quota_and_keeps_the_newest(tmp_path):
    t = [1_700_000_000.0]
    w = writer(tmp_path, clock=lambda: t[0], quota_mb=0.25, no_gesture_sample_rate=0)
    quota = 0.25 * 1024 * 1024
    for i in range(60):
        t[0] += 1
        w.offer(frame(i), [hand()], [event()])
        assert w.flush()
        on_disk = sum(p.stat().st_size for p in files(tmp_path / "ds"))
        assert on_disk <= quota, f"{on_disk} bytes after sample {i}"
    assert w.deleted > 0
    metas = [json.loads(p.read_text()) for p in (tmp_path / "ds" / "frames").rglob("*.json")]
    kept = sorted(m["frame_index"] for m in metas)
    # The survivors are the most recent samples, without gaps.
    assert kept == list(range(60 - len(kept), 60)) and len(kept) >= 5


def test_old_files_are_deleted_at_start_and_foreign_files_never(tmp_path):
    root = tmp_path / "ds" / "frames" / "fist"
    root.mkdir(parents=True)
    old = root / "20240101T000000.000Z-000001.jpg"
    fresh = root / "20240301T000000.000Z-000002.jpg"
    mine_but_theirs = root / "holiday.jpg"
    for p in (old, fresh, mine_but_theirs):
        p.write_bytes(b"x" * 1000)
    now = time.time()
    os.utime(old, (now - 40 * 86400, now - 40 * 86400))
    os.utime(fresh, (now - 3 * 86400, now - 3 * 86400))
    os.utime(mine_but_theirs, (now - 400 * 86400, now - 400 * 86400))
    w = writer(tmp_path, max_age_days=30)
    w.close()
    assert not old.exists()
    assert fresh.exists() and mine_but_theirs.exists()
    assert w.deleted == 1


def test_zero_age_keeps_files_until_the_quota(tmp_path):
    root = tmp_path / "ds" / "frames" / "fist"
    root.mkdir(parents=True)
    ancient = root / "20000101T000000.000Z-000001.jpg"
    ancient.write_bytes(b"x" * 10)
    os.utime(ancient, (0, 0))
    writer(tmp_path, max_age_days=0).close()
    assert ancient.exists()


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    c = parse_config({"dataset": {"enabled": True}}).dataset
    w = DatasetWriter(c, tmp_path / "ds", queue_size=1)
    w.close()  # the writer thread is gone, as if stuck on a dead disk: nothing drains the queue
    assert w.offer(frame(1), [], [event()]) == "fist"  # fills the one place
    t0 = time.perf_counter()
    assert w.offer(frame(2), [], [event()]) is None
    assert time.perf_counter() - t0 < 0.05
    assert w.dropped == 1


def test_default_folder_is_under_the_state_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert dataset_dir(parse_config({})) == tmp_path / "state" / "dataset"
    assert dataset_dir(parse_config({"dataset": {"dir": "/srv/ds"}})) == Path("/srv/ds")


def test_unwritable_folder_fails_at_start_with_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        writer(blocker)
