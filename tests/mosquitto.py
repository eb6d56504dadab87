"""A real mosquitto broker for tests, on a free loopback port, with its own config file."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """Start, stop and restart a broker; `extra_conf` lines go into its mosquitto.conf."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "",
                 allow_anonymous: bool = True, persistence: bool = False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            # With persistence, sessions and their queued messages survive a restart.
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log}",
            # Run as root (CI containers), mosquitto would switch to user `mosquitto` and could
            # not write its log or database into the test's private temporary directory.
            *(["user root"] if os.geteuid() == 0 else []),
            "log_type all",
        ]
        self.conf.write_text("\n".join(lines) + "\n" + extra_conf + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        if not Path(MOSQUITTO).exists():
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


def write_password_file(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto `password_file` with these user names and passwords (hashed by
    mosquitto_passwd, which comes with the broker)."""
    exe = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path = Path(path)
    path.write_text("")
    for user, password in users.items():
        subprocess.run([exe, "-b", str(path), user, password], check=True,
                       capture_output=True)
    return path
