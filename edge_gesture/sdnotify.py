"""systemd's notify protocol (sd_notify(3)) over $NOTIFY_SOCKET, and a frame-driven watchdog.

Outside systemd (no $NOTIFY_SOCKET) every call is a no-op that returns False, so the daemon
calls these unconditionally. The protocol is one datagram of `KEY=value` lines to a unix
socket; a path starting with `@` names a socket in the abstract namespace.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("edge_gesture.sdnotify")


def _address(raw: str) -> str | bytes:
    if raw.startswith("@"):
        # Abstract namespace: the kernel wants a leading NUL instead of the '@'.
        return b"\0" + raw[1:].encode()
    return raw


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between keep-alive pings: half of $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises.

    None when the watchdog is off, the value is unusable, or $WATCHDOG_PID names another
    process (the variables were inherited, the watchdog is not ours to feed).
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1_000_000 / 2


class Notifier:
    """Sends state changes to the service manager; a no-op when not started by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _address(raw) if raw else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False
        self.watchdog_interval = watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; True if the manager got it."""
        if self._address is None:
            return False
        payload = "\n".join(fields).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, self._address)
            except OSError as e:
                # Logged once: a vanished socket would otherwise log every frame's watchdog ping.
                if not self._warned:
                    log.warning("sd_notify failed", socket=str(self._address), error=str(e))
                    self._warned = True
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1"]
        if status:
            fields.append(f"STATUS={status}")
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        # STATUS is one line in `systemctl status`; a newline would end the field early.
        return self.notify(f"STATUS={text.replace(chr(10), ' ')}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets newer systemd (253+) match the READY=1 that ends the reload.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        fields = ["STOPPING=1"]
        if status:
            fields.append(f"STATUS={status}")
        return self.notify(*fields)

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class FrameWatchdog:
    """Feeds systemd's watchdog only while the frame loop makes progress.

    The frame loop calls `progress()` after each processed frame. Pings go out from that same
    call, at most once per interval, so a loop wedged inside inference (or starved of frames)
    stops pinging and systemd restarts the service after `WatchdogSec=`.
    """

    def __init__(self, notifier: Notifier, clock: Callable[[], float] = time.monotonic):
        self._notifier = notifier
        self._clock = clock
        self._interval = notifier.watchdog_interval
        self._last: float | None = None
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return self._notifier.enabled and self._interval is not None

    def progress(self) -> bool:
        """Record that a frame went through; ping if the interval has passed. True if pinged."""
        if not self.enabled:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        if self._notifier.watchdog():
            self.pings += 1
            return True
        return False
