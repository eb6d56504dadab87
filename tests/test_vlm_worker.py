"""The VLM worker on a real tiny bundle: scheduling, skipping unchanged hands, failure and
recovery. Inference runs for real; the one injected fault replaces OpenVINO's infer request.

No assertion depends on how fast this machine is: the tests wait for conditions (with timeouts
far beyond need), and the rate limit is checked as a bound that holds at any speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from structlog.testing import capture_logs

from edge_gesture.capture import Frame
from edge_gesture.config import parse_config
from edge_gesture.hands import Hand
from edge_gesture.vlm.worker import VlmWorker
from tests.vlm_fixtures import GESTURES

pytestmark = pytest.mark.export


def config(bundle, tmp_path, **vlm):
    return parse_config({
        "gestures": {
            "enabled": [n for n, _ in GESTURES],
            "custom": [{"name": "crossed_fingers", "description": GESTURES[-1][1]}],
        },
        "service": {"cache_dir": str(tmp_path / "cache")},
        "vlm": {"enabled": True, "bundle": str(bundle), "max_rate_hz": 20.0,
                "backoff_initial_s": 0.2, "backoff_max_s": 0.4, **vlm},
    })


def frame(t: float) -> Frame:
    img = np.random.default_rng(int(t * 100)).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return Frame(img, int(t * 30), t, time.time(), time.monotonic())


def hand(shift: float = 0.0, side: str = "right", track: int = 1) -> Hand:
    lm = np.random.default_rng(7).uniform(0.3, 0.6, (21, 3)).astype(np.float32)
    lm[:, 0] += shift
    return Hand(lm, side, 0.9, (100 + int(shift * 320), 70, 180, 170), (320, 240), track)


def wait_for(cond, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def worker(tiny_ov_bundle, tmp_path):
    w = VlmWorker(config(tiny_ov_bundle, tmp_path))
    yield w
    w.stop()


def test_answers_for_a_hand_and_skips_it_while_unchanged(worker):
    assert worker.start() and worker.status()["state"] == "ok"
    assert worker.latest(1) is None
    worker.submit(frame(1.0), [hand()])
    assert wait_for(lambda: worker.latest(1) is not None)
    a = worker.latest(1)
    assert a.label in {n for n, _ in GESTURES} | {"none"} and 0 < a.probability <= 1
    assert a.t == 1.0 and a.latency > 0
    # Same pose a moment later: skipped as it is offered, and the answer now holds at the new
    # frame time.
    worker.submit(frame(1.5), [hand(0.001)])
    assert worker.counts["skipped_unchanged"] == 1
    assert worker.latest(1).t == 1.5
    # Nor was a decision queued for it: one would start within the 50 ms rate gap; a second is
    # a real margin (it only has to be long enough to catch the fault, never to pass).
    time.sleep(1.0)
    assert worker.counts["decisions"] == 1
    # The hand moves: asked again.
    worker.submit(frame(2.0), [hand(0.1)])
    assert wait_for(lambda: worker.latest(1).t == 2.0)
    assert worker.counts["decisions"] == 2
    assert worker.latest(2) is None


def test_one_in_flight_at_the_rate_limit_on_the_newest_frame(tiny_ov_bundle, tmp_path):
    rate = 4.0
    w = VlmWorker(config(tiny_ov_bundle, tmp_path, max_rate_hz=rate))
    try:
        assert w.start()
        t0 = time.monotonic()
        t, offers = 0.0, 0
        # A 50 fps stream of a moving hand, until a few decisions were made, however long that
        # takes here.
        while w.counts["decisions"] < 4:
            assert time.monotonic() - t0 < 120, w.status()
            t += 0.02
            offers += 1
            w.submit(frame(t), [hand(0.05 * (offers % 2))])
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
        decided = w.counts["decisions"]
        # Decisions start at least 1/rate apart, so at any machine speed no more than this
        # were made; and never one per frame.
        assert decided <= elapsed * rate + 1, (decided, elapsed)
        assert decided * 4 < offers, (decided, offers)
        # A last frame, with a pose not seen before: its answer comes after at most the
        # decision in flight, not after a backlog of the frames offered before it.
        last = t + 0.02
        w.submit(frame(last), [hand(0.3)])
        assert wait_for(lambda: w.latest(1).t == last)
        assert w.counts["decisions"] <= decided + 2
    finally:
        w.stop()


def test_an_absent_device_leaves_it_down_logged_once_and_retried(tiny_ov_bundle, tmp_path):
    w = VlmWorker(config(tiny_ov_bundle, tmp_path, device="NPU"))
    try:
        with capture_logs() as logs:
            assert w.start() is False
            assert wait_for(lambda: w.counts["failures"] >= 3)
        st = w.status()
        assert st["state"] == "failed" and "available: CPU" in st["error"]
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == 1 and "NPU" in errors[0]["error"]
        w.submit(frame(1.0), [hand()])
        assert w.latest(1) is None and not w.available
    finally:
        w.stop()


class _LostDevice:
    """Stands in for OpenVINO's InferRequest when the device goes away mid-run."""

    def infer(self, *a, **k):
        raise RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp:\ndevice lost")

    def reset_state(self):
        pass

    def query_state(self):
        return []


