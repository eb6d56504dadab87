"""The daemon as systemd runs it: `edge-gesture run` as a subprocess with $NOTIFY_SOCKET and
$WATCHDOG_USEC pointing at a datagram socket the test binds, a real mosquitto, and the health
endpoint scraped over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.mosquitto import free_port
from tests.mqtt_recorder import Recorder

pytestmark = pytest.mark.e2e


class Manager:
    """Plays systemd's side of sd_notify: records each datagram with its arrival time."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def fields(self, key: str, since: float = 0.0) -> list[tuple[float, str]]:
        """(time, value) of every `key=value` line received after `since`."""
        with self._lock:
            return [(t, line.split("=", 1)[1]) for t, m in self.messages if t >= since
                    for line in m.split("\n") if line.startswith(key + "=")]

    def wait(self, key: str, timeout: float, since: float = 0.0, value: str | None = None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, v in self.fields(key, since):
                if value is None or v == value:
                    return t, v
            time.sleep(0.05)
        raise AssertionError(f"no {key}={value or '*'} within {timeout}s; got {self.messages}")

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        self.sock.close()


class RunningDaemon:
    def __init__(self, tmp_path: Path, config: str, watchdog_usec: int = 1_000_000,
                 env: dict[str, str] | None = None):
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.health_port = free_port()
        self.config = tmp_path / "config.toml"
        self.config.write_text(config.replace("@HEALTH_PORT@", str(self.health_port)))
        self.manager = Manager(tmp_path / "notify.sock")
        self.log = tmp_path / "daemon.log"
        env = dict(os.environ, NOTIFY_SOCKET=str(self.manager.path),
                   WATCHDOG_USEC=str(watchdog_usec), **(env or {}))
        env.pop("WATCHDOG_PID", None)
        self.started = time.monotonic()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_gesture", "run", "--config", str(self.config)],
                env=env, stdout=log, stderr=subprocess.STDOUT)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.health_port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_health(self, code: int, timeout: float, contains: str = "") -> str:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.get("/healthz")
                if last[0] == code and contains in last[1]:
                    return last[1]
            except OSError as e:
                last = e
            time.sleep(0.1)
        raise AssertionError(f"/healthz never gave {code} {contains!r}; last {last}\n{self.output()}")

    def metrics(self) -> dict[str, float]:
        text = self.get("/metrics")[1]
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
        return out

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.manager.close()


