"""Stopping the daemon: SIGTERM ends `edge-gesture run` with exit 0 within 5 s (systemd's stop
contract, and the README's), `offline` retained on a real mosquitto, and the log saying it was a
signal; however busy the frame loop is and however long the VLM's load would still take."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests import chatty_daemon
from tests.mqtt_recorder import Recorder
from tests.stalled_file import answer, stall, wait_for_reader

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
STOP_WITHIN_S = 5.0  # the README's promise; the unit's TimeoutStopSec leaves room above it


def daemon_config(path: Path, broker_port: int, device_id: str, extra: str = "") -> Path:
    path.write_text(f"""
device_id = "{device_id}"
[capture]
source = "testcard"
width = 320
height = 240
[mqtt]
port = {broker_port}
stats_interval_s = 0
[logging]
level = "debug"
format = "json"
{extra}
""")
    return path


def log_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by the process's end
                pass
    return out


def wait_until(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout} s")


def availability(sub: Recorder, device_id: str) -> list[bytes]:
    return [m.payload for m in sub.on(f"edge_gesture/{device_id}/availability")]


@contextlib.contextmanager
def running_daemon(cfg: Path, log: Path):
    """`edge-gesture run --config cfg`, its output in `log`; killed if the test leaves it running."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge_gesture", "run", "--config", str(cfg)],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def sigterm_keeps_the_promise(proc: subprocess.Popen, log: Path) -> list[dict]:
    """SIGTERM: exit 0 within STOP_WITHIN_S, the log saying a signal stopped it. Its log lines."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(STOP_WITHIN_S + 5)  # measured below; more only to report, not hang
    took = time.monotonic() - t0
    lines = log_lines(log)
    assert code == 0, log.read_text(errors="replace")[-3000:]
    assert took < STOP_WITHIN_S, took
    assert [(e.get("reason"), e.get("signal")) for e in lines
            if e.get("event") == "stopping"] == [("signal", "SIGTERM")]
    return lines


class SlowLogReader:
    """Reads a daemon's output like a busy journald: at a limited rate, so the daemon's log
    writes block on a full pipe. Keeps the JSON lines other than the chatter."""

    CHUNK = 4096

    def __init__(self, pipe, bytes_per_s: float = 150_000):
        self._fd = pipe.fileno()
        self._pause = self.CHUNK / bytes_per_s
        self._lock = threading.Lock()
        self._lines: list[dict] = []
        self.chatter = 0
        self.garbled: list[bytes] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rest = b""
        while chunk := os.read(self._fd, self.CHUNK):
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                if b'"chatter"' in line:
                    self.chatter += 1
                elif line.startswith(b"{"):
                    try:
                        entry = json.loads(line)
                    except ValueError:  # a native library's output spliced into the line
                        self.garbled.append(line)
                        continue
                    with self._lock:
                        self._lines.append(entry)
            time.sleep(self._pause)

    def events(self, name: str) -> list[dict]:
        with self._lock:
            return [e for e in self._lines if e.get("event") == name]

    def join(self) -> None:
        self._thread.join(10)


def stop_one_run(proc, out: SlowLogReader, sub: Recorder, device: str, run: int,
                 delay: float) -> str | None:
    """SIGTERM the daemon's run number `run` (from 0) while it logs; what went wrong, if anything."""
    wait_until(lambda: availability(sub, device).count(b"online") == run + 1, 60,
               f"{device} online")
    seen = out.chatter
    wait_until(lambda: out.chatter > seen + chatty_daemon.LINES, 10, "the frame loop logging")
    time.sleep(delay)  # where in the loop the signal lands; any point must do
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        wait_until(lambda: len(out.events("run returned")) == run + 1, STOP_WITHIN_S, "")
    except AssertionError:
        return f"still running {STOP_WITHIN_S} s after SIGTERM"
    code = out.events("run returned")[run]["code"]
    if code != 0:
        return f"exit {code}"
    stopping = out.events("stopping")[run:]
    if [(e.get("reason"), e.get("signal")) for e in stopping] != [("signal", "SIGTERM")]:
        return f"stopping lines {stopping}"
    try:
        wait_until(lambda: availability(sub, device).count(b"offline") == run + 1, 5, "offline")
    except AssertionError:
        return f"no offline: {availability(sub, device)}"
    if run == RUNS_EACH - 1:  # the last run: the process itself exits 0, in time
        try:
            code = proc.wait(max(0.0, STOP_WITHIN_S - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            return f"process still running {STOP_WITHIN_S} s after SIGTERM"
        if code != 0:
            return f"process exit {code}"
    return None


PROCESSES, RUNS_EACH = 5, 10


def test_sigterm_while_the_frame_loop_logs_heavily_always_stops_cleanly(tmp_path, broker):
    """50 SIGTERMs, each landing at a random point of a frame loop that spends most of its time
    blocked writing log lines: each run ends with exit code 0 within 5 s and `offline`
    retained. (A handler that logged deadlocked on the log writer's lock, and systemd then had
    to SIGKILL the daemon.) Ten runs per process, so start-up does not dominate the time."""
    sub = Recorder(broker.port, "edge_gesture/+/availability")
    rng = random.Random(12)
    failures: list[str] = []
    try:
        for p in range(PROCESSES):
            device = f"sig{p}"
            cfg = daemon_config(tmp_path / f"{device}.toml", broker.port, device)
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.chatty_daemon", str(RUNS_EACH), "--config",
                 str(cfg)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out = SlowLogReader(proc.stdout)
            try:
                for run in range(RUNS_EACH):
                    problem = stop_one_run(proc, out, sub, device, run, rng.uniform(0.0, 0.3))
                    if problem:
                        failures.append(f"{device} run {run}: {problem}; unparsed output: "
                                        f"{out.garbled[:3]}")
                        break
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                out.join()
                proc.stdout.close()
    finally:
        sub.close()
    assert not failures, f"{len(failures)} of {PROCESSES} daemons failed a stop:\n" + \
        "\n".join(failures)
    # What a subscriber arriving later (Home Assistant after a restart) is told: offline.
    late = Recorder(broker.port, "edge_gesture/+/availability")
    try:
        wait_until(lambda: len(late.messages) == PROCESSES, 10, "a retained state per daemon")
        assert {m.payload for m in late.messages} == {b"offline"}
        assert all(m.retain for m in late.messages)
    finally:
        late.close()


def test_sigterm_during_a_vlm_load_that_hangs_exits_at_once_without_going_online(tmp_path, broker):
    """The VLM's bundle is read from storage that does not answer (its manifest is a FIFO that
    never delivers), standing for any load that takes long: a first GPU/NPU compile takes a
    minute. SIGTERM must not wait for it: exit 0 within 5 s, never `online`."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    manifest = stall(bundle / "edge-gesture-model.json")
    cfg = daemon_config(tmp_path / "vlm.toml", broker.port, "slowvlm", extra=f"""
[service]
cache_dir = "{tmp_path / 'cache'}"
[vlm]
enabled = true
bundle = "{bundle}"
""")
    sub = Recorder(broker.port, "edge_gesture/slowvlm/#")
    log = tmp_path / "daemon.log"
    writer = None
    try:
        with running_daemon(cfg, log) as proc:
            # The load has reached the manifest and now waits for bytes that never come.
            writer = wait_for_reader(manifest, 60)
            # The frame loop's side: signal handlers installed, waiting for the VLM.
            wait_until(lambda: "waiting for the vlm" in log.read_text(errors="replace"), 60,
                       "the daemon waiting for the VLM")
            lines = sigterm_keeps_the_promise(proc, log)
        assert not any(e.get("event", "").startswith("vlm ") for e in lines), lines
        assert sub.messages == []  # never announced `online`, so nothing to take back
    finally:
        if writer is not None:
            os.close(writer)
        sub.close()


class SilentServer:
    """A TCP server that accepts connections and never answers: a camera or stream server
    that hangs. Counts the connections it accepted."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.accepted:
            c.close()


def test_sigterm_with_a_hung_broker_and_a_hung_camera_still_exits_within_5s(tmp_path, broker):
    """Every stage that shutdown waits for is stuck at once: the broker is frozen (it never
    acknowledges `offline`) and the stream source hangs while opening. The waits share one
    deadline, so the exit still comes within 5 s (separate timeouts added up to more), and
    `offline` is retained once the broker runs again."""
    camera = SilentServer()
    source = f"rtsp://127.0.0.1:{camera.port}/cam"
    cfg = daemon_config(tmp_path / "hung.toml", broker.port, "hung")
    cfg.write_text(cfg.read_text().replace('source = "testcard"', f'source = "{source}"'))
    sub = Recorder(broker.port, "edge_gesture/hung/availability")
    log = tmp_path / "daemon.log"
    frozen = False
    try:
        with running_daemon(cfg, log) as proc:
            sub.wait_for(lambda m: m.payload == b"online", 60, "online")
            wait_until(lambda: camera.accepted, 30, "the capture thread connecting to the camera")
            broker.proc.send_signal(signal.SIGSTOP)
            frozen = True
            sigterm_keeps_the_promise(proc, log)
        broker.proc.send_signal(signal.SIGCONT)
        frozen = False
        late = Recorder(broker.port, "edge_gesture/hung/availability")
        try:
            msg = late.wait_for(lambda m: m.retain, 10, "the retained availability")
            assert msg.payload == b"offline"
        finally:
            late.close()
    finally:
        if frozen:
            broker.proc.send_signal(signal.SIGCONT)
        sub.close()
        camera.close()


def test_sigterm_during_a_video_file_says_signal_not_source_ended(tmp_path, broker):
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120))
    for i in range(30 * 60):  # a minute: it cannot end during the test
        w.write(np.full((120, 160, 3), i % 255, np.uint8))
    w.release()
    cfg = daemon_config(tmp_path / "file.toml", broker.port, "file")
    cfg.write_text(cfg.read_text().replace('source = "testcard"', f'source = "{video}"'))
    log = tmp_path / "daemon.log"
    with running_daemon(cfg, log) as proc:
        wait_until(lambda: '"first frame"' in log.read_text(errors="replace"), 60, "first frame")
        lines = sigterm_keeps_the_promise(proc, log)
    assert "source ended" not in [e.get("event") for e in lines]