def test_an_inference_fault_drops_to_landmarks_and_the_vlm_comes_back(worker):
    assert worker.start()
    worker._runtime.backend._vis_req = _LostDevice()
    with capture_logs() as logs:
        worker.submit(frame(1.0), [hand()])
        assert wait_for(lambda: worker.counts["failures"] == 1)
        assert worker.latest(1) is None
        assert wait_for(lambda: worker.status()["state"] == "ok", timeout=20)
        worker.submit(frame(2.0), [hand(0.2)])
        assert wait_for(lambda: worker.latest(1) is not None)
    events = [(e["log_level"], e["event"]) for e in logs]
    assert ("error", "vlm unavailable: landmarks only; retrying with backoff") in events
    assert ("info", "vlm recovered") in events


def test_two_still_hands_with_one_label_are_asked_once_each(worker):
    # Two people's right hands: told apart by track, each is decided once and then, not moving,
    # skipped. Keyed by the label, each would look moved against the other and be asked forever.
    assert worker.start()
    hands = [hand(0.0, "right", track=1), hand(0.3, "right", track=2)]
    t = 1.0
    for n in (1, 2):  # one decision per offer: the hand asked least recently goes first
        worker.submit(frame(t), hands)
        assert wait_for(lambda n=n: worker.counts["decisions"] == n)
        t += 0.1
    first, second = worker.latest(1), worker.latest(2)
    assert first is not None and second is not None
    skipped = worker.counts["skipped_unchanged"]
    for _ in range(10):
        worker.submit(frame(t), hands)
        t += 0.1
    assert worker.counts["skipped_unchanged"] - skipped == 20  # both hands, every frame
    assert worker.latest(1).t == worker.latest(2).t == pytest.approx(t - 0.1)
    assert worker.counts["decisions"] == 2


def test_what_is_kept_for_a_hand_goes_with_its_track(worker):
    # Track ids are never reused, so answers kept for tracks long out of view would pile up.
    assert worker.start()
    lost_after_s = worker.cfg.decide.lost_after_s
    for n in range(1, 6):  # one hand after another, each in view lost_after_s after the last
        worker.submit(frame(n * 2 * lost_after_s), [hand(0.05 * n, track=n)])
        assert wait_for(lambda n=n: worker.latest(n) is not None)
        if n > 1:
            assert worker.latest(n - 1) is None
    assert len(worker._answers) == len(worker._decided_landmarks) == 1


def test_a_new_scene_forgets_every_hand_so_a_reused_track_id_is_asked_afresh(worker):
    # Eval's next clip and a benchmark's next run number their tracks from 1 again: the hand
    # that is track 1 there is another hand, whatever the last scene's track 1 was told.
    assert worker.start()
    worker.submit(frame(1.0), [hand()])
    assert wait_for(lambda: worker.latest(1) is not None)
    worker.forget()
    assert worker.latest(1) is None
    worker.submit(frame(0.5), [hand()])  # the new scene's clock starts again too
    assert worker.counts["skipped_unchanged"] == 0
    assert wait_for(lambda: worker.latest(1) is not None and worker.latest(1).t == 0.5)
    assert worker.counts["decisions"] == 2