@pytest.fixture
def daemons():
    started: list[RunningDaemon] = []

    def start(tmp_path: Path, config: str, **kw) -> RunningDaemon:
        d = RunningDaemon(tmp_path, config, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def config(broker_port: int, source: str, extra: str = "") -> str:
    return f"""
[capture]
source = "{source}"
at_end = "wait"
reconnect_initial_s = 0.2
reconnect_max_s = 0.5
[mqtt]
port = {broker_port}
stats_interval_s = 0
[health]
enabled = true
port = @HEALTH_PORT@
stale_after_s = 1.0
{extra}
"""


def short_video(path: Path, seconds: float = 2.0, fps: int = 30) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    for i in range(int(seconds * fps)):
        img = np.full((240, 320, 3), (i * 4) % 255, np.uint8)
        w.write(img)
    w.release()
    return path


def test_ready_only_after_the_first_frame(tmp_path, broker, daemons):
    # A stream that never answers: the daemon runs, says what it waits for, and is not READY.
    dead = f"rtsp://127.0.0.1:{free_port()}/cam"
    d = daemons(tmp_path / "a", config(broker.port, dead))
    d.manager.wait("STATUS", 30, value=f"waiting for the first frame from {dead}")
    body = d.wait_health(503, 10, "no frame processed yet")
    assert "source not connected" in body
    time.sleep(2)
    assert d.manager.fields("READY") == []
    assert d.proc.poll() is None
    # Reopening a lost source is a reported wait, not a wedge: the watchdog is still fed.
    assert d.manager.fields("WATCHDOG")

    live = daemons(tmp_path / "b", config(broker.port, "testcard"))
    t_ready, _ = live.manager.wait("READY", 30)
    status = [v for t, v in live.manager.fields("STATUS") if t <= t_ready]
    assert status[-1].startswith("processing testcard")
    assert status[0] == "hand models loaded; starting capture and MQTT"
    # The first frame was logged before READY went out, and frames keep flowing after it.
    log = live.output()
    assert log.index('"first frame"') < log.index('"ready"')
    live.wait_health(200, 10)


def test_watchdog_pings_while_frames_flow_and_stop_when_they_stop(tmp_path, broker, daemons):
    video = short_video(tmp_path / "clip.avi", seconds=3.0)
    d = daemons(tmp_path, config(broker.port, str(video)), watchdog_usec=600_000)  # ping each 0.3 s
    t_ready, _ = d.manager.wait("READY", 30)
    d.wait_log('"source ended"', 20)
    t_end = time.monotonic()
    time.sleep(2.0)
    pings = [t for t, _ in d.manager.fields("WATCHDOG")]
    while_playing = [t for t in pings if t_ready <= t <= t_end - 0.5]
    assert len(while_playing) >= 4, (pings, t_ready, t_end)
    # After the last frame at most one ping can be in flight; then silence, so systemd would
    # restart a daemon whose frames stopped.
    assert len([t for t in pings if t > t_end]) <= 1, (pings, t_end)
    assert d.proc.poll() is None
    assert "video source ended" in d.wait_health(503, 5, "video source ended")


def test_sigterm_sends_stopping_publishes_offline_and_exits_0_within_5s(tmp_path, broker, daemons):
    sub = Recorder(broker.port, "edge_gesture/#")
    try:
        d = daemons(tmp_path, config(broker.port, "testcard"))
        d.manager.wait("READY", 30)
        sub.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"online", 10)
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(5) == 0
        assert time.monotonic() - t0 < 5
        t_stop, _ = d.manager.wait("STOPPING", 1, value="1")
        assert t_stop >= t0
        sub.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"offline", 5)
    finally:
        sub.close()


def test_health_and_metrics_follow_the_broker(tmp_path, broker, daemons):
    d = daemons(tmp_path, config(broker.port, "testcard"))
    d.manager.wait("READY", 30)
    d.wait_health(200, 10)
    m = d.metrics()
    assert m["edge_gesture_frames_processed_total"] > 0
    assert m["edge_gesture_frames_read_total"] >= m["edge_gesture_frames_processed_total"]
    assert m["edge_gesture_mqtt_connected"] == 1
    assert m["edge_gesture_source_connected"] == 1
    assert m["edge_gesture_stage_latency_seconds_count{stage=hands}"] > 0

    broker.stop()
    body = d.wait_health(503, 15, "MQTT broker not connected")
    assert body.strip() == "MQTT broker not connected"  # frames still flow: the only problem
    assert d.metrics()["edge_gesture_mqtt_connected"] == 0
    d.manager.wait("STATUS", 15, since=time.monotonic() - 10, value="MQTT broker not connected")

    broker.start()
    d.wait_health(200, 30)
    assert d.proc.poll() is None


