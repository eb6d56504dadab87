"""Each benchmark command on a tiny input: exits 0 and prints one JSON object with its figures.

The README's figures come from these commands, so a change that breaks one (or lets a log line
into the JSON on stdout, which a script piping `--json` into `jq` would choke on) fails here.
Figures are not judged: these runs are too small and this machine too busy for that.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gesture_video import write_video

REPO = Path(__file__).resolve().parent.parent


def edge_gesture(*args: str, cwd: Path, timeout: float = 300) -> dict:
    """Run the CLI; stdout must be exactly one JSON object (logs belong on stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "EDGE_GESTURE_CONFIG"}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([sys.executable, "-m", "edge_gesture", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"stdout is not one JSON object ({e}):\n{r.stdout[:3000]}") from None


def has_keys(report: dict, keys: set[str]) -> set[str]:
    return keys - set(report)


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory, gesture_data) -> Path:
    """Half a second of an open palm, a quarter of an empty frame: 23 frames at 30 fps."""
    palm = sorted((gesture_data / "open_palm").glob("*.jpg"))[0]
    return write_video(tmp_path_factory.mktemp("video") / "tiny.mp4", [(palm, 0.5), (None, 0.25)])


def write_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'device_id = "bench"\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\n')
    return cfg


def test_bench_pipeline_json(tmp_path, broker, tiny_video):
    cfg = write_config(tmp_path, broker.port)
    report = edge_gesture("bench", "pipeline", "--source", str(tiny_video), "--repeats", "1",
                          "--json", "--config", str(cfg), cwd=tmp_path)
    assert not has_keys(report, {
        "source", "repeats", "frames_per_run", "fps_processed", "fps_processed_runs", "latency_ms",
        "live", "capacity_latency_ms", "peak_rss_mb", "model_complexity", "broker_connected"})
    assert report["frames_per_run"] == 23  # every frame of the file, read frame by frame
    assert report["repeats"] == 1 and report["fps_processed"] > 0
    assert report["broker_connected"] is True
    assert {"p50", "p95"} <= set(report["latency_ms"]["end_to_end"])
    assert not has_keys(report["live"], {"fps_processed", "frames_dropped"})


def test_bench_mqtt_json(tmp_path, tiny_video):
    # Its own private mosquitto, as the README's run; a burst of 30 events after half a second.
    report = edge_gesture("bench", "mqtt", "--source", str(tiny_video), "--events", "30",
                          "--repeats", "1", "--baseline", "0.5", "--json", cwd=tmp_path)
    assert not has_keys(report, {
        "broker", "protocol", "qos", "events_per_burst", "repeats", "lost_total",
        "duplicates_total", "all_in_order", "publish_per_frame_ms_max", "publish_per_frame_ms_p95",
        "publish_call_us_p50", "frame_ms_p95_baseline", "frame_ms_p95_burst",
        "end_to_end_ms_p95_baseline", "end_to_end_ms_p95_burst",
        "delivery_latency_ms_p50", "delivery_latency_ms_p95", "runs"})
    assert report["events_per_burst"] == 30 and len(report["runs"]) == 1
    run = report["runs"][0]
    assert run["events_sent"] >= 30
    assert report["lost_total"] == 0 and report["all_in_order"] is True
    # The burst went through the daemon's own frame loop: its count has every event published,
    # and its publish stage timed the frames of the burst.
    assert run["daemon_events"] == run["events_sent"]
    assert run["frames_during_burst"] >= 1 and report["publish_per_frame_ms_max"] is not None


VLM_KEYS = {
    "bundle", "format", "weights", "activations", "vision_activations", "devices", "threads",
    "image_size", "prompt_tokens", "prefilled_per_decision", "repeats", "p50_s", "p95_s",
    "preprocess_p50_s", "vision_p50_s", "language_p50_s", "label", "probability",
    "load_and_warm_up_s"}


def test_bench_pipeline_with_the_vlm_beside_reports_its_decisions_inside_and_standalone(
        tmp_path, broker, tiny_video, tiny_ov_bundle):
    cfg = write_config(tmp_path, broker.port)
    report = edge_gesture("bench", "pipeline", "--source", str(tiny_video), "--repeats", "1",
                          "--vlm", str(tiny_ov_bundle), "--json", "--config", str(cfg), cwd=tmp_path)
    vlm = report["vlm"]
    assert vlm["bundle"] == str(tiny_ov_bundle) and vlm["standalone_decisions"] == 10
    assert 0 < vlm["standalone_p50_ms"] <= vlm["standalone_p95_ms"]
    # The hand is in view for half a second of the live run: the worker decides on it.
    assert vlm["in_daemon_decisions"] >= 1, vlm
    assert 0 < vlm["in_daemon_p50_ms"] <= vlm["in_daemon_p95_ms"]
    assert vlm["in_daemon_to_standalone"] > 0


def test_bench_vlm_json(tmp_path, tiny_ov_bundle, gesture_data):
    report = edge_gesture("bench", "vlm", "--bundle", str(tiny_ov_bundle), "--repeats", "2",
                          "--threads", "1", "--json", cwd=tmp_path)
    assert not has_keys(report, VLM_KEYS | {"rss_mb"})
    assert report["repeats"] == 2 and 0 < report["p50_s"] <= report["p95_s"]
    assert report["format"] == "openvino"