@pytest.mark.export
def test_sigterm_while_the_vlm_load_is_inside_openvino_exits_0(tiny_ov_bundle, tmp_path, broker):
    """SIGTERM while the VLM's load makes its last OpenVINO calls (compile, warm-up) leaves
    that thread behind. The process still exits 0 within 5 s. An ordinary interpreter exit
    tore OpenVINO down under the thread, and a call of its returning meanwhile aborted the
    process ("terminate called without an active exception": SIGABRT, a failed unit and a
    core dump under systemd), here 6 times in 6.

    The load is held at its manifest until the daemon waits for it (its signal handlers are
    in place), then let go; the signal goes as soon as the load saves its derived files, about
    half a second before it ends on this 2-core machine. (On a much faster one it may end first;
    the test then checks only the ordinary stop.)"""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_ov_bundle, bundle)
    manifest = bundle / "edge-gesture-model.json"
    content = manifest.read_bytes()
    stall(manifest)
    cache = tmp_path / "cache"
    cfg = daemon_config(tmp_path / "vlm.toml", broker.port, "loadexit", extra=f"""
[service]
cache_dir = "{cache}"
[vlm]
enabled = true
bundle = "{bundle}"
verify_checksums = false  # the load then reads the manifest once: one answer lets it go
""")
    log = tmp_path / "daemon.log"
    with running_daemon(cfg, log) as proc:
        writer = wait_for_reader(manifest, 60)
        wait_until(lambda: "waiting for the vlm" in log.read_text(errors="replace"), 60,
                   "the daemon waiting for the VLM")
        answer(writer, content)

        def derived_saved() -> bool:
            return any(p.name != "verified" for p in cache.glob("openvino/vlm/*"))

        end = time.monotonic() + 60
        while not derived_saved():
            assert time.monotonic() < end, "the load never saved its derived files"
            time.sleep(0.005)
        sigterm_keeps_the_promise(proc, log)
