"""A bounded, age-limited queue of messages waiting for the broker.

The frame loop appends; the network thread takes. Messages older than `max_age_s` are dropped
and counted instead of being sent: an event that reaches a light switch late is worse than one
that never arrives.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Pending:
    kind: str  # "event" or "action": both obey the age limit
    created: float  # monotonic seconds when publish_event() was called
    topic: str
    qos: int
    retain: bool
    # The payload is rendered by the network thread, not the frame loop, then kept for resends.
    render: Callable[[], bytes]
    payload: bytes | None = None


class Outbox:
    def __init__(self, capacity: int, max_age_s: float):
        self.capacity = capacity
        self.max_age_s = max_age_s
        self._q: deque[Pending] = deque()
        self._lock = threading.Lock()
        self.dropped_stale = 0
        self.dropped_full = 0

    def __len__(self) -> int:
        return len(self._q)

    def put(self, p: Pending) -> None:
        with self._lock:
            if len(self._q) >= self.capacity:
                self._q.popleft()
                self.dropped_full += 1
            self._q.append(p)

    def requeue(self, items: list[Pending]) -> None:
        """Put messages the broker never acknowledged back in front, keeping their order."""
        with self._lock:
            self._q.extendleft(reversed(items))
            while len(self._q) > self.capacity:
                self._q.popleft()
                self.dropped_full += 1

    def take(self, now: float, limit: int) -> list[Pending]:
        """Up to `limit` messages young enough to send, oldest first; stale ones are dropped."""
        out: list[Pending] = []
        with self._lock:
            q = self._q
            while q and len(out) < limit:
                p = q.popleft()
                if now - p.created > self.max_age_s:
                    self.dropped_stale += 1
                else:
                    out.append(p)
        return out

    def expire(self, now: float) -> int:
        """Drop what has gone stale while waiting; returns how many."""
        n = 0
        with self._lock:
            q = self._q
            while q and now - q[0].created > self.max_age_s:
                q.popleft()
                n += 1
            self.dropped_stale += n
        return n
