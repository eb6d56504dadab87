"""The frame loop wakes the publisher's network thread with one byte on a socket pair; a wake-up
lost to a race would leave every later event waiting for the network loop's 0.5 s select()
timeout instead of going out at once."""

from __future__ import annotations

import select
import statistics
import sys
import threading
import time

import pytest

from edge_gesture.publish import Publisher
from tests.mqtt_recorder import Recorder, wait_until
from tests.test_publish import ROOT, event, make_cfg

#: The network loop's select() timeout: what an event waits when no wake-up arrives.
SELECT_TIMEOUT_S = 0.5


def test_events_still_go_out_at_once_after_a_storm_of_wakeups(broker):
    rec = Recorder(broker.port, f"{ROOT}/#")
    pub = Publisher(make_cfg(broker.port)).start()
    try:
        wait_until(lambda: pub.connected, what="connect")
        rec.wait_count("/state", 1)
        # Pokes as fast as they come while the network thread keeps draining the wake-up socket
        # and sending each new state, so pokes land at every point of the drain. Several poking
        # threads and a tiny GIL switch interval make the unlucky interleaving frequent: the old
        # code (flag cleared before the drain) got stuck in 10 of 10 half-second storms like this.
        stop_at = time.monotonic() + 1.5
        pokes = [0] * 4

        def frame_loop(i: int) -> None:
            while time.monotonic() < stop_at:
                pub.publish_state({"right": "fist"})
                pokes[i] += 1

        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            threads = [threading.Thread(target=frame_loop, args=(i,)) for i in range(len(pokes))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(switch)
        pub.publish_state({"right": "victory"})
        rec.wait_for(lambda m: m.topic.endswith("/state") and b"victory" in m.payload, 10,
                     "the last state of the storm")
        # A quiet spell longer than a select() timeout: the network thread sits idle in select().
        time.sleep(SELECT_TIMEOUT_S + 0.2)

        delays = []
        for _ in range(7):
            t0 = time.monotonic()
            seq = pub.publish_event(event())
            got = rec.wait_for(lambda m, s=seq: m.topic.endswith("/event")
                               and m.json()["sequence"] == s, 10, f"event {seq}")
            delays.append(got.at - t0)
            time.sleep(0.1)  # single events, not a burst
    finally:
        pub.stop()
        rec.close()
    # A lost wake-up costs each event most of a select() timeout; a working one, milliseconds.
    assert statistics.median(delays) < SELECT_TIMEOUT_S / 2, (pokes, delays)


class _PokeDuringDrain:
    """The wake-up socket, with the frame loop's poke landing at a chosen point of the network
    thread's drain: the interleaving the stress test above hits only by chance."""

    def __init__(self, sock, pub: Publisher, when: str):
        self.sock, self.pub, self.when = sock, pub, when

    def recv(self, n: int) -> bytes:
        if self.when == "before_read":
            self.pub.publish_event(event())
        data = self.sock.recv(n)
        if self.when == "after_read":
            self.pub.publish_event(event())
        return data


@pytest.mark.parametrize("when", ["before_read", "after_read"])
def test_a_poke_during_the_drain_never_silences_later_pokes(when):
    pub = Publisher(make_cfg(1))  # never started: the test plays the network thread
    real_r = pub._wake_r
    try:
        pub.publish_event(event())
        assert select.select([real_r], [], [], 0)[0], "the first poke wakes the network thread"
        pub._wake_r = _PokeDuringDrain(real_r, pub, when)
        pub._drain_wakeups()
        pub._wake_r = real_r
        # Whatever the poke inside the drain did, the event queued now must wake the thread.
        pub.publish_event(event())
        assert select.select([real_r], [], [], 0)[0], \
            "a poke during the drain left the wake-up flag set with nothing to read"
        assert len(pub._outbox) == 3, "every event is queued for the pass after the drain"
    finally:
        real_r.close()
        pub._wake_w.close()