def test_sighup_applies_a_good_config_and_refuses_a_bad_one(tmp_path, broker, daemons):
    sub = Recorder(broker.port, "#")
    try:
        d = daemons(tmp_path, config(broker.port, "testcard"))
        d.manager.wait("READY", 30)
        sub.wait_for(lambda m: m.topic == "edge_gesture/edge-gesture/availability"
                     and m.payload == b"online", 10)

        # Good: new topics and thresholds apply without a restart; the camera setting waits.
        good = config(broker.port, "testcard", extra="[decide]\nenter_threshold = 0.8\n")
        good = good.replace("[mqtt]\n", '[mqtt]\nbase_topic = "home/gestures"\n')
        good = good.replace("reconnect_max_s = 0.5", "reconnect_max_s = 0.7")
        d.config.write_text(good.replace("@HEALTH_PORT@", str(d.health_port)))
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGHUP)
        d.manager.wait("RELOADING", 5, since=t0, value="1")
        d.manager.wait("READY", 5, since=t0, value="1")
        sub.wait_for(lambda m: m.topic == "home/gestures/edge-gesture/availability"
                     and m.payload == b"online", 10, "online on the new topic")
        sub.wait_for(lambda m: m.topic == "edge_gesture/edge-gesture/availability"
                     and m.payload == b"offline", 10, "offline on the old topic")
        d.wait_log('"config reloaded"', 5)
        log = d.output()
        assert '"mqtt.base_topic"' in log and '"decide.enter_threshold"' in log
        assert '"capture.reconnect_max_s"' in log and "need a restart" in log
        assert d.metrics()["edge_gesture_config_reloads_total{result=applied}"] == 1

        # Bad: refused with the field named; the daemon keeps running on the last good settings.
        d.config.write_text(good.replace("[decide]\n", "[decide]\nenter_treshold = 0.9\n")
                            .replace("@HEALTH_PORT@", str(d.health_port)))
        t1 = time.monotonic()
        d.proc.send_signal(signal.SIGHUP)
        d.manager.wait("READY", 5, since=t1, value="1")
        d.wait_log("config reload refused", 5)
        assert "decide.enter_treshold: unknown key" in d.output()
        assert d.metrics()["edge_gesture_config_reloads_total{result=refused}"] == 1
        d.wait_health(200, 5)
        assert d.proc.poll() is None
        # Still publishing on the topics of the last good file.
        n = len(sub.on("home/gestures/edge-gesture/availability"))
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(5) == 0
        sub.wait_for(lambda m: m.topic == "home/gestures/edge-gesture/availability"
                     and m.payload == b"offline", 5)
        assert len(sub.on("home/gestures/edge-gesture/availability")) > n
    finally:
        sub.close()


def test_dataset_samples_are_saved_within_the_quota(tmp_path, broker, daemons):
    folder = tmp_path / "dataset"
    d = daemons(tmp_path, config(broker.port, "testcard", extra=f"""
[dataset]
enabled = true
dir = "{folder}"
quota_mb = 0.3
no_gesture_sample_rate = 1.0
"""))
    d.manager.wait("READY", 30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not list(folder.rglob("*.json"))[5:]:
        time.sleep(0.2)
    time.sleep(1.0)  # the test pattern keeps coming: the quota has to hold while it does
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0
    saved = [p for p in folder.rglob("*") if p.is_file()]
    assert len([p for p in saved if p.suffix == ".jpg"]) >= 5
    assert {p.parent.name for p in saved} == {"none"}  # the test pattern has no hands
    assert sum(p.stat().st_size for p in saved) <= 0.3 * 1024 * 1024


def test_mqtt_password_reaches_the_daemon_as_the_unit_delivers_it(tmp_path, daemons):
    """The credential ID in LoadCredential= and the config's password_file name must agree."""
    from tests.mosquitto import Mosquitto

    unit = (Path(__file__).parent.parent / "systemd/edge-gesture.service").read_text()
    cred_id = next(line.split("=", 1)[1].split(":", 1)[0] for line in unit.splitlines()
                   if line.startswith("LoadCredential="))
    pw = tmp_path / "passwd"
    pw.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "nuc", "s3cret"], check=True)
    broker = Mosquitto(tmp_path / "broker", allow_anonymous=False,
                       extra_conf=f"password_file {pw}").start()
    try:
        creds = tmp_path / "credentials"
        creds.mkdir()
        (creds / cred_id).write_text("s3cret\n")
        d = daemons(tmp_path / "d", config(broker.port, "testcard").replace(
            "[mqtt]\n", f'[mqtt]\nusername = "nuc"\npassword_file = "{cred_id}"\n'),
            env={"CREDENTIALS_DIRECTORY": str(creds)})
        d.manager.wait("READY", 30)
        d.wait_health(200, 15)  # connected, so the broker took the password
        assert "s3cret" not in d.output()
    finally:
        broker.stop()
