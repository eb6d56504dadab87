"""Bad input to `eval` and the `bench` commands: one line, `error: ...` naming it, exit 2, no
traceback; a live source's bench ends by itself and says how far it is; an eval names what it
skips instead of scoring it 0%. Every command runs as a user would run it, in its own process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge_gesture.bench_pipeline import LIVE_RUN_S, run_seconds
from edge_gesture.publish.bench import parse_broker

REPO = Path(__file__).resolve().parent.parent


def edge_gesture(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in its own process, with an empty config file (the defaults) in `cwd`."""
    (cwd / "config.toml").touch()
    env = dict(os.environ, PYTHONPATH=str(REPO), EDGE_GESTURE_CONFIG=str(cwd / "config.toml"))
    return subprocess.run([sys.executable, "-m", "edge_gesture", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def refused_port() -> int:
    """A port nothing listens on: bound for a moment, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo(gesture_data: Path, label: str) -> Path:
    return sorted((gesture_data / label).glob("*.jpg"))[0]


def photo_folder(root: Path, gesture_data: Path, labels: dict[str, str]) -> Path:
    """root/<folder>/a.jpg, each a copy of a photo of the given gesture."""
    for folder, label in labels.items():
        (root / folder).mkdir(parents=True)
        shutil.copy(photo(gesture_data, label), root / folder / "a.jpg")
    return root


def empty_folder(path: Path) -> Path:
    path.mkdir()
    return path


# case: (the arguments, given tmp_path, the shared photos and a refused port; the start of the one
# line, with {t} for tmp_path and {port} for the port)
BAD_INPUT = {
    "vlm-bundle-missing": (lambda t, g, port: ["bench", "vlm", "--bundle", str(t / "no-bundle")],
                           "--bundle: {t}/no-bundle: not a directory"),
    "vlm-bundle-not-a-bundle": (lambda t, g, port: ["bench", "vlm", "--bundle",
                                                    str(empty_folder(t / "empty"))],
                                "--bundle: {t}/empty/edge-gesture-model.json: no manifest"),
    "vlm-device-absent": (lambda t, g, port: ["bench", "vlm", "--bundle", str(t), "--device",
                                              "NOSUCH"],
                          "--device NOSUCH: not on this machine"),
    "vlm-image-missing": (lambda t, g, port: ["bench", "vlm", "--bundle", str(t), "--image",
                                              str(t / "no.jpg")],
                          "--image {t}/no.jpg: no such file"),
    "mqtt-broker-not-host-port": (lambda t, g, port: ["bench", "mqtt", "--broker", "nonsense"],
                                  "--broker: expected HOST:PORT, got 'nonsense'"),
    "mqtt-broker-port-out-of-range": (lambda t, g, port: ["bench", "mqtt", "--broker",
                                                          "localhost:99999"],
                                      "--broker: expected HOST:PORT, got 'localhost:99999'"),
    "mqtt-broker-refuses": (lambda t, g, port: ["bench", "mqtt", "--broker", f"127.0.0.1:{port}"],
                            "--broker 127.0.0.1:{port}: connection refused"),
    "mqtt-source-missing": (lambda t, g, port: ["bench", "mqtt", "--source", str(t / "no.mp4")],
                            "--source {t}/no.mp4: no such video file"),
    "pipeline-source-missing": (lambda t, g, port: ["bench", "pipeline", "--source",
                                                    str(t / "no.mp4")],
                                "--source {t}/no.mp4: no such video file"),
    "pipeline-negative-seconds": (lambda t, g, port: ["bench", "pipeline", "--source", "testcard",
                                                      "--seconds", "-1"],
                                  "--seconds: expected 0 or more, got -1"),
    "eval-unknown-label": (lambda t, g, port: ["eval", str(photo_folder(t / "photos", g, {
                               "fist": "fist", "wav": "open_palm"}))],
                           "{t}/photos/wav: unknown label 'wav'; photo folders are named call, "
                           "fist, none, ok, open_palm, pointing_up, thumbs_down, thumbs_up, victory"),
    "range-unknown-label": (lambda t, g, port: ["bench", "range", str(photo_folder(t / "range", g, {
                                "f0.110/fist": "fist", "f0.110/Fist": "fist"}))],
                            "{t}/range/f0.110/Fist: unknown label 'Fist'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_naming_it_and_exit_2(case, tmp_path, gesture_data):
    make_args, expected = BAD_INPUT[case]
    port = refused_port()
    r = edge_gesture(*make_args(tmp_path, gesture_data, port), cwd=tmp_path)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("error: " + expected.format(t=tmp_path, port=port)), lines[0]
    assert (r.returncode, r.stdout) == (2, "")


def test_broker_flag_takes_host_and_port():
    assert parse_broker("mqtt.lan:1884") == ("mqtt.lan", 1884)
    assert parse_broker(":1883") == ("127.0.0.1", 1883)
    assert parse_broker("[::1]:1883") == ("::1", 1883)


def test_a_live_source_runs_20_s_a_run_unless_told_and_a_file_to_its_end():
    assert LIVE_RUN_S == 20
    for live in ("testcard", "0", "/dev/video2", "rtsp://cam.lan/stream"):
        assert run_seconds(live, None) == LIVE_RUN_S, live
    assert run_seconds("clip.mp4", None) == 0  # to the end of the file
    assert run_seconds("testcard", 3.5) == 3.5
    assert run_seconds("testcard", 0) == 0  # asked for: until interrupted
    r = edge_gesture("bench", "pipeline", "--help", cwd=REPO)
    assert "20 s for a camera, stream or testcard" in " ".join(r.stdout.split())


def test_bench_pipeline_json_is_stdout_alone_and_progress_goes_to_stderr(tmp_path, broker):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'device_id = "bench"\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n')
    # 7 s a run: a progress line is due at 5 s, and a frame would have to take 2 s to skip it.
    r = edge_gesture("bench", "pipeline", "--source", "testcard", "--seconds", "7", "--repeats", "1",
                     "--json", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)  # what `| jq` needs: nothing else on stdout
    assert report["seconds_per_run"] == 7 and report["repeats"] == 1
    progress = [line for line in r.stderr.splitlines() if line.startswith("bench pipeline (")]
    assert [line.split(",")[0] for line in progress] == [
        "bench pipeline (openvino): run 1/2 (capacity)", "bench pipeline (openvino): run 2/2 (live)"]
    assert all(" 5 s of 7, " in line and line.endswith(" frames/s so far") for line in progress)


def test_eval_names_a_truncated_jpeg_and_a_motion_folder_instead_of_scoring_them(tmp_path,
                                                                               gesture_data):
    photos = photo_folder(tmp_path / "photos", gesture_data, {"fist": "fist", "wave": "open_palm"})
    whole = photo(gesture_data, "fist").read_bytes()
    (photos / "fist" / "cut.jpg").write_bytes(whole[:len(whole) // 2])
    r = edge_gesture("eval", str(photos), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["images"] == 1 and report["confusion"] == {"fist": {"fist": 1}}
    assert report["truncated"] == ["fist/cut.jpg"]
    assert [(s["folder"], s["images"]) for s in report["skipped"]] == [("wave", 1)]
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: wave/: 1 photo(s) skipped: a motion gesture, which one still photo cannot show "
        "(evaluate it on labelled clips)",
        "warning: fist/cut.jpg: truncated JPEG (its data ends before the end-of-image marker), skipped",
    ]
    assert "JPEG" not in r.stderr.replace(warnings[1], "")  # no bare libjpeg line beside it
