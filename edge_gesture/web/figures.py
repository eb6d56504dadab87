"""Per-second figures of the last minutes: frames processed and dropped, mean latency per stage.

Fed on the frame-loop thread, one cheap `add` per frame; read on the web server's thread. The
caller (LiveFeed) holds its lock around `add` and `taken`, and calls `rows` outside it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Second:
    sec: int  # whole seconds of the monotonic clock
    processed: int = 0
    dropped: int = 0
    stage_sums: dict[str, float] = field(default_factory=dict)
    e2e_sum: float = 0.0
    e2e_max: float = 0.0

    def as_dict(self, wall_offset: float) -> dict:
        n = self.processed
        return {
            "t": round(self.sec + wall_offset, 3),  # epoch seconds at the start of that second
            "processed": n,
            "dropped": self.dropped,
            "latency_ms": {s: round(v / n * 1000, 2) for s, v in self.stage_sums.items()} if n else {},
            "end_to_end_ms": round(self.e2e_sum / n * 1000, 2) if n else None,
            "end_to_end_max_ms": round(self.e2e_max * 1000, 2) if n else None,
        }


class FigureHistory:
    def __init__(self, keep_s: int = 300):
        self.keep_s = keep_s
        self._done: deque[_Second] = deque(maxlen=keep_s)
        self._current: _Second | None = None
        self._last_index: int | None = None

    def add(self, now: float, index: int, timings: dict[str, float], end_to_end: float) -> None:
        sec = int(now)
        cur = self._current
        if cur is None or cur.sec != sec:
            if cur is not None:
                self._done.append(cur)
            cur = self._current = _Second(sec)
        cur.processed += 1
        # The capture thread counts every frame it reads; a gap in the indices is the frames it
        # replaced before the loop took them (LatestFrameSlot). A reopened source may restart.
        if self._last_index is not None and index > self._last_index + 1:
            cur.dropped += index - self._last_index - 1
        self._last_index = index
        sums = cur.stage_sums
        for stage, seconds in timings.items():
            sums[stage] = sums.get(stage, 0.0) + seconds
        cur.e2e_sum += end_to_end
        cur.e2e_max = max(cur.e2e_max, end_to_end)

    def taken(self) -> tuple[list[_Second], _Second | None]:
        """A copy to read from another thread: ended seconds never change, the current one is
        copied. Cheap, for under the writer's lock; `rows` does the rest outside it."""
        cur = self._current
        if cur is not None:
            cur = _Second(cur.sec, cur.processed, cur.dropped, dict(cur.stage_sums), cur.e2e_sum,
                          cur.e2e_max)
        return list(self._done), cur


def rows(taken: tuple[list[_Second], _Second | None], after_sec: int | None, now: float,
         keep_s: int) -> tuple[list[dict], int | None]:
    """The whole seconds after `after_sec` that have ended by `now` (monotonic), oldest first,
    and the last of them (to pass as `after_sec` next time). A second without frames is there
    with 0 processed, so a stall shows on the plot."""
    done, cur = taken
    ended = list(done)
    if cur is not None and cur.sec < int(now):
        ended.append(cur)
    if not ended:
        return [], after_sec
    last = int(now) - 1
    first = ended[0].sec if after_sec is None else max(after_sec + 1, ended[0].sec)
    first = max(first, last - keep_s + 1)
    by_sec = {s.sec: s for s in ended}
    offset = time.time() - now
    out = [(by_sec.get(sec) or _Second(sec)).as_dict(offset) for sec in range(first, last + 1)]
    return out, max(last, after_sec if after_sec is not None else last)
