"""The notify protocol against a real unix datagram socket the test binds, as systemd would."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge_gesture.sdnotify import FrameWatchdog, Notifier, watchdog_interval


@pytest.fixture
def manager(tmp_path: Path):
    """A bound datagram socket playing the service manager; yields (socket, its path)."""
    path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(2)
    yield s, str(path)
    s.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on the socket, without blocking."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
        sock.settimeout(2)
    return out


def test_ready_status_stopping_arrive_as_datagrams(manager):
    sock, path = manager
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("processing frames")
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=processing frames"
    assert n.status("camera lost\nreopening")
    assert sock.recv(4096).decode() == "STATUS=camera lost reopening"
    assert n.stopping()
    assert sock.recv(4096).decode() == "STOPPING=1"
    assert n.reloading()
    fields = sock.recv(4096).decode().split("\n")
    assert fields[0] == "RELOADING=1"
    assert fields[1].startswith("MONOTONIC_USEC=") and int(fields[1].split("=")[1]) > 0
    n.close()


def test_abstract_namespace_socket():
    name = f"edge-gesture-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"\0" + name.encode())
    s.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert s.recv(4096) == b"READY=1"
    finally:
        s.close()


def test_no_op_outside_systemd():
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    wd = FrameWatchdog(n)
    assert not wd.enabled and wd.progress() is False


def test_vanished_socket_does_not_raise(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready() is False
    assert n.status("still fine") is False


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, None),  # someone else's watchdog
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env, expected):
    assert watchdog_interval(env) == expected


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_watchdog_pings_once_per_interval_while_frames_flow_and_at_once_when_they_resume(manager):
    sock, path = manager
    clock = FakeClock()
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})  # ping every 1 s
    wd = FrameWatchdog(n, clock=clock)
    # 3 s of frames at 30 fps: one ping per second of frames, not one per frame.
    for _ in range(90):
        wd.progress()
        clock.t += 1 / 30
    pings = received(sock)
    assert pings == ["WATCHDOG=1"] * 3
    # Frames stop for 10 s (the frame loop then does not call progress(); test_service checks
    # that end to end). When they come back, the first one pings at once instead of waiting out
    # an interval, and the interval counts from that ping: frames 0.25 s apart ping every 4th.
    clock.t += 10
    sent = [wd.progress()]
    for _ in range(8):
        clock.t += 0.25
        sent.append(wd.progress())
    assert sent == [True, False, False, False, True, False, False, False, True]
    assert received(sock) == ["WATCHDOG=1"] * 3
    assert wd.pings == 6


def test_a_vanished_manager_is_logged_once_not_per_ping(tmp_path):
    # The socket goes away under a running daemon: every frame's ping fails, one line says so.
    path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    n = Notifier({"NOTIFY_SOCKET": str(path)})
    assert n.ready()
    s.close()
    path.unlink()
    with capture_logs() as logs:
        assert [n.watchdog() for _ in range(50)] == [False] * 50
    assert [(e["log_level"], e["event"]) for e in logs] == [("warning", "sd_notify failed")]
    assert str(path) in logs[0]["socket"]
