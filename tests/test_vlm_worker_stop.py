"""Stopping the VLM worker while its load hangs: a copy of the real tiny bundle whose manifest
reads stall (tests/stalled_file.py) stands for any slow load, such as a first GPU/NPU compile
that takes a minute. Neither the daemon's wait for the load nor its stop may wait for it.

Elapsed times are only compared with timeouts many times longer (a wait that ignored the stop
would last the whole timeout), never with how fast this machine is."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from structlog.testing import capture_logs

from edge_gesture.bundle import MANIFEST_NAME
from edge_gesture.config import parse_config
from edge_gesture.vlm.worker import VlmWorker
from tests.stalled_file import answer, stall, wait_for_reader
from tests.vlm_fixtures import GESTURES

pytestmark = pytest.mark.export

LONG_S = 120.0  # a timeout no correct call comes near; reaching it is the failure


@pytest.fixture
def stalled_bundle(tiny_ov_bundle, tmp_path):
    """(bundle folder, its manifest's bytes): the real tiny bundle, its manifest stalled."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_ov_bundle, bundle)
    manifest = bundle / MANIFEST_NAME
    content = manifest.read_bytes()
    stall(manifest)
    return bundle, content


def worker_for(bundle, tmp_path) -> VlmWorker:
    return VlmWorker(parse_config({
        "gestures": {
            "enabled": [n for n, _ in GESTURES],
            "custom": [{"name": "crossed_fingers", "description": GESTURES[-1][1]}],
        },
        "service": {"cache_dir": str(tmp_path / "cache")},
        # Without the checksum pass the load reads the manifest once, so one answer completes it.
        "vlm": {"enabled": True, "bundle": str(bundle), "verify_checksums": False},
    }))


def thread_ends(w: VlmWorker) -> bool:
    """Wait for the worker's thread to end by itself; stop() says so once it has (it does not
    wait for a thread that is loading). A thread left inside OpenVINO would abort pytest's
    own exit."""
    end = time.monotonic() + LONG_S
    while time.monotonic() < end:
        if w.stop(timeout=1.0):
            return True
        time.sleep(0.1)
    return False


def test_the_wait_for_the_load_ends_when_the_daemon_is_asked_to_stop(stalled_bundle, tmp_path):
    bundle, content = stalled_bundle
    w = worker_for(bundle, tmp_path)
    stop = threading.Event()
    w.start(wait_s=0)
    writer = wait_for_reader(bundle / MANIFEST_NAME, 60)  # the load is reading, and stuck
    try:
        threading.Timer(0.2, stop.set).start()  # SIGTERM while the daemon waits
        t0 = time.monotonic()
        assert w.wait_ready(LONG_S, cancel=stop) is False
        assert time.monotonic() - t0 < LONG_S / 4
        assert w.status()["state"] == "loading"
    finally:
        answer(writer, content)
        assert thread_ends(w)


def test_a_stop_during_the_load_does_not_wait_and_the_late_runtime_is_never_used(
        stalled_bundle, tmp_path):
    bundle, content = stalled_bundle
    w = worker_for(bundle, tmp_path)
    with capture_logs() as logs:
        w.start(wait_s=0)
        writer = wait_for_reader(bundle / MANIFEST_NAME, 60)
        t0 = time.monotonic()
        assert w.stop(timeout=LONG_S) is False  # the loading thread is left behind
        assert time.monotonic() - t0 < LONG_S / 4
        assert w.status()["state"] == "stopped" and not w.available
        # The storage answers after all: the load completes in the background (the compile
        # and warm-up of the real bundle), and what it loaded is closed, not put to use, not
        # announced as ready.
        answer(writer, content)
        assert thread_ends(w)
    assert w.status()["state"] == "stopped" and not w.available
    assert w.load_s is None  # never recorded as loaded
    assert [e["event"] for e in logs if e["event"].startswith("vlm ")] == []
