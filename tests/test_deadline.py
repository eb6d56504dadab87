"""The one deadline shutdown's waits share, on an injected clock."""

from __future__ import annotations

import pytest

from edge_gesture.deadline import Deadline


class Clock:
    def __init__(self, t: float = 50.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_waits_in_turn_never_add_up_to_more_than_the_deadline():
    clock = Clock()
    d = Deadline(3.0, clock=clock)
    took = 0.0
    # Each step uses all it is given (a hung broker, a stuck camera), keeping 0.5 s for later.
    for keep in (2.0, 0.5, 0.0):
        step = d.left(keep=keep)
        clock.t += step
        took += step
    assert took == pytest.approx(3.0) and d.passed
    assert d.left() == 0.0 and d.left(keep=1.0) == 0.0  # never negative: a join(0) returns


def test_what_is_kept_for_later_steps_survives_an_early_step_overrunning():
    clock = Clock()
    d = Deadline(3.0, clock=clock)
    clock.t += d.left(keep=1.5) + 0.4  # a step that ran over what it was given
    assert d.left(keep=0.5) == pytest.approx(0.6)  # the publisher still has most of its share
    assert not d.passed


def test_counts_from_the_stop_request_not_from_when_shutdown_starts():
    clock = Clock()
    requested = clock.t
    clock.t += 0.8  # the frame in flight finished first
    d = Deadline(3.0, start=requested, clock=clock)
    assert d.left() == pytest.approx(2.2)
