"""`edge-gesture run` as systemd runs it, for the service and reload tests: a subprocess with
$NOTIFY_SOCKET and $WATCHDOG_USEC pointing at a datagram socket the test binds (the `Manager`),
its health endpoint on a free port, and its log in a file.

Every wait here is on a condition, with a timeout that only bounds a failing test; the 2-core CI
machine may be busy with other tests, so none of them is a performance claim.
"""

from __future__ import annotations

import os
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
from prometheus_client.parser import text_string_to_metric_families

from tests.mosquitto import free_port

#: Start-up to READY: the hand models load and the first frame goes through; slow on a busy CPU.
START_S = 60.0


def wait_for(value, timeout: float, what: str):
    """The first truthy `value()` within `timeout` seconds (polled every 50 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        got = value()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.05)


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

    def wait_count(self, key: str, n: int, timeout: float, since: float = 0.0):
        """Wait until `n` `key=` lines have arrived after `since`; returns them."""
        return wait_for(lambda: self.fields(key, since)[n - 1:] and self.fields(key, since),
                        timeout, f"{n} {key}= messages")

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


class Daemons:
    """Starts daemons for one test and kills whatever is still running at its end; a test
    module's `daemons` fixture yields one (`with Daemons() as start: yield start`)."""

    def __init__(self):
        self.started: list[RunningDaemon] = []

    def __call__(self, tmp_path: Path, config: str, **kw) -> RunningDaemon:
        d = RunningDaemon(tmp_path, config, **kw)
        self.started.append(d)
        return d

    def __enter__(self) -> Daemons:
        return self

    def __exit__(self, *exc: object) -> None:
        for d in self.started:
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
[web]
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
