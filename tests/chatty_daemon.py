"""`edge-gesture run` whose frame loop also logs heavily, several times in one process.

Every frame-loop turn first writes LINES debug lines through the daemon's own structlog set-up.
When the reader of the log (journald; here the test) is slower than that, the main thread
spends most of its time blocked inside the log writer, holding its lock, and that is where a
signal finds it: a handler that logged would wait for that lock forever.

`edge-gesture run` is called RUNS times in a row, each until a signal stops it, so the start-up
(imports, MediaPipe) is paid once for many stops; after each, a JSON line `run returned` with
its exit code goes to stdout. Everything else (signal handlers, run, shutdown) is the real one.

Usage: python -m tests.chatty_daemon RUNS --config FILE
"""

from __future__ import annotations

import json
import sys

import structlog

from edge_gesture import cli
from edge_gesture.service import ServiceHooks

LINES = 200

log = structlog.get_logger("chatter")
_tick = ServiceHooks.tick


def chatty_tick(self, processed: bool) -> None:
    for i in range(LINES):
        log.debug("chatter", line=i)
    _tick(self, processed)


def main(argv: list[str]) -> int:
    runs, rest = int(argv[0]), argv[1:]
    ServiceHooks.tick = chatty_tick
    for _ in range(runs):
        code = cli.main(["run", *rest])
        print(json.dumps({"event": "run returned", "code": code}), flush=True)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
