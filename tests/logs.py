"""Reading the daemon's JSON log lines from a subprocess's stderr."""

from __future__ import annotations

import json


def json_log_lines(stderr: str) -> list[dict]:
    """The structured lines. MediaPipe's native code writes to the same stderr from its own
    threads, and a native line can land inside one of ours; such a line is skipped."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
