"""structlog set-up: JSON lines for journald and log shippers, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

from edge_gesture.native_logs import WRITE_LOCK, set_native_log_levels

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class _StderrNow:
    """Whatever `sys.stderr` is when a line is written, not when logging was set up: code that
    runs the CLI in-process (tests capturing output) swaps it and closes its copy afterwards, and
    so does `native_logs` while it keeps a native library's lines out of the log."""

    def write(self, text: str) -> int:
        with WRITE_LOCK:
            return sys.stderr.write(text)

    def flush(self) -> None:
        with WRITE_LOCK:
            sys.stderr.flush()


_STDERR = _StderrNow()


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer = (structlog.processors.JSONRenderer() if use_json
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=_STDERR),
        cache_logger_on_first_use=False,
    )
    # paho and friends log through the standard library; route their warnings the same way.
    # force: the CLI configures once before it knows the config, `run` again after reading it.
    logging.basicConfig(level=max(_LEVELS[level], logging.WARNING), stream=_STDERR,
                        format="%(name)s %(levelname)s %(message)s", force=True)
    # OpenCV's and FFmpeg's own lines (a warning at every reopen of a missing camera) only when
    # asked for; set before the first capture opens, which is when FFmpeg reads its level.
    set_native_log_levels(debug=level == "debug")
