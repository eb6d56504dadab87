"""Native libraries' own lines stay out of the journal at logging.level "info": every line the
daemon writes is one JSON object, and a source that cannot be opened is explained once, by the
daemon, not by OpenCV or FFmpeg at every retry. At "debug" the native lines are in the log too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge_gesture.native_logs import native_stderr_relogged
from tests.daemon_harness import START_S
from tests.mosquitto import free_port
from tests.silent_stream import SilentStream

REPO = Path(__file__).resolve().parent.parent


def _not_json(text: str) -> list[str]:
    bad = []
    for line in text.splitlines():
        try:
            if not isinstance(json.loads(line), dict):
                bad.append(line)
        except json.JSONDecodeError:
            bad.append(line)
    return bad


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# ---------------------------------------------------------------- the redirect itself

_SCRIPT = textwrap.dedent("""
    import os, sys, threading
    import structlog
    from edge_gesture.logsetup import configure_logging
    from edge_gesture.native_logs import native_stderr_relogged

    configure_logging(sys.argv[1], "json")
    log = structlog.get_logger("test")
    inside, logged = threading.Event(), threading.Event()

    def other_thread():
        inside.wait()
        os.write(2, b"native line from another thread\\n")
        log.info("python line while redirected")
        logged.set()

    t = threading.Thread(target=other_thread)
    t.start()
    with native_stderr_relogged("a test step"):
        os.write(2, b"INFO: native line\\n")
        inside.set()
        logged.wait()
    t.join()
    log.info("after")
""")


@pytest.mark.parametrize("level", ["info", "debug"])
def test_native_lines_go_to_the_debug_log_and_python_lines_still_out(level):
    r = subprocess.run([sys.executable, "-c", _SCRIPT, level], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert _not_json(r.stderr) == [], r.stderr
    records = _records(r.stderr)
    events = [e["event"] for e in records]
    # Our own lines, from any thread, are written as ever, in order.
    assert events[-1] == "after" and "python line while redirected" in events
    native = [e for e in records if e["event"] == "native library output"]
    if level == "info":
        assert native == []
    else:  # once, with every native line, from both threads
        assert len(native) == 1 and native[0]["level"] == "debug", native
        assert sorted(native[0]["lines"]) == ["INFO: native line",
                                              "native line from another thread"]
        assert native[0]["during"] == "a test step"


def test_native_lines_of_a_step_that_failed_are_a_warning(capfd):
    with capture_logs() as logs, pytest.raises(RuntimeError):
        with native_stderr_relogged("loading a model"):
            os.write(2, b"E0000 model.cc:12] cannot parse the model\n")
            raise RuntimeError("load failed")
    assert "cannot parse" not in capfd.readouterr().err
    assert [(e["log_level"], e["lines"]) for e in logs] == [
        ("warning", ["E0000 model.cc:12] cannot parse the model"])]


# ---------------------------------------------------------------- the daemon, run by hand


class _Daemon:
    """`edge-gesture run` as a user starts it by hand (no systemd), its output in a file."""

    def __init__(self, tmp_path: Path, toml: str):
        tmp_path.mkdir(parents=True, exist_ok=True)
        config = tmp_path / "config.toml"
        config.write_text(toml)
        self.log = tmp_path / "daemon.log"
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "OPENCV_LOG_LEVEL",
                            "OPENCV_FFMPEG_LOGLEVEL")}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_gesture", "run", "--config", str(config)],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, event: str, timeout: float = START_S) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in _records(self.output()) if e.get("event") == event]
            if found:
                return found[0]
            assert self.proc.poll() is None, self.output()
            time.sleep(0.1)
        raise AssertionError(f"no {event!r} within {timeout} s:\n{self.output()}")

    def stop(self) -> str:
        """SIGTERM, wait for the exit; the whole output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.output()


def _config(broker_port: int, source: str, extra: str = "") -> str:
    return f"""
[capture]
source = "{source}"
reconnect_initial_s = 0.05
reconnect_max_s = 0.1
read_timeout_s = 0.5
[mqtt]
host = "127.0.0.1"
port = {broker_port}
stats_interval_s = 0
[logging]
level = "info"
{extra}
"""


@pytest.mark.e2e
def test_first_run_by_hand_logs_only_json_and_says_it_is_not_under_systemd(tmp_path, broker):
    # MediaPipe's own hand graph prints TFLite's, absl's and its own start-up lines.
    d = _Daemon(tmp_path, _config(broker.port, "testcard", '[hands]\nbackend = "mediapipe"'))
    try:
        ready = d.wait_for("ready")
    finally:
        out = d.stop()
    assert _not_json(out) == [], out
    assert ready["systemd"] == "not started by systemd (NOTIFY_SOCKET unset): no readiness to report"
    assert "notify" not in ready


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["missing camera", "refused stream", "silent stream"])
def test_an_unavailable_source_is_explained_once_and_only_in_json(tmp_path, broker, kind):
    server = SilentStream() if kind == "silent stream" else None
    source, reason = {
        "missing camera": ("/dev/v4l/by-id/usb-edge-gesture-test-no-such-camera-video-index0",
                           "no such device: "),
        "refused stream": (f"rtsp://127.0.0.1:{free_port()}/cam", "connection refused by "),
        "silent stream": (server.url if server else "", "no frames within capture.read_timeout_s"),
    }[kind]
    d = _Daemon(tmp_path, _config(broker.port, source))
    try:
        said = d.wait_for("source unavailable, retrying")
        if server is not None:
            # Four attempts, each the stream's connection and the one that checks why.
            deadline = time.monotonic() + 60
            while len(server.held) < 8 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(server.held) >= 8, d.output()
    finally:
        out = d.stop()
        if server is not None:
            server.close()
    assert _not_json(out) == [], out
    assert said["reason"].startswith(reason), said
    unavailable = [e for e in _records(out) if e["event"] == "source unavailable, retrying"]
    assert len(unavailable) == 1, unavailable


# ---------------------------------------------------------------- the export tool


@pytest.mark.export
def test_export_says_nothing_about_cuda(tmp_path):
    pytest.importorskip("torch", reason="needs the export extra (torch)")
    pytest.importorskip("optimum.intel", reason="needs the export extra (optimum-intel)")
    pytest.importorskip("edge_gesture_export", reason="pip install --no-deps -e ./export")
    from tests.tiny_smolvlm import build_tiny_smolvlm

    tiny = build_tiny_smolvlm(tmp_path / "tiny-smolvlm")
    # A CUDA toolkit folder and no GPU, as on many a developer's laptop: torch then warns at
    # the import of its extension builder, which the conversion imports through nncf.torch.
    cuda_home = tmp_path / "cuda"
    cuda_home.mkdir()
    env = dict(os.environ, CUDA_HOME=str(cuda_home), CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, "-m", "edge_gesture_export", "--model", str(tiny),
                        "--output", str(tmp_path / "bundle"), "--quiet"],
                       capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "CUDA" not in r.stderr, r.stderr
