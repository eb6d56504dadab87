"""Native libraries' own log lines kept out of the structured log unless `logging.level = "debug"`.

OpenCV, the FFmpeg inside it, MediaPipe's TFLite and absl write plain text straight to file
descriptor 2: OpenCV a `[ WARN:0@...]` line at every reopen of a missing camera, FFmpeg one at
every refused RTSP connection, MediaPipe three lines whenever a graph starts. In the journal they
are noise the daemon's own lines already explain, and they break the one-JSON-object-a-line
contract log shippers rely on.

Two tools:
- `set_native_log_levels`: OpenCV's and FFmpeg's own levels, for the libraries that have one;
- `native_stderr_relogged`: for MediaPipe/TFLite/absl, which ignore every variable
  (`GLOG_minloglevel`, `TF_CPP_MIN_LOG_LEVEL` change nothing in mediapipe 0.10.21), fd 2 is
  redirected to a file around the calls that print, and what they printed is logged once through
  structlog: at debug, or as a warning when the call failed (then it may say why).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

import structlog

log = structlog.get_logger("native")

# What the user's environment said before we changed it, restored at debug level.
_USER_ENV = {k: os.environ.get(k) for k in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL")}
_CV_LEVELS = {"SILENT": 0, "FATAL": 1, "ERROR": 2, "WARNING": 3, "WARN": 3, "INFO": 4, "DEBUG": 5,
              "VERBOSE": 6}
_CV_WARNING = 3
_CV_ERROR = 2


def set_native_log_levels(debug: bool) -> None:
    """OpenCV logs errors only, FFmpeg nothing; at debug both say what they would by default.

    FFmpeg's level is read by OpenCV at its first FFmpeg open, so it follows the level the
    process started with: a reload to debug shows FFmpeg's lines only after a restart."""
    if debug:
        for key, value in _USER_ENV.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    else:
        os.environ["OPENCV_LOG_LEVEL"] = "ERROR"  # read when cv2 is first imported
        os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "-8"  # AV_LOG_QUIET
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and hasattr(cv2, "setLogLevel"):  # imported already: set it live
        user = _CV_LEVELS.get((_USER_ENV["OPENCV_LOG_LEVEL"] or "").upper(), _CV_WARNING)
        cv2.setLogLevel(user if debug else _CV_ERROR)


#: Held by every structured write (logsetup) and by the redirect's switch-over, so no log line
#: is half written to the old stderr when fd 2 changes under it. Reentrant: a signal handler may
#: log while the main thread is inside a write.
WRITE_LOCK = threading.RLock()


class _Redirect:
    """One redirect of fd 2 to a temporary file, shared by overlapping `native_stderr_relogged`
    blocks (from two threads, say); the block that ends last re-logs the text."""

    depth = 0
    saved_fd: int | None = None
    file = None
    python_stderr = None  # sys.stderr while redirected: the real stderr for Python's own writes
    swapped_from = None


def _start() -> None:
    r = _Redirect
    if sys.stderr is not None:
        sys.stderr.flush()
    r.file = tempfile.TemporaryFile()
    r.saved_fd = os.dup(2)
    os.dup2(r.file.fileno(), 2)
    try:
        on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        on_fd2 = False  # a test's StringIO: Python's writes do not go through fd 2 anyway
    if on_fd2:
        # Python's writes (our log lines, from any thread) keep going to the real stderr.
        r.swapped_from = sys.stderr
        r.python_stderr = open(r.saved_fd, "w", buffering=1, encoding=sys.stderr.encoding,  # noqa: SIM115
                               errors="backslashreplace", closefd=False)
        sys.stderr = r.python_stderr


def _stop() -> str:
    r = _Redirect
    if r.python_stderr is not None:
        r.python_stderr.flush()
        if sys.stderr is r.python_stderr:
            sys.stderr = r.swapped_from
        r.python_stderr.close()
    os.dup2(r.saved_fd, 2)
    os.close(r.saved_fd)
    r.file.seek(0)
    text = r.file.read().decode(errors="replace")
    r.file.close()
    r.saved_fd = r.file = r.python_stderr = r.swapped_from = None
    return text


@contextlib.contextmanager
def native_stderr_relogged(during: str) -> Iterator[None]:
    """What native code writes to stderr inside the block, from any thread, is logged once when
    the block ends: at debug, or as a warning if the block raised. `during` names the step."""
    with WRITE_LOCK:
        if _Redirect.depth == 0:
            _start()
        _Redirect.depth += 1
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        with WRITE_LOCK:
            _Redirect.depth -= 1
            text = _stop() if _Redirect.depth == 0 else ""
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            (log.warning if failed else log.debug)("native library output", during=during,
                                                   lines=lines)