def test_bench_vlm_reference_and_startup_json(tmp_path, tiny_ov_bundle, gesture_data):
    # The README's ratio and start-up figures come from these two options.
    report = edge_gesture("bench", "vlm", "--bundle", str(tiny_ov_bundle), "--repeats", "2",
                          "--threads", "1", "--reference", "--startup", "--json", cwd=tmp_path)
    assert not has_keys(report, VLM_KEYS | {
        "reference_bundle", "reference_p50_s", "reference_p95_s", "ratio",
        "start_to_ready_cold_s", "start_to_ready_warm_s", "runtime_rss_mb"})
    assert report["ratio"] > 0 and report["start_to_ready_warm_s"] > 0


def test_eval_json(tmp_path, gesture_data):
    # Two photos of each of three labels: eval's whole path (the accuracy floor over every photo
    # is tests/test_eval_floor.py).
    folder = tmp_path / "photos"
    for label in ("fist", "open_palm", "none"):
        (folder / label).mkdir(parents=True)
        for photo in sorted((gesture_data / label).glob("*.jpg"))[:2]:
            shutil.copy(photo, folder / label / photo.name)
    report = edge_gesture("eval", str(folder), "--json", cwd=tmp_path)
    assert not has_keys(report, {
        "accuracy", "per_class", "confusion", "images", "correct", "events_on_none",
        "gesture_images_without_hand", "classifier_accuracy", "latency_ms", "seconds",
        "hold_seconds", "model_complexity", "mistakes", "unreadable"})
    assert report["images"] == 6 and set(report["per_class"]) == {"fist", "open_palm", "none"}
    assert report["unreadable"] == []


def test_bench_pipeline_both_backends_json(tmp_path, broker, tiny_video):
    cfg = write_config(tmp_path, broker.port)
    report = edge_gesture("bench", "pipeline", "--source", str(tiny_video), "--repeats", "1",
                          "--backend", "both", "--json", "--config", str(cfg), cwd=tmp_path)
    assert not has_keys(report, {"cpu", "source", "backends", "fps_ratio_openvino_to_mediapipe"})
    assert set(report["backends"]) == {"openvino", "mediapipe"}
    for backend, run in report["backends"].items():
        assert run["hands_backend"] == backend
        assert run["frame_size"] == [640, 480]
        # The palm is in view from the first frame: both stages find it at once.
        assert run["first_hand_s"] == 0.0
    assert report["fps_ratio_openvino_to_mediapipe"] > 0


def test_bench_range_json(tmp_path, gesture_data):
    # Two distance folders of one photo each, in make_range.py's layout.
    for share, label in (("f0.110", "open_palm"), ("f0.037", "none")):
        folder = tmp_path / "range" / share / label
        folder.mkdir(parents=True)
        shutil.copy(sorted((gesture_data / label).glob("*.jpg"))[0], folder / "a.jpg")
    report = edge_gesture("bench", "range", str(tmp_path / "range"), "--json", cwd=tmp_path)
    assert not has_keys(report, {"cpu", "backend", "device", "distances"})
    rows = report["distances"]
    assert [r["share"] for r in rows] == [0.11, 0.037]
    assert rows[0]["distance"] == "1 m" and rows[1]["distance"] == "3 m"
    for r in rows:
        assert not has_keys(r, {"accuracy", "images", "hands_found", "events_on_none", "hands_ms_p50"})
    assert rows[0]["accuracy"] == 1.0 and rows[0]["hands_found"] == 1.0
    assert rows[1]["hands_found"] is None and rows[1]["events_on_none"] == 0


def test_bench_web_json(tmp_path, broker, tiny_video):
    # Two short runs, one with nobody on the live page and one with two viewers and the page's
    # WebSocket; the tiny clip loops to fill each run.
    cfg = write_config(tmp_path, broker.port)
    report = edge_gesture("bench", "web", "--source", str(tiny_video), "--viewers", "2",
                          "--repeats", "1", "--seconds", "3", "--json", "--config", str(cfg),
                          cwd=tmp_path)
    assert not has_keys(report, {
        "cpu", "source", "frame_size", "seconds_per_run", "repeats", "viewers", "stream_fps",
        "no_viewer", "with_viewers", "fps_ratio", "event_to_page_ms", "capture_to_page_ms",
        "broker_connected"})
    assert report["cpu"]["model"] and report["frame_size"] == [640, 480]
    assert report["viewers"] == 2 and report["repeats"] == 1
    for condition in ("no_viewer", "with_viewers"):
        assert report[condition]["fps_processed"] > 0
        assert {"p50", "p95"} <= set(report[condition]["end_to_end_ms"])
    assert isinstance(report["fps_ratio"], float) and report["fps_ratio"] > 0
    # Both viewers really watched: each got pictures from the stream.
    assert report["with_viewers"]["viewer_pictures_min"] >= 1
    assert {"p50", "p95", "count", "missed"} <= set(report["event_to_page_ms"])
    assert report["broker_connected"] is True
