"""The command line as a user meets it: devices, a daemon with no broker yet, signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.logs import json_log_lines
from tests.mosquitto import Mosquitto, free_port
from tests.mqtt_recorder import Recorder


def edge_gesture(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_gesture", *args], capture_output=True,
                          text=True, timeout=120, check=False, **kw)


def test_devices_lists_the_cpu_and_says_when_there_is_no_camera():
    r = edge_gesture("devices", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert "CPU" in [d["device"] for d in report["openvino"]["devices"]]
    assert "CPUExecutionProvider" in report["onnxruntime"]["providers"]
    assert isinstance(report["cameras"], list)
    human = edge_gesture("devices")
    assert "CPU" in human.stdout and "Cameras" in human.stdout


def test_run_refuses_a_bad_config_before_opening_anything(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('[capture]\nsource = "/dev/video9"\nwidht = 640\n')
    r = edge_gesture("run", "--config", str(bad))
    assert r.returncode == 2
    assert "capture.widht: unknown key" in r.stderr
    assert "source open" not in r.stderr


def test_missing_video_file_is_named(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[capture]\nsource = "{tmp_path / "missing.mp4"}"\n')
    r = edge_gesture("run", "--config", str(cfg))
    assert r.returncode == 2  # bad input, as for a bad config
    assert "error: capture.source: no such video file" in r.stderr and "missing.mp4" in r.stderr
    assert "Traceback" not in r.stderr


def write_cfg(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""device_id = "cli"
[capture]
source = "testcard"
fps = 15
[mqtt]
host = "127.0.0.1"
port = {port}
[logging]
format = "json"
""")
    return cfg


def test_broker_down_at_start_then_up_daemon_connects_and_sigint_exits_cleanly(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edge_gesture", "run", "--config",
                             str(write_cfg(tmp_path, port))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    broker = Mosquitto(tmp_path / "broker", port=port)
    try:
        time.sleep(4)  # the daemon starts with nothing listening and must keep running
        assert proc.poll() is None, proc.stderr.read()
        broker.start()
        sub = Recorder(port, "edge_gesture/cli/availability")
        sub.wait_for(lambda m: m.payload == b"online", 20, "online once the broker is up")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 5
        assert proc.returncode == 0, err[-2000:]
        sub.wait_for(lambda m: m.payload == b"offline", 5, "offline after SIGINT")
        sub.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        broker.stop()
    lines = json_log_lines(err)
    failures = [x for x in lines if x.get("level") == "warning" and "mqtt" in x.get("event", "")]
    # ~10 reconnect attempts while the broker was away, one warning.
    assert len(failures) == 1, failures
